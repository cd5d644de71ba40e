"""A network the user wrote (`--network FILE.py:ATTRIBUTE` or `PACKAGE.MODULE:ATTRIBUTE`), and
`inspect --plan --target-meta`: planning against a saved graph with no Python of the user's.

The rule: models.user_network is the one place user code is loaded (`load`), recorded in
config.json (`record`) and found again from a run (`resolve`). Tested as properties:
every way a spec can be wrong, in both forms, is one line naming the spec; every form that
is right loads the record and records its file's sha256; a recorded file that changed or
went is refused. A saved graph's variables, read from its MetaGraph as data, are the live
graph's, for generated graphs. And the concrete runs: a tiny user network (get_variable and
tf.nn, no tf_slim) through train, inspect, export, predict and look; tf_slim's
resnet_v2_50 through dry run, a 2-step run, export and predict (slow).
"""

import contextlib
import hashlib
import io
import itertools
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import predict
from models import networks, user_network
from runtime.errors import UserError
from transfer import inspect, train
from transfer.source import graph_variables

v1 = tf.compat.v1
REPO = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).resolve().parents[1] / "registry_network.py"

# A user's network file: get_variable and tf.nn (no tf_slim, nothing in MODEL_VARIABLES).
NETS = '''
import tensorflow as tf

from models.networks import Network

v1 = tf.compat.v1
SCOPE = "{scope}"


def preprocess(images):
    """RGB in [0, 255] scaled to [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def _conv(inputs, filters, name):
    with v1.variable_scope(name):
        kernel = v1.get_variable("kernel", [3, 3, inputs.shape[-1], filters])
        bias = v1.get_variable("bias", [filters], initializer=v1.zeros_initializer())
    return tf.nn.relu(tf.nn.conv2d(inputs, kernel, 2, "SAME") + bias)


def head(features, num_classes, is_training=False, dropout_keep_prob=1.0):
    with v1.variable_scope(SCOPE, reuse=v1.AUTO_REUSE), v1.variable_scope("logits"):
        kernel = v1.get_variable("kernel", [features.shape[-1], num_classes])
        bias = v1.get_variable("bias", [num_classes], initializer=v1.zeros_initializer())
    return tf.matmul(features, kernel) + bias


def build(images, num_classes=3, is_training=False):
    with v1.variable_scope(SCOPE, reuse=v1.AUTO_REUSE):
        conv1 = _conv(images, 4, "conv1")
        conv2 = _conv(conv1, 8, "conv2")
        features = tf.reduce_mean(conv2, axis=[1, 2])
    end_points = {{"conv1": conv1, "conv2": conv2, "features": features, "batch_norm_updates": {{}}}}
    if num_classes is None:
        return features, end_points
    logits = head(features, num_classes)
    return logits, dict(end_points, logits=logits)


def network():
    return Network(
        name=SCOPE,
        build=build,
        head=head,
        image_size=(16, 16),
        channels=3,
        preprocess=preprocess,
        num_classes=3,
        feature_units=8,
        head_scopes=(f"{{SCOPE}}/logits",),
        block_scopes=(f"{{SCOPE}}/conv1", f"{{SCOPE}}/conv2"),
        scope=SCOPE,
        first_conv=f"{{SCOPE}}/conv1/kernel",
    )


NET = network()
'''
CLASSES = ("ant", "bee", "cat")


@pytest.fixture
def clean_registry():
    """The registry and the loader's memory as they were: a test's user networks do not outlive it."""
    saved, names, loaded = dict(networks.NETWORKS), networks.NAMES, dict(user_network._LOADED)
    yield
    networks.NETWORKS.clear()
    networks.NETWORKS.update(saved)
    networks.NAMES = names
    user_network._LOADED.clear()
    user_network._LOADED.update(loaded)
    for name in [name for name in sys.modules if name.split(".")[0] == "userpkg"]:
        del sys.modules[name]  # the next test's package lies in another folder


