"""EfficientNet-Lite0 with the variable names of the TensorFlow release
(tensorflow/tpu models/official/efficientnet/lite, `efficientnet-lite0` checkpoints).

247 variables under `efficientnet-lite0`: `stem/conv2d/kernel` [3, 3, 3, 32] and
`stem/tpu_batch_normalization`; sixteen MBConv blocks `blocks_{0..15}`, each an
optional 1x1 expansion `conv2d` (absent in blocks_0, whose expansion ratio is 1), a
`depthwise_conv2d/depthwise_kernel` [k, k, C, 1] and a 1x1 projection (`conv2d_1`, or
`conv2d` in blocks_0), every convolution without bias and followed by a
`tpu_batch_normalization[_N]` layer numbered in call order (Keras's naming); then
`head/conv2d/kernel` [1, 1, 320, 1280], `head/tpu_batch_normalization` and
`head/dense/{kernel,bias}` [1280, classes].

The Lite variant: relu6, no squeeze-and-excitation, stem and head not scaled, TF
'SAME' padding, BatchNorm momentum 0.99 and epsilon 1e-3, input (x - 127) / 128.
Stochastic depth (drop connect) of the release is not built: it only matters when the
blocks are fine-tuned, and the residual sum is the same in inference mode.
"""

import tensorflow as tf

from models import net_ops
from models.batch_norm import Norm, conv_batch_norm

v1 = tf.compat.v1

SCOPE = "efficientnet-lite0"
# The release's block strings r{repeats}_k{kernel}_s{stride}_e{expand}_i{in}_o{out}.
BLOCK_GROUPS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BATCH_NORM_DECAY = 0.99
BATCH_NORM_EPSILON = 1e-3
NUM_CLASSES = 1000
DEFAULT_IMAGE_SIZE = 224


def block_specs():
    """(kernel, stride, expand ratio, in filters, out filters) of blocks_0..blocks_15."""
    specs = []
    for repeats, kernel, stride, expand, filters_in, filters_out in BLOCK_GROUPS:
        for repeat in range(repeats):
            specs.append(
                (kernel, stride if repeat == 0 else 1, expand, filters_in if repeat == 0 else filters_out, filters_out)
            )
    return specs


def _conv_initializer():
    # The release's conv_kernel_initializer: normal with stddev sqrt(2 / fan_out).
    return v1.variance_scaling_initializer(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _dense_initializer():
    # The release's dense_kernel_initializer: uniform in +-1/sqrt(units).
    return v1.variance_scaling_initializer(scale=1.0 / 3.0, mode="fan_out", distribution="uniform")


class _Numbering:
    """Keras-style layer names within one block: conv2d, conv2d_1, ...; tpu_batch_normalization, ..._1, ..."""

    def __init__(self):
        self._counts = {}

    def __call__(self, base):
        count = self._counts.get(base, 0)
        self._counts[base] = count + 1
        return base if count == 0 else f"{base}_{count}"


def _conv_bn(net, filters, kernel_size, stride, names, is_training, updates):
    """A convolution (filters None: a depthwise one) and its BatchNorm, named in Keras's call order."""
    depthwise = filters is None
    with v1.variable_scope(names("depthwise_conv2d" if depthwise else "conv2d")):
        if depthwise:
            kernel = net_ops.depthwise_kernel(net, kernel_size, _conv_initializer(), name="depthwise_kernel")
        else:
            kernel = net_ops.conv_kernel(net, filters, kernel_size, _conv_initializer(), name="kernel")
    conv = (net_ops.depthwise_op if depthwise else net_ops.conv_op)(stride)
    norm = Norm(BATCH_NORM_DECAY, BATCH_NORM_EPSILON, scope=names("tpu_batch_normalization"), gamma_first=True)
    return conv_batch_norm(conv, kernel, net, is_training, updates, norm, depthwise)


def _mbconv(inputs, spec, is_training, updates):
    kernel, stride, expand, filters_in, filters_out = spec
    names = _Numbering()
    net = inputs
    if expand != 1:
        net = tf.nn.relu6(_conv_bn(net, filters_in * expand, 1, 1, names, is_training, updates))
    net = tf.nn.relu6(_conv_bn(net, None, kernel, stride, names, is_training, updates))
    net = _conv_bn(net, filters_out, 1, 1, names, is_training, updates)
    if stride == 1 and filters_in == filters_out:
        net = net + inputs
    return net


def efficientnet_lite0(images, num_classes=NUM_CLASSES, is_training=False, dropout_keep_prob=0.8, scope=SCOPE):
    """Builds EfficientNet-Lite0 into the current graph.

    Args:
      images: float32 tensor [batch, height, width, 3], (RGB - 127) / 128. Any size
        from 32x32 works; 224x224 is what the weights were trained on.
      num_classes: width of head/dense; None stops at the global average pool.
      is_training: BatchNorm and dropout mode per layer: a bool, a bool tensor or a
        callable of the layer's scope name (see models.batch_norm).
      dropout_keep_prob: fraction of pooled features kept in training mode (the
        release's dropout_rate is 0.2).
      scope: the outer variable scope.

    Returns:
      (net, end_points): net is the logits [batch, num_classes], or the pooled features
      [batch, 1280] when num_classes is None. end_points maps "stem", "block_{N}",
      "head" (before pooling), "features", "logits" and "predictions" to tensors, and
      "batch_norm_updates" to the {BatchNorm scope: update op} dict of the layers in
      training mode.
    """
    updates = {}
    end_points = {}
    with v1.variable_scope(scope):
        with v1.variable_scope("stem"):
            net = tf.nn.relu6(_conv_bn(images, STEM_FILTERS, 3, 2, _Numbering(), is_training, updates))
        end_points["stem"] = net
        for index, spec in enumerate(block_specs()):
            with v1.variable_scope(f"blocks_{index}"):
                net = _mbconv(net, spec, is_training, updates)
            end_points[f"block_{index}"] = net
        with v1.variable_scope("head"):
            net = tf.nn.relu6(_conv_bn(net, HEAD_FILTERS, 1, 1, _Numbering(), is_training, updates))
            end_points["head"] = net
            net = tf.squeeze(net_ops.global_average_pool(net, "pool"), [1, 2], name="features")
            end_points["features"] = net
            end_points["batch_norm_updates"] = updates
            if num_classes is None:
                return net, end_points
            logits = _logits(net, num_classes, is_training, dropout_keep_prob)
        return net_ops.with_predictions(logits, end_points, "logits", "predictions")


def _logits(net, num_classes, is_training, dropout_keep_prob):
    net = net_ops.dropout(net, dropout_keep_prob, is_training, "dropout")
    with v1.variable_scope("dense"):
        kernel = net_ops.model_variable("kernel", [HEAD_FILTERS, num_classes], _dense_initializer())
        bias = net_ops.model_variable("bias", [num_classes], v1.zeros_initializer())
        return tf.nn.bias_add(tf.matmul(net, kernel), bias, name="logits")


def head(features, num_classes, is_training=False, dropout_keep_prob=0.8, scope=SCOPE):
    """The dropout and dense layers alone, over pooled features [batch, 1280]: the builder's variables."""
    with v1.variable_scope(scope), v1.variable_scope("head"):
        return _logits(features, num_classes, is_training, dropout_keep_prob)
