"""TensorBoard helpers: scalar protos, text, and the Embedding Projector export."""

import os
import struct
import zlib

import numpy as np
import tensorflow as tf

from runtime.paths import DirAlias

v1 = tf.compat.v1

PROJECTOR_DIR = "projector"


class SummaryWriter(v1.summary.FileWriter):
    """A FileWriter for a run dir of any name (runtime.paths): the events go where the user asked."""

    def __init__(self, logdir, graph=None):
        self._alias = DirAlias(logdir)
        super().__init__(self._alias.tf, graph=graph)


def scalars(values):
    """A Summary proto holding {tag: value} scalars, for numbers computed in Python."""
    return v1.Summary(value=[v1.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in values.items()])


def encode_png(image):
    """PNG bytes of a grayscale uint8 array [height, width].

    Written with zlib rather than tf.io.encode_png so that it works inside a graph
    context as well as outside one.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape
    # Each row starts with filter type 0 (none).
    raw = np.concatenate([np.zeros((height, 1), np.uint8), image], axis=1).tobytes()

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def sprite(images):
    """Tiles uint8 images [N, h, w] into one square grid image, row by row."""
    count, height, width = images.shape
    side = int(np.ceil(np.sqrt(count)))
    grid = np.zeros((side * height, side * width), dtype=np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, side)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    return grid


def write_projector(log_dir, embeddings, labels, images, name="latent_code", label_names=()):
    """Exports embeddings with a digit sprite and label metadata for the Embedding Projector.

    The tensor goes in a TSV file next to `projector_config.pbtxt`, so the projector
    needs no checkpoint of its own and the run's checkpoints stay model-only.

    Args:
      log_dir: the run directory TensorBoard reads (the one with the event files).
      embeddings: float array [N, dims].
      labels: int array [N].
      images: uint8 array [N, 28, 28], the thumbnails.
      name: the tensor name shown in the projector.
      label_names: the class names the labels index, written as the metadata (default: the numbers).

    Returns:
      The path of the projector config file.
    """
    from tensorboard.plugins import projector

    out_dir = os.path.join(log_dir, PROJECTOR_DIR)
    os.makedirs(out_dir, exist_ok=True)
    np.savetxt(os.path.join(out_dir, "embeddings.tsv"), embeddings, delimiter="\t", fmt="%.6g")
    with open(os.path.join(out_dir, "metadata.tsv"), "w", encoding="utf-8") as stream:
        # One name a line, no header: a tab or line break in a name would make it two columns or rows.
        shown = [" ".join(str(label_names[int(label)]).split()) if label_names else str(int(label)) for label in labels]
        stream.write("".join(f"{text}\n" for text in shown))
    with open(os.path.join(out_dir, "sprite.png"), "wb") as stream:
        stream.write(encode_png(sprite(images)))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = name
    embedding.tensor_path = os.path.join(PROJECTOR_DIR, "embeddings.tsv")
    embedding.metadata_path = os.path.join(PROJECTOR_DIR, "metadata.tsv")
    embedding.sprite.image_path = os.path.join(PROJECTOR_DIR, "sprite.png")
    embedding.sprite.single_image_dim.extend([images.shape[2], images.shape[1]])
    with DirAlias(log_dir) as alias:
        projector.visualize_embeddings(alias.tf, config)
    return os.path.join(log_dir, "projector_config.pbtxt")


def confusion_image(tag, labels, predictions, num_classes):
    """A Summary with the confusion matrix as an image: rows true class, columns predicted.

    Each row is scaled to its own count, so a class with few examples is as readable as
    one with many; every cell is drawn as an 8x8 block.
    """
    matrix = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    pixels = np.kron((rows * 255).round().astype(np.uint8), np.ones((8, 8), dtype=np.uint8))
    image = v1.Summary.Image(
        height=pixels.shape[0], width=pixels.shape[1], colorspace=1, encoded_image_string=encode_png(pixels)
    )
    return v1.Summary(value=[v1.Summary.Value(tag=tag, image=image)])
