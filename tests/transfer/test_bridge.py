"""Tests for the checkpoint bridge of transfer/convert.py and transfer/safetensors_io.py:
TF1 name-based checkpoints <-> safetensors files.

Round trips are bit-exact for every registry network (random weights, full size; the
cheap ones in the fast tier, all of them once in a slow test), and the checkpoint that
comes back restores by name into the network's own variables. Every way a safetensors
header can be broken is one `error:` line, checked over generated corrupt files.
"""

import collections
import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import save_file

from models import networks
from runtime import outputs
from runtime.errors import CheckpointError, UserError
from runtime.paths import DirAlias
from transfer import convert, safetensors_io

v1 = tf.compat.v1

SEED = 20261207
REPO = Path(__file__).resolve().parents[2]
# Optimizer state saved beside the weights: never model weights, dropped by default.
EXTRAS = ("global_step", "beta1_power")


def _random(rng, shape, dtype):
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(0, 100, size=shape).astype(dtype)


def _build(name):
    network = networks.get(name)
    images = v1.placeholder(tf.float32, network.input_shape(1), name="images")
    network.build(images, num_classes=network.num_classes)
    return v1.global_variables()


def _save_network(name, directory, seed=SEED):
    """Saves the network's variables with random values, plus a slot of its first one and two counters.

    Returns:
      (prefix, {model variable name: value}).
    """
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        variables = _build(name)
        first = variables[0]
        extras = [v1.Variable(np.zeros(first.shape.as_list(), np.float32), name=f"{first.op.name}/Momentum")]
        extras += [v1.Variable(np.int64(7), name="global_step"), v1.Variable(np.float32(0.9), name="beta1_power")]
        values = {v.op.name: _random(rng, v.shape.as_list(), v.dtype.as_numpy_dtype) for v in variables}
        holders = {v: v1.placeholder(v.dtype.base_dtype, v.shape) for v in variables}
        assigns = [v1.assign(v, holders[v]) for v in variables]
        with v1.Session() as sess:
            sess.run(v1.variables_initializer(variables + extras))
            sess.run(assigns, {holders[v]: values[v.op.name] for v in variables})
            prefix = v1.train.Saver(variables + extras).save(sess, os.path.join(directory, "model.ckpt-3"))
    return prefix, values


def _convert(source, output, target=None, drops=(), log=None):
    lines = [] if log is None else log
    return convert.bridge(convert.request_for(str(source), str(output), target, drops), log=lines.append)


def _round_trip(name, tmp_path):
    """TF1 -> safetensors -> TF1 for one network; asserts bit-exactness and restore by name."""
    (tmp_path / "src").mkdir()
    prefix, values = _save_network(name, str(tmp_path / "src"))
    lines = []
    written = _convert(tmp_path / "src", tmp_path / "st", log=lines)
    assert written == str(tmp_path / "st" / "model.safetensors")
    assert sorted(os.listdir(tmp_path / "st")) == sorted([outputs.MARKER, "conversion.json", "model.safetensors"])
    stored, metadata = safetensors_io.read(written)
    assert set(stored) == set(values)
    assert metadata["source"] == prefix and metadata["toolkit"] == outputs.TOOLKIT
    back = _convert(tmp_path / "st", tmp_path / "back")
    reader = tf.train.load_checkpoint(back)
    assert set(reader.get_variable_to_shape_map()) == set(values)
    for variable, value in values.items():
        restored = reader.get_tensor(variable)
        assert restored.dtype == value.dtype and np.array_equal(restored, value), variable
    # Restoring into the builder's own variables by name pins the names.
    with tf.Graph().as_default():
        variables = _build(name)
        with v1.Session() as sess:
            v1.train.Saver(variables).restore(sess, back)
            for variable, value in zip(variables, sess.run(variables)):
                assert np.array_equal(value, values[variable.op.name])
    # The report accounts for every tensor of the source, the extras as dropped.
    report = json.loads((tmp_path / "st" / "conversion.json").read_text())
    assert [row["source"] for row in report["tensors"]] == sorted(values)
    assert {row["transform"] for row in report["tensors"]} == {"none"}
    dropped = {row["source"]: row["reason"] for row in report["dropped"]}
    assert set(dropped) == {*EXTRAS, f"{next(iter(values))}/Momentum"}
    assert set(dropped.values()) == {"optimizer slot or counter (default)"}
    assert len(lines) == 1 + len(values) + 1 + len(dropped) + 1
    return len(values)


@pytest.mark.parametrize("name", ["cae", "mobilenet_v1"])
def test_round_trip_is_bit_exact(name, tmp_path):
    assert _round_trip(name, tmp_path) == {"cae": 8, "mobilenet_v1": 137}[name]


