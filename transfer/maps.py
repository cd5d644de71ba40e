"""Name maps: which PyTorch tensor becomes which TF1 variable, and how its layout changes.

A name map is data, a JSON file, never code. It is read in either direction: from its
PyTorch side to its TensorFlow side (a state_dict into a TF1 checkpoint) or back.

    {
      "format": "cae-transfer-name-map/1",
      "description": "what the two sides are (free text)",
      "drop": {"torch": ["\\\\.num_batches_tracked$"], "tf": []},
      "rules": [
        {"torch": "_conv_stem.weight", "tf": "efficientnet-lite0/stem/conv2d/kernel", "transform": "conv"},
        {"torch": "_bn0", "tf": "efficientnet-lite0/stem/tpu_batch_normalization", "transform": "batch_norm"},
        {"regex": true, "torch": "_blocks\\\\.(?P<b>\\\\d+)\\\\._depthwise_conv\\\\.weight",
         "tf": "efficientnet-lite0/blocks_(?P<b>\\\\d+)/depthwise_conv2d/depthwise_kernel", "transform": "depthwise"}
      ]
    }

Rules: an exact rule names one tensor on each side. A regex rule ("regex": true) holds a
regular expression on each side, matched against the whole name; each side is literal
apart from its named groups, and both sides have the same groups, so the name on the
other side is the side's text with each group replaced by what it matched. The first
rule that matches a name decides (put exceptions before the general rule); two names
mapped onto one are refused.

Transforms, written PyTorch -> TensorFlow and undone the other way:
  identity     the same array
  conv         OIHW [out, in, kh, kw] -> HWIO [kh, kw, in, out]
  depthwise    [C, 1, kh, kw] -> [kh, kw, C, 1]
  dense        [out, in] -> [in, out]
  dense_conv   a Linear over a flattened [in, kh, kw] map, [out, in*kh*kw] -> a
               convolution [kh, kw, in, out]; "kernel": [kh, kw] says its size (TF-Slim's
               fully connected layers are convolutions: VGG's fc6 is 7x7, fc7 and fc8 1x1)
  batch_norm   the rule's names are a layer's prefixes: PREFIX.weight, .bias, .running_mean,
               .running_var <-> PREFIX/gamma, /beta, /moving_mean, /moving_variance
               (four identity rules)

"drop" lists, per side, the regexes of tensors that have no counterpart (PyTorch's
BatchNorm `num_batches_tracked` counters: torch's BatchNorm loads a state_dict without
them). Every other key, transform or value is refused with one line naming it: a map is
read through an allow-list.
"""

import collections
import dataclasses
import re

from runtime import userfiles
from runtime.errors import UserError
from runtime.paths import shown
from transfer.selection import capped

FORMAT = "cae-transfer-name-map/1"
SIDES = ("torch", "tf")
TRANSFORMS = ("identity", "conv", "depthwise", "dense", "dense_conv", "batch_norm")
_BATCH_NORM = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)
_TOP_KEYS = {"format", "description", "drop", "rules"}
_RULE_KEYS = {"torch", "tf", "transform", "regex", "kernel"}


class MapError(UserError):
    """A map file that is not a valid name map."""


@dataclasses.dataclass(frozen=True)
class _Side:
    """One side of a rule: its compiled pattern and its text as literal parts and group names."""

    pattern: re.Pattern
    parts: tuple  # str literals and ("group", name) pairs, in order

    def render(self, groups):
        return "".join(part if isinstance(part, str) else groups[part[1]] for part in self.parts)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule, both sides compiled; `transform` is never batch_norm (expanded at load)."""

    index: int
    sides: dict
    transform: str
    kernel: tuple = ()

    def apply(self, name, side):
        """The other side's name for `name` on `side`, or None when the rule does not match."""
        match = self.sides[side].pattern.fullmatch(name)
        if match is None:
            return None
        other = self.sides[_other(side)]
        target = other.render(match.groupdict())
        again = other.pattern.fullmatch(target)
        if again is None or again.groupdict() != match.groupdict():
            raise MapError(
                f"rule {self.index} maps {name!r} onto {target!r}, which its {_other(side)} side reads back otherwise"
            )
        return target


@dataclasses.dataclass(frozen=True)
class NameMap:
    """A parsed map: its rules in order and each side's drop patterns."""

    source: str
    description: str
    rules: tuple
    drops: dict


def _other(side):
    return SIDES[1 - SIDES.index(side)]


def _literal_and_groups(text, where):
    """A regex side split into literal text and named groups, or MapError for anything else outside a group."""
    parts, literal, index = [], [], 0
    if text.startswith("^"):
        index = 1
    end = len(text) - 1 if text.endswith("$") and not text.endswith("\\$") else len(text)
    while index < end:
        char = text[index]
        if char == "\\":
            escaped = text[index + 1 : index + 2]
            if not escaped or escaped.isalnum():
                raise MapError(f"{where}: {text!r} has {char + escaped!r} outside a named group")
            literal.append(escaped)
            index += 2
        elif text.startswith("(?P<", index):
            close = _group_end(text, index, where)
            name = text[index + 4 : text.index(">", index)]
            parts += ["".join(literal), ("group", name)] if literal else [("group", name)]
            literal, index = [], close + 1
        elif char in ".^$*+?{}[]|()":
            raise MapError(f"{where}: {text!r} has {char!r} outside a named group (escape it: '\\\\{char}')")
        else:
            literal.append(char)
            index += 1
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def _group_end(text, start, where):
    """The index of the ')' closing the group opened at `start`."""
    depth, index, in_class = 0, start, False
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise MapError(f"{where}: {text!r} has a group that is never closed")


