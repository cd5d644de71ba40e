"""A reader for PyTorch state_dicts in the legacy (non-zip) serialisation, without torch
and without unpickling.

A pickle is a program: `pickle.load` on a user's file runs whatever callables it names.
This reader never calls pickle.load or pickle.Unpickler. It walks each pickle's opcodes
with `pickletools.genops` and evaluates them itself, on a small stack machine that knows
only what a tensor state_dict needs: containers, numbers and strings, the globals
`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the `torch.*Storage`
types, as inert markers it interprets itself, and persistent ids naming storages. Any
other opcode or global stops the read with one line naming it, before anything after it
is even parsed; nothing named in the file is imported or called.

The legacy layout (torch.save with _use_new_zipfile_serialization=False): five pickles
in a row (a magic number, the protocol version 1001, a sys-info dict, the object with
tensors as persistent storage ids, the list of storage keys), then for each key in that
list a little-endian int64 element count and the storage's raw bytes.

Input is bounded: every tensor's view (offset, sizes, strides) is checked against its
storage's element count before any storage is read (check_view), a storage larger than
what is left of the file is refused before it is read, and the tensors come back as
read-only views of the storages, so the arrays never take more memory than the file.
"""

import collections
import io
import pickletools
import reprlib
import struct
import zipfile

import numpy as np

from runtime.errors import CheckpointError, one_line
from runtime.paths import shown

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
ORDERED_DICT = ("collections", "OrderedDict")
REBUILD_TENSOR = ("torch._utils", "_rebuild_tensor_v2")
ALLOWED_GLOBALS = {ORDERED_DICT, REBUILD_TENSOR} | {("torch", name) for name in STORAGE_DTYPES}


class _Global:
    """An allowed global, as a marker: never the object it names."""

    def __init__(self, module, name):
        self.key = (module, name)

    def __repr__(self):
        return ".".join(self.key)


class _Storage:
    """A storage named by a persistent id; its bytes come after the pickles."""

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array = None