@pytest.mark.parametrize("folder", ["run[1]*?", "caf\udce9"], ids=["glob", "not UTF-8"])
def test_a_checkpoint_at_any_path_converts_there_and_back(tmp_path, folder):
    # TensorFlow reads these names as patterns, or not at all: the source and the output go through an alias.
    source, output, back = (tmp_path / f"{folder}{end}" for end in ("", " st", " back"))
    (tmp_path / "saved").mkdir()
    _, values = _save_network("cae", str(tmp_path / "saved"))  # TensorFlow cannot save there: moved there
    os.rename(tmp_path / "saved", source)
    _convert(source / "model.ckpt-3", output)
    written = _convert(output, back)
    assert written == str(back / "model.ckpt")
    with DirAlias(str(back)) as alias:  # the test reads it back the way the toolkit does
        restored = tf.train.load_checkpoint(alias.join("model.ckpt"))
        assert sorted(restored.get_variable_to_shape_map()) == sorted(values)
        assert all(np.array_equal(restored.get_tensor(name), value) for name, value in values.items())


@pytest.mark.slow
def test_round_trip_every_registry_network(tmp_path):
    counts = {}
    for name in networks.NAMES:
        (tmp_path / name).mkdir()
        counts[name] = _round_trip(name, tmp_path / name)
    assert set(counts) == set(networks.NAMES) and len(counts) == 5
    assert counts["vgg_16"] == 32


