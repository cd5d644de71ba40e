"""ResNet-50 v1 with the variables of TF-Slim's model-zoo checkpoint `resnet_v1_50.ckpt`.

267 variables: `resnet_v1_50/conv1/weights` [7, 7, 3, 64] and its BatchNorm, then four
blocks of bottleneck units, `block{1..4}/unit_{k}/bottleneck_v1/{shortcut,conv1,conv2,conv3}`,
each a convolution without bias followed by BatchNorm (beta, gamma, moving_mean,
moving_variance), then `logits/{weights,biases}` [1, 1, 2048, classes]. As in TF-Slim,
a block's stride is in its last unit, strided 3x3 convolutions pad explicitly then run
VALID, and pool1 is a 3x3/2 SAME max pool. BatchNorm: decay 0.997, epsilon 1e-5 (raised
to 1.001e-5 by the fused kernel, as in TF-Slim's fused path).
"""

import tensorflow as tf

from models import net_ops
from models.batch_norm import Norm, conv_batch_norm

v1 = tf.compat.v1

SCOPE = "resnet_v1_50"
# (block scope, bottleneck depth, units, stride of the last unit).
BLOCKS = (("block1", 64, 3, 2), ("block2", 128, 4, 2), ("block3", 256, 6, 2), ("block4", 512, 3, 1))
EXPANSION = 4
BATCH_NORM_DECAY = 0.997
BATCH_NORM_EPSILON = 1e-5
NORM = Norm(BATCH_NORM_DECAY, BATCH_NORM_EPSILON)
DEFAULT_IMAGE_SIZE = 224


def _initializer():
    # He initialisation, TF-Slim resnet_arg_scope's variance_scaling_initializer().
    return v1.variance_scaling_initializer(scale=2.0, mode="fan_in", distribution="truncated_normal")


def _pad_for_stride(inputs, kernel_size):
    """Zero padding that makes a strided VALID convolution centre like TF-Slim's conv2d_same."""
    total = kernel_size - 1
    begin = total // 2
    return tf.pad(inputs, [[0, 0], [begin, total - begin], [begin, total - begin], [0, 0]])


def _conv_bn(inputs, filters, kernel_size, stride, scope, is_training, updates, activation=tf.nn.relu):
    with v1.variable_scope(scope):
        padding = "SAME"
        if stride > 1 and kernel_size > 1:
            inputs, padding = _pad_for_stride(inputs, kernel_size), "VALID"
        kernel = net_ops.conv_kernel(inputs, filters, kernel_size, _initializer())
        net = conv_batch_norm(net_ops.conv_op(stride, padding), kernel, inputs, is_training, updates, NORM)
        return net if activation is None else activation(net)


def _bottleneck(inputs, depth, bottleneck_depth, stride, is_training, updates):
    with v1.variable_scope("bottleneck_v1"):
        if int(inputs.shape[-1]) == depth:
            # TF-Slim subsamples an identity shortcut with a 1x1 max pool.
            shortcut = inputs if stride == 1 else tf.nn.max_pool2d(inputs, 1, stride, "VALID", name="shortcut")
        else:
            shortcut = _conv_bn(inputs, depth, 1, stride, "shortcut", is_training, updates, activation=None)
        residual = _conv_bn(inputs, bottleneck_depth, 1, 1, "conv1", is_training, updates)
        residual = _conv_bn(residual, bottleneck_depth, 3, stride, "conv2", is_training, updates)
        residual = _conv_bn(residual, depth, 1, 1, "conv3", is_training, updates, activation=None)
        return tf.nn.relu(shortcut + residual)


def resnet_v1_50(images, num_classes=1000, is_training=False, scope=SCOPE):
    """Builds ResNet-50 v1 into the current graph.

    Args:
      images: float32 tensor [batch, height, width, 3], preprocessed (mean-subtracted
        RGB). Any size from 32x32 works; 224x224 is what the weights were trained on.
      num_classes: width of the logits layer; None stops at the global average pool.
      is_training: BatchNorm mode per layer: a bool, a bool tensor or a callable of the
        BatchNorm scope name (see models.batch_norm). Moving statistics change only
        through the returned end_points["batch_norm_updates"] ops.
      scope: the outer variable scope.

    Returns:
      (net, end_points): net is the logits [batch, num_classes], or the pooled features
      [batch, 2048] when num_classes is None. end_points maps "<scope>/conv1",
      "<scope>/block{N}" (each block's output), "<scope>/logits", "features" (pool5
      squeezed) and "predictions" to tensors, and "batch_norm_updates" to the
      {BatchNorm scope: update op} dict of the layers in training mode.
    """
    updates = {}
    end_points = {}
    with v1.variable_scope(scope) as outer:
        net = _conv_bn(images, 64, 7, 2, "conv1", is_training, updates)
        end_points[f"{outer.name}/conv1"] = net
        net = tf.nn.max_pool2d(net, 3, 2, "SAME", name="pool1")
        for block, bottleneck_depth, units, stride in BLOCKS:
            with v1.variable_scope(block):
                for unit in range(1, units + 1):
                    with v1.variable_scope(f"unit_{unit}"):
                        unit_stride = stride if unit == units else 1
                        net = _bottleneck(
                            net, bottleneck_depth * EXPANSION, bottleneck_depth, unit_stride, is_training, updates
                        )
            end_points[f"{outer.name}/{block}"] = net
        net = net_ops.global_average_pool(net, "pool5")
        end_points["features"] = tf.squeeze(net, [1, 2], name="features")
        end_points["batch_norm_updates"] = updates
        if num_classes is None:
            return end_points["features"], end_points
        logits = _logits(net, num_classes)
        return net_ops.with_predictions(logits, end_points, f"{outer.name}/logits", "predictions")


def _logits(net, num_classes):
    with v1.variable_scope("logits"):
        logits = net_ops.conv2d(net, num_classes, 1, 1, _initializer())
        return tf.squeeze(net_ops.bias_add(logits), [1, 2], name="squeezed")


def head(features, num_classes, is_training=False, dropout_keep_prob=1.0, scope=SCOPE):
    """The logits layer alone, over pooled features [batch, 2048]: the variables `resnet_v1_50` makes.

    A dropout before it (off at keep 1, TF-Slim's net has none) is for a new head.
    """
    with v1.variable_scope(scope):
        net = net_ops.dropout(features[:, None, None, :], dropout_keep_prob, is_training, "head_dropout")
        return _logits(net, num_classes)
