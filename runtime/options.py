"""Flags as data: one record per flag, from which everything else about it is derived.

A script's run config is a `Flags` made of `Option` records (grouped as its --help shows
them) and the checks over the whole config. From it come the argparse parser, the flag
values saved in config.json, the keys a resumed run must share, the flags another
command lists (inspect's plan-only flags), the argv that runs the script from code, and
the one validation step that runs before any data or graph is touched. Adding a flag is
one record (docs/ARCHITECTURE.md, "Where to add things").

Parsing gives an `argparse.Namespace`; only the parse/validate boundary reads it. The run's
phases take the frozen records `Flags.record` (or, where a config has no `Flags`, `record`)
makes from it once.
"""

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from runtime.errors import UserError

ACTIONS = (None, "store_true", "append")


@dataclasses.dataclass(frozen=True)
class Option:
    """One flag (or, for a name without dashes, one positional argument).

    Attributes:
      flag: "--batch-size"; its dest is "batch_size".
      default: the value when the flag is not given (a list for action "append").
      help: the --help text; "%(default)s" is argparse's.
      type: argparse type: parses the text and raises argparse.ArgumentTypeError for a bad value.
      choices: the values allowed, as argparse checks them.
      action: None (takes a value), "store_true" or "append" (repeatable).
      metavar: the value's name in --help.
      nargs: argparse's nargs, for a positional argument that may be left out ("?") or takes
        the rest of the command line (argparse.REMAINDER).
      dest_name: the attribute of the parsed args when it is not the one the flag spells.
      resume: a resumed run must have been started with the same value (the resume check).
      config: the value is saved in config.json.
      check: a function of the parsed value that returns None when it is fine, else the
        reason ("must be in [0, 1), got 1.5"); `Flags.validate` raises it as a UserError
        "<flag> <reason>". For limits that must also hold for a config built in code.
    """

    flag: str
    default: Any = None
    help: str | None = None
    type: Callable | None = None
    choices: tuple | None = None
    action: str | None = None
    metavar: str | None = None
    nargs: str | None = None
    dest_name: str | None = None
    resume: bool = False
    config: bool = True
    check: Callable[[Any], str | None] | None = None

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"{self.flag}: action must be one of {ACTIONS}, got {self.action!r}")

    @property
    def dest(self):
        """The attribute of the parsed args (and the config.json key): "--batch-size" -> "batch_size"."""
        return self.dest_name or self.flag.lstrip("-").replace("-", "_")

    @property
    def parsed_default(self):
        """What the parsed args hold when the flag is not given."""
        if self.action == "store_true":
            return bool(self.default)
        if self.action == "append":
            return list(self.default or ())
        return self.default

    def but(self, **changes):
        """The same flag with some fields changed (another command's help text or default)."""
        return dataclasses.replace(self, **changes)

    def add_to(self, parser):
        """Adds the flag to an argparse parser or argument group."""
        fields = {"help": self.help, "metavar": self.metavar, "choices": self.choices, "nargs": self.nargs}
        if self.action == "store_true":
            fields = {"help": self.help}
        else:
            fields.update(type=self.type, default=self.parsed_default)
        if self.dest_name and self.flag.startswith("-"):
            fields["dest"] = self.dest_name
        kwargs = {key: value for key, value in fields.items() if value is not None}
        if self.action:
            kwargs["action"] = self.action
        parser.add_argument(self.flag, **kwargs)

    def to_argv(self, value):
        """The command-line words that give this flag `value`: [] for an unset flag."""
        if self.action == "store_true":
            return [self.flag] if value else []
        if self.action == "append":
            return [word for item in value for word in (self.flag, str(item))]
        return [] if value is None else [self.flag, str(value)]


@dataclasses.dataclass(frozen=True)
class Group:
    """Options shown together in --help; a title of None puts them among the parser's own options."""

    title: str | None
    options: tuple
    description: str | None = None

    def add_to(self, parser):
        """Adds the options, under an argument group when the group has a title; returns where they went."""
        target = parser if self.title is None else parser.add_argument_group(self.title, self.description)
        for option in self.options:
            option.add_to(target)
        return target


