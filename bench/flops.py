"""FLOPs per image of the training steps, counted from the architecture (docs/ARCHITECTURE.md, "Variable names").

Only multiply-adds are counted, 2 FLOPs each; bias adds, activations, the loss and the
optimizer update add well under 3% and are left out, as in the usual convention.

Multiply-adds of one layer for one image:

  conv           output positions x kernel elements   (14*14 x 5*5*1*16 for conv1)
  conv-transpose input positions  x kernel elements   (the conv it transposes, run backwards)
  dense          kernel elements

A training step runs, per layer, the forward pass, the weight gradient when the layer
trains (as many multiply-adds as the forward pass) and the input gradient when some
trainable layer lies below it (as many again). So

  FLOPs/image = 2 * sum over layers of MACs * (1 + trains + has a trainable layer below)

For the autoencoder every layer trains and only conv1 needs no input gradient:
2 * (3 * 1,473,920 - 78,400) = 8,686,720, the 8.69 MFLOP/image of the reference.
TensorFlow's own static count (`tf.compat.v1.profiler`, float_operation) of the same
graph at batch 1 is 9.05 M: it adds elementwise ops and conv1's input gradient, which
`tf.gradients` builds but the session prunes because nothing consumes it.
"""

import collections
import math

from models.scopes import ENCODER_SCOPES, HEAD_SCOPES

Layer = collections.namedtuple("Layer", "scope kind positions kernel")
Layer.__doc__ = """One weight layer: scope, "conv" | "deconv" | "dense", positions (see module doc), kernel shape."""

AUTOENCODER_LAYERS = (
    Layer("conv1", "conv", 14 * 14, (5, 5, 1, 16)),
    Layer("conv2", "conv", 7 * 7, (5, 5, 16, 32)),
    Layer("latent_var", "dense", 1, (1568, 20)),
    Layer("z_matrix", "dense", 1, (20, 1568)),
    Layer("dconv1", "deconv", 7 * 7, (5, 5, 16, 32)),
    Layer("dconv2", "deconv", 14 * 14, (5, 5, 1, 16)),
)
CLASSIFIER_LAYERS = (
    Layer("conv1", "conv", 14 * 14, (5, 5, 1, 16)),
    Layer("conv2", "conv", 7 * 7, (5, 5, 16, 32)),
    Layer("fc1", "dense", 1, (1568, 200)),
    Layer("logits", "dense", 1, (200, 10)),
)
HEAD_LAYERS = tuple(layer for layer in CLASSIFIER_LAYERS if layer.scope in HEAD_SCOPES)

REFERENCE_AUTOENCODER_MFLOP = 8.69


def layer_macs(layer):
    """Multiply-adds of one layer's forward pass for one image."""
    return layer.positions * math.prod(layer.kernel)


def train_flops_per_image(layers, frozen_scopes=()):
    """Forward plus backward FLOPs of one image through `layers` (input first).

    Args:
      layers: Layer tuples in the order the data flows.
      frozen_scopes: scopes left out of the optimizer's var_list.

    Returns:
      An int: 2 FLOPs per multiply-add, as in the module docstring.
    """
    total, trainable_below = 0, False
    for layer in layers:
        trains = layer.scope not in frozen_scopes
        total += layer_macs(layer) * (1 + trains + trainable_below)
        trainable_below = trainable_below or trains
    return 2 * total


def step_flops():
    """FLOPs per image of the three training steps the benchmark times."""
    return {
        "autoencoder": train_flops_per_image(AUTOENCODER_LAYERS),
        "transfer_uncached": train_flops_per_image(CLASSIFIER_LAYERS, frozen_scopes=ENCODER_SCOPES),
        "transfer_cached": train_flops_per_image(HEAD_LAYERS),
    }


def check_kernels(layers, variables):
    """Raises ValueError when the graph's kernels differ from the table the FLOPs come from.

    Args:
      layers: Layer tuples.
      variables: the graph's model variables (objects with `.op.name` and `.shape`).
    """
    shapes = {var.op.name: tuple(var.shape.as_list()) for var in variables}
    for layer in layers:
        actual = shapes.get(f"{layer.scope}/kernel")
        if actual != layer.kernel:
            raise ValueError(
                f"{layer.scope}/kernel is {actual} in the graph but {layer.kernel} in bench/flops.py; update the table"
            )
