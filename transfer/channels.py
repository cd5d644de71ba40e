"""Input-channel adaptation: a pretrained first convolution for data of other channels.

A checkpoint's first convolution reads the channels it was trained on (3, RGB); data of
1, 2, 4 or N channels needs a kernel [k, k, N, out]. The plan (transfer.plan) marks that
kernel's row "adapted" with one of these rules, and the restore writes the value
:func:`adapt_kernel` computes from the checkpoint's kernel:

  sum     every data channel gets the sum over the checkpoint's channels, divided by N;
          for 1 channel the sum itself, so a grey image gives what the same grey copied
          into R, G and B gave the checkpoint's network.
  repeat  data channel i gets checkpoint channel i mod 3, scaled by 3/N, so the layer's
          response to an input whose channels are equal keeps its size (timm's
          adapt_input_conv); for 1 channel it is the sum, as there.
  zeros   the checkpoint's channels kept as they are and the extra ones zero and fresh:
          they train (their gradient alone; the kept channels stay frozen unless the row
          is fine-tuned) and the network starts as it was on the first channels.

DEFAULT_RULE is what train_transfer.py's --adapt-channels and the library take when not told.
"""

import numpy as np
import tensorflow as tf

RULES = ("sum", "repeat", "zeros")
DEFAULT_RULE = "repeat"
HELP = (
    "when the data's channels (--channels) differ from the checkpoint's first convolution's: "
    "sum (each channel gets the sum over RGB / N), repeat (channel i gets RGB channel i mod 3 scaled by 3/N; "
    "the sum for 1 channel) or zeros (RGB kept, extra channels start at zero and train); "
    "none refuses the difference (default: %(default)s)"
)
_AXIS = 2  # a convolution kernel is [height, width, in channels, out channels]


def differs_in_channels(checkpoint_shape, graph_shape):
    """Whether two kernel shapes differ in their input channels and nothing else."""
    if len(checkpoint_shape) != 4 or len(graph_shape) != 4:
        return False
    others = [dim for axis, dim in enumerate(checkpoint_shape) if axis != _AXIS]
    return others == [dim for axis, dim in enumerate(graph_shape) if axis != _AXIS] and (
        checkpoint_shape[_AXIS] != graph_shape[_AXIS]
    )


def refusal(rule, have, want):
    """Why `rule` cannot adapt `have` checkpoint channels to `want` data channels, or None."""
    if rule == "zeros" and want < have:
        return f"--adapt-channels zeros keeps the checkpoint's {have} channels and needs at least as many, not {want}"
    return None


def fresh_channels(rule, have, want):
    """The data channels whose kernel starts fresh (zero) and trains: the extra ones of the zeros rule."""
    return tuple(range(have, want)) if rule == "zeros" else ()


def describe(rule, have, want):
    """The plan row's reason: what the kernel's input channels became."""
    if rule == "zeros":
        fresh = fresh_channels(rule, have, want)
        return f"{have}->{want} channels, zeros: {have} kept, {len(fresh)} fresh"
    if rule == "sum" or want == 1:
        return f"{have}->{want} channels, sum" + (f" / {want}" if want > 1 else "")
    return f"{have}->{want} channels, repeat x {have}/{want}"


def adapt_kernel(kernel, want, rule):
    """The kernel [k, k, want, out] that `rule` makes of a checkpoint kernel [k, k, have, out].

    Computed in float64 and cast back, so the same checkpoint gives the same bits everywhere
    the value is needed (the restore and the checks that prove it).
    """
    kernel = np.asarray(kernel)
    have = kernel.shape[_AXIS]
    wide = kernel.astype(np.float64)
    if rule == "sum" or (rule == "repeat" and want == 1):
        adapted = np.repeat(wide.sum(axis=_AXIS, keepdims=True) / want, want, axis=_AXIS)
    elif rule == "repeat":
        adapted = wide[:, :, [i % have for i in range(want)], :] * (have / want)
    elif rule == "zeros":
        adapted = np.concatenate([wide, np.zeros((*wide.shape[:2], want - have, wide.shape[3]))], axis=_AXIS)
    else:
        raise ValueError(f"unknown channel rule {rule!r}; known: {', '.join(RULES)}")
    return adapted.astype(kernel.dtype)


def frozen_mask(row):
    """Boolean mask over the adapted row's value of what must still equal the adapted checkpoint value.

    Everything when the row is frozen; the kept channels when only its fresh channels
    train; nothing when it is fine-tuned.
    """
    mask = np.zeros(row.shape, bool)
    if row.lr_mult == 0:
        mask[...] = True
    elif row.fresh_channels:
        kept = [i for i in range(row.shape[_AXIS]) if i not in row.fresh_channels]
        mask[:, :, kept, :] = True
    return mask


def gradient_mask(row):
    """1 where the optimizer may move an adapted row, 0 elsewhere; None when it moves all of it."""
    if not row.fresh_channels:
        return None
    mask = np.zeros(row.shape, np.float32)
    mask[:, :, list(row.fresh_channels), :] = 1.0
    return mask


def adapted_values(plan, source_values):
    """{graph name: the adapted value} of the plan's adapted rows, from the checkpoint's values."""
    return {row.name: adapt_kernel(source_values[row.source], row.shape[_AXIS], row.adapt) for row in plan.adapted}


def masked_gradients(plan, gradients):
    """{graph name: gradient} with each adapted row's gradient zero outside its fresh channels.

    Adam's moments of an entry whose gradient is always zero stay zero, so the kept
    channels do not move by a single bit: what the frozen check proves.
    """
    masks = {row.name: gradient_mask(row) for row in plan.adapted}
    return {
        name: gradient if masks.get(name) is None or gradient is None else gradient * tf.constant(masks[name])
        for name, gradient in gradients.items()
    }
