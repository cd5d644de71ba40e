"""Batch normalisation whose moving statistics change only when the caller says so.

The variables are the ones TF-Slim's `batch_norm` and Keras's `BatchNormalization`
write to their checkpoints: `beta`, `gamma`, `moving_mean` and `moving_variance`, all
four in MODEL_VARIABLES, the moving ones not trainable.

Design choice (documented here, relied on by the transfer code): the moving statistics
are updated only by the update ops this module hands back, collected per layer into the
`updates` dict the builder passes in and returns in its end points. Nothing goes into
the UPDATE_OPS collection, so a training loop that runs UPDATE_OPS (as TF-Slim's
train_image_classifier does) cannot move a frozen layer's statistics behind the
caller's back: a frozen scope keeps the checkpoint's statistics bit for bit. A caller
that fine-tunes a scope runs the update ops of that scope's layers, and only those.

Whether a layer normalises with batch statistics (training mode) or with its moving
statistics (inference mode) is decided per layer by `is_training` (see
`models.net_ops.layer_training`). A layer in inference mode creates no update op.

The builders use `conv_batch_norm`, which in inference mode folds the normalisation
into the preceding convolution's kernel and a bias add (same variables, same function
up to float rounding, faster on CPU); `batch_norm` is the unfolded layer.
"""

import dataclasses

import tensorflow as tf

from models.net_ops import full_scope, layer_training, model_variable
from models.scopes import in_any_scope

v1 = tf.compat.v1

# The smallest epsilon the fused kernel accepts; TensorFlow raises smaller ones to it.
MIN_EPSILON = 1.001e-5


@dataclasses.dataclass(frozen=True)
class Norm:
    """How a network's BatchNorm layers are made (what `conv_batch_norm` takes besides the convolution).

    Attributes:
      decay, epsilon: as for `batch_norm`.
      scope: the layer's scope name, as for `batch_norm`.
      gamma_first: create `gamma` before `beta`, as for `batch_norm`.
    """

    decay: float
    epsilon: float
    scope: str = "BatchNorm"
    gamma_first: bool = False


def _variables(channels, gamma_first):
    if gamma_first:
        gamma = model_variable("gamma", [channels], v1.ones_initializer())
        beta = model_variable("beta", [channels], v1.zeros_initializer())
    else:
        beta = model_variable("beta", [channels], v1.zeros_initializer())
        gamma = model_variable("gamma", [channels], v1.ones_initializer())
    moving_mean = model_variable("moving_mean", [channels], v1.zeros_initializer(), trainable=False)
    moving_variance = model_variable("moving_variance", [channels], v1.ones_initializer(), trainable=False)
    return beta, gamma, moving_mean, moving_variance


def _normalise(inputs, name, training, updates, decay, epsilon, variables):
    """Normalises with batch statistics (and makes the update op) or with the moving ones."""
    beta, gamma, moving_mean, moving_variance = variables

    def inference():
        output, _, _ = v1.nn.fused_batch_norm(
            inputs, gamma, beta, mean=moving_mean, variance=moving_variance, epsilon=epsilon, is_training=False
        )
        # The moving statistics themselves, so that the update below is a no-op.
        return output, tf.identity(moving_mean), tf.identity(moving_variance)

    def train():
        # The batch variance as the fused kernel reports it (with Bessel's correction),
        # which is what TF-Slim's and Keras's fused paths feed to the moving average.
        return v1.nn.fused_batch_norm(inputs, gamma, beta, epsilon=epsilon, is_training=True)

    if training is False:
        return inference()[0]
    if training is True:
        output, mean, variance = train()
    else:
        output, mean, variance = tf.cond(training, train, inference)
    with tf.name_scope("moving_average_update"):
        rate = 1.0 - decay
        updates[name] = tf.group(
            v1.assign_sub(moving_mean, (moving_mean - mean) * rate),
            v1.assign_sub(moving_variance, (moving_variance - variance) * rate),
            name="update",
        )
    return output


