"""Strict reader and writer for MNIST-style IDX files.

Only the two layouts that MNIST and Fashion-MNIST use are accepted: unsigned
byte images of 28x28 pixels and unsigned byte labels 0..9. Anything else is
reported as a one-line :class:`runtime.errors.DataError` that names the file,
because a half-read data set trains silently on garbage.
"""

import gzip
import os
import struct
import zlib

import numpy as np

from runtime.errors import DataError, one_line

# The magic number packs two zero bytes, the element type (0x08: unsigned byte)
# and the number of dimensions.
IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
ROWS = 28
COLS = 28
NUM_CLASSES = 10

_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_HEADER_BYTES = 16
_LABEL_HEADER_BYTES = 8

# Roles in the order load_idx_dir returns them, with the classic file stems.
IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Some mirrors (Kaggle's copy of MNIST, for one) spell the stems with a dot
# before "idx"; "any" accepts both spellings.
PREFIX_STYLES = ("classic", "dotted", "any")

_LISTING_LIMIT = 20


def _read_payload(path):
    """Returns the file's bytes, decompressed when they start with the gzip magic."""
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected an IDX file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {one_line(e)}") from e
    if not raw:
        raise DataError(f"{path}: file is empty")
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        data = gzip.decompress(raw)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data: {one_line(e)}") from e
    if not data:
        raise DataError(f"{path}: file is empty after gzip decompression")
    return data


def _check_magic(path, data, expected, header_bytes, kind):
    if len(data) < header_bytes:
        raise DataError(
            f"{path}: truncated: {len(data)} bytes, too short for the {header_bytes}-byte IDX {kind} header"
        )
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected:
        hint = ""
        if magic == IMAGE_MAGIC:
            hint = " (this is an IDX image file)"
        elif magic == LABEL_MAGIC:
            hint = " (this is an IDX label file)"
        raise DataError(
            f"{path}: bad magic number 0x{magic:08X} ({magic}){hint}, expected "
            f"0x{expected:08X} ({expected}) for an IDX {kind} file"
        )


def _check_size(path, data, header_bytes, expected, what, count, unit):
    found = len(data) - header_bytes
    if found < expected:
        raise DataError(f"{path}: truncated: expected {expected} bytes of {what} data, found {found}")
    if found > expected:
        raise DataError(
            f"{path}: {found - expected} trailing bytes after {count} {unit}: "
            f"expected {expected} bytes of {what} data, found {found}"
        )


def read_idx_images(path):
    """Reads an IDX image file (gzip-compressed or not) strictly.

    Args:
      path: Path of an ``idx3-ubyte`` file; gzip is recognised by its magic
        bytes, not by the file name.

    Returns:
      A uint8 array of shape [N, 28, 28].

    Raises:
      DataError: The file is missing, empty, not valid gzip, has the wrong
        magic number or dimensions, or holds fewer or more bytes than its
        header announces.
    """
    path = os.fspath(path)
    data = _read_payload(path)
    _check_magic(path, data, IMAGE_MAGIC, _IMAGE_HEADER_BYTES, "image")
    count, rows, cols = struct.unpack(">III", data[4:_IMAGE_HEADER_BYTES])
    if (rows, cols) != (ROWS, COLS):
        raise DataError(f"{path}: images are {rows}x{cols}, expected {ROWS}x{COLS}")
    _check_size(path, data, _IMAGE_HEADER_BYTES, count * rows * cols, "pixel", count, "images")
    pixels = np.frombuffer(data, dtype=np.uint8, offset=_IMAGE_HEADER_BYTES)
    # frombuffer over bytes is read-only; callers own their arrays.
    return pixels.reshape(count, rows, cols).copy()


def read_idx_labels(path):
    """Reads an IDX label file (gzip-compressed or not) strictly.

    Args:
      path: Path of an ``idx1-ubyte`` file; gzip is recognised by its magic
        bytes, not by the file name.

    Returns:
      A uint8 array of shape [N] with values in 0..9.

    Raises:
      DataError: The file is missing, empty, not valid gzip, has the wrong
        magic number, holds fewer or more bytes than its header announces, or
        contains a label outside 0..9.
    """
    path = os.fspath(path)
    data = _read_payload(path)
    _check_magic(path, data, LABEL_MAGIC, _LABEL_HEADER_BYTES, "label")
    (count,) = struct.unpack(">I", data[4:_LABEL_HEADER_BYTES])
    _check_size(path, data, _LABEL_HEADER_BYTES, count, "label", count, "labels")
    labels = np.frombuffer(data, dtype=np.uint8, offset=_LABEL_HEADER_BYTES).copy()
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{path}: label {labels[bad[0]]} at index {bad[0]} is outside 0..9 ({bad.size} bad labels in all)"
        )
    return labels


