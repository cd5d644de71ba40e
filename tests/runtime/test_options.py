"""runtime.options: flag records make the parser, the config values, the resume keys, argv and the checks."""

import argparse
import dataclasses
import itertools

import pytest

from runtime import cli
from runtime.errors import UserError
from runtime.options import Flags, Group, Option, given


def _rate(value):
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value}"


def _no_more_than_epochs(args):
    if args.warmup > args.epochs:
        raise UserError(f"--warmup {args.warmup} is more than --epochs {args.epochs}")
    return args.epochs - args.warmup


def _flags():
    return Flags(
        Group(
            "training",
            (
                Option("--epochs", type=cli.positive_int, default=3, resume=True, help="passes (default: %(default)s)"),
                Option("--warmup", type=cli.non_negative_int, default=0, help="warm-up passes"),
                Option("--rate", type=float, default=0.0, check=_rate, resume=True, help="a rate"),
            ),
        ),
        (
            Option("--mode", choices=("a", "b"), default="a", help="a mode"),
            Option("--verbose", action="store_true", help="talk"),
            Option("--tag", action="append", metavar="K=V", help="repeatable"),
            Option("--out", default="out", config=False, help="where"),
        ),
        Group("network", (Option("--host", config=False, help="host:port"),), "where to connect"),
        validators=(_no_more_than_epochs,),
        resume_extra=("data_identity",),
    )


def test_the_parser_has_every_flag_with_its_type_default_and_group():
    flags = _flags()
    parser = flags.parser(prog="tool")
    args = parser.parse_args([])
    assert vars(args) == {
        "epochs": 3,
        "warmup": 0,
        "rate": 0.0,
        "mode": "a",
        "verbose": False,
        "tag": [],
        "out": "out",
        "host": None,
    }
    args = parser.parse_args(["--epochs", "5", "--verbose", "--tag", "x=1", "--tag", "y=2", "--mode", "b"])
    assert (args.epochs, args.verbose, args.tag, args.mode) == (5, True, ["x=1", "y=2"], "b")
    text = parser.format_help()
    assert "training:\n" in text and "passes (default: 3)" in text and "--tag K=V" in text
    training = next(group for group in parser._action_groups if group.title == "training")
    assert [action.dest for action in training._group_actions] == ["epochs", "warmup", "rate"]


def test_argparse_types_and_choices_still_refuse_bad_values(capsys):
    parser = _flags().parser(prog="tool")
    for argv, message in ((["--epochs", "0"], "must be 1 or more, got 0"), (["--mode", "c"], "invalid choice: 'c'")):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 2
        assert message in capsys.readouterr().err


def test_a_repeatable_flags_default_is_not_shared_between_parses():
    flags = _flags()
    first = flags.parse(["--tag", "a=1"])
    second = flags.parse([])
    assert first.tag == ["a=1"] and second.tag == []
    assert flags.option("tag").default is None


def test_a_positional_may_be_left_out_and_a_flag_may_name_its_dest():
    flags = Flags(
        (
            Option("model", nargs="?", default="runs/a", metavar="MODEL", help="a run"),
            Option("--range", dest_name="value_range", choices=("clip", "sigmoid"), default="clip", help="how"),
        )
    )
    assert vars(flags.parse([])) == {"model": "runs/a", "value_range": "clip"}
    assert vars(flags.parse(["runs/b", "--range", "sigmoid"])) == {"model": "runs/b", "value_range": "sigmoid"}
    assert flags.option("value_range").to_argv("sigmoid") == ["--range", "sigmoid"]
    assert "MODEL" in flags.parser(prog="tool").format_help()


def test_a_positional_may_take_the_rest_of_the_command_line():
    flags = Flags((Option("--ps", type=int, default=1), Option("script", nargs=argparse.REMAINDER, help="rest")))
    args = flags.parse(["--ps", "2", "--", "train.py", "--ps", "9"])
    assert (args.ps, args.script) == (2, ["--", "train.py", "--ps", "9"])


def test_resume_keys_are_the_marked_flags_then_the_extra_keys():
    assert _flags().resume_keys == ("epochs", "rate", "data_identity")


def test_config_values_leave_out_the_flags_marked_config_false():
    args = _flags().parse(["--host", "h:1", "--out", "o", "--warmup", "1"])
    assert _flags().config_values(args) == {
        "epochs": 3,
        "warmup": 1,
        "rate": 0.0,
        "mode": "a",
        "verbose": False,
        "tag": [],
    }


