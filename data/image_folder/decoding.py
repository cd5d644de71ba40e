"""Decoding an image file into the network's input, and the check that comes first.

A file is told by its content (its magic bytes), never decoded before its header passed
data.image_header's pixel bound (`_find_bad`), then decoded and brought to the network's
InputSpec: channels, an aspect-preserving resize and a centred pad (`preprocess`). The
rules are stated in the package's docstring (data.image_folder).
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from data import idx, image_header, pipeline
from runtime.errors import one_line
from runtime.paths import shown
from runtime.quiet import native_stderr_silenced

_VALIDATION_BATCH = 512
CHANNELS = (1, 2, 3, 4)  # what an image file holds: grey, grey and alpha, RGB, RGB and alpha
# Magic bytes of the formats the decoder accepts: how a file's content is told from its name.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
_FORMAT_OF_EXTENSION = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP"}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a network takes: images of height x width with 1 (grey), 2 (grey and alpha), 3 (RGB) or
    4 (RGB and alpha) channels (see :func:`to_channels`)."""

    height: int
    width: int
    channels: int

    def __post_init__(self):
        if self.height <= 0 or self.width <= 0 or self.channels not in CHANNELS:
            raise ValueError(f"an input spec needs a positive size and 1 to 4 channels, got {self}")


MNIST_INPUT = InputSpec(idx.ROWS, idx.COLS, 1)


