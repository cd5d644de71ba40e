"""Selecting variables by scope, anchored at the `/` boundary.

`conv1` selects `conv1/kernel` and `conv1/bias`, never `conv10/kernel` or
`dconv1/kernel`; on the checkpoint side optimizer slots (`fc1/kernel/Adam`), Adam's
`beta1_power`/`beta2_power` and `global_step` are never model variables.
"""

import re

from models.scopes import (  # noqa: F401 (callers import them from here)
    ENCODER_SCOPES,
    HEAD_SCOPES,
    compiled,
    in_any_scope,
    in_scope,
    is_pattern,
    selects,
)

PRESETS = {
    "conv": ENCODER_SCOPES,
    "fc": HEAD_SCOPES,
    "all": None,  # every model variable that the checkpoint holds
    "none": (),  # train from scratch
}
# Bookkeeping that optimizers and training loops put in checkpoints: the step counter
# and Adam's beta powers (a second Adam in one graph makes `beta1_power_1`).
NON_MODEL = re.compile(r"(^|/)(global_step|beta[12]_power(_\d+)?)$")


LISTED = 20  # items a message line lists before "and N more"
LISTED_WIDTH = 300  # characters one list may take in a message line


def capped(items, limit=LISTED, separator=", ", width=LISTED_WIDTH):
    """Items joined for one message line: the first `limit` (fewer when they are long), then "and N more".

    Every list of variables, scopes or checkpoints in an error or warning goes through
    here, so a line stays under 1,000 characters however many there are: at most
    `limit` items, and no more once `width` characters are used (at least one is shown).
    """
    items = [str(item) for item in items]
    shown = []
    for item in items[:limit]:
        if shown and len(separator.join([*shown, item])) > width:
            break
        shown.append(item)
    rest = len(items) - len(shown)
    return separator.join(shown) + (f"{separator}and {rest} more" if rest else "")


def outer_scope_maps(graph_names, checkpoint_names):
    """The --map pairs that fix a forgotten or extra outer scope, or () when no one outer scope explains it.

    When every graph name is a checkpoint name with one outer scope P removed
    (checkpoint `resnet_v2_50/block1/w`, graph `block1/w`), each top scope T of the graph
    names gets (P/T, T); when every graph name is a checkpoint name with an outer scope
    Q added (graph `encoder/conv1/kernel`, checkpoint `conv1/kernel`), each top scope T
    under Q gets (T, Q/T). The shortest such scope wins.

    Args:
      graph_names: graph variable names that found no checkpoint variable.
      checkpoint_names: the checkpoint's model variable names.

    Returns:
      A tuple of (checkpoint scope, graph scope) pairs, in first-seen order.
    """
    graph_names, held = list(graph_names), set(checkpoint_names)
    if not graph_names:
        return ()
    removed = _common_outer(graph_names, _outer_scopes_of(held))
    if removed is not None:
        tops = _top_components(graph_names)
        return tuple((f"{removed}/{top}", top) for top in tops)
    added = _common_outer(graph_names, {name: _inner_of(name, held) for name in graph_names})
    if added is not None:
        tops = _top_components(name[len(added) + 1 :] for name in graph_names)
        return tuple((top, f"{added}/{top}") for top in tops)
    return ()


def _top_components(names):
    """The distinct first components of names, in first-seen order."""
    return list(dict.fromkeys(name.split("/", 1)[0] for name in names))


def _outer_scopes_of(held):
    """{inner name: {outer scopes P such that P/inner is held}} over every split of the held names."""
    outer = {}
    for name in held:
        parts = name.split("/")
        for cut in range(1, len(parts)):
            outer.setdefault("/".join(parts[cut:]), set()).add("/".join(parts[:cut]))
    return outer


def _inner_of(name, held):
    """Outer scopes Q of graph name `name` whose removal leaves a held name."""
    parts = name.split("/")
    return {"/".join(parts[:cut]) for cut in range(1, len(parts)) if "/".join(parts[cut:]) in held}


def _common_outer(names, candidates_of):
    """The shortest outer scope that every name has among its candidates, or None."""
    common = None
    for name in names:
        common = set(candidates_of.get(name, ())) if common is None else common & candidates_of.get(name, set())
        if not common:
            return None
    return min(common, key=lambda scope: (scope.count("/"), scope))


def top_scopes(names):
    """Distinct scopes of names, dropping the last component: ["conv1", "encoder/conv2", ...]."""
    return sorted({name.rsplit("/", 1)[0] if "/" in name else name for name in names})


def model_variable_names(names):
    """The names in a checkpoint that hold model weights, not optimizer or loop state.

    A slot is recognised by its structure, whatever the optimizer: its name is another
    variable's name plus one more component (`fc1/kernel` and `fc1/kernel/Adam_1`).

    Args:
      names: every variable name the checkpoint holds.

    Returns:
      The sorted model variable names.
    """
    names = set(names)
    kept = []
    for name in names:
        if NON_MODEL.search(name):
            continue
        if "/" in name and name.rsplit("/", 1)[0] in names:
            continue
        kept.append(name)
    return sorted(kept)


def parse_scopes(text, flag="--restore"):
    """A --restore value: a preset name or a comma list of scopes.

    Returns:
      A tuple of scopes, or None for the preset `all`.

    Raises:
      ValueError: for an empty item in the list.
    """
    text = text.strip()
    if text in PRESETS:
        return PRESETS[text]
    scopes = tuple(parse_selector(item, flag) for item in split_items(text))
    if not all(scopes):
        raise ValueError(f"empty scope in {text!r}; give a preset ({', '.join(PRESETS)}) or a comma list of scopes")
    return scopes


def parse_selector(text, flag):
    """One item of --restore, --restore-exclude or --lr-mult: a scope ("/" around it dropped) or `re:REGEX` as written.

    Raises:
      ValueError: for a `re:` item that is empty or not a regular expression.
    """
    text = text.strip()
    if is_pattern(text):
        try:
            compiled(text)
        except ValueError as error:
            raise ValueError(f"{flag} {text}: {error}") from None
        return text
    return text.strip("/")


def split_items(text):
    """Splits a comma list at the commas outside a `re:` item's (), [] and {} (`re:w{1,2}`) and escapes (`\\,`)."""
    items, start, depth, in_class, escaped = [], 0, 0, False, False
    pattern = is_pattern(text.lstrip())
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "," and not depth and not in_class:
            items.append(text[start:index])
            start = index + 1
            pattern = is_pattern(text[start:].lstrip())
        elif not pattern:
            continue
        elif char == "\\":
            escaped = True
        elif in_class or char == "[":
            in_class = char != "]"
        elif char in "({":
            depth += 1
        elif char in ")}":
            depth = max(depth - 1, 0)
    return [*items, text[start:]]


def parse_pair(text, separator, flag):
    """Splits `LEFT<separator>RIGHT` for flags such as --map SRC=DST.

    Raises:
      ValueError: when either side is empty or the separator is missing.
    """
    left, found, right = text.partition(separator)
    left, right = left.strip().strip("/"), right.strip().strip("/")
    if not found or not left or not right:
        raise ValueError(f"{flag} takes LEFT{separator}RIGHT, got {text!r}")
    return left, right
