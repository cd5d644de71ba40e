"""Scope names of the two models: part of the checkpoint format (docs/ARCHITECTURE.md,
"Variable names"), kept free of TensorFlow imports."""

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
