"""Reading and writing safetensors files, through the `safetensors` package.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON naming
each tensor's dtype, shape and byte range, then the tensors' bytes. Nothing in it can
run. The header is checked here before the package reads the file, so that every way a
file can be broken (a length beyond the file, JSON that does not parse, a byte range
outside the data or of the wrong size, a dtype numpy cannot hold) is one line naming the
file and the first thing wrong (`read_header`).

TensorFlow is not imported: a broken file is refused before any start-up.
"""

import collections
import json
import os
import struct

import numpy as np

from runtime import userfiles
from runtime.errors import CheckpointError, one_line
from runtime.paths import shown

TENSORS_NAME = "model.safetensors"
METADATA_KEY = "__metadata__"
# The dtypes both numpy and TensorFlow hold, by their safetensors codes.
DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16),
    "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
}
_LENGTH = struct.Struct("<Q")
# The safetensors package refuses headers over 100 MB; so does this reader, before reading one.
MAX_HEADER = 100 * 1000 * 1000


def looks_like_safetensors(path):
    """Whether the file's first bytes are a header length that fits the file, then a '{'."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as stream:
            head = stream.read(_LENGTH.size + 1)
    except OSError:
        return False
    if len(head) <= _LENGTH.size:
        return False
    (length,) = _LENGTH.unpack(head[: _LENGTH.size])
    return 2 <= length <= size - _LENGTH.size and head[_LENGTH.size :] == b"{"


def _load_json(path, size):
    """The header's JSON object, its length bounded by the file's size first."""
    label = shown(path)
    if size < _LENGTH.size:
        raise CheckpointError(f"{label} is not a safetensors file: {size} bytes, shorter than the 8-byte header length")
    with open(path, "rb") as stream:
        (length,) = _LENGTH.unpack(stream.read(_LENGTH.size))
        if length > size - _LENGTH.size or length > MAX_HEADER:
            raise CheckpointError(
                f"{label} is not a safetensors file (or is truncated): its header length {length:,} "
                f"is beyond the file's {size:,} bytes"
            )
        raw = stream.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=userfiles.no_duplicate_keys)
    except userfiles.JSON_ERRORS as error:
        raise CheckpointError(
            f"{label}: its safetensors header is not valid JSON: {userfiles.json_refusal(error)}"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{label}: its safetensors header is a JSON {type(header).__name__}, not an object")
    return header, _LENGTH.size + length


def _entry(label, name, entry, data_size):
    """(dtype, shape, begin, end) of one header entry, checked."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{label}: tensor {name!r} is not described by dtype, shape and data_offsets")
    code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(code, str) or code not in DTYPES:
        raise CheckpointError(
            f"{label}: tensor {name!r} has dtype {code!r}, not one this toolkit reads ({', '.join(DTYPES)})"
        )
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise CheckpointError(f"{label}: tensor {name!r} has shape {shape!r}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise CheckpointError(f"{label}: tensor {name!r} has data_offsets {offsets!r}, not [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise CheckpointError(
            f"{label}: tensor {name!r} has data_offsets [{begin}, {end}], outside the {data_size:,} bytes of data"
        )
    expected = int(np.prod(shape, dtype=np.int64)) * DTYPES[code].itemsize
    if end - begin != expected:
        raise CheckpointError(
            f"{label}: tensor {name!r} spans {end - begin:,} bytes, but {code} {shape} takes {expected:,}"
        )
    return DTYPES[code], tuple(shape), begin, end


def read_header(path):
    """Checks a safetensors file's header against the file; reads no tensor.

    Returns:
      (entries, metadata): an ordered dict {name: (numpy dtype, shape)} in the order of
      the tensors' bytes, and the header's string metadata ({} when it has none).

    Raises:
      CheckpointError: one line for the first thing wrong: a header length beyond the
        file, a header that is not a JSON object, a tensor whose dtype is not in DTYPES,
        whose shape or byte range is malformed, outside the data or of the wrong size,
        byte ranges that overlap or leave a gap, or metadata that is not strings.
    """
    label = shown(path)
    try:
        size = os.path.getsize(path)
        header, data_start = _load_json(path, size)
    except OSError as error:
        raise CheckpointError(f"cannot read {label}: {one_line(error)}") from None
    metadata = header.pop(METADATA_KEY, None) or {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{label}: its safetensors {METADATA_KEY} is not a map of strings")
    data_size = size - data_start
    spans = sorted(
        ((_entry(label, name, entry, data_size), name) for name, entry in header.items()), key=lambda s: s[0][2:]
    )
    covered = 0
    for (_, _, begin, end), name in spans:
        if begin != covered:
            what = "overlaps the tensor before it" if begin < covered else f"leaves bytes {covered}..{begin} unused"
            raise CheckpointError(f"{label}: tensor {name!r} {what}")
        covered = end
    if covered != data_size:
        raise CheckpointError(
            f"{label}: its tensors take {covered:,} bytes, but the file holds {data_size:,} after the header"
        )
    entries = collections.OrderedDict((name, (dtype, shape)) for (dtype, shape, _, _), name in spans)
    return entries, metadata


def read(path):
    """Every tensor of a safetensors file, after read_header accepted it.

    Returns:
      (tensors, metadata): an ordered dict {name: numpy array} and the header's metadata.
    """
    from safetensors import SafetensorError, safe_open

    entries, metadata = read_header(path)
    tensors = collections.OrderedDict()
    try:
        with safe_open(path, framework="np") as stream:
            for name in entries:
                tensors[name] = stream.get_tensor(name)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {shown(path)}: {one_line(error)}") from None
    return tensors, metadata


def same_bits(a, b):
    """Whether two arrays have the same dtype, shape and bytes (NaN payloads included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def write(path, tensors, metadata):
    """Writes {name: array} with string metadata, reads it back and compares bit for bit.

    Raises:
      CheckpointError: when a tensor reads back different (the file is left for the caller
        to remove, as it is inside a staging folder).
    """
    from safetensors.numpy import save_file

    # np.asarray keeps a scalar 0-d (np.ascontiguousarray would make it [1]).
    save_file({name: np.asarray(value, order="C") for name, value in tensors.items()}, path, metadata=metadata)
    stored, _ = read(path)
    if set(stored) != set(tensors):
        raise CheckpointError(f"{shown(path)} holds {len(stored)} tensors after writing, expected {len(tensors)}")
    for name, value in tensors.items():
        if not same_bits(stored[name], value):
            raise CheckpointError(f"{shown(path)}: {name} differs from the source after writing")
