"""PyTorch state_dicts in the zip format (torch.save's default since 1.6), read and written
without torch and without unpickling.

The layout: a zip archive of stored (uncompressed) records under one folder, `archive/` as
torch names it: `data.pkl` (the object, a pickle whose tensors name their storages by
persistent ids ('storage', torch.FloatStorage, key, 'cpu', numel)), `data/<key>` (each
storage's raw little-endian bytes), `byteorder` ("little") and `version` ("3").

Reading goes through the legacy reader's opcode allow-list (transfer.torch_legacy): the
same machine evaluates data.pkl, so a data.pkl naming os.system is refused in one line
and nothing in it runs; every tensor's view is checked against its storage's size before
any storage is read, and a record is read only up to the size the view needs.

Writing produces what `torch.load(path, weights_only=True)` accepts: a protocol-2 pickle
of an OrderedDict whose values are `torch._utils._rebuild_tensor_v2(storage, 0, size,
stride, False, OrderedDict())`, using only the globals and opcodes torch's weights-only
unpickler allows (those of its allow-list), each storage record aligned to 64 bytes in the
file as torch's own writer aligns them, the records in torch's order.

What is verified here, without torch (it is not installed, and this toolkit does not add
it): the record names and their order, `version` 3, `byteorder` little, every record
stored and its data at a multiple of 64 bytes (read from the local headers), data.pkl made
only of the opcodes and globals that torch's weights-only unpickler evaluates (checked
against its source), and every file read back through this module's own allow-list reader,
bit for bit, before it is kept (tests/test_maps.py). Loading it in torch itself is not
tested here: a safetensors file (`--to safetensors`, read by `safetensors.torch.load_file`)
is the surest way into PyTorch.
"""

import collections
import io
import os
import re
import struct
import zipfile

import numpy as np

from runtime.errors import CheckpointError, one_line
from runtime.paths import shown
from transfer import torch_legacy

FOLDER = "archive"
VERSION = b"3\n"
# The most a file's storages may hold, in times its size (compressed records expand).
MAX_EXPANSION = 64
# The largest data.pkl read: a state_dict's pickle is a few hundred bytes a tensor.
MAX_PICKLE = 64 * 1024 * 1024
_ALIGNMENT = 64
_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
_PADDING_ID = 0x4246  # "FB", the extra field torch pads records with
STORAGE_TYPES = {dtype: name for name, dtype in torch_legacy.STORAGE_DTYPES.items()}


def is_zip(path):
    """Whether the file is a zip archive (torch's zip format, if it is a PyTorch file), even a truncated one."""
    try:
        with open(path, "rb") as stream:
            return stream.read(4) == b"PK\x03\x04" or zipfile.is_zipfile(path)
    except OSError:
        return False


def _folder(archive, label):
    """The one folder holding data.pkl."""
    folders = {name.split("/", 1)[0] for name in archive.namelist() if name.endswith("/data.pkl")}
    folders = {folder for folder in folders if f"{folder}/data.pkl" in archive.NameToInfo}
    if len(folders) != 1:
        raise CheckpointError(f"{label} is a zip file but not a PyTorch one: {len(folders)} folders hold a data.pkl")
    return folders.pop()


def _record(archive, name, size, label):
    """The bytes of a record, refused unless it holds exactly `size` bytes."""
    info = archive.NameToInfo.get(name)
    if info is None:
        raise CheckpointError(f"{label} is truncated or malformed: it has no record {name}")
    if info.file_size != size:
        raise CheckpointError(f"{label} is malformed: record {name} holds {info.file_size} bytes, {size} expected")
    with archive.open(info) as stream:
        return stream.read(size)


def _state(archive, folder, label, storages):
    info = archive.NameToInfo[f"{folder}/data.pkl"]
    if info.file_size > MAX_PICKLE:
        raise CheckpointError(f"{label}: its data.pkl is {info.file_size:,} bytes, beyond the {MAX_PICKLE:,} allowed")
    pickled = _record(archive, info.filename, info.file_size, label)
    state = torch_legacy.evaluate(io.BytesIO(pickled), storages, label, "data.pkl")
    torch_legacy.check_state(state, label)
    return state


def _check_byteorder(archive, folder, label):
    name = f"{folder}/byteorder"
    if name in archive.NameToInfo:
        order = _record(archive, name, archive.NameToInfo[name].file_size, label)
        if order.strip() != b"little":
            raise CheckpointError(f"{label} was written {order[:20]!r}-endian; this reader takes little-endian files")