# How a spec can be wrong: (name, file text or None for no file, attribute, expected fragment).
FAULTS = (
    ("missing file", None, "network", "does not exist"),
    ("no attribute", NETS, "nothing", "no attribute 'nothing'"),
    ("not a network", NETS + "\nANSWER = 42\n", "ANSWER", "is of type int, not a models.networks.Network record"),
    ("returns None", NETS + "\ndef empty():\n    return None\n", "empty", "is of type NoneType, not a models.networks"),
    (
        "builder raises",
        NETS + "\ndef broken():\n    raise ValueError('no weights here')\n",
        "broken",
        "broken() raised",
    ),
    ("builder takes arguments", NETS, "build", "build() raised TypeError"),
    ("file raises", "raise RuntimeError('half written')\n", "network", "raised RuntimeError: half written"),
    ("syntax error", "def network(:\n", "network", "raised SyntaxError"),
    ("import fails", "import no_such_package_here\n", "network", "raised ModuleNotFoundError"),
    ("name taken", NETS.replace("name=SCOPE", 'name="cae"'), "network", "the name 'cae' is taken"),
)
# Specs wrong by their form alone: (spec, expected fragment).
MALFORMED = (
    ("nets.py:", "expected FILE.py:ATTRIBUTE"),
    (":network", "expected FILE.py:ATTRIBUTE"),
    ("nets.py:1st", "expected FILE.py:ATTRIBUTE"),
    ("pkg.mod:", "expected FILE.py:ATTRIBUTE"),
    ("bad-module:network", "neither a .py file nor a dotted module path"),
    ("a..b:network", "neither a .py file nor a dotted module path"),
    ("models.cae:build_classifier", "models.cae is the toolkit's own module, not a network you wrote"),
)


def _spec(tmp_path, form, index, text, attribute):
    """Writes the file of one situation and returns its spec, in the file or the module form."""
    package = tmp_path / "userpkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    module = f"case{index}"
    if text is not None:
        (package / f"{module}.py").write_text(text.format(scope=f"user{index}") if "{scope}" in text else text)
    if form == "file":
        return f"{package / module}.py:{attribute}"
    return f"userpkg.{module}:{attribute}"


def test_every_wrong_spec_is_one_line_naming_it(tmp_path, monkeypatch, clean_registry):
    monkeypatch.syspath_prepend(str(tmp_path))
    situations = [
        (form, f"{form}{index}", text, attribute, fragment)
        for form, (index, (_, text, attribute, fragment)) in itertools.product(("file", "module"), enumerate(FAULTS))
    ]
    situations += [(None, None, spec, None, fragment) for spec, fragment in MALFORMED]
    assert len(situations) == 27
    for form, key, text, attribute, fragment in situations:
        spec = text if form is None else _spec(tmp_path, form, key, text, attribute)
        if form == "module" and fragment == "does not exist":
            fragment = "no Python file for module"
        with pytest.raises(UserError) as caught:
            user_network.resolve(spec)
        message = str(caught.value)
        assert "\n" not in message and len(message) < 1000, message
        assert message.startswith(f"--network {spec}: ") and fragment in message, (spec, message)


def test_each_right_form_loads_the_record_and_records_its_file(tmp_path, monkeypatch, clean_registry):
    monkeypatch.syspath_prepend(str(tmp_path))
    situations = list(itertools.product(("file", "module"), ("network", "NET")))
    for index, (form, attribute) in enumerate(situations):
        spec = _spec(tmp_path, form, f"ok{index}", NETS, attribute)
        network = user_network.resolve(spec)
        assert network.name == f"userok{index}" and networks.get(network.name) is network
        assert user_network.resolve(spec) is network  # loaded once per process
        path = tmp_path / "userpkg" / f"caseok{index}.py"
        assert user_network.record(network) == {
            "module": None if form == "file" else f"userpkg.caseok{index}",
            "path": str(path),
            "attribute": attribute,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        with tf.Graph().as_default():  # get_variable's variables become model variables
            network.build(v1.placeholder(tf.float32, [None, 16, 16, 3]), num_classes=5)
            names = [var.op.name for var in v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)]
        assert names == [
            f"userok{index}/{layer}/{leaf}" for layer in ("conv1", "conv2", "logits") for leaf in ("kernel", "bias")
        ]
    assert len(situations) == 4
    assert user_network.record(networks.get("cae")) is None
    # A feature cache keys a user's network by its file's content, a registry one by its name.
    assert user_network.identity(network) == f"{network.name}@sha256:{user_network.record(network)['sha256']}"
    assert user_network.identity(networks.get("cae")) == "cae"


