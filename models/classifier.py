"""The digit classifier: the CAE's encoder (conv1, conv2) under a fully-connected head."""

import tensorflow as tf

from models import layers
from models.cae import encoder
from models.scopes import CLASSIFIER_SCOPES, HEAD_SCOPES  # noqa: F401 (re-exported)

FC1_UNITS = 200


def head(features, num_classes=10, dropout_rate=0.0, is_training=None):
    """Builds fc1 (and logits) on top of encoder features.

    Kept apart from the encoder so that a head can be trained on cached features
    with exactly the variables it would have in the full classifier.

    Args:
      features: float32 tensor [batch, 1568], the encoder's flattened output.
      num_classes: width of the logits layer; None builds fc1 only.
      dropout_rate: fraction of fc1 units dropped while training; 0 disables dropout.
      is_training: boolean scalar tensor (or Python bool) that turns dropout on;
        required when dropout_rate > 0.

    Returns:
      A dict of endpoints: "fc1" [batch, 200] and, unless num_classes is None,
      "logits" [batch, num_classes].

    Raises:
      ValueError: for a dropout_rate outside [0, 1) or one without is_training.
    """
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
    if dropout_rate > 0.0 and is_training is None:
        raise ValueError(f"dropout_rate={dropout_rate!r} needs is_training")
    fc1 = layers.dense(features, FC1_UNITS, "fc1", tf.nn.relu)
    end_points = {"fc1": fc1}
    if dropout_rate > 0.0:
        dropped = tf.nn.dropout(fc1, rate=dropout_rate)
        fc1 = tf.cond(tf.convert_to_tensor(is_training), lambda: dropped, lambda: fc1)
    if num_classes is not None:
        end_points["logits"] = layers.dense(fc1, num_classes, "logits")
    return end_points


def build_classifier(images, num_classes=10, dropout_rate=0.0, is_training=None):
    """Builds the classifier into the current graph.

    Args:
      images: float32 tensor [batch, 28, 28, 1], pixel values in [0, 1].
      num_classes: number of classes; None returns fc1 features without logits.
      dropout_rate: see `head`.
      is_training: see `head`.

    Returns:
      A dict of endpoints: "conv1", "conv2", "features" (conv2 flattened), "fc1" and,
      unless num_classes is None, "logits".
    """
    end_points = encoder(images)
    end_points.update(head(end_points["features"], num_classes, dropout_rate, is_training))
    return end_points