def batch_norm(inputs, is_training, updates, decay, epsilon, scope="BatchNorm", gamma_first=False):
    """Normalises the last dimension of `inputs` with a learned scale and offset.

    Args:
      inputs: float32 tensor [batch, height, width, channels].
      is_training: a bool, a scalar bool tensor, or a callable of the layer's full scope
        name (see `models.net_ops.layer_training`). True: normalise with the batch's
        mean and variance and create an update op for the moving statistics. False:
        normalise with the moving statistics, create no update op. A tensor chooses at
        run time; the update op then moves the statistics only when it is true.
      updates: dict to which {full scope name: update op} is added for a layer that can
        train; the builder returns it to its caller.
      decay: the moving average's decay (TF-Slim's `decay`, Keras's `momentum`).
      epsilon: added to the variance; raised to MIN_EPSILON like the fused kernel does.
      scope: the layer's scope name ("BatchNorm" in TF-Slim nets,
        "tpu_batch_normalization[_N]" in the EfficientNet release).
      gamma_first: create `gamma` before `beta` (Keras's order) instead of after
        (TF-Slim's). Only the creation order differs; names are the same.

    Returns:
      The normalised tensor, same shape as `inputs`.
    """
    name = full_scope(scope)
    training = layer_training(is_training, name)
    with v1.variable_scope(scope):
        variables = _variables(int(inputs.shape[-1]), gamma_first)
        return _normalise(inputs, name, training, updates, decay, max(float(epsilon), MIN_EPSILON), variables)


def conv_batch_norm(conv, kernel, inputs, is_training, updates, norm, depthwise=False):
    """`batch_norm(conv(inputs, kernel), ...)`, with the same variables, folded in inference mode.

    In inference mode BatchNorm is a per-channel affine map, so it is folded into the
    convolution: the kernel is scaled by gamma / sqrt(moving_variance + epsilon) and the
    offset becomes a bias add. That is the same function up to float rounding, and lets
    TensorFlow's CPU remapper fuse convolution, bias and activation into one op, which
    a separate FusedBatchNorm prevents. Training mode (and a training tensor) uses the
    unfolded `batch_norm`.

    Args:
      conv: function (inputs, kernel) -> output, e.g. a partial of tf.nn.conv2d.
      kernel: the convolution's kernel variable, [k, k, in, out] or, when depthwise,
        [k, k, channels, 1].
      inputs: the convolution's input.
      is_training, updates: as for `batch_norm`.
      norm: the layer's Norm (decay, epsilon, scope, gamma_first).
      depthwise: whether the kernel is a depthwise one (multiplier 1).

    Returns:
      The normalised convolution output.
    """
    name = full_scope(norm.scope)
    training = layer_training(is_training, name)
    epsilon = max(float(norm.epsilon), MIN_EPSILON)
    channels = int(kernel.shape[2] if depthwise else kernel.shape[3])
    with v1.variable_scope(norm.scope):
        variables = _variables(channels, norm.gamma_first)
        if training is not False:
            return _normalise(conv(inputs, kernel), name, training, updates, norm.decay, epsilon, variables)
        beta, gamma, moving_mean, moving_variance = variables
        with tf.name_scope("folded"):
            scale = gamma * tf.math.rsqrt(moving_variance + epsilon)
            offset = beta - moving_mean * scale
            folded = kernel * (tf.reshape(scale, [channels, 1]) if depthwise else scale)
    return tf.nn.bias_add(conv(inputs, folded), offset)


def update_ops(updates, scopes=None):
    """The update ops of the layers under the given scopes (all of them for None).

    Args:
      updates: the {layer scope: op} dict a builder returned.
      scopes: iterable of scope names matched at the "/" boundary, or None.

    Returns:
      A list of ops in layer order.
    """
    if scopes is None:
        return list(updates.values())
    scopes = tuple(scopes)
    return [op for name, op in updates.items() if in_any_scope(name, scopes)]