# A build or head of NETS changed into a mistake: (name, the line replaced, its replacement, what the
# message says; {line} is the replacement's line in the file).
MISTAKES = (
    ("build returns the logits alone", "    return logits, dict(end_points, logits=logits)", "    return logits",
     "its build returned a tensor alone, not (net, end_points): a tensor and a dict"),
    ("build returns None", "    return logits, dict(end_points, logits=logits)", "    return None",
     "its build returned a NoneType, not (net, end_points): a tensor and a dict"),
    ("head returns a pair", "    return tf.matmul(features, kernel) + bias",
     "    return tf.matmul(features, kernel), {{}}",
     "its head returned a tuple of 2, not the logits tensor"),
    ("is_training in a cond", "        conv2 = _conv(conv1, 8, \"conv2\")",
     "        conv2 = v1.cond(is_training, lambda: _conv(conv1, 8, \"conv2\"), lambda: conv1)",
     "(at {path}:{line}); is_training may be a function of a layer's scope: models.net_ops.layer_training("),
    ("raises in a helper", "        kernel = v1.get_variable(\"kernel\", [3, 3, inputs.shape[-1], filters])",
     "        raise ValueError(f'no {{name}} here')",
     "its build raised ValueError: no conv1 here (at {path}:{line})"),
)  # fmt: skip


def test_a_wrong_build_or_head_is_one_line_naming_the_users_line(tmp_path, clean_registry):
    for index, (name, line, replacement, ending) in enumerate(MISTAKES):
        assert NETS.count(line) == 1, name
        path = tmp_path / f"mistake{index}.py"
        text = NETS.replace(line, replacement).format(scope=f"mistake{index}")
        path.write_text(text)
        line_number = text.splitlines().index(replacement.format()) + 1
        network = user_network.resolve(f"{path}:network")
        with tf.Graph().as_default(), pytest.raises(UserError) as caught:
            images = v1.placeholder(tf.float32, [None, 16, 16, 3])
            features, _ = network.build(images, num_classes=None, is_training=lambda scope: False)
            network.head(features, 3)
            network.build(images, num_classes=3, is_training=lambda scope: False)
        message = str(caught.value)
        assert "\n" not in message and ending.format(path=path, line=line_number) in message, (name, message)
        assert message.startswith(f"--network {path}:network: its "), (name, message)


def test_a_network_file_imports_the_modules_beside_it(tmp_path, clean_registry):
    (tmp_path / "my_layers.py").write_text("FILTERS = 4\n")
    path = tmp_path / "nets.py"
    path.write_text("from my_layers import FILTERS\n" + NETS.format(scope="beside"))
    before = list(sys.path)
    assert user_network.resolve(f"{path}:network").name == "beside"
    assert sys.path == before  # the folder was on the path while the file ran, not after
    sys.modules.pop("my_layers", None)


def test_a_run_finds_its_network_again_and_refuses_a_changed_or_missing_file(tmp_path, clean_registry):
    path = tmp_path / "nets.py"
    path.write_text(NETS.format(scope="mine"))
    network = user_network.resolve(f"{path}:network")
    config = {"model": "transfer", "network": "mine", "network_source": user_network.record(network)}
    assert user_network.resolve(None, config, "run") is network
    assert user_network.resolve("mine", config, "run") is network
    with pytest.raises(UserError, match=r"^--network cae: run was trained as mine$"):
        user_network.resolve("cae", config, "run")
    path.write_text(NETS.format(scope="mine") + "\n# edited\n")
    with pytest.raises(UserError) as changed:
        user_network.resolve(None, config, "run")
    old, new = config["network_source"]["sha256"][:12], hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert str(changed.value) == (
        f"run was trained with {path} at sha256 {old}, it is now {new}: the run's weights were made by the old "
        f"file; restore it, or pass --network {path}:network to use it as it is"
    )
    path.unlink()
    with pytest.raises(UserError, match="which is gone; pass --network FILE:ATTRIBUTE"):
        user_network.resolve(None, config, "run")
    # Resuming compares the record as it compares the data: a run never continues on another file.
    assert "network_source" in train.RESUME_KEYS


def test_predict_hands_the_exporter_a_spec_it_can_read_from_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert predict._from_anywhere("nets.py:network") == f"{tmp_path}/nets.py:network"
    assert predict._from_anywhere("sub/nets.py:NET") == f"{tmp_path}/sub/nets.py:NET"
    assert predict._from_anywhere("userpkg.nets:network") == "userpkg.nets:network"  # PYTHONPATH gets the cwd
    assert predict._from_anywhere("vgg_16") == "vgg_16"


