"""Alternative forms of our step, timed beside it with `python -m bench.throughput --experiment NAME`.

transpose: our autoencoder step with dconv1 and dconv2 computed by
  tf.nn.conv2d_transpose (`build_autoencoder(..., transpose_implementation="transpose")`),
  the form the project had before the sub-pixel one (models/layers.py) replaced it.
  Same variables and checkpoints; timing both in one run shows what the sub-pixel form
  is worth on this CPU.
"""

from bench import contenders


class TransposeAutoencoder(contenders.OursAutoencoder):
    """Our autoencoder step (same wiring) with tf.nn.conv2d_transpose in dconv1 and dconv2."""

    transpose_implementation = "transpose"
