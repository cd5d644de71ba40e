"""Building blocks of the ImageNet networks: model variables, convolutions, dropout, and
the rule that decides per layer whether it is in training mode.

Everything is `tf.compat.v1.get_variable` plus `tf.nn`: no Keras, no tf_slim. The
networks name their variables the way the published checkpoints do (TF-Slim's
`weights`/`biases`, Keras's `kernel`/`bias`), so each builder passes the name it needs.
"""

import tensorflow as tf

from models.layers import MODEL_COLLECTIONS

v1 = tf.compat.v1


def model_variable(name, shape, initializer, trainable=True):
    """Creates a float32 resource variable in the current scope, in GLOBAL and MODEL_VARIABLES.

    Args:
      name: the last component of the variable's name, e.g. "weights".
      shape: list of ints.
      initializer: a tf.compat.v1 initializer.
      trainable: whether it also joins TRAINABLE_VARIABLES.

    Returns:
      The variable.
    """
    return v1.get_variable(
        name,
        shape=shape,
        dtype=tf.float32,
        initializer=initializer,
        trainable=trainable,
        collections=list(MODEL_COLLECTIONS),
        use_resource=True,
    )


def full_scope(name):
    """The name a layer created under `name` in the current variable scope will carry."""
    outer = v1.get_variable_scope().name
    return f"{outer}/{name}" if outer else name


def layer_training(is_training, scope_name):
    """Resolves a builder's `is_training` argument for one layer.

    Args:
      is_training: a Python bool, a scalar bool tensor, or a callable that takes the
        layer's full scope name (e.g. "resnet_v1_50/block4/unit_3/bottleneck_v1/conv3/BatchNorm")
        and returns one of those two. The callable is how a caller trains some layers
        (their BatchNorm on batch statistics, their dropout on) while the frozen rest
        stays in inference mode.
      scope_name: the layer's full scope name.

    Returns:
      A Python bool or a scalar bool tensor.

    Raises:
      TypeError: for anything else.
    """
    value = is_training(scope_name) if callable(is_training) else is_training
    if isinstance(value, bool):
        return value
    if (
        isinstance(value, (tf.Tensor, tf.Variable))
        and value.dtype.base_dtype == tf.bool
        and value.shape.ndims in (0, None)
    ):
        return value
    raise TypeError(f"is_training for {scope_name} must be a bool or a scalar bool tensor, got {value!r}")


def conv_kernel(inputs, filters, kernel_size, initializer, name="weights"):
    """A [k, k, in_channels, filters] (HWIO) kernel for a convolution over `inputs`.

    Args:
      inputs: the tensor the convolution will read, [batch, height, width, channels].
      filters: output channels.
      kernel_size: side of the square kernel.
      initializer: the kernel's initializer.
      name: the variable's name ("weights" for TF-Slim, "kernel" for Keras).

    Returns:
      The kernel variable.
    """
    return model_variable(name, [kernel_size, kernel_size, int(inputs.shape[-1]), filters], initializer)


def depthwise_kernel(inputs, kernel_size, initializer, name="depthwise_weights"):
    """A [k, k, channels, 1] kernel for a depthwise convolution (multiplier 1) over `inputs`.

    Args:
      inputs: the tensor the convolution will read.
      kernel_size: side of the square kernel.
      initializer: the kernel's initializer.
      name: the variable's name ("depthwise_weights" for TF-Slim, "depthwise_kernel" for Keras).

    Returns:
      The kernel variable.
    """
    return model_variable(name, [kernel_size, kernel_size, int(inputs.shape[-1]), 1], initializer)


def conv_op(stride, padding="SAME"):
    """The function (inputs, kernel) -> tf.nn.conv2d output, for a given stride and padding."""
    return lambda inputs, kernel: tf.nn.conv2d(inputs, kernel, strides=[1, stride, stride, 1], padding=padding)


def depthwise_op(stride, padding="SAME"):
    """The function (inputs, kernel) -> tf.nn.depthwise_conv2d output."""
    return lambda inputs, kernel: tf.nn.depthwise_conv2d(
        inputs, kernel, strides=[1, stride, stride, 1], padding=padding
    )


def conv2d(inputs, filters, kernel_size, stride, initializer, padding="SAME", name="weights"):
    """A 2-D convolution without bias over a new `conv_kernel`.

    Args:
      inputs: float32 tensor [batch, height, width, channels].
      filters: output channels.
      kernel_size: side of the square kernel.
      stride: stride in both spatial dimensions.
      initializer: the kernel's initializer.
      padding: "SAME" or "VALID", as tf.nn.conv2d takes it.
      name: the kernel variable's name.

    Returns:
      The convolution's output.
    """
    kernel = conv_kernel(inputs, filters, kernel_size, initializer, name)
    return conv_op(stride, padding)(inputs, kernel)


def bias_add(inputs, name="biases"):
    """Adds a zero-initialised bias over the last dimension."""
    bias = model_variable(name, [int(inputs.shape[-1])], v1.zeros_initializer())
    return tf.nn.bias_add(inputs, bias)


def dropout(inputs, keep_prob, is_training, name):
    """Dropout that is the identity unless the layer is in training mode.

    Args:
      inputs: the tensor.
      keep_prob: fraction of units kept in training mode; 1 disables dropout.
      is_training: see `layer_training`.
      name: the layer's scope name, e.g. "dropout6", which `is_training` receives in full.

    Returns:
      The tensor, with dropout applied in training mode.
    """
    training = layer_training(is_training, full_scope(name))
    if keep_prob >= 1.0 or training is False:
        return inputs
    with tf.name_scope(name):
        dropped = tf.nn.dropout(inputs, rate=1.0 - keep_prob)
        if training is True:
            return dropped
        return tf.cond(training, lambda: dropped, lambda: inputs)


def global_average_pool(inputs, name="pool"):
    """The mean over height and width, kept as [batch, 1, 1, channels]."""
    return tf.reduce_mean(inputs, axis=[1, 2], keepdims=True, name=name)


def with_predictions(logits, end_points, logits_name, predictions_name):
    """Records a builder's logits and their softmax under its end-point names.

    Args:
      logits: the [batch, classes] logits.
      end_points: the builder's end-point dict, extended in place.
      logits_name: the end point of the logits ("logits", TF-Slim's "Logits").
      predictions_name: the end point, and the op name, of the softmax.

    Returns:
      (logits, end_points), what the builder returns.
    """
    end_points[logits_name] = logits
    end_points[predictions_name] = tf.nn.softmax(logits, name=predictions_name)
    return logits, end_points
