"""Layers built from `tf.compat.v1.get_variable` and `tf.nn` ops.

Each layer creates exactly the variables that TF1's `tf.compat.v1.layers` would:
`<scope>/kernel` (glorot-uniform) and `<scope>/bias` (zeros), with the same shapes,
so checkpoints move between classic TF1 code and this package in both directions.
`tf.compat.v1.layers` itself is gone under Keras 3 (TensorFlow >= 2.16).

Variables are resource variables and are added to the MODEL_VARIABLES collection,
which is how the transfer code tells model weights from optimizer slots and counters.
"""

import tensorflow as tf

v1 = tf.compat.v1

# Where every layer variable goes: global (saved, initialised) and model (selectable).
MODEL_COLLECTIONS = (v1.GraphKeys.GLOBAL_VARIABLES, v1.GraphKeys.MODEL_VARIABLES)


def _weights(kernel_shape, bias_size, trainable):
    """Creates `kernel` and `bias` in the current variable scope."""
    kernel = v1.get_variable(
        "kernel",
        shape=kernel_shape,
        dtype=tf.float32,
        initializer=v1.glorot_uniform_initializer(),
        trainable=trainable,
        collections=list(MODEL_COLLECTIONS),
        use_resource=True,
    )
    bias = v1.get_variable(
        "bias",
        shape=[bias_size],
        dtype=tf.float32,
        initializer=v1.zeros_initializer(),
        trainable=trainable,
        collections=list(MODEL_COLLECTIONS),
        use_resource=True,
    )
    return kernel, bias


def _activate(x, activation):
    return x if activation is None else activation(x)


def conv2d(inputs, filters, kernel_size, strides, scope, activation=None, trainable=True):
    """A SAME-padded 2-D convolution, like `tf.compat.v1.layers.conv2d`.

    Args:
      inputs: float32 tensor [batch, height, width, channels].
      filters: number of output channels.
      kernel_size: side of the square kernel.
      strides: stride in both spatial dimensions.
      scope: variable scope name, e.g. "conv1".
      activation: optional elementwise function applied last.
      trainable: whether the variables join TRAINABLE_VARIABLES.

    Returns:
      The output tensor [batch, ceil(height / strides), ceil(width / strides), filters].
    """
    in_channels = int(inputs.shape[-1])
    with v1.variable_scope(scope):
        kernel, bias = _weights([kernel_size, kernel_size, in_channels, filters], filters, trainable)
        net = tf.nn.conv2d(inputs, kernel, strides=[1, strides, strides, 1], padding="SAME")
        return _activate(tf.nn.bias_add(net, bias), activation)


def conv2d_transpose(inputs, filters, kernel_size, strides, scope, activation=None, trainable=True):
    """A SAME-padded transposed convolution, like `tf.compat.v1.layers.conv2d_transpose`.

    The kernel is [k, k, filters, in_channels]: output channels before input
    channels, as TF1 stores it.

    Args:
      inputs: float32 tensor [batch, height, width, channels] with static height and width.
      filters: number of output channels.
      kernel_size: side of the square kernel.
      strides: upsampling factor in both spatial dimensions.
      scope: variable scope name, e.g. "dconv1".
      activation: optional elementwise function applied last.
      trainable: whether the variables join TRAINABLE_VARIABLES.

    Returns:
      The output tensor [batch, height * strides, width * strides, filters].
    """
    _, height, width, in_channels = inputs.shape.as_list()
    out_height, out_width = height * strides, width * strides
    with v1.variable_scope(scope):
        kernel, bias = _weights([kernel_size, kernel_size, filters, in_channels], filters, trainable)
        output_shape = tf.stack([tf.shape(inputs)[0], out_height, out_width, filters])
        net = tf.nn.conv2d_transpose(
            inputs, kernel, output_shape, strides=[1, strides, strides, 1], padding="SAME"
        )
        net.set_shape([inputs.shape[0], out_height, out_width, filters])
        return _activate(tf.nn.bias_add(net, bias), activation)


def dense(inputs, units, scope, activation=None, trainable=True):
    """A fully-connected layer, like `tf.compat.v1.layers.dense` on a 2-D input.

    Args:
      inputs: float32 tensor [batch, features].
      units: number of outputs.
      scope: variable scope name, e.g. "fc1".
      activation: optional elementwise function applied last.
      trainable: whether the variables join TRAINABLE_VARIABLES.

    Returns:
      The output tensor [batch, units].
    """
    in_features = int(inputs.shape[-1])
    with v1.variable_scope(scope):
        kernel, bias = _weights([in_features, units], units, trainable)
        return _activate(tf.nn.bias_add(tf.matmul(inputs, kernel), bias), activation)
