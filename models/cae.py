"""The convolutional autoencoder (CAE) and the encoder it shares with the classifier."""

import numbers

import tensorflow as tf

from models import layers
from models.scopes import AUTOENCODER_SCOPES, DECODER_SCOPES, ENCODER_SCOPES  # noqa: F401 (re-exported)

IMAGE_SHAPE = (28, 28, 1)
# conv2's output, 7x7x32, flattened: the size of the code the encoder hands on.
ENCODER_SHAPE = (7, 7, 32)
ENCODER_UNITS = 7 * 7 * 32
RECONSTRUCTION_LOSSES = ("bce", "l2")


def encoder(images, trainable=True):
    """Builds conv1 and conv2.

    Args:
      images: float32 tensor [batch, 28, 28, 1], pixel values in [0, 1].
      trainable: whether the encoder variables join TRAINABLE_VARIABLES.

    Returns:
      A dict of endpoints: "conv1" [batch, 14, 14, 16], "conv2" [batch, 7, 7, 32] and
      "features", conv2 flattened to [batch, 1568].
    """
    conv1 = layers.conv2d(images, 16, 5, 2, "conv1", tf.nn.relu, trainable)
    conv2 = layers.conv2d(conv1, 32, 5, 2, "conv2", tf.nn.relu, trainable)
    features = tf.reshape(conv2, [-1, ENCODER_UNITS])
    return {"conv1": conv1, "conv2": conv2, "features": features}


def build_autoencoder(images, latent_size=20, transpose_implementation="subpixel"):
    """Builds the CAE into the current graph.

    Args:
      images: float32 tensor [batch, 28, 28, 1], pixel values in [0, 1]. For a
        denoising autoencoder pass the corrupted images here and the clean ones to
        `reconstruction_loss`.
      latent_size: width of the linear code `latent_var`.
      transpose_implementation: how dconv1 and dconv2 compute (layers.conv2d_transpose):
        "subpixel", the fast default, or "transpose", tf.nn.conv2d_transpose. Same
        variables and checkpoints either way.

    Returns:
      A dict of endpoints: the encoder's, "latent" [batch, latent_size],
      "z_matrix" [batch, 7, 7, 32], "dconv1" [batch, 14, 14, 16], "logits" (dconv2
      before its sigmoid) and "reconstruction" [batch, 28, 28, 1] in [0, 1].

    Raises:
      ValueError: if latent_size is not a positive integer or transpose_implementation
        is unknown (both checked before anything is built).
    """
    if isinstance(latent_size, bool) or not isinstance(latent_size, numbers.Integral) or latent_size < 1:
        raise ValueError(f"latent_size must be a positive integer, got {latent_size!r}")
    if transpose_implementation not in layers.TRANSPOSE_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown transpose_implementation {transpose_implementation!r}; choose one of "
            f"{layers.TRANSPOSE_IMPLEMENTATIONS}"
        )
    latent_size = int(latent_size)
    end_points = encoder(images)
    latent = layers.dense(end_points["features"], latent_size, "latent_var")
    z_matrix = layers.dense(latent, ENCODER_UNITS, "z_matrix", tf.nn.relu)
    z_matrix = tf.reshape(z_matrix, [-1, *ENCODER_SHAPE])
    dconv1 = layers.conv2d_transpose(z_matrix, 16, 5, 2, "dconv1", tf.nn.relu, implementation=transpose_implementation)
    logits = layers.conv2d_transpose(dconv1, 1, 5, 2, "dconv2", implementation=transpose_implementation)
    end_points.update(
        latent=latent,
        z_matrix=z_matrix,
        dconv1=dconv1,
        logits=logits,
        reconstruction=tf.sigmoid(logits),
    )
    return end_points


def reconstruction_loss(targets, end_points, kind="bce"):
    """The autoencoder's loss: summed over the pixels of an image, averaged over the batch.

    Args:
      targets: float32 tensor [batch, 28, 28, 1] in [0, 1], the clean images.
      end_points: the dict returned by `build_autoencoder`.
      kind: "bce" (binary cross-entropy, computed from the logits for stability) or
        "l2" (squared error of the reconstruction).

    Returns:
      A scalar float32 tensor.

    Raises:
      ValueError: for an unknown kind.
    """
    if kind == "bce":
        per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=end_points["logits"])
    elif kind == "l2":
        per_pixel = tf.square(end_points["reconstruction"] - targets)
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r}; choose one of {RECONSTRUCTION_LOSSES}")
    return tf.reduce_mean(tf.reduce_sum(per_pixel, axis=[1, 2, 3]))