def _content_format(path):
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _precheck(path):
    """Returns (reason it is bad or None, content format or None) without decoding."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"broken symbolic link (to {shown(os.readlink(path))})", None
    if not os.path.isfile(path):
        return "not a regular file", None
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)", None
        content = _content_format(path)
    except OSError as e:
        return f"cannot read: {one_line(e)}", None
    if content is None:
        return "not an image: its content is none of JPEG, PNG, GIF, BMP or WebP", None
    return None, content


def decode(contents):
    """Decodes an encoded image (JPEG, PNG, BMP, GIF's first frame, WebP) by its content.

    Args:
      contents: scalar string tensor of the file's bytes.

    Nothing here bounds the size: the files of a folder reach it only after :func:`scan`
    refused those over data.image_header's pixel bound, and predict.py and look apply the
    same rule before their decoders.

    Returns:
      uint8 tensor [height, width, channels] with the file's own channels (1 to 4).
    """
    image = tf.io.decode_image(contents, channels=0, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, None])
    return image


def to_channels(image, channels):
    """Brings a uint8 or float image [..., C] with C in 1..4 to ``channels`` (1 to 4), as float32.

    Grey and RGB pass through unchanged; see the module docstring for the rest. 2 and 4
    are the colour part (grey; RGB) and the alpha channel: the image's own alpha, kept, or
    opaque (255 for uint8, 1.0 for a float image in [0, 1]) when it has none.
    """
    x = tf.cast(image, tf.float32)
    have = tf.shape(x)[-1]
    if channels in (2, 4):
        opaque = tf.ones_like(x[..., :1]) * (255.0 if image.dtype == tf.uint8 else 1.0)
        alpha = tf.cond(tf.equal(have % 2, 0), lambda: x[..., -1:], lambda: opaque)
        out = tf.concat([to_channels(image, channels - 1), alpha], axis=-1)
    elif channels == 3:
        rank = len(x.shape)
        tiles = [1] * (rank - 1) + [3]
        out = tf.cond(have >= 3, lambda: x[..., :3], lambda: tf.tile(x[..., :1], tiles))
    else:
        out = tf.cond(have >= 3, lambda: tf.image.rgb_to_grayscale(x[..., :3]), lambda: x[..., :1])
    out.set_shape(x.shape[:-1].concatenate([channels]))
    return out


def fit_and_pad(image, height, width):
    """Resizes float images [..., h, w, C] to [..., height, width, C], keeping their aspect ratio.

    An image already of that size is returned unchanged, bit for bit. Others are resized
    (bilinear, antialiased) until they fit and padded with zeros, centred.
    """
    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]

    def resize():
        scale = tf.minimum(height / tf.cast(h, tf.float64), width / tf.cast(w, tf.float64))
        new_h = tf.clip_by_value(tf.cast(tf.round(tf.cast(h, tf.float64) * scale), tf.int32), 1, height)
        new_w = tf.clip_by_value(tf.cast(tf.round(tf.cast(w, tf.float64) * scale), tf.int32), 1, width)
        resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        return tf.image.pad_to_bounding_box(resized, top, left, height, width)

    same = tf.logical_and(tf.equal(h, height), tf.equal(w, width))
    out = tf.cond(same, lambda: tf.identity(image), resize)
    out.set_shape(image.shape[:-3].concatenate([height, width, image.shape[-1]]))
    return out


def preprocess(image, spec):
    """The network's input from decoded uint8 images [H, W, C] or [N, H, W, C] of any size and C.

    Args:
      image: uint8 tensor, 3-D or 4-D, with 1 to 4 channels.
      spec: the network's :class:`InputSpec`.

    Returns:
      float32 tensor [..., spec.height, spec.width, spec.channels] in [0, 1]; for a grey
      image already of the network's size it equals ``uint8 / 255`` exactly, as the IDX
      pipeline computes it.
    """
    fitted = fit_and_pad(to_channels(image, spec.channels), spec.height, spec.width)
    return tf.clip_by_value(fitted, 0.0, 255.0) / 255.0


def _decode_file(path, spec):
    return preprocess(decode(tf.io.read_file(path)), spec)


def _path_bytes(paths):
    """Paths as an object array of bytes: TensorFlow reads any name given as bytes, while a str
    with bytes that are not UTF-8 (surrogate escapes) cannot become a string tensor."""
    array = np.empty(len(paths), dtype=object)
    array[:] = [os.fsencode(path) for path in paths]
    return array


def _over_the_bound(paths):
    """Returns {index: reason} of the files that must not be decoded (data.image_header's rule).

    Their headers are read, nothing is decoded: an image of more pixels than
    image_header.MAX_PIXELS, or whose header does not tell its size, is refused with its
    size in the reason; a file that is no longer a regular file is refused too.
    """
    refused = {}
    for i, path in enumerate(paths):
        try:
            reason = image_header.file_refusal(path)
        except OSError as e:
            reason = str(e) if isinstance(e, image_header.NotARegularFile) else f"cannot read: {one_line(e)}"
        if reason is not None:
            refused[i] = reason
    return refused


def _find_bad(paths):
    """Decodes every path once; returns {index: reason} for the ones that fail.

    No file is decoded before its header passed the pixel bound (:func:`_over_the_bound`):
    the files over it are failures without being decoded. The others are decoded in a
    parallel tf.data map whose errors are dropped (ignore_errors), which leaves the
    survivors; only the few failures are decoded again one by one, to learn each one's
    reason.
    """
    failures = _over_the_bound(paths)
    kept = [i for i in range(len(paths)) if i not in failures]
    failures.update({kept[j]: reason for j, reason in _decode_failures([paths[i] for i in kept]).items()})
    return dict(sorted(failures.items()))


def _decode_failures(paths):
    """Decodes every path once in tf.data; returns {index: reason} for the ones that fail."""
    if not paths:
        return {}
    with tf.Graph().as_default() as graph:
        paths_ph = tf.compat.v1.placeholder(tf.string, [None])
        dataset = (
            tf.data.Dataset.from_tensor_slices(
                (tf.range(tf.size(paths_ph, out_type=tf.int64), dtype=tf.int64), paths_ph)
            )
            .map(
                pipeline.as_written(lambda i, p: (i, tf.shape(decode(tf.io.read_file(p))))),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            .ignore_errors()
            .batch(_VALIDATION_BATCH)
        )
        iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
        next_ids = iterator.get_next()[0]
        one_path = tf.compat.v1.placeholder(tf.string, [])
        decode_one = tf.shape(decode(tf.io.read_file(one_path)))
        good = np.zeros(len(paths), bool)
        failures = {}
        # The JPEG library prints its complaints straight to the process's stderr; the
        # reasons are reported below, once per file, in our words.
        with tf.compat.v1.Session(graph=graph) as sess, native_stderr_silenced():
            sess.run(iterator.initializer, {paths_ph: _path_bytes(paths)})
            while True:
                try:
                    good[sess.run(next_ids)] = True
                except tf.errors.OutOfRangeError:
                    break
            for i in np.flatnonzero(~good):
                try:
                    # A file that decodes on its own (a read that failed once) is good: keep it.
                    sess.run(decode_one, {one_path: os.fsencode(paths[i])})
                except tf.errors.OpError as e:
                    failures[int(i)] = f"cannot decode: {one_line(e)}"
    return failures
