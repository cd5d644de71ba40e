"""Scope names of the two models: part of the checkpoint format (docs/ARCHITECTURE.md,
"Variable names"), kept free of TensorFlow imports."""

import functools
import re

ENCODER_SCOPES = ("conv1", "conv2")
DECODER_SCOPES = ("latent_var", "z_matrix", "dconv1", "dconv2")
AUTOENCODER_SCOPES = ENCODER_SCOPES + DECODER_SCOPES
HEAD_SCOPES = ("fc1", "logits")
CLASSIFIER_SCOPES = ENCODER_SCOPES + HEAD_SCOPES


def in_scope(name, scope):
    """True when variable `name` is `scope` itself or lies below it (`scope/...`): the one scope-boundary rule.

    `conv1` holds `conv1/kernel`, never `conv10/kernel`; slashes around `scope` are ignored.
    """
    scope = scope.strip("/")
    return name == scope or name.startswith(scope + "/")


def in_any_scope(name, scopes):
    """in_scope for any of scopes."""
    return any(in_scope(name, scope) for scope in scopes)


PATTERN = "re:"  # marks a selector as a regular expression: `re:conv[12]/.*`; anything else is a scope


def is_pattern(selector):
    """True for a selector written `re:REGEX`, which is matched as a regular expression, never as a scope."""
    return selector.startswith(PATTERN)


@functools.lru_cache(maxsize=256)
def compiled(selector):
    """The compiled regular expression of a `re:` selector.

    Raises:
      ValueError: for an empty or malformed expression.
    """
    expression = selector[len(PATTERN) :]
    if not expression:
        raise ValueError("empty regular expression; write re:REGEX, e.g. re:conv[12]/.*")
    try:
        return re.compile(expression)
    except re.error as error:
        raise ValueError(f"bad regular expression ({error})") from None


def selects(name, selector):
    """True when `selector` chooses variable `name`: the one rule of each --restore, --restore-exclude, --lr-mult item.

    `re:REGEX` must match the whole name (re.fullmatch: `re:conv1` chooses no variable,
    `re:conv1/.*` chooses conv1's); any other selector is a scope (in_scope).
    """
    if is_pattern(selector):
        return compiled(selector).fullmatch(name) is not None
    return in_scope(name, selector)
