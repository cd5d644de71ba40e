"""MobileNet v1 (depth multiplier 1.0) with the variables of TF-Slim's model-zoo checkpoint
`mobilenet_v1_1.0_224.ckpt` (tensorflow/models research/slim/nets/mobilenet_v1.py).

137 variables under `MobilenetV1`: `Conv2d_0/weights` [3, 3, 3, 32], then thirteen
depthwise-separable pairs `Conv2d_{n}_depthwise/depthwise_weights` [3, 3, C, 1] and
`Conv2d_{n}_pointwise/weights` [1, 1, C, D], each convolution without bias and followed
by BatchNorm (decay 0.9997, epsilon 1e-3) and relu6, then
`Logits/Conv2d_1c_1x1/{weights,biases}` [1, 1, 1024, 1001]: 1001 classes, 0 is
"background". All convolutions are SAME-padded, as in TF-Slim.
"""

import tensorflow as tf

from models import net_ops
from models.batch_norm import Norm, conv_batch_norm

v1 = tf.compat.v1

SCOPE = "MobilenetV1"
# (stride, output depth) of Conv2d_0 (a full 3x3 conv) and of Conv2d_1..13 (separable).
LAYERS = (
    (2, 32),
    (1, 64),
    (2, 128),
    (1, 128),
    (2, 256),
    (1, 256),
    (2, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (1, 512),
    (2, 1024),
    (1, 1024),
)
BATCH_NORM_DECAY = 0.9997
BATCH_NORM_EPSILON = 1e-3
NORM = Norm(BATCH_NORM_DECAY, BATCH_NORM_EPSILON)
NUM_CLASSES = 1001
DEFAULT_IMAGE_SIZE = 224


def _initializer():
    # TF-Slim mobilenet_v1_arg_scope's weights initializer.
    return v1.truncated_normal_initializer(stddev=0.09)


def _conv_bn_relu6(net, depth, kernel_size, stride, is_training, updates):
    """A convolution (depth None: a depthwise one) with BatchNorm and relu6, in the current scope."""
    if depth is None:
        kernel, conv = net_ops.depthwise_kernel(net, kernel_size, _initializer()), net_ops.depthwise_op(stride)
    else:
        kernel, conv = net_ops.conv_kernel(net, depth, kernel_size, _initializer()), net_ops.conv_op(stride)
    net = conv_batch_norm(conv, kernel, net, is_training, updates, NORM, depthwise=depth is None)
    return tf.nn.relu6(net)


def mobilenet_v1(images, num_classes=NUM_CLASSES, is_training=False, dropout_keep_prob=0.999, scope=SCOPE):
    """Builds MobileNet v1 1.0 into the current graph.

    Args:
      images: float32 tensor [batch, height, width, 3] scaled to [-1, 1]. Any size from
        32x32 works; 224x224 is what the weights were trained on.
      num_classes: width of the logits layer (1001 for the model-zoo weights); None stops
        at the average pool.
      is_training: BatchNorm and dropout mode per layer: a bool, a bool tensor or a
        callable of the layer's scope name (see models.batch_norm).
      dropout_keep_prob: fraction of pooled features kept in training mode.
      scope: the outer variable scope.

    Returns:
      (net, end_points): net is the logits [batch, num_classes], or the pooled features
      [batch, 1024] when num_classes is None. end_points holds TF-Slim's names
      ("Conv2d_0", "Conv2d_1_depthwise", "Conv2d_1_pointwise", ..., "AvgPool_1a",
      "Logits", "Predictions"), "features", and "batch_norm_updates" (the
      {BatchNorm scope: update op} dict of the layers in training mode).

    Notes:
      TF-Slim pools with a 7x7 VALID window reduced to the map's size; we take the mean
      over the whole map, which is the same at 224x224 and below and stays [1, 1] above.
    """
    updates = {}
    end_points = {}
    with v1.variable_scope(scope):
        net = images
        for index, (stride, depth) in enumerate(LAYERS):
            if index == 0:
                with v1.variable_scope("Conv2d_0"):
                    net = _conv_bn_relu6(net, depth, 3, stride, is_training, updates)
                end_points["Conv2d_0"] = net
                continue
            with v1.variable_scope(f"Conv2d_{index}_depthwise"):
                net = _conv_bn_relu6(net, None, 3, stride, is_training, updates)
            end_points[f"Conv2d_{index}_depthwise"] = net
            with v1.variable_scope(f"Conv2d_{index}_pointwise"):
                net = _conv_bn_relu6(net, depth, 1, 1, is_training, updates)
            end_points[f"Conv2d_{index}_pointwise"] = net
        with v1.variable_scope("Logits"):
            net = net_ops.global_average_pool(net, "AvgPool_1a")
            end_points["AvgPool_1a"] = net
            end_points["features"] = tf.squeeze(net, [1, 2], name="features")
            end_points["batch_norm_updates"] = updates
            if num_classes is None:
                return end_points["features"], end_points
            logits = _logits(net, num_classes, is_training, dropout_keep_prob)
        return net_ops.with_predictions(logits, end_points, "Logits", "Predictions")


def _logits(net, num_classes, is_training, dropout_keep_prob):
    net = net_ops.dropout(net, dropout_keep_prob, is_training, "Dropout_1b")
    with v1.variable_scope("Conv2d_1c_1x1"):
        logits = net_ops.bias_add(net_ops.conv2d(net, num_classes, 1, 1, _initializer()))
    return tf.squeeze(logits, [1, 2], name="SpatialSqueeze")


def head(features, num_classes, is_training=False, dropout_keep_prob=0.999, scope=SCOPE):
    """Dropout_1b and Conv2d_1c_1x1 alone, over pooled features [batch, 1024]: `mobilenet_v1`'s variables."""
    with v1.variable_scope(scope), v1.variable_scope("Logits"):
        return _logits(features[:, None, None, :], num_classes, is_training, dropout_keep_prob)
