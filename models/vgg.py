"""VGG-16 with the variables of TF-Slim's model-zoo checkpoint `vgg_16.ckpt`.

32 variables: `vgg_16/conv{B}/conv{B}_{i}/{weights,biases}` for 2, 2, 3, 3 and 3 convs,
then `fc6` [7, 7, 512, 4096], `fc7` [1, 1, 4096, 4096] and `fc8` [1, 1, 4096, classes]:
the fully-connected layers are convolutions, as in TF-Slim, so the checkpoint's shapes
are kept. Input: 224x224 RGB minus the ImageNet channel means (see models.networks).
No BatchNorm; dropout after fc6 and fc7 only in training mode.
"""

import tensorflow as tf

from models import net_ops

v1 = tf.compat.v1

SCOPE = "vgg_16"
# (convs in the block, their width), blocks conv1..conv5.
BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
FC6_SIZE = 7
FC_UNITS = 4096
DEFAULT_IMAGE_SIZE = 224


def _conv(inputs, filters, kernel_size, scope, padding="SAME", activation=tf.nn.relu):
    with v1.variable_scope(scope):
        net = net_ops.conv2d(inputs, filters, kernel_size, 1, v1.glorot_uniform_initializer(), padding)
        net = net_ops.bias_add(net)
        return net if activation is None else activation(net)


def vgg_16(images, num_classes=1000, is_training=False, dropout_keep_prob=0.5, scope=SCOPE):
    """Builds VGG-16 (configuration D) into the current graph.

    Args:
      images: float32 tensor [batch, height, width, 3], preprocessed (mean-subtracted
        RGB); height and width at least 224 (fc6 is a 7x7 VALID convolution over pool5).
        Larger inputs are average-pooled over fc7's spatial output, as TF-Slim's
        `global_pool` does.
      num_classes: width of fc8; None stops at fc7 and returns its features.
      is_training: turns dropout on; a bool, a bool tensor or a callable of the
        dropout layer's scope name (see models.net_ops.layer_training).
      dropout_keep_prob: fraction of fc6/fc7 units kept in training mode.
      scope: the outer variable scope.

    Returns:
      (net, end_points): net is the logits [batch, num_classes], or the fc7 features
      [batch, 4096] when num_classes is None. end_points maps TF-Slim's end-point names
      ("vgg_16/conv1/conv1_1", ..., "vgg_16/fc8") to tensors, plus "features" and
      "batch_norm_updates" (always empty: VGG has no BatchNorm).

    Raises:
      ValueError: for an input smaller than 224x224.
    """
    height, width = images.shape[1], images.shape[2]
    if height is not None and width is not None and min(height, width) < DEFAULT_IMAGE_SIZE:
        raise ValueError(f"vgg_16 needs inputs of at least 224x224 (fc6 is 7x7 VALID), got {height}x{width}")
    end_points = {}
    with v1.variable_scope(scope) as outer:
        net = images
        for number, (repeats, filters) in enumerate(BLOCKS, start=1):
            with v1.variable_scope(f"conv{number}"):
                for index in range(1, repeats + 1):
                    net = _conv(net, filters, 3, f"conv{number}_{index}")
                    end_points[f"{outer.name}/conv{number}/conv{number}_{index}"] = net
            net = tf.nn.max_pool2d(net, 2, 2, "VALID", name=f"pool{number}")
            end_points[f"{outer.name}/pool{number}"] = net
        net = _conv(net, FC_UNITS, FC6_SIZE, "fc6", padding="VALID")
        end_points[f"{outer.name}/fc6"] = net
        net = net_ops.dropout(net, dropout_keep_prob, is_training, "dropout6")
        net = _conv(net, FC_UNITS, 1, "fc7")
        end_points[f"{outer.name}/fc7"] = net
        net = net_ops.dropout(net, dropout_keep_prob, is_training, "dropout7")
        if net.shape[1] != 1 or net.shape[2] != 1:
            net = net_ops.global_average_pool(net, "global_pool")
        end_points["features"] = tf.squeeze(net, [1, 2], name="features")
        end_points["batch_norm_updates"] = {}
        if num_classes is None:
            return end_points["features"], end_points
        logits = _logits(net, num_classes)
        end_points[f"{outer.name}/fc8"] = logits
        return logits, end_points


def _logits(net, num_classes):
    logits = _conv(net, num_classes, 1, "fc8", activation=None)
    return tf.squeeze(logits, [1, 2], name="fc8/squeezed")


def head(features, num_classes, is_training=False, dropout_keep_prob=1.0, scope=SCOPE):
    """The fc8 layer alone, over fc7 features [batch, 4096]: the same variables `vgg_16` makes.

    `is_training` and `dropout_keep_prob` apply a dropout before fc8 (TF-Slim has none
    there; a new head may want one). Enter the caller's reuse to share `vgg_16`'s fc8.
    """
    with v1.variable_scope(scope):
        net = net_ops.dropout(features[:, None, None, :], dropout_keep_prob, is_training, "head_dropout")
        return _logits(net, num_classes)
