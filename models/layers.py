"""Layers built from `tf.compat.v1.get_variable` and `tf.nn` ops.

Each layer creates exactly the variables that TF1's `tf.compat.v1.layers` would:
`<scope>/kernel` (glorot-uniform) and `<scope>/bias` (zeros), with the same shapes,
so checkpoints move between classic TF1 code and this package in both directions.
`tf.compat.v1.layers` itself is gone under Keras 3 (TensorFlow >= 2.16).

Variables are resource variables and are added to the MODEL_VARIABLES collection,
which is how the transfer code tells model weights from optimizer slots and counters.

Stride-2 transposed convolutions run as sub-pixel convolutions (see
`conv2d_transpose`): same variables, same values up to float rounding, faster.
"""

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1

# How conv2d_transpose computes its forward pass (the variables are the same for both).
TRANSPOSE_IMPLEMENTATIONS = ("subpixel", "transpose")

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


def _subpixel_taps(kernel_size):
    """Per output phase (0, 1), the transposed-conv kernel row behind each tap of the stride-1 window.

    For stride 2 and SAME padding, output row 2m + a gets input row i through kernel
    row a + P + 2(m - i), P = max(k - 2, 0) // 2 being the padding before the forward
    convolution this one transposes. Over a window of input rows m - r .. m + r, tap t
    reads kernel row a + P + 2r - 2t; rows outside the kernel are None (a zero tap).
    """
    pad_before = max(kernel_size - 2, 0) // 2
    radius = max(
        abs(d)
        for a in (0, 1)
        for d in range(-kernel_size, kernel_size + 1)
        if 0 <= a + pad_before + 2 * d < kernel_size
    )
    rows = [[a + pad_before + 2 * radius - 2 * t for t in range(2 * radius + 1)] for a in (0, 1)]
    return [[u if 0 <= u < kernel_size else None for u in phase] for phase in rows]


def subpixel_kernel_indices(kernel_size, filters, in_channels):
    """Where each element of the stride-1 sub-pixel kernel comes from.

    Returns:
      int32 array [w, w, in_channels, 4 * filters] (w = window side) of indices into
      the [k, k, filters, in_channels] transposed-conv kernel flattened, with one zero
      appended at index k*k*filters*in_channels for the taps outside the kernel. Output
      channel (2a + b) * filters + c is phase (row a, column b) of channel c: the order
      `tf.nn.depth_to_space` interleaves.
    """
    taps = _subpixel_taps(kernel_size)
    width = len(taps[0])
    zero = kernel_size * kernel_size * filters * in_channels
    indices = np.full([width, width, in_channels, 4 * filters], zero, np.int32)
    channel = np.arange(filters)[np.newaxis, :]
    source = np.arange(in_channels)[:, np.newaxis]
    for a in (0, 1):
        for b in (0, 1):
            group = slice((2 * a + b) * filters, (2 * a + b + 1) * filters)
            for th, u in enumerate(taps[a]):
                for tw, v in enumerate(taps[b]):
                    if u is not None and v is not None:
                        indices[th, tw, :, group] = ((u * kernel_size + v) * filters + channel) * in_channels + source
    return indices


