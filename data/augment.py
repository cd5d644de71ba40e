"""Input augmentation inside the graph."""

import tensorflow as tf


def random_shift(images, max_shift, seed=None):
    """Shifts each image by its own random whole-pixel offset, filling with zeros.

    Args:
      images: float32 tensor [batch, height, width, channels].
      max_shift: largest shift in pixels, in each direction and axis; 0 returns images.
      seed: op-level seed, for a reproducible sequence of shifts.

    Returns:
      A tensor like images, each one moved by (dx, dy) with |dx|, |dy| <= max_shift.
    """
    if max_shift == 0:
        return images
    count = tf.shape(images)[0]
    offsets = tf.cast(tf.random.uniform([count, 2], -max_shift, max_shift + 1, dtype=tf.int32, seed=seed), tf.float32)
    ones, zeros = tf.ones([count]), tf.zeros([count])
    # A projective transform maps each output pixel (x, y) to the input pixel
    # (x - dx, y - dy): a pure translation, exact with nearest-neighbour sampling.
    transforms = tf.stack([ones, zeros, -offsets[:, 0], zeros, ones, -offsets[:, 1], zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )


def gaussian_noise(images, stddev, seed=None):
    """Adds N(0, stddev^2) noise and clips back to [0, 1]: the denoising autoencoder's corruption.

    Args:
      images: float32 tensor in [0, 1].
      stddev: scalar (tensor or float); 0 leaves the images unchanged.
      seed: op-level seed.
    """
    noise = tf.random.normal(tf.shape(images), seed=seed) * stddev
    return tf.clip_by_value(images + noise, 0.0, 1.0)