def _check_expansion(storages, file_size, label):
    """Refuses storages that decompress to more than MAX_EXPANSION times the file: a small file of
    deflated zeros would otherwise take gigabytes (torch.save stores its records uncompressed)."""
    total = sum(storage.numel * storage.dtype.itemsize for storage in storages.values())
    if total > MAX_EXPANSION * file_size:
        raise CheckpointError(
            f"{label}: its storages hold {total:,} bytes, over {MAX_EXPANSION} times the file's {file_size:,}; "
            "torch.save stores them uncompressed"
        )


def read_state_dict(path):
    """Reads a zip-format PyTorch state_dict into numpy arrays, without running it.

    Returns:
      An ordered dict {entry name: numpy array}, read-only views of the storages' bytes.

    Raises:
      CheckpointError: one line, for a file that is not a zip-format PyTorch state_dict,
        names anything beyond what a tensor state_dict needs (transfer.torch_legacy's
        allow-list), or holds a tensor whose view does not lie inside its storage.
    """
    label = shown(path)
    try:
        with zipfile.ZipFile(path) as archive:
            folder = _folder(archive, label)
            _check_byteorder(archive, folder, label)
            storages = {}
            state = _state(archive, folder, label, storages)
            for name, tensor in state.items():
                torch_legacy.check_view(tensor, label, name)
            _check_expansion(storages, os.path.getsize(path), label)
            for key, storage in storages.items():
                raw = _record(archive, f"{folder}/data/{key}", storage.numel * storage.dtype.itemsize, label)
                storage.array = np.frombuffer(raw, dtype=storage.dtype)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        raise CheckpointError(f"cannot read {label} as a zip-format PyTorch file: {one_line(error)}") from None
    return collections.OrderedDict((name, torch_legacy.materialise(tensor)) for name, tensor in state.items())


# --- Writing ------------------------------------------------------------------------------------


def _text(value):
    data = value.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value):
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _ints(values):
    return b"(" + b"".join(_int(v) for v in values) + b"t" if values else b")"


_ORDERED_DICT = b"ccollections\nOrderedDict\n)R"


def _tensor(key, array):
    """The opcodes of _rebuild_tensor_v2 over a persistent storage id, as torch pickles a tensor."""
    storage = b"(" + _text("storage") + f"ctorch\n{STORAGE_TYPES[array.dtype]}\n".encode()
    storage += _text(key) + _text("cpu") + _int(array.size) + b"tQ"
    strides = tuple(int(np.prod(array.shape[axis + 1 :], dtype=np.int64)) for axis in range(array.ndim))
    arguments = storage + _int(0) + _ints(array.shape) + _ints(strides) + b"\x89" + _ORDERED_DICT
    return b"ctorch._utils\n_rebuild_tensor_v2\n(" + arguments + b"tR"


def state_pickle(arrays):
    """The protocol-2 pickle of an OrderedDict {name: tensor}, storage i for the i-th tensor."""
    items = b"".join(_text(name) + _tensor(str(index), array) for index, (name, array) in enumerate(arrays.items()))
    return b"\x80\x02" + _ORDERED_DICT + (b"(" + items + b"u" if arrays else b"") + b"."


def _write_record(archive, stream, name, data):
    """Writes one stored record whose data starts at a multiple of 64 bytes in the file."""
    info = zipfile.ZipInfo(f"{FOLDER}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
    start = stream.tell() + _LOCAL_HEADER + len(info.filename.encode()) + 4
    padding = -start % _ALIGNMENT
    info.extra = struct.pack("<HH", _PADDING_ID, padding) + b"Z" * padding
    info.compress_type = zipfile.ZIP_STORED
    with archive.open(info, "w", force_zip64=len(data) >= zipfile.ZIP64_LIMIT) as record:
        record.write(data)


def write_state_dict(path, arrays):
    """Writes {name: array} as a zip-format state_dict at path (torch.load(weights_only=True) reads it).

    Raises:
      CheckpointError: for a dtype torch's storages cannot hold (unsigned beyond 8 bits).
    """
    for name, array in arrays.items():
        if array.dtype not in STORAGE_TYPES:
            raise CheckpointError(
                f"{name} holds {array.dtype} values, which a PyTorch state_dict cannot hold; "
                f"drop it with --drop '^{re.escape(name)}$'"
            )
    with open(path, "wb") as stream, zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as archive:
        _write_record(archive, stream, "data.pkl", state_pickle(arrays))
        _write_record(archive, stream, "byteorder", b"little")
        for index, array in enumerate(arrays.values()):
            little = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
            _write_record(archive, stream, f"data/{index}", little.tobytes())
        _write_record(archive, stream, "version", VERSION)


def read_any(path):
    """A PyTorch state_dict in either format: the zip one, or the legacy one (transfer.torch_legacy)."""
    return read_state_dict(path) if is_zip(path) else torch_legacy.read_state_dict(path)
