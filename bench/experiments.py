"""Alternative forms of our step, timed beside it with `python -m bench.throughput --experiment NAME`.

transpose: our autoencoder step with dconv1 and dconv2 computed by
  tf.nn.conv2d_transpose (`build_autoencoder(..., transpose_implementation="transpose")`),
  the form the project had before the sub-pixel one (models/layers.py) replaced it.
  Same variables and checkpoints; timing both in one run shows what the sub-pixel form
  is worth on this CPU.
"""

import contextlib
import functools

from bench import contenders
from models import cae


@contextlib.contextmanager
def _transpose_implementation(name):
    """Models that bench.contenders builds inside the block use the given transposed-conv implementation."""
    original = contenders.build_autoencoder
    contenders.build_autoencoder = functools.partial(cae.build_autoencoder, transpose_implementation=name)
    try:
        yield
    finally:
        contenders.build_autoencoder = original


class TransposeAutoencoder(contenders.OursAutoencoder):
    """Our autoencoder step (same wiring) with tf.nn.conv2d_transpose in dconv1 and dconv2."""

    def _build(self):
        with _transpose_implementation("transpose"):
            super()._build()