def test_argv_round_trips_through_the_parser():
    flags = _flags()
    values = {"epochs": 7, "rate": 0.5, "mode": "b", "verbose": True, "tag": ["a=1", "b=2"], "out": "x"}
    argv = flags.argv(**values)
    assert argv == ["--epochs", "7", "--rate", "0.5", "--mode", "b", "--verbose", "--tag", "a=1", "--tag", "b=2"] + [
        "--out",
        "x",
    ]
    parsed = vars(flags.parse(argv))
    assert {key: parsed[key] for key in values} == values
    assert flags.argv(verbose=False, warmup=None, tag=[]) == []
    with pytest.raises(KeyError):
        flags.argv(nope=1)


def test_validate_runs_option_checks_then_the_validators():
    flags = _flags()
    assert flags.validate(flags.parse(["--epochs", "4", "--warmup", "1"])) == (3,)
    with pytest.raises(UserError, match=r"^--rate must be in \[0, 1\), got 1\.5$"):
        flags.validate(flags.parse(["--rate", "1.5", "--warmup", "9"]))  # the option's check comes first
    with pytest.raises(UserError, match=r"^--warmup 9 is more than --epochs 3$"):
        flags.validate(flags.parse(["--warmup", "9"]))


def test_defaults_build_a_config_in_code():
    flags = _flags()
    args = flags.defaults(epochs=9, verbose=True)
    assert isinstance(args, argparse.Namespace) and (args.epochs, args.verbose, args.warmup) == (9, True, 0)
    with pytest.raises(KeyError, match="epoch"):
        flags.defaults(epoch=9)


@dataclasses.dataclass(frozen=True)
class _Training:
    epochs: int
    rate: float
    verbose: bool
    tag: list


def test_record_takes_each_field_from_the_flag_of_its_name():
    flags = _flags()
    cases = list(itertools.product([1, 5], [0.0, 0.25], [False, True], [[], ["a=1", "b=2"]]))
    for epochs, rate, verbose, tag in cases:
        args = flags.parse(flags.argv(epochs=epochs, rate=rate, verbose=verbose, tag=tag, mode="b"))
        assert flags.record(_Training, args) == _Training(epochs, rate, verbose, tag)
    assert len(cases) == 16
    with pytest.raises(dataclasses.FrozenInstanceError):
        flags.record(_Training, flags.parse([])).epochs = 2


def test_record_refuses_a_field_that_is_no_flag():
    @dataclasses.dataclass(frozen=True)
    class Misspelt:
        epoch: int

    with pytest.raises(KeyError, match="Misspelt: no such flags: epoch"):
        _flags().record(Misspelt, _flags().parse([]))


def test_given_lists_the_flags_changed_from_their_defaults():
    flags = _flags()
    args = flags.parse(["--verbose", "--tag", "a=1", "--epochs", "3"])
    assert [option.flag for option in given(flags.options, args)] == ["--verbose", "--tag"]


def test_but_changes_fields_and_keeps_the_rest():
    option = Option("--batch-size", type=cli.positive_int, default=64, resume=True, help="examples per step")
    other = option.but(help="classifier batch size", default=32)
    assert (other.flag, other.dest, other.type, other.resume) == ("--batch-size", "batch_size", cli.positive_int, True)
    assert (other.help, other.default, option.default) == ("classifier batch size", 32, 64)
    assert option.but(flag="--ae-batch-size").dest == "ae_batch_size"


def test_a_positional_argument():
    flags = Flags((Option("checkpoint", metavar="CKPT", help="a checkpoint"), Option("--json", action="store_true")))
    args = flags.parse(["ck", "--json"])
    assert (args.checkpoint, args.json) == ("ck", True)


def test_a_flag_defined_twice_or_an_unknown_action_is_refused():
    with pytest.raises(ValueError, match="flags defined twice: seed"):
        Flags((Option("--seed"),), Group("again", (Option("--seed"),)))
    with pytest.raises(ValueError, match="flags defined twice: host"):
        Flags((Option("--host"),), Group("network", (Option("--host"),)))
    with pytest.raises(ValueError, match="action"):
        Option("--count", action="count")
