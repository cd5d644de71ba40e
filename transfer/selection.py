"""Selecting variables by scope, anchored at the `/` boundary.

`conv1` selects `conv1/kernel` and `conv1/bias`, never `conv10/kernel` or
`dconv1/kernel`; on the checkpoint side optimizer slots (`fc1/kernel/Adam`), Adam's
`beta1_power`/`beta2_power` and `global_step` are never model variables.
"""

import re

from models.scopes import ENCODER_SCOPES, HEAD_SCOPES, in_any_scope, in_scope  # noqa: F401 (callers import them from here)

PRESETS = {
    "conv": ENCODER_SCOPES,
    "fc": HEAD_SCOPES,
    "all": None,  # every model variable that the checkpoint holds
    "none": (),  # train from scratch
}
# Bookkeeping that optimizers and training loops put in checkpoints: the step counter
# and Adam's beta powers (a second Adam in one graph makes `beta1_power_1`).
NON_MODEL = re.compile(r"(^|/)(global_step|beta[12]_power(_\d+)?)$")


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


def parse_scopes(text):
    """A --restore value: a preset name or a comma list of scopes.

    Returns:
      A tuple of scopes, or None for the preset `all`.

    Raises:
      ValueError: for an empty item in the list.
    """
    text = text.strip()
    if text in PRESETS:
        return PRESETS[text]
    scopes = tuple(item.strip().strip("/") for item in text.split(","))
    if not all(scopes):
        raise ValueError(f"empty scope in {text!r}; give a preset ({', '.join(PRESETS)}) or a comma list of scopes")
    return scopes


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