class Flags:
    """A script's run config: its flags in --help order and the checks over the whole config.

    Args:
      *parts: Group, or a tuple of Options (among the parser's own options), in the order
        --help lists them.
      validators: functions of the parsed args run by `validate`, after every option's own
        check: for checks that read several flags. They raise UserError.
      resume_extra: config.json keys that no flag sets (the data's identity, say) and a
        resumed run must share; they follow the flags' keys.
    """

    def __init__(self, *parts, validators=(), resume_extra=()):
        self.parts = tuple(Group(None, part) if isinstance(part, tuple) else part for part in parts)
        self.validators = tuple(validators)
        self.resume_extra = tuple(resume_extra)
        self.options = tuple(option for part in self.parts for option in part.options)
        dests = [option.dest for option in self.options]
        repeated = sorted({dest for dest in dests if dests.count(dest) > 1})
        if repeated:
            raise ValueError(f"flags defined twice: {', '.join(repeated)}")
        self._by_dest = {option.dest: option for option in self.options}

    def option(self, dest):
        """The Option whose dest is `dest` (KeyError for a flag this config does not have)."""
        return self._by_dest[dest]

    def add_to(self, parser):
        """Adds every flag to an argparse parser; returns the parser."""
        for part in self.parts:
            part.add_to(parser)
        return parser

    def parser(self, **kwargs):
        """A new argparse.ArgumentParser(**kwargs) with these flags."""
        return self.add_to(argparse.ArgumentParser(**kwargs))

    def parse(self, argv=None, **kwargs):
        """Parses argv (default: sys.argv[1:]) into an argparse.Namespace; argparse's own errors exit 2."""
        return self.parser(**kwargs).parse_args(argv)

    def defaults(self, **changes):
        """The Namespace the parser gives for no flags, with `changes` applied: a config built in code."""
        args = self.parse([])
        unknown = sorted(set(changes) - set(vars(args)))
        if unknown:
            raise KeyError(f"no such flags: {', '.join(unknown)}")
        for key, value in changes.items():
            setattr(args, key, value)
        return args

    @property
    def resume_keys(self):
        """The config.json keys a resumed run must share: the flags marked `resume`, then `resume_extra`."""
        return tuple(option.dest for option in self.options if option.resume) + self.resume_extra

    def config_values(self, args):
        """The flag values config.json records: every option marked `config`, by dest."""
        return {option.dest: getattr(args, option.dest) for option in self.options if option.config}

    def record(self, record_type, args):
        """The parsed flags as a frozen dataclass of `record_type`, made once per run.

        Each field of `record_type` takes the flag whose dest is its name, so library code
        takes typed values instead of the argparse Namespace.

        Raises:
          KeyError: for a field that is no flag of this config.
        """
        names = [field.name for field in dataclasses.fields(record_type)]
        unknown = [name for name in names if name not in self._by_dest]
        if unknown:
            raise KeyError(f"{record_type.__name__}: no such flags: {', '.join(unknown)}")
        return record(record_type, args)

    def argv(self, **values):
        """The argv that gives each named flag its value, in the order given (None and False: left out).

        Raises:
          KeyError: for a name that is not a flag of this config.
        """
        return [word for dest, value in values.items() for word in self.option(dest).to_argv(value)]

    def validate(self, args):
        """Checks what argparse cannot, before any data or graph: each option's check, then the validators.

        Returns:
          A tuple of what each validator returned, in order.

        Raises:
          UserError: naming the first offending value.
        """
        for option in self.options:
            if option.check is not None:
                reason = option.check(getattr(args, option.dest))
                if reason is not None:
                    raise UserError(f"{option.flag} {reason}")
        return tuple(validator(args) for validator in self.validators)


def record(record_type, args):
    """The parsed flags as a frozen dataclass of `record_type`: each field the flag of its name."""
    return record_type(**{field.name: getattr(args, field.name) for field in dataclasses.fields(record_type)})


def given(options, args):
    """The options among `options` whose value in the parsed args is not their default."""
    return [option for option in options if getattr(args, option.dest) != option.parsed_default]
