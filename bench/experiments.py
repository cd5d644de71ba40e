"""Candidate speed-ups, timed beside our step with `python -m bench.throughput --experiment NAME`.

subpixel: every stride-2 "backward-data" convolution of the autoencoder step, computed
  as a stride-1 convolution followed by `depth_to_space` (a sub-pixel convolution)
  instead of oneDNN's backward-data kernel. These are the forward passes of dconv1 and
  dconv2 (`tf.nn.conv2d_transpose`) and the input gradient of conv2. The profile shows
  why: dconv2's forward pass (16 -> 1 channels) is the slowest single op of the step
  although it holds 1.8% of its multiply-adds. The layers keep their variables
  (`<scope>/kernel`, `<scope>/bias`, same shapes), so checkpoints are unaffected, and
  their outputs and gradients equal the originals up to float rounding (checked by
  `check_subpixel` at every run of the experiment).

How the rewrite works, for stride 2 and SAME padding: output row p = 2m + a (phase
a in {0, 1}) receives input row i through kernel row u = a + P + 2(m - i), where
P = max(k - 2, 0) // 2 is the padding before the forward convolution that the transposed
convolution inverts. So every phase is a stride-1 correlation over input rows
m - r .. m + r whose taps are kernel rows u(t) = a + P + 2r - 2t (no tap where u falls
outside the kernel). The four (row, column) phases become four groups of output
channels of one stride-1 convolution, and depth_to_space(2) interleaves them into the
2x larger output. For k = 5 the window is 3x3 and the taps are kernel rows (3, 1, -)
for a = 0 and (4, 2, 0) for a = 1.

Only the forward computation changes: gradients are given explicitly (tf.custom_gradient)
as the ops TensorFlow's own gradients use, because autodiff through the sub-pixel form
would bring back a backward-data convolution.
"""

import contextlib

import numpy as np
import tensorflow as tf

from bench.contenders import OursAutoencoder
from models import layers

v1 = tf.compat.v1

STRIDES = [1, 2, 2, 1]
_ORIGINAL = {"conv2d": layers.conv2d, "conv2d_transpose": layers.conv2d_transpose}


def _phase_taps(kernel_size):
    """Window radius r and, per phase, the kernel index of each of the 2r + 1 taps (kernel_size = no tap)."""
    pad_before = max(kernel_size - 2, 0) // 2  # SAME padding before a stride-2 conv over an even size
    offsets = [d for a in (0, 1) for d in range(-kernel_size, kernel_size + 1) if 0 <= a + pad_before + 2 * d < kernel_size]
    radius = max(abs(d) for d in offsets)
    taps = []
    for a in (0, 1):
        row = [a + pad_before + 2 * radius - 2 * t for t in range(2 * radius + 1)]
        taps.append([u if 0 <= u < kernel_size else kernel_size for u in row])
    return radius, taps


def subpixel_indices(kernel_size, filters, in_channels):
    """Where each element of the stride-1 kernel comes from in the flattened transposed-conv kernel.

    Returns:
      int32 array [2r+1, 2r+1, in_channels, 4 * filters] of indices into the
      [k, k, filters, in_channels] kernel flattened and followed by one zero (index
      k*k*filters*in_channels). Output channel (2a + b) * filters + c holds phase (a, b)
      of channel c, the order depth_to_space expects.
    """
    _, taps = _phase_taps(kernel_size)
    zero = kernel_size * kernel_size * filters * in_channels
    width = len(taps[0])
    indices = np.empty([width, width, in_channels, 4 * filters], np.int32)
    channel = np.arange(filters)[np.newaxis, :]
    source = np.arange(in_channels)[:, np.newaxis]
    for a in (0, 1):
        for b in (0, 1):
            for th, u in enumerate(taps[a]):
                for tw, v in enumerate(taps[b]):
                    inside = u < kernel_size and v < kernel_size
                    flat = ((u * kernel_size + v) * filters + channel) * in_channels + source
                    indices[th, tw, :, (2 * a + b) * filters : (2 * a + b + 1) * filters] = flat if inside else zero
    return indices


def subpixel_kernel(kernel, kernel_size):
    """[k, k, filters, in] transposed-conv kernel -> [2r+1, 2r+1, in, 4 * filters] stride-1 kernel.

    One gather (whose gradient is one segment sum), not per-phase slices and
    transposes: on kernels this small every op costs more than its arithmetic.
    """
    filters, in_channels = int(kernel.shape[2]), int(kernel.shape[3])
    flat = tf.concat([tf.reshape(kernel, [-1]), tf.zeros([1], kernel.dtype)], axis=0)
    return tf.gather(flat, subpixel_indices(kernel_size, filters, in_channels))


def transpose_by_subpixel(inputs, kernel, kernel_size):
    """`tf.nn.conv2d_transpose(inputs, kernel, 2x size, strides 2, SAME)`, forward by sub-pixel convolution.

    The gradient is the one TensorFlow registers for Conv2DBackpropInput: a stride-2
    Conv2D for the input, Conv2DBackpropFilter for the kernel.
    """

    @tf.custom_gradient
    def transpose(inputs, kernel):
        net = tf.nn.conv2d(inputs, subpixel_kernel(kernel, kernel_size), strides=1, padding="SAME")

        def gradient(upstream):
            d_inputs = tf.nn.conv2d(upstream, kernel, strides=STRIDES, padding="SAME")
            d_kernel = v1.nn.conv2d_backprop_filter(upstream, tf.shape(kernel), inputs, strides=STRIDES, padding="SAME")
            return d_inputs, d_kernel

        return tf.nn.depth_to_space(net, 2), gradient

    return transpose(inputs, tf.convert_to_tensor(kernel))