def test_drop_pattern_and_dtypes_tf_cannot_move(tmp_path):
    """--drop removes what it matches, reported; a dtype safetensors cannot hold is refused unless dropped."""
    (tmp_path / "src").mkdir()
    with tf.Graph().as_default():
        kept = v1.Variable(np.arange(6, dtype=np.float16).reshape(2, 3), name="net/w")
        flags = v1.Variable(np.array([True, False]), name="net/flags")
        label = v1.Variable("text", name="net/label")
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver([kept, flags, label]).save(sess, str(tmp_path / "src" / "model.ckpt"))
    with pytest.raises(CheckpointError, match=r"^net/label holds object values, which safetensors cannot hold"):
        _convert(tmp_path / "src", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    lines = []
    _convert(tmp_path / "src", tmp_path / "st", drops=["label$"], log=lines)
    stored, _ = safetensors_io.read(str(tmp_path / "st" / "model.safetensors"))
    assert sorted(stored) == ["net/flags", "net/w"]
    assert stored["net/w"].dtype == np.float16 and stored["net/flags"].dtype == np.bool_
    assert "  net/label  []  object  dropped: --drop label$" in lines
    with pytest.raises(CheckpointError, match="nothing left to convert: all 3 tensors are dropped"):
        _convert(tmp_path / "src", tmp_path / "none", drops=["^net/"])


def test_sources_are_found_by_content(tmp_path):
    (tmp_path / "two").mkdir()
    for step in (1, 2):
        (tmp_path / "two" / f"model.ckpt-{step}.index").write_bytes(b"")
    with pytest.raises(
        UserError, match=r"holds 2 checkpoints \(model.ckpt-1, model.ckpt-2\); pass the one to convert$"
    ):
        convert.detect(str(tmp_path / "two"))
    # A run dir: its state file names the checkpoint to take; a garbled or foreign one does not.
    state = tmp_path / "two" / "checkpoint"
    state.write_text('model_checkpoint_path: "model.ckpt-2"\nall_model_checkpoint_paths: "model.ckpt-1"\n')
    assert convert.detect(str(tmp_path / "two")) == ("tf1", str(tmp_path / "two" / "model.ckpt-2"))
    for text in ('model_checkpoint_path: "model.ckpt-9"\n', "{{{ not a state file", 'model_checkpoint_path: "a\\"b"'):
        state.write_text(text)
        with pytest.raises(UserError, match="holds 2 checkpoints"):
            convert.detect(str(tmp_path / "two"))
    state.unlink()
    weights = tmp_path / "weights.bin"  # no .safetensors name: the header says what it is
    save_file({"a": np.ones(3, np.float32)}, str(weights))
    assert convert.detect(str(weights)) == ("safetensors", str(weights))
    (tmp_path / "one").mkdir()
    save_file({"a": np.ones(3, np.float32)}, str(tmp_path / "one" / "x.safetensors"))
    assert convert.detect(str(tmp_path / "one")) == ("safetensors", str(tmp_path / "one" / "x.safetensors"))
    (tmp_path / "v1").mkdir()  # a V1 checkpoint is one file, found by its table footer
    with tf.Graph().as_default():
        weights = v1.Variable(np.arange(5, dtype=np.float32), name="net/w")
        saver = v1.train.Saver([weights], write_version=v1.train.SaverDef.V1)
        with v1.Session() as sess:
            sess.run(weights.initializer)
            saver.save(sess, str(tmp_path / "v1" / "model.ckpt"), write_meta_graph=False)
    assert convert.detect(str(tmp_path / "v1")) == ("tf1", str(tmp_path / "v1" / "model.ckpt"))
    _convert(tmp_path / "v1" / "model.ckpt", tmp_path / "from_v1")
    stored, _ = safetensors_io.read(str(tmp_path / "from_v1" / "model.safetensors"))
    assert list(stored) == ["net/w"] and np.array_equal(stored["net/w"], np.arange(5, dtype=np.float32))
    pickle_file = tmp_path / "w.pth"
    pickle_file.write_bytes(b"\x80\x02\x8a\x0a")
    assert convert.detect(str(pickle_file))[0] == "pth"
    (tmp_path / "notes.txt").write_text("mine")
    assert convert.detect(str(tmp_path / "notes.txt"))[0] == "pth"  # whose reader refuses it in one line
    with pytest.raises(UserError, match="does not exist"):
        convert.detect(str(tmp_path / "missing"))


# --- Corrupt safetensors headers ------------------------------------------------------------


def _file(header, data=b"", length=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _valid(rng):
    """A valid header over rng's tensors: (header dict, data bytes)."""
    header, data = collections.OrderedDict(), b""
    for index in range(rng.randint(1, 4)):
        code = rng.choice(sorted(safetensors_io.DTYPES))
        shape = [rng.randint(0, 3) for _ in range(rng.randint(0, 3))]
        size = int(np.prod(shape, dtype=np.int64)) * safetensors_io.DTYPES[code].itemsize
        header[f"layer_{index}/w"] = {"dtype": code, "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += bytes(rng.randrange(256) for _ in range(size))
    return header, data


def _corrupt(rng, kind):
    """A corrupt safetensors file of the given kind, and the message part that names what is wrong."""
    header, data = _valid(rng)
    name = rng.choice(list(header))
    entry = header[name]
    if kind == "length beyond the file":
        raw = _file(header, data)
        return _file(header, data, length=len(raw) + rng.randint(-7, 10**12)), "is beyond the file's"
    if kind == "truncated":
        raw = _file(header, data)
        return raw[: rng.randint(0, 8 + len(json.dumps(header)) - 1)], ("shorter than", "is beyond the file's")
    if kind == "invalid JSON":
        text = json.dumps(header).encode()
        cut = rng.randint(1, len(text) - 1)
        return _file(text[:cut] + rng.choice([b"", b"}", b"\xff", b",,"]), data), "is not valid JSON"
    if kind == "not an object":
        return _file(rng.choice([[1, 2], "x", 3, None]), data), "not an object"
    if kind == "offset outside the data":
        entry["data_offsets"] = [entry["data_offsets"][0], len(data) + rng.randint(1, 10**9)]
        return _file(header, data), "outside the"
    if kind == "negative offset":
        entry["data_offsets"] = [-rng.randint(1, 100), entry["data_offsets"][1]]
        return _file(header, data), "outside the"
    if kind == "dtype not allowed":
        entry["dtype"] = rng.choice(["BF16", "F8_E4M3", "C64", "f32", "", 5, None])
        return _file(header, data), "not one this toolkit reads"
    if kind == "bad shape":
        entry["shape"] = rng.choice([[-1], "3", [1.5], None, [True]])
        return _file(header, data), "not a list of sizes"
    if kind == "wrong span":
        entry["shape"] = entry["shape"] + [2]
        if not np.prod(entry["shape"]):
            entry["shape"] = [7, 5]
        return _file(header, data), ("takes", "outside the")
    if kind == "gap or extra bytes":
        return _file(header, data + b"\x00" * rng.randint(1, 9)), ("after the header", "unused")
    if kind == "missing field":
        del entry[rng.choice(["dtype", "shape", "data_offsets"])]
        return _file(header, data), "not described by dtype, shape and data_offsets"
    if kind == "metadata not strings":
        header["__metadata__"] = {"source": rng.choice([1, None, ["a"], {"b": "c"}])}
        return _file(header, data), "is not a map of strings"
    if kind == "duplicate name":
        text = json.dumps(header)[:-1] + ", " + json.dumps(name) + ": " + json.dumps(entry) + "}"
        return _file(text.encode(), data), "twice"
    raise AssertionError(kind)


CORRUPT_KINDS = (
    "length beyond the file",
    "truncated",
    "invalid JSON",
    "not an object",
    "offset outside the data",
    "negative offset",
    "dtype not allowed",
    "bad shape",
    "wrong span",
    "gap or extra bytes",
    "missing field",
    "metadata not strings",
    "duplicate name",
)


def test_every_corrupt_header_is_one_error_line(tmp_path, capsys):
    """Generated corrupt files (10 per kind, seeded): exit status 2, one `error:` line, nothing written."""
    rng = random.Random(SEED)
    counts = collections.Counter()
    for kind in CORRUPT_KINDS:
        for index in range(10):
            content, expected = _corrupt(rng, kind)
            path = tmp_path / f"case-{len(counts)}-{index}.safetensors"
            path.write_bytes(content)
            output = tmp_path / f"out-{kind.replace(' ', '_')}-{index}"
            assert convert.main([str(path), "--output", str(output)]) == 2, (kind, content[:80])
            out, err = capsys.readouterr()
            assert out == "" and err.count("\n") == 1 and err.startswith("error: "), (kind, err)
            expected = expected if isinstance(expected, tuple) else (expected,)
            assert any(part in err for part in expected), (kind, err)
            assert not output.exists()
            counts[kind] += 1
    print(dict(counts))
    assert sum(counts.values()) == 130 and len(counts) == len(CORRUPT_KINDS)


def test_valid_generated_files_read_back(tmp_path):
    """The controls: valid headers of the same generator are accepted, values byte for byte."""
    rng = random.Random(SEED + 1)
    for index in range(40):
        header, data = _valid(rng)
        path = tmp_path / f"ok-{index}.safetensors"
        path.write_bytes(_file(header, data))
        tensors, _ = safetensors_io.read(str(path))
        assert list(tensors) == list(header)
        assert b"".join(tensors[name].tobytes() for name in header) == data


@pytest.mark.parametrize(
    "kind, message",
    [
        ("length", "its header length 1,000,000 is beyond the file's 86 bytes"),
        ("json", "its safetensors header is not valid JSON"),
        ("offset", "tensor 'w' has data_offsets [0, 4096], outside the 16 bytes of data"),
        ("dtype", "tensor 'w' has dtype 'BF16', not one this toolkit reads"),
    ],
)
def test_command_refuses_a_corrupt_file_in_one_line(tmp_path, kind, message):
    header = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    data = b"\x00" * 16
    if kind == "length":
        content = _file(header, data, length=1_000_000)
    elif kind == "json":
        content = _file(b'{"w": {"dtype": "F32",', data)
    else:
        header["w"]["data_offsets" if kind == "offset" else "dtype"] = [0, 4096] if kind == "offset" else "BF16"
        content = _file(header, data)
    path = tmp_path / "w.safetensors"
    path.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "transfer.convert", str(path), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_every_dtype_survives_safetensors_to_tf1_and_back(tmp_path):
    """One file holding each dtype both formats share (empty and scalar shapes too), there and back."""
    rng = np.random.default_rng(SEED)
    tensors = {}
    for index, (code, dtype) in enumerate(sorted(safetensors_io.DTYPES.items())):
        shape = [(2, 3), (), (0, 4)][index % 3]
        tensors[f"net/{code.lower()}"] = (
            rng.integers(0, 2, size=shape).astype(dtype) if dtype == np.bool_ else _random(rng, shape, dtype)
        )
    save_file(tensors, str(tmp_path / "all.safetensors"))
    back = _convert(tmp_path / "all.safetensors", tmp_path / "tf1")
    again = _convert(tmp_path / "tf1", tmp_path / "st")
    assert back == str(tmp_path / "tf1" / "model.ckpt")
    stored, metadata = safetensors_io.read(again)
    assert metadata["source_format"] == "tf1" and len(stored) == len(tensors) == 12
    for name, value in tensors.items():
        assert safetensors_io.same_bits(stored[name], value), name


@pytest.mark.parametrize(
    "args, message",
    [
        (["--to", "safetensors"], "is already a safetensors checkpoint; --to names the format to write"),
        (["--drop", "("], "--drop '(' is not a regular expression"),
    ],
)
def test_flags_are_checked_before_tensorflow(tmp_path, capsys, args, message):
    save_file({"a": np.ones(3, np.float32)}, str(tmp_path / "a.safetensors"))
    assert convert.main([str(tmp_path / "a.safetensors"), "--output", str(tmp_path / "out"), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert not (tmp_path / "out").exists()