def _image_folder(root, size, classes):
    """train/ and test/ with 1 and 1 PNG per class, a colour per class (seeded)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            pixels = rng.integers(0, 60, (size, size, 3))
            pixels[..., index % 3] += 180
            Image.fromarray(pixels.astype(np.uint8)).save(folder / "0.png")


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", **extra)


def _run(argv, cwd, env=None, status=0):
    done = subprocess.run(
        [sys.executable, *map(str, argv)], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == status, (argv, done.stdout[-3000:], done.stderr[-3000:])
    return done


def test_a_network_file_goes_through_every_command(tmp_path):
    (tmp_path / "nets.py").write_text(NETS.format(scope="mine"))
    _image_folder(tmp_path / "photos", 16, CLASSES)
    train = ["train_transfer", "--network", "nets.py:network", "--data-dir", "photos", "--restore", "none"]
    train += ["--model-dir", "run", "--epochs", "1", "--batch-size", "3", "--validation-percent", "0", "--seed", "0"]
    inspect_argv = ["inspect", "run", "--plan", "--json", "--restore", "backbone", "--num-classes", "3"]
    commands = (
        [*train, "--dry-run", "--model-dir", "dry"],
        train,
        inspect_argv,  # no --network: the run's
        ["export", "--model-dir", "run", "--output", "exported"],  # likewise
        ["look", "ideal", "run", "--classes", "cat", "--steps", "2", "--out-dir", "ideal"],
    )
    argv = [word for command in commands for word in ("+", *command)][1:]
    out = _run([HELPER, *argv], tmp_path).stdout
    assert "mine/conv1/kernel" in out and not (tmp_path / "dry").exists()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["network"] == "mine" and config["network_source"]["path"] == str(tmp_path / "nets.py")
    plan = json.loads(out.split("=== inspect\n")[1].split("=== export")[0])
    assert [row["action"] for row in plan["variables"]] == ["restored"] * 4 + ["initialised"] * 2
    card = json.loads((tmp_path / "exported" / "model_card.json").read_text())
    assert card["network"]["name"] == "mine" and card["classes"] == list(CLASSES)
    # A fresh process, which knows the network only from the run's config.json.
    predicted = _run([REPO / "predict.py", "--checkpoint", "run", "photos/test/bee/0.png", "--json"], tmp_path)
    assert json.loads(predicted.stdout)  # a JSON document of the three classes' probabilities
    assert set(CLASSES) <= set(predicted.stdout.replace('"', " ").split())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train_transfer.py", "--network", "gone.py:network", "--dry-run"], "gone.py does not exist"),
        (
            ["train_transfer.py", "--network", "nets.py:nothing", "--dry-run", "--restore", "none"],
            "error: --network nets.py:nothing: no attribute 'nothing' (it defines: ",
        ),
        (
            ["train_transfer.py", "--network", "nets.py:network", "--dry-run", "--restore", "none"],
            "error: --network nets.py:network: its build raised ZeroDivisionError: division by zero",
        ),
        (["-m", "transfer.export", "--model-dir", ".", "--output", "x", "--network", "nets.py"], "unknown network"),
    ],
)
def test_a_user_network_error_on_the_command_line_is_one_line(tmp_path, argv, message):
    (tmp_path / "nets.py").write_text(
        NETS.format(scope="mine").replace("conv1 = _conv", "1 / 0\n        conv1 = _conv")
    )
    _image_folder(tmp_path / "photos", 16, CLASSES)
    if argv[0] == "train_transfer.py":
        argv = [REPO / argv[0], *argv[1:], "--data-dir", "photos", "--model-dir", "run", "--validation-percent", "0"]
    done = _run(argv, tmp_path, status=2)
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and lines[-1].startswith("error: ") and message in lines[-1], done.stderr


# --target-meta: a graph saved as a MetaGraph, planned as data.


def _tiny_graph(rng, register, slots):
    """A generated graph: 1 to 3 get_variable layers under generated scopes, optionally registered
    as model variables, optionally with an Adam step (slots and counters that are no model variables).

    Returns:
      The layers' variables, in creation order.
    """
    net, variables = v1.placeholder(tf.float32, [None, 4]), []
    for index in range(rng.randint(1, 3)):
        scope = rng.choice(("conv", "fc", "enc/conv", "layer")) + str(index + 1)
        with v1.variable_scope(scope):
            kernel = v1.get_variable("kernel", [int(net.shape[-1]), rng.randint(1, 5)])
            bias = v1.get_variable("bias", [kernel.shape[-1]], trainable=rng.random() < 0.8)
        variables += [kernel, bias]
        net = tf.matmul(net, kernel) + bias
    for var in variables if register else ():
        v1.add_to_collection(v1.GraphKeys.MODEL_VARIABLES, var)
    if slots:
        v1.train.AdamOptimizer().minimize(tf.reduce_sum(net), v1.train.get_or_create_global_step())
    return variables


def test_a_saved_graph_reads_back_as_the_live_graphs_variables(tmp_path):
    rng = random.Random(21)
    situations = list(itertools.product((False, True), (False, True), range(6)))
    for number, (register, slots, _) in enumerate(situations):
        path = str(tmp_path / f"g{number}.meta")
        with tf.Graph().as_default():
            expected = graph_variables(_tiny_graph(rng, register, slots))
            v1.train.export_meta_graph(path)
        assert inspect.meta_graph_variables(path) == expected, number
    assert len(situations) == 24


@pytest.fixture
def meta_and_source(tmp_path):
    """model.meta (conv1 [3, 3, 1, 4] and fc [4, 2], as tf.layers-style names) and a checkpoint of
    the encoder's conv1 under an outer scope, written by another graph."""
    with tf.Graph().as_default():
        with v1.variable_scope("conv1"):
            v1.get_variable("kernel", [3, 3, 1, 4])
            v1.get_variable("bias", [4])
        with v1.variable_scope("fc"):
            v1.get_variable("kernel", [4, 2])
            v1.get_variable("bias", [2])
        v1.train.export_meta_graph(str(tmp_path / "model.meta"))
    with tf.Graph().as_default():
        with v1.variable_scope("encoder/conv1"):
            v1.get_variable("kernel", [3, 3, 1, 4])
            v1.get_variable("bias", [4])
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver().save(sess, str(tmp_path / "source" / "model.ckpt"))
    return tmp_path