def write_idx(path, array, compress=True):
    """Writes a uint8 array as an IDX file, mainly to build test fixtures.

    Args:
      path: Destination path; the name is used as given (add ``.gz`` yourself).
      array: uint8 array, [N, rows, cols] for images or [N] for labels.
      compress: Whether to gzip the file.

    Raises:
      ValueError: The array is not uint8 or not 1-D or 3-D.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx needs a uint8 array, got {array.dtype}")
    if array.ndim not in (1, 3):
        raise ValueError(f"write_idx needs a 1-D or 3-D array, got shape {array.shape}")
    header = struct.pack(f">I{array.ndim}I", 0x800 | array.ndim, *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    if compress:
        # A fixed mtime keeps the output byte-identical across runs.
        payload = gzip.compress(payload, mtime=0)
    with open(path, "wb") as f:
        f.write(payload)


def _candidate_names(stem, prefix_style):
    stems = []
    if prefix_style in ("classic", "any"):
        stems.append(stem)
    if prefix_style in ("dotted", "any"):
        stems.append(stem.replace("-idx", ".idx"))
    # Prefer the compressed file: it is what the original distribution ships.
    return [name for s in stems for name in (s + ".gz", s)]


def find_idx_files(directory, prefix_style="any"):
    """Locates the four MNIST-style IDX files in a directory.

    Args:
      directory: Directory to look in.
      prefix_style: "classic" (``train-images-idx3-ubyte``), "dotted"
        (``train-images.idx3-ubyte``) or "any" (classic first). The ``.gz``
        form of a name is preferred over the uncompressed one.

    Returns:
      (found, missing): ``found`` maps each role of :data:`IDX_STEMS` that is
      present to its path; ``missing`` lists the classic names of the others.

    Raises:
      ValueError: Unknown prefix_style.
    """
    if prefix_style not in PREFIX_STYLES:
        raise ValueError(f"prefix_style must be one of {PREFIX_STYLES}, got {prefix_style!r}")
    directory = os.fspath(directory)
    found, missing = {}, []
    for role, stem in IDX_STEMS.items():
        for name in _candidate_names(stem, prefix_style):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                found[role] = path
                break
        else:
            missing.append(stem + "[.gz]")
    return found, missing


def _describe_listing(directory):
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        return f"cannot list it: {one_line(e)}"
    if not names:
        return "the directory is empty"
    shown = ", ".join(names[:_LISTING_LIMIT])
    if len(names) > _LISTING_LIMIT:
        shown += f", ... ({len(names) - _LISTING_LIMIT} more)"
    return f"the directory holds: {shown}"


def _check_counts(images_path, images, labels_path, labels):
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if len(images) == 0:
        raise DataError(f"{images_path} holds no images")


def load_idx_dir(directory, prefix_style="any"):
    """Loads the four MNIST-style IDX files from a directory.

    Args:
      directory: Directory holding ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``).
      prefix_style: File name spelling, see :func:`find_idx_files`.

    Returns:
      (train_images, train_labels, test_images, test_labels): uint8 arrays,
      images [N, 28, 28], labels [N].

    Raises:
      DataError: The directory does not exist, a file is missing or malformed,
        or a split has different numbers of images and labels.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: directory does not exist")
    found, missing = find_idx_files(directory, prefix_style)
    if missing:
        raise DataError(f"{directory}: missing IDX files: {', '.join(missing)}; {_describe_listing(directory)}")
    train_images = read_idx_images(found["train_images"])
    train_labels = read_idx_labels(found["train_labels"])
    _check_counts(found["train_images"], train_images, found["train_labels"], train_labels)
    test_images = read_idx_images(found["test_images"])
    test_labels = read_idx_labels(found["test_labels"])
    _check_counts(found["test_images"], test_images, found["test_labels"], test_labels)
    return train_images, train_labels, test_images, test_labels