def strided_conv(inputs, kernel, kernel_size):
    """`tf.nn.conv2d(inputs, kernel, strides 2, SAME)` whose input gradient is a sub-pixel convolution.

    The input gradient of a stride-2 convolution is the transposed convolution with the
    same kernel array ([k, k, in, out] read as [k, k, filters, in_channels]).
    """

    @tf.custom_gradient
    def conv(inputs, kernel):
        def gradient(upstream):
            d_inputs = transpose_by_subpixel(upstream, kernel, kernel_size)
            d_kernel = v1.nn.conv2d_backprop_filter(inputs, tf.shape(kernel), upstream, strides=STRIDES, padding="SAME")
            return d_inputs, d_kernel

        return tf.nn.conv2d(inputs, kernel, strides=STRIDES, padding="SAME"), gradient

    return conv(inputs, tf.convert_to_tensor(kernel))


def subpixel_conv2d(inputs, filters, kernel_size, strides, scope, activation=None, trainable=True):
    """Drop-in for `models.layers.conv2d` (stride 2 with even input sides; anything else uses the original)."""
    _, height, width, in_channels = inputs.shape.as_list()
    if strides != 2 or height is None or width is None or height % 2 or width % 2:
        return _ORIGINAL["conv2d"](inputs, filters, kernel_size, strides, scope, activation, trainable)
    with v1.variable_scope(scope):
        kernel, bias = layers._weights([kernel_size, kernel_size, in_channels, filters], filters, trainable)
        net = strided_conv(inputs, kernel, kernel_size)
        net.set_shape([inputs.shape[0], height // 2, width // 2, filters])
        return layers._activate(tf.nn.bias_add(net, bias), activation)


def subpixel_conv2d_transpose(inputs, filters, kernel_size, strides, scope, activation=None, trainable=True):
    """Drop-in for `models.layers.conv2d_transpose` (stride 2; other strides use the original)."""
    if strides != 2:
        return _ORIGINAL["conv2d_transpose"](inputs, filters, kernel_size, strides, scope, activation, trainable)
    _, height, width, in_channels = inputs.shape.as_list()
    with v1.variable_scope(scope):
        kernel, bias = layers._weights([kernel_size, kernel_size, filters, in_channels], filters, trainable)
        net = transpose_by_subpixel(inputs, kernel, kernel_size)
        net.set_shape([inputs.shape[0], 2 * height, 2 * width, filters])
        return layers._activate(tf.nn.bias_add(net, bias), activation)


@contextlib.contextmanager
def patched_layers():
    """Models built inside the block use the sub-pixel layers (the builders look them up in models.layers)."""
    layers.conv2d, layers.conv2d_transpose = subpixel_conv2d, subpixel_conv2d_transpose
    try:
        yield
    finally:
        layers.conv2d, layers.conv2d_transpose = _ORIGINAL["conv2d"], _ORIGINAL["conv2d_transpose"]


def check_subpixel(batch=4, seed=0):
    """Largest relative difference from the original layers (outputs, input and kernel gradients) at the CAE's shapes."""
    rng = np.random.default_rng(seed)
    cases = (
        ("conv2d", (batch, 28, 28, 1), 16),
        ("conv2d", (batch, 14, 14, 16), 32),
        ("conv2d_transpose", (batch, 7, 7, 32), 16),
        ("conv2d_transpose", (batch, 14, 14, 16), 1),
    )
    candidates = {"conv2d": subpixel_conv2d, "conv2d_transpose": subpixel_conv2d_transpose}
    worst = 0.0
    for name, in_shape, filters in cases:
        graph = tf.Graph()
        with graph.as_default():
            inputs = tf.constant(rng.random(in_shape, dtype=np.float32))
            outputs = [_ORIGINAL[name](inputs, filters, 5, 2, "reference"), candidates[name](inputs, filters, 5, 2, "candidate")]
            ref_kernel, cand_kernel = (var for var in v1.global_variables() if var.op.name.endswith("/kernel"))
            weights = tf.constant(rng.standard_normal(outputs[0].shape.as_list()).astype(np.float32))
            grads = [tf.gradients(tf.reduce_sum(out * weights), [inputs, kernel]) for out, kernel in zip(outputs, (ref_kernel, cand_kernel))]
            with v1.Session(graph=graph) as sess:
                sess.run(v1.global_variables_initializer())
                sess.run(cand_kernel.assign(ref_kernel))
                (out_a, out_b), (dx_a, dk_a), (dx_b, dk_b) = sess.run([outputs] + grads)
        for a, b in ((out_a, out_b), (dx_a, dx_b), (dk_a, dk_b)):
            worst = max(worst, float(np.abs(a - b).max() / np.abs(a).max()))
    return worst


class SubpixelAutoencoder(OursAutoencoder):
    """Our autoencoder step (same wiring) built with the sub-pixel layers."""

    def _build(self):
        with patched_layers():
            super()._build()