class _Tensor:
    """A strided view of a storage, materialised once the storages are read."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _StateDict(collections.OrderedDict):
    """The OrderedDict the pickle builds; BUILD may attach TF-ignored `_metadata`."""


# Opcodes whose argument is the value itself: ints, floats and str.
_LITERALS = frozenset(
    ("BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8")
    # The text forms of protocols 0 and 1.
    + ("INT", "LONG", "FLOAT", "UNICODE")
)


class _Mark:
    pass


_MARK = _Mark()
# What the opcodes that take no argument push (immutable values, shared safely).
_CONSTANTS = {"MARK": _MARK, "NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}


# A value of the file as messages show it: a few levels and characters deep, never recursing further.
_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxtuple, _BRIEF.maxlist, _BRIEF.maxdict = 3, 4, 4, 4
_BRIEF.maxstring, _BRIEF.maxother = 60, 60
_brief = _BRIEF.repr


def _refuse(path, what):
    raise CheckpointError(f"refusing {path}: {what} (a tensor state_dict needs none of this; nothing was run)")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value):
    return isinstance(value, tuple) and all(_is_int(item) for item in value)


class _Machine:
    """Evaluates one pickle's opcodes, allowing only what a tensor state_dict needs."""

    def __init__(self, path, storages):
        self.path = path
        self.storages = storages  # key -> _Storage, shared by every pickle of the file
        self.stack = []
        self.memo = {}

    def _pop_mark(self):
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index] is _MARK:
                items = self.stack[index + 1 :]
                del self.stack[index:]
                return items
        _refuse(self.path, "a pickle that pops a mark it never set")

    def _pop(self):
        if not self.stack or self.stack[-1] is _MARK:
            _refuse(self.path, "a pickle that pops an empty stack")
        return self.stack.pop()

    def _global(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            _refuse(self.path, f"its pickle names the global {module}.{name}")
        return _Global(module, name)

    def _persistent(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            _refuse(self.path, f"a persistent id that is not a storage: {_brief(pid)}")
        _, storage_type, key, location, numel = pid[:5]
        if not isinstance(storage_type, _Global) or storage_type.key[1] not in STORAGE_DTYPES:
            _refuse(self.path, f"a storage of type {_brief(storage_type)}")
        if not (isinstance(key, str) and isinstance(location, str) and _is_int(numel) and numel >= 0):
            _refuse(self.path, f"a malformed storage id {_brief(pid)}")
        if len(pid) == 6 and pid[5] is not None:
            _refuse(self.path, "a storage view (not written by state_dict saving)")
        dtype = STORAGE_DTYPES[storage_type.key[1]]
        storage = self.storages.setdefault(key, _Storage(key, dtype, numel))
        if storage.dtype != dtype or storage.numel != numel:
            _refuse(self.path, f"storage {key} declared twice with different types or sizes")
        return storage

    def _reduce(self, function, args):
        if not isinstance(function, _Global) or not isinstance(args, tuple):
            _refuse(self.path, f"a call of {_brief(function)}")
        if function.key == ORDERED_DICT:
            if args == ():
                return _StateDict()
            if (
                len(args) == 1
                and isinstance(args[0], list)
                and all(isinstance(p, tuple) and len(p) == 2 for p in args[0])
            ):
                return _StateDict(args[0])
        elif function.key == REBUILD_TENSOR and len(args) in (6, 7):
            storage, offset, size, stride, requires_grad, hooks = args[:6]
            if (
                isinstance(storage, _Storage)
                and _is_int(offset)
                and _int_tuple(size)
                and _int_tuple(stride)
                and len(size) == len(stride)
                and isinstance(requires_grad, bool)
                and isinstance(hooks, _StateDict)
                and not hooks
            ):
                return _Tensor(storage, offset, size, stride)
        _refuse(self.path, f"a call of {_brief(function)} with unexpected arguments")

    def run(self, ops):
        """Evaluates opcodes up to STOP and returns the pickled value."""
        handlers = self._HANDLERS
        for opcode, arg, _ in ops:
            name = opcode.name
            if name == "STOP":
                value = self._pop()
                if self.stack:
                    _refuse(self.path, "a pickle that leaves values behind")
                return value
            handler = handlers.get(name)
            if handler is None:
                _refuse(self.path, f"its pickle uses the opcode {name}")
            handler(self, name, arg)
        _refuse(self.path, "a pickle without STOP")

    # The opcode handlers, each called as handler(self, opcode name, its argument).

    def _skip(self, name, arg):
        pass

    def _push_arg(self, name, arg):
        self.stack.append(arg)

    def _push_text(self, name, arg):
        self.stack.append(arg if isinstance(arg, str) else arg.decode("latin-1"))

    def _push_constant(self, name, arg):
        self.stack.append(_CONSTANTS[name])

    def _push_empty(self, name, arg):
        self.stack.append([] if name == "EMPTY_LIST" else {})  # a new one each time: APPEND and SETITEM fill it

    def _tuple_of_top(self, name, arg):
        count = int(name[-1])
        items = [self._pop() for _ in range(count)][::-1]
        self.stack.append(tuple(items))

    def _tuple_of_marked(self, name, arg):
        self.stack.append(tuple(self._pop_mark()))

    def _list_of_marked(self, name, arg):
        self.stack.append(self._pop_mark())

    def _dict_of_marked(self, name, arg):
        items = self._pop_mark()
        if len(items) % 2 or not all(isinstance(key, (str, int)) for key in items[::2]):
            _refuse(self.path, "a malformed DICT")
        self.stack.append(dict(zip(items[::2], items[1::2])))

    def _append(self, name, arg):
        items = [self._pop()] if name == "APPEND" else self._pop_mark()
        target = self._pop()
        if not isinstance(target, list):
            _refuse(self.path, f"{name} on a {type(target).__name__}")
        target.extend(items)
        self.stack.append(target)

    def _set_items(self, name, arg):
        if name == "SETITEM":
            value = self._pop()
            items = [self._pop(), value]
        else:
            items = self._pop_mark()
        target = self._pop()
        if not isinstance(target, dict) or len(items) % 2:
            _refuse(self.path, f"{name} on a {type(target).__name__}")
        for key, value in zip(items[::2], items[1::2]):
            if not isinstance(key, (str, int)):
                _refuse(self.path, f"a dict key of type {type(key).__name__}")
            target[key] = value
        self.stack.append(target)

    def _memo_put(self, name, arg):
        if not self.stack:
            _refuse(self.path, "a memo put on an empty stack")
        self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self.stack[-1]

    def _memo_get(self, name, arg):
        if arg not in self.memo:
            _refuse(self.path, f"a memo get of unknown slot {arg}")
        self.stack.append(self.memo[arg])

    def _push_global(self, name, arg):
        module, _, attribute = arg.partition(" ")
        self.stack.append(self._global(module, attribute))

    def _push_stack_global(self, name, arg):
        attribute, module = self._pop(), self._pop()
        if not (isinstance(module, str) and isinstance(attribute, str)):
            _refuse(self.path, "a STACK_GLOBAL without string names")
        self.stack.append(self._global(module, attribute))

    def _push_persistent(self, name, arg):
        self.stack.append(self._persistent(self._pop()))

    def _push_reduced(self, name, arg):
        args = self._pop()
        self.stack.append(self._reduce(self._pop(), args))

    def _build(self, name, arg):
        state = self._pop()
        target = self.stack[-1] if self.stack else None
        # An OrderedDict's instance dict: state_dict's `_metadata` (module versions).
        if not (isinstance(target, _StateDict) and isinstance(state, dict)):
            _refuse(self.path, f"BUILD on a {type(target).__name__}")

    # Every opcode this reader evaluates; any other stops the read (a class body, so its
    # values are the plain functions above, called with the machine).
    _HANDLERS = {
        **dict.fromkeys(("PROTO", "FRAME"), _skip),
        **dict.fromkeys(_LITERALS, _push_arg),
        **dict.fromkeys(("BINSTRING", "SHORT_BINSTRING", "STRING"), _push_text),
        **dict.fromkeys(("MARK", "NONE", "NEWTRUE", "NEWFALSE", "EMPTY_TUPLE"), _push_constant),
        **dict.fromkeys(("EMPTY_LIST", "EMPTY_DICT"), _push_empty),
        **dict.fromkeys(("TUPLE1", "TUPLE2", "TUPLE3"), _tuple_of_top),
        "TUPLE": _tuple_of_marked,
        "LIST": _list_of_marked,
        "DICT": _dict_of_marked,
        **dict.fromkeys(("APPEND", "APPENDS"), _append),
        **dict.fromkeys(("SETITEM", "SETITEMS"), _set_items),
        **dict.fromkeys(("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"), _memo_put),
        **dict.fromkeys(("BINGET", "LONG_BINGET", "GET"), _memo_get),
        "GLOBAL": _push_global,
        "STACK_GLOBAL": _push_stack_global,
        "BINPERSID": _push_persistent,
        "REDUCE": _push_reduced,
        "BUILD": _build,
    }


def evaluate(stream, storages, path, what):
    """Evaluates the pickle at the stream's position through the allow-list; storages fills from its ids."""
    return _pickle(stream, _Machine(path, storages), path, what)


def _pickle(stream, machine, path, what):
    try:
        return machine.run(pickletools.genops(stream))
    except CheckpointError:
        raise
    except (ValueError, EOFError, struct.error, UnicodeDecodeError, IndexError, TypeError, RecursionError) as error:
        # TypeError: a value of the wrong kind where the allowed calls want another (an unhashable
        # key); RecursionError: values nested deeper than Python compares or prints them.
        reason = "values nested too deeply" if isinstance(error, RecursionError) else one_line(error)
        raise CheckpointError(f"{path} is not a legacy PyTorch file: cannot parse its {what}: {reason}") from None


def _read_exact(stream, count, path, what):
    # Counted before reading: a count the file cannot hold (a storage id claiming 10**30
    # elements) is refused without asking for that much.
    left = stream.getbuffer().nbytes - stream.tell()
    if count > left:
        raise CheckpointError(f"{path} is truncated: {what} needs {count} bytes, {left} left")
    return stream.read(count)


# More dimensions than this are refused: numpy 1.x arrays have at most 32 (2.x: 64).
_MAX_DIMS = 32
# The largest byte count numpy can describe, even for an array of no elements.
_MAX_BYTES = 2**63 - 1


def _shown(name):
    return name if name.isprintable() else repr(name)


def check_view(tensor, path, name):
    """Refuses a tensor whose view does not lie inside its storage, before anything is allocated.

    The rule, in Python integers (no overflow): extents, strides and the offset are not
    negative; a tensor with elements holds no more of them than its storage (so no view
    multiplies memory, whatever its strides) and its last element, offset + sum((extent - 1)
    * stride), lies inside the storage; the stride of a dimension of extent 0 or 1 is never
    used, so any value there is accepted (torch writes 0 for an expanded dimension); an
    empty tensor starts at most at the storage's end and its other extents stay describable
    (their product, in bytes, below 2**63).

    Raises:
      CheckpointError: one line naming the tensor.
    """
    storage, size, stride, offset = tensor.storage, tensor.size, tensor.stride, tensor.offset
    which = f"tensor {_shown(name)}"
    if len(size) > _MAX_DIMS:
        raise CheckpointError(f"{path}: {which} has {len(size)} dimensions, more than the {_MAX_DIMS} allowed")
    if any(extent < 0 for extent in size) or any(step < 0 for step in stride) or offset < 0:
        raise CheckpointError(f"{path}: {which} has a negative size, stride or offset")
    elements = 1
    for extent in size:
        elements *= extent
    if elements == 0:
        described = storage.dtype.itemsize
        for extent in size:
            described *= max(extent, 1)
        if described > _MAX_BYTES:
            raise CheckpointError(f"{path}: {which} is shaped {_brief(size)}, beyond what an array can describe")
        if offset > storage.numel:
            raise CheckpointError(f"{path}: {which} starts at element {offset} of a {storage.numel}-element storage")
        return
    if elements > storage.numel:
        raise CheckpointError(
            f"{path}: {which} is shaped {_brief(size)}: {elements} elements, more than its "
            f"{storage.numel}-element storage holds"
        )
    last = offset + sum((extent - 1) * step for extent, step in zip(size, stride))
    if last >= storage.numel:
        raise CheckpointError(f"{path}: {which} reaches element {last} of a {storage.numel}-element storage")


def materialise(tensor):
    """The tensor as a read-only view of its storage's bytes (checked by check_view): no copy."""
    storage = tensor.storage
    if 0 in tensor.size:
        return np.zeros(tensor.size, storage.dtype.newbyteorder("="))
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage.array[tensor.offset :],
        shape=tensor.size,
        strides=tuple(step * itemsize if extent > 1 else 0 for extent, step in zip(tensor.size, tensor.stride)),
        writeable=False,
    )
    return view if view.dtype.isnative else view.astype(view.dtype.newbyteorder("="))


def read_state_dict(path):
    """Reads a legacy-format PyTorch state_dict into numpy arrays, without running it.

    Args:
      path: the .pth/.pt file.

    Returns:
      An ordered dict {entry name: numpy array}, in the file's order. The arrays are
      read-only views of the storages' bytes (entries sharing a storage share memory), so
      however many entries a file names, they take no more memory than the file; every
      view is checked against its storage (check_view) before a storage is read.

    Raises:
      CheckpointError: with one line, for a file that cannot be read, is not a legacy
        PyTorch file, names anything beyond what a tensor state_dict needs, or holds
        something other than a flat dict of tensors, or a tensor whose view does not lie
        inside its storage.
    """
    stream = io.BytesIO(_read_pickled_file(path))
    path = shown(path)  # from here on only named in messages: one printable line
    storages = {}
    _check_header(stream, storages, path)
    state = _pickle(stream, _Machine(path, storages), path, "object")
    keys = _pickle(stream, _Machine(path, storages), path, "storage keys")
    _check_contents(state, keys, storages, path)
    for name, tensor in state.items():
        check_view(tensor, path, name)
    _read_storages(stream, keys, storages, path)
    return collections.OrderedDict((name, materialise(tensor)) for name, tensor in state.items())


def _read_pickled_file(path):
    """The bytes of the file, once they look like a legacy file (a binary pickle, not a zip)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise CheckpointError(f"cannot read {shown(path)}: {error.strerror}") from None
    if zipfile.is_zipfile(io.BytesIO(data)):
        raise CheckpointError(
            f"{shown(path)} is a zip-format PyTorch file; this reader takes the legacy format (torch.save with "
            "_use_new_zipfile_serialization=False)"
        )
    if not data.startswith(b"\x80"):
        raise CheckpointError(f"{shown(path)} is not a legacy PyTorch file (it does not start with a binary pickle)")
    return data


def _check_header(stream, storages, path):
    """Reads the first three pickles: the magic number, the protocol version, the system info."""
    magic = _pickle(stream, _Machine(path, storages), path, "magic number")
    if magic != MAGIC_NUMBER:
        raise CheckpointError(f"{path} is not a legacy PyTorch file (no torch magic number at its start)")
    protocol = _pickle(stream, _Machine(path, storages), path, "protocol version")
    if protocol != PROTOCOL_VERSION:
        raise CheckpointError(
            f"{path} has torch protocol version {_brief(protocol)}; this reader knows {PROTOCOL_VERSION}"
        )
    sys_info = _pickle(stream, _Machine(path, storages), path, "system info")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise CheckpointError(f"{path} was not written on a little-endian machine (or lacks its system info)")


def _check_contents(state, keys, storages, path):
    """Checks the object is a flat dict of tensors and the key list covers every storage it uses."""
    if not (isinstance(keys, list) and all(isinstance(key, str) for key in keys)):
        raise CheckpointError(f"{path} is not a legacy PyTorch file: its storage key list is malformed")
    check_state(state, path)
    missing = set(storages) - set(keys)
    if missing:
        raise CheckpointError(f"{path} is truncated or malformed: storage {min(missing)} has no data")


def check_state(state, path):
    """Checks the pickled object is a flat dict {name: tensor}, as a state_dict is."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a pickled {_kind(state)}, not a state_dict (a dict of tensors)")
    bad = [key for key, value in state.items() if not (isinstance(key, str) and isinstance(value, _Tensor))]
    if bad:
        raise CheckpointError(
            f"{path} is not a state_dict of tensors: entry {_brief(bad[0])} is not a tensor "
            f"(type: {_kind(state[bad[0]])})"
        )


def _read_storages(stream, keys, storages, path):
    """Reads each storage's element count and raw bytes, in the order of the key list."""
    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise CheckpointError(f"{path} is malformed: data for storage {key}, which no tensor uses")
        (numel,) = struct.unpack("<q", _read_exact(stream, 8, path, f"storage {key}'s size"))
        if numel != storage.numel:
            raise CheckpointError(
                f"{path} is malformed: storage {key} holds {numel} elements, its id says {storage.numel}"
            )
        raw = _read_exact(stream, numel * storage.dtype.itemsize, path, f"storage {key}")
        storage.array = np.frombuffer(raw, dtype=storage.dtype)


def _kind(value):
    if isinstance(value, _Tensor):
        return "tensor"
    if isinstance(value, _Global):
        return f"reference to {_brief(value)}"
    if isinstance(value, _StateDict):
        return "OrderedDict"
    return type(value).__name__