def subpixel_transpose(inputs, kernel, bias, relu=False):
    """`tf.nn.conv2d_transpose(inputs, kernel, 2x the size, stride 2, SAME)` plus `bias` (then a
    relu, if asked) as a sub-pixel convolution.

    The four output phases become four groups of output channels of one stride-1
    convolution over a small window, and depth_to_space interleaves them. On oneDNN the
    stride-2 backward-data kernel behind conv2d_transpose is the slowest op of the
    autoencoder step (dconv2, 16 channels to 1, most of all); the stride-1 forward
    convolution is not. The bias (tiled to the four phases) and the relu come before the
    interleaving, right after the convolution, where grappler fuses them into it.

    The gradient is the one TensorFlow registers for conv2d_transpose (a stride-2 conv
    for the inputs, Conv2DBackpropFilter for the kernel), given explicitly: autodiff
    through the sub-pixel form would bring a backward-data convolution back.

    Args:
      inputs: float32 [batch, height, width, in_channels].
      kernel: float32 [k, k, filters, in_channels], the transposed-conv kernel.
      bias: float32 [filters].
      relu: whether a relu follows the bias.

    Returns:
      float32 [batch, 2 * height, 2 * width, filters].
    """
    kernel_size, _, filters, in_channels = kernel.shape.as_list()
    indices = subpixel_kernel_indices(kernel_size, filters, in_channels)
    strides = [1, 2, 2, 1]

    @tf.custom_gradient
    def transpose(inputs, kernel, bias):
        # One gather (its gradient one segment sum), not slices per phase: on kernels
        # this small every extra op costs more than its arithmetic.
        flat = tf.concat([tf.reshape(kernel, [-1]), tf.zeros([1], kernel.dtype)], axis=0)
        net = tf.nn.conv2d(inputs, tf.gather(flat, indices), strides=1, padding="SAME")
        net = tf.nn.bias_add(net, tf.tile(bias, [4]))  # channel (2a + b) * filters + c has bias c
        outputs = tf.nn.depth_to_space(tf.nn.relu(net) if relu else net, 2)

        def gradient(upstream):
            if relu:  # an output above zero is a pre-activation above zero
                upstream = tf.raw_ops.ReluGrad(gradients=upstream, features=outputs)
            d_inputs = tf.nn.conv2d(upstream, kernel, strides=strides, padding="SAME")
            d_kernel = v1.nn.conv2d_backprop_filter(upstream, tf.shape(kernel), inputs, strides=strides, padding="SAME")
            # A plain sum: as fast as BiasAddGrad over dconv1's 16 channels (0.35 against 0.41 ms
            # at batch 256), much faster over dconv2's one (0.5 against 3.6 ms).
            return d_inputs, d_kernel, tf.reduce_sum(upstream, [0, 1, 2])

        return outputs, gradient

    return transpose(inputs, tf.convert_to_tensor(kernel), tf.convert_to_tensor(bias))


def conv2d_transpose(
    inputs, filters, kernel_size, strides, scope, activation=None, trainable=True, implementation="subpixel"
):
    """A SAME-padded transposed convolution, like `tf.compat.v1.layers.conv2d_transpose`.

    The kernel is [k, k, filters, in_channels]: output channels before input
    channels, as TF1 stores it. At stride 2 the forward pass is a sub-pixel
    convolution (`subpixel_transpose`): the same function of the same variables, up to
    float rounding, and faster; other strides use tf.nn.conv2d_transpose.

    Args:
      inputs: float32 tensor [batch, height, width, channels] with static height and width.
      filters: number of output channels.
      kernel_size: side of the square kernel.
      strides: upsampling factor in both spatial dimensions.
      scope: variable scope name, e.g. "dconv1".
      activation: optional elementwise function applied last.
      trainable: whether the variables join TRAINABLE_VARIABLES.
      implementation: "subpixel" (used at stride 2) or "transpose" (always
        tf.nn.conv2d_transpose, the reference the tests and the benchmark compare with).

    Returns:
      The output tensor [batch, height * strides, width * strides, filters].

    Raises:
      ValueError: for an implementation not in TRANSPOSE_IMPLEMENTATIONS.
    """
    if implementation not in TRANSPOSE_IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {implementation!r}; choose one of {TRANSPOSE_IMPLEMENTATIONS}")
    _, height, width, in_channels = inputs.shape.as_list()
    out_height, out_width = height * strides, width * strides
    with v1.variable_scope(scope):
        kernel, bias = _weights([kernel_size, kernel_size, filters, in_channels], filters, trainable)
        if implementation == "subpixel" and strides == 2:
            fused_relu = activation is tf.nn.relu
            net = subpixel_transpose(inputs, kernel, bias, relu=fused_relu)
            net.set_shape([inputs.shape[0], out_height, out_width, filters])
            return net if fused_relu else _activate(net, activation)
        output_shape = tf.stack([tf.shape(inputs)[0], out_height, out_width, filters])
        net = tf.nn.conv2d_transpose(inputs, kernel, output_shape, strides=[1, strides, strides, 1], padding="SAME")
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