def _side(text, regex, where):
    if not isinstance(text, str) or not text:
        raise MapError(f"{where}: {text!r} is not a name")
    if not regex:
        return _Side(re.compile(re.escape(text)), (text,))
    try:
        pattern = re.compile(text)
    except re.error as error:
        raise MapError(f"{where}: {text!r} is not a regular expression: {error}") from None
    parts = _literal_and_groups(text, where)
    names = [part[1] for part in parts if not isinstance(part, str)]
    if len(set(names)) != len(names) or set(names) != set(pattern.groupindex):
        raise MapError(f"{where}: {text!r} must name each group once, as (?P<name>...)")
    return _Side(pattern, parts)


def _kernel(rule, where):
    kernel = rule.get("kernel")
    if rule["transform"] != "dense_conv":
        if kernel is not None:
            raise MapError(f"{where}: 'kernel' goes with the dense_conv transform only")
        return ()
    if not (isinstance(kernel, list) and len(kernel) == 2 and all(type(k) is int and k > 0 for k in kernel)):
        raise MapError(f'{where}: dense_conv needs "kernel": [height, width], got {kernel!r}')
    return tuple(kernel)


def _rules(raw, where):
    """The rules of a map, batch_norm rules expanded into their four identity rules."""
    regex = raw.get("regex", False)
    if set(raw) - _RULE_KEYS or not {"torch", "tf", "transform"} <= set(raw):
        unknown = sorted(set(raw) - _RULE_KEYS) or sorted({"torch", "tf", "transform"} - set(raw))
        raise MapError(f"{where}: {'unknown key' if set(raw) - _RULE_KEYS else 'missing key'} {unknown[0]!r}")
    if raw["transform"] not in TRANSFORMS:
        raise MapError(f"{where}: unknown transform {raw['transform']!r} (known: {', '.join(TRANSFORMS)})")
    if not isinstance(regex, bool):
        raise MapError(f"{where}: 'regex' is true or false, not {regex!r}")
    kernel = _kernel(raw, where)
    if raw["transform"] != "batch_norm":
        sides = {side: _side(raw[side], regex, f"{where} ({side})") for side in SIDES}
        if set(sides["torch"].pattern.groupindex) != set(sides["tf"].pattern.groupindex):
            raise MapError(f"{where}: its two sides must hold the same named groups")
        return [(sides, raw["transform"], kernel)]
    expanded = []
    for theirs, ours in _BATCH_NORM:
        suffixes = {"torch": "." + theirs, "tf": "/" + ours}
        texts = {side: raw[side] + (re.escape(suffixes[side]) if regex else suffixes[side]) for side in SIDES}
        expanded += _rules({**raw, **texts, "transform": "identity"}, where)
    return expanded


def parse(document, source):
    """A NameMap from a JSON document already loaded; MapError (one line) for anything not allowed."""
    label = shown(source)
    if not isinstance(document, dict):
        raise MapError(f"{label} is not a name map: it holds a JSON {type(document).__name__}, not an object")
    unknown = sorted(set(document) - _TOP_KEYS)
    if unknown:
        raise MapError(f"{label}: unknown key {unknown[0]!r} (a name map holds {', '.join(sorted(_TOP_KEYS))})")
    if document.get("format") != FORMAT:
        raise MapError(f'{label}: "format" must be {FORMAT!r}, not {document.get("format")!r}')
    raw_rules, raw_drops = document.get("rules"), document.get("drop", {})
    if not (isinstance(raw_rules, list) and raw_rules and all(isinstance(rule, dict) for rule in raw_rules)):
        raise MapError(f'{label}: "rules" must be a non-empty list of objects')
    if not (isinstance(raw_drops, dict) and set(raw_drops) <= set(SIDES)):
        raise MapError(f'{label}: "drop" must be an object with the keys torch and tf only')
    drops = {side: tuple(_drops(raw_drops.get(side, []), f"{label}: drop.{side}")) for side in SIDES}
    rules = []
    for number, raw in enumerate(raw_rules, start=1):
        for sides, transform, kernel in _rules(raw, f"{label}: rule {number}"):
            rules.append(Rule(number, sides, transform, kernel))
    description = document.get("description", "")
    if not isinstance(description, str):
        raise MapError(f'{label}: "description" must be a string')
    return NameMap(str(source), description, tuple(rules), drops)


def _drops(patterns, where):
    if not (isinstance(patterns, list) and all(isinstance(p, str) for p in patterns)):
        raise MapError(f"{where} must be a list of regular expressions")
    for pattern in patterns:
        try:
            yield re.compile(pattern)
        except re.error as error:
            raise MapError(f"{where}: {pattern!r} is not a regular expression: {error}") from None