def _inspect(argv):
    """(exit status, stdout, stderr) of inspect's main, an argparse exit included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = inspect.main([str(arg) for arg in argv])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def test_target_meta_plans_against_the_saved_graph(meta_and_source):
    source, meta = meta_and_source / "source", meta_and_source / "model.meta"
    base = [source, "--plan", "--json", "--target-meta", meta, "--restore", "conv1", "--map", "encoder/conv1=conv1"]
    for extra, trains in (([], False), (["--fine-tune"], True)):
        code, out, err = _inspect([*base, *extra])
        assert not code, err
        rows = {row["name"]: (row["action"], row["trainable"]) for row in json.loads(out)["variables"]}
        assert rows == {
            "conv1/kernel": ("restored", trains),
            "conv1/bias": ("restored", trains),
            "fc/kernel": ("initialised", True),
            "fc/bias": ("initialised", True),
        }, rows
    code, _, err = _inspect([source, "--plan", "--target-meta", meta, "--restore", "conv1"])
    assert code == 2 and "--map encoder/conv1=conv1" in err, err


def test_target_meta_errors_are_one_line(meta_and_source):
    source, meta = meta_and_source / "source", meta_and_source / "model.meta"
    (meta_and_source / "garbage.meta").write_bytes(b"\x08\x96\x01 not a protobuf \xff" * 10)
    cases = (
        ([source, "--plan", "--target-meta", meta_and_source / "none.meta"], "none.meta does not exist"),
        ([source, "--plan", "--target-meta", meta_and_source / "garbage.meta"], "is not a readable MetaGraph"),
        ([source, "--plan", "--target-meta", meta, "--network", "vgg_16"], "--network does not go with --target-meta"),
        ([source, "--plan", "--target-meta", meta, "--restore", "backbone"], "--restore backbone needs a network"),
        ([source, "--target-meta", meta], "--target-meta only mean something with --plan"),
    )
    for argv, message in cases:
        code, _, err = _inspect(argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (argv, err)


# tf_slim's resnet_v2_50, a network the registry lacks, as a user writes it. tf_slim's layers are
# Keras 2's: on TF 2.21 they need TF_USE_LEGACY_KERAS=1 (and the tf-keras package) before TensorFlow loads.
SLIM_RESNET = '''
import tensorflow as tf
from tensorflow.python.framework import ops

if not hasattr(ops, "Tensor"):
    ops.Tensor = tf.Tensor  # tf_slim's constant_value still looks for it; TF 2.21 has tf.Tensor only

import tf_slim as slim
from tf_slim.nets import resnet_v2

from models.net_ops import layer_training
from models.networks import Network

v1 = tf.compat.v1
SCOPE = "resnet_v2_50"
# resnet_arg_scope's BatchNorm with updates_collections=None (the fused path, same variables): its
# default path imports a module tf-keras no longer ships.
BATCH_NORM = {"decay": 0.997, "epsilon": 1e-5, "scale": True, "updates_collections": None}


def preprocess(images):
    """RGB in [0, 255] scaled to [-1, 1] (TF-Slim inception_preprocessing, as resnet_v2 was trained)."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def head(features, num_classes, is_training=False, dropout_keep_prob=1.0):
    with v1.variable_scope(SCOPE, reuse=v1.AUTO_REUSE):
        net = slim.conv2d(
            features[:, None, None, :], num_classes, [1, 1], activation_fn=None, normalizer_fn=None, scope="logits"
        )
    return tf.squeeze(net, [1, 2])


def build(images, num_classes=1001, is_training=False):
    with (
        slim.arg_scope(resnet_v2.resnet_arg_scope()),
        slim.arg_scope([slim.conv2d], normalizer_params=BATCH_NORM),
        slim.arg_scope([slim.batch_norm], **BATCH_NORM),
    ):
        net, end_points = resnet_v2.resnet_v2_50(
            images, None, is_training=layer_training(is_training, SCOPE), reuse=v1.AUTO_REUSE, scope=SCOPE
        )
    features = tf.squeeze(net, [1, 2])
    end_points = dict(end_points, features=features, batch_norm_updates={})
    if num_classes is None:
        return features, end_points
    logits = head(features, num_classes)
    return logits, dict(end_points, logits=logits)


def resnet_v2_50():
    return Network(
        name="resnet_v2_50",
        build=build,
        head=head,
        image_size=(224, 224),
        channels=3,
        preprocess=preprocess,
        num_classes=1001,
        feature_units=2048,
        head_scopes=(f"{SCOPE}/logits",),
        block_scopes=(SCOPE,),
        scope=SCOPE,
        first_conv=f"{SCOPE}/conv1/weights",
    )
'''
# Random weights standing in for the model zoo's checkpoint, saved under the zoo's names.
WRITE_ZOO = """
import sys

import tensorflow as tf

sys.path.insert(0, ".")
import nets

v1 = tf.compat.v1
with tf.Graph().as_default():
    nets.build(v1.placeholder(tf.float32, [None, 64, 64, 3]), num_classes=1001)
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        v1.train.Saver().save(sess, "zoo/model.ckpt")
"""


@pytest.mark.slow
def test_slim_resnet_v2_50_from_the_command_line(tmp_path):
    classes = tuple(f"class{index}" for index in range(5))
    (tmp_path / "nets.py").write_text(SLIM_RESNET)
    (tmp_path / "write_zoo.py").write_text(WRITE_ZOO)
    _image_folder(tmp_path / "photos", 64, classes)
    env = _env(TF_USE_LEGACY_KERAS="1")
    _run(["write_zoo.py"], tmp_path, env)
    train = [REPO / "train_transfer.py", "--network", "nets.py:resnet_v2_50", "--checkpoint", "zoo"]
    train += ["--restore", "backbone", "--data-dir", "photos", "--image-size", "64", "--batch-size", "2"]
    train += ["--epochs", "1", "--validation-percent", "0", "--seed", "0", "--model-dir", "run"]
    dry = _run([*train, "--dry-run"], tmp_path, env).stdout
    assert "resnet_v2_50/block4/unit_3/bottleneck_v2/conv3/weights" in dry and not (tmp_path / "run").exists()
    assert re.search(r"resnet_v2_50/logits/weights +\[1, 1, 2048, 5\] +fresh", dry), dry
    out = _run(train, tmp_path, env).stdout
    assert "step 2/2" in out and "max |diff| = 0" in out, out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 2, metrics
    _run(["-m", "transfer.export", "--model-dir", "run", "--output", "exported"], tmp_path, env)
    predicted = _run([REPO / "predict.py", "--model", "exported", "photos/test", "--json"], tmp_path, env).stdout
    assert len(json.loads(predicted)) == 5 and set(classes) & set(predicted.replace('"', " ").split()), predicted