def load(path):
    """Reads and parses a map file (JSON only: nothing in it runs).

    Raises:
      MapError: one line, for a file that cannot be read, is not JSON or is not a valid map.
    """
    try:
        document = userfiles.parse_json(userfiles.read_text(path, "the map"), "the map", shown(path))
    except UserError as error:
        raise MapError(str(error)) from None
    return parse(document, path)


def dropped_by_map(name_map, name, side):
    """The map's drop pattern on `side` that matches `name`, or None."""
    return next((p.pattern for p in name_map.drops[side] if p.search(name)), None)


def resolve(name_map, names, side):
    """Where each name on `side` goes: {name: (target name, transform)} and the names no rule matches.

    Raises:
      MapError: when two names map onto one.
    """
    found, unmatched, by_target = collections.OrderedDict(), [], {}
    for name in names:
        rule = next((r for r in name_map.rules if r.sides[side].pattern.fullmatch(name)), None)
        if rule is None:
            unmatched.append(name)
            continue
        target = rule.apply(name, side)
        if target in by_target:
            raise MapError(f"{shown(name_map.source)} maps both {by_target[target]} and {name} onto {target}")
        by_target[target] = name
        found[name] = (target, rule)
    return found, unmatched


def unmatched_error(name_map, unmatched):
    """The one line for source tensors that no rule matches and nothing drops."""
    return MapError(
        f"{len(unmatched)} tensors match no rule of the map {shown(name_map.source)} and no --drop: {capped(unmatched)}"
    )


# --- Layouts ----------------------------------------------------------------------------------

# The axes each transform takes, PyTorch -> TensorFlow (after dense_conv's unflattening) and back.
_FORWARD = {"conv": (2, 3, 1, 0), "depthwise": (2, 3, 0, 1), "dense": (1, 0), "dense_conv": (2, 3, 1, 0)}
_BACKWARD = {"conv": (3, 2, 0, 1), "depthwise": (2, 3, 0, 1), "dense": (1, 0), "dense_conv": (3, 2, 0, 1)}


def _fits(shape, rule, forward):
    """Whether a tensor of this shape can take the rule's transform in this direction."""
    transform, kernel = rule.transform, rule.kernel
    if transform == "identity":
        return True
    if transform == "dense_conv":
        if forward:
            return len(shape) == 2 and shape[1] % (kernel[0] * kernel[1]) == 0
        return len(shape) == 4 and tuple(shape[:2]) == kernel
    if transform == "depthwise" and len(shape) == 4 and shape[1 if forward else 3] != 1:
        return False
    return len(shape) == len(_FORWARD[transform])


def target_shape(shape, rule, forward, name):
    """The shape a tensor of `shape` has after the rule's transform (forward: PyTorch -> TensorFlow).

    Raises:
      MapError: naming the tensor, when its shape cannot take the transform.
    """
    shape = tuple(shape)
    if not _fits(shape, rule, forward):
        what = rule.transform + (f" {list(rule.kernel)}" if rule.kernel else "")
        direction = "PyTorch -> TensorFlow" if forward else "TensorFlow -> PyTorch"
        raise MapError(f"{name} has shape {list(shape)}, which the {what} transform ({direction}) cannot take")
    if rule.transform == "identity":
        return shape
    if rule.transform == "dense_conv" and forward:
        out, flat = shape
        shape = (out, flat // (rule.kernel[0] * rule.kernel[1]), *rule.kernel)
    axes = (_FORWARD if forward else _BACKWARD)[rule.transform]
    moved = tuple(shape[axis] for axis in axes)
    if rule.transform == "dense_conv" and not forward:
        moved = (moved[0], moved[1] * moved[2] * moved[3])
    return moved


def apply(array, rule, forward, name):
    """The array in the other framework's layout, C-contiguous (its dtype and bits kept)."""
    shape = target_shape(array.shape, rule, forward, name)
    if rule.transform == "identity":
        return array
    if rule.transform == "dense_conv" and forward:
        array = array.reshape(array.shape[0], -1, *rule.kernel)
    moved = array.transpose((_FORWARD if forward else _BACKWARD)[rule.transform])
    return moved.reshape(shape) if rule.transform == "dense_conv" and not forward else moved


def described(rule, forward):
    """The transform as the report shows it."""
    if rule.transform == "identity":
        return "identity"
    layouts = {
        "conv": "OIHW {} HWIO",
        "depthwise": "[C,1,k,k] {} [k,k,C,1]",
        "dense": "[out,in] {} [in,out]",
        "dense_conv": "[out,in*{k}] {} [{kh},{kw},in,out]",
    }
    text = layouts[rule.transform].replace("{k}", "x".join(map(str, rule.kernel)))
    if rule.kernel:
        text = text.replace("{kh}", str(rule.kernel[0])).replace("{kw}", str(rule.kernel[1]))
    left, _, right = text.partition(" {} ")
    return f"{left} -> {right}" if forward else f"{right} -> {left}"
