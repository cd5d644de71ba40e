"""TF1 <-> Keras 3 and TF2 (transfer.keras_bridge): same outputs, bit-exact round trips, one-line refusals."""

import contextlib
import io
import itertools
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models import networks
from transfer import convert, keras_bridge

v1 = tf.compat.v1
REPO = Path(__file__).resolve().parents[2]


def random_values(shapes, seed):
    """Random weights for {name: shape}: variances in [0.5, 1.5], the rest around 0 (small, so logits stay O(1))."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in shapes.items():
        if name.endswith("moving_variance"):
            values[name] = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("gamma"):
            values[name] = rng.uniform(0.8, 1.2, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 100
            values[name] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
    return {name: value.astype(np.float32) for name, value in values.items()}


def tf1_outputs(paired, values, images):
    """The TF1 network's output (logits; the autoencoder's reconstruction) with these values."""
    with tf.Graph().as_default():
        if paired.twin.tf1_graph is not None:
            output = paired.twin.tf1_graph(paired.size, paired.image_size)
            placeholder = v1.get_default_graph().get_tensor_by_name("images:0")
        else:
            placeholder = v1.placeholder(tf.float32, [None, *images.shape[1:]])
            output, _ = paired.network.build(placeholder, num_classes=paired.size)
        variables = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        with v1.Session() as sess:
            for variable in variables:
                sess.run(variable.initializer, {variable.initial_value: values[variable.op.name]})
            return sess.run(output, {placeholder: images})


def _images(paired, seed, count=4):
    channels = 1 if paired.network is None or paired.network.channels == 1 else 3
    rng = np.random.default_rng(seed)
    low = 0.0 if channels == 1 else -1.0
    return rng.uniform(low, 1.0, (count, *paired.image_size, channels)).astype(np.float32)


# (twin, TF1 size, image size): the digit classifier, the autoencoder, MobileNet v1 with the
# model zoo's 1001 classes (background dropped in Keras) and with a transfer run's 7.
SAME_OUTPUTS = [
    ("digit_classifier", 10, (28, 28)),
    ("digit_classifier", 3, (28, 28)),
    ("autoencoder", 20, (28, 28)),
    ("MobileNet", 1001, (32, 32)),
    ("MobileNet", 7, (64, 64)),
]


@pytest.mark.parametrize("key, size, image_size", SAME_OUTPUTS)
def test_the_keras_twin_gives_the_tf1_outputs(key, size, image_size):
    paired = keras_bridge.pairing(keras_bridge.TWINS[key], size, image_size)
    values = random_values(paired.shapes, seed=size)
    model, rows = keras_bridge.keras_model_of(values, paired)
    assert len(rows) == len(paired.shapes) == len(model.weights)
    images = _images(paired, seed=1)
    expected = tf1_outputs(paired, values, images)[:, paired.background :]
    got = np.asarray(model(images, training=False))
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 1e-5, np.max(np.abs(got - expected))
    assert np.std(expected) > 1e-2  # the outputs vary: the comparison can fail


def test_every_twin_maps_each_variable_onto_one_keras_weight():
    """The name rules, over every twin at several head sizes: a bijection onto the Keras model's weights."""
    import keras

    assert {network.keras for network in networks.NETWORKS.values()} - {""} <= set(keras_bridge.TWINS)
    small = [key for key in keras_bridge.TWINS if key != "VGG16"]  # VGG16 (138M weights) once: ~10 s a build
    situations = [*itertools.product(small, [1, 3, 1000, 1001]), ("VGG16", 1000)]
    assert len(situations) == 13
    for key, size in situations:
        twin = keras_bridge.TWINS[key]
        paired = keras_bridge.pairing(twin, size, (32, 32) if key == "MobileNet" else None)
        model = twin.keras_model(keras, paired.keras_size, paired.image_size)
        rows = keras_bridge.plan_rows(paired, model.weights)
        assert sorted(row["target"] for row in rows) == sorted(weight.path for weight in model.weights)
        for row in rows:
            tf1_shape = list(row["shape"])
            if row["transform"] == "background" and paired.background:
                tf1_shape[-1] -= paired.background
            assert np.prod(tf1_shape) == np.prod(row["keras_shape"]), (key, size, row)
        assert paired.background == (1 if (key, size) == ("MobileNet", 1001) else 0)
        keras.backend.clear_session()


@pytest.mark.slow
def test_vgg16_gives_the_tf1_logits():
    """At 224x224 (Keras flattens pool5, so its top takes that size only): fc6's layout is proven here."""
    paired = keras_bridge.pairing(keras_bridge.TWINS["VGG16"], 1000)
    values = random_values(paired.shapes, seed=16)
    model, rows = keras_bridge.keras_model_of(values, paired)
    assert [row["transform"] for row in rows if row["source"] == "vgg_16/fc6/weights"] == ["reshape"]
    images = np.random.default_rng(2).uniform(-100, 100, (2, 224, 224, 3)).astype(np.float32)
    expected = tf1_outputs(paired, values, images)
    got = np.asarray(model(images, training=False))
    assert np.max(np.abs(got - expected)) < 1e-5, np.max(np.abs(got - expected))
    assert np.std(expected) > 1e-2


def test_vgg16_convolutions_at_32x32():
    """VGG's 26 convolution variables through the twin's rules, at the smallest input Keras takes."""
    import keras

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    rules = keras_bridge.TWINS["VGG16"].rules
    batch = np.random.default_rng(4).uniform(-100, 100, (2, 32, 32, 3)).astype(np.float32)
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, None, None, 3])
        _, end_points = networks.get("vgg_16").build(images, num_classes=None)
        convolutions = [v for v in v1.get_collection(v1.GraphKeys.MODEL_VARIABLES) if "/conv" in v.op.name]
        values = random_values({v.op.name: v.shape.as_list() for v in convolutions}, seed=3)
        with v1.Session() as sess:  # pool5 reads the convolutions only: fc6 and fc7 stay uninitialised
            for variable in convolutions:
                sess.run(variable.initializer, {variable.initial_value: values[variable.op.name]})
            expected = sess.run(end_points["vgg_16/pool5"], {images: batch})
    assert len(values) == 26 == len(model.weights)
    by_path = {weight.path: weight for weight in model.weights}
    for name, value in values.items():
        path, transform = keras_bridge._mapped(rules, name)
        assert transform == "none"
        by_path.pop(path).assign(value)
    assert not by_path
    got = np.asarray(model(batch))
    assert np.max(np.abs(got - expected)) < 1e-5 * max(1.0, float(np.max(np.abs(expected))))


def _keras_model(key, size, image_size, seed):
    """A Keras twin with random weights (BatchNorm statistics too), as a user's own model would be."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_bridge.TWINS[key].keras_model(keras, size, image_size)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.path.endswith(("moving_mean", "moving_variance", "gamma", "beta")):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
    return model


def round_trip_situations():
    """Keras twin, its class count (or code size), image size and seed; MobileNet's Keras 1000 gains a background."""
    small = itertools.product(["digit_classifier", "autoencoder"], [1, 2, 10, 1000], [0, 1])
    mobile = itertools.product(["MobileNet"], [1000], [0])
    return [(key, size, (32, 32) if key == "MobileNet" else (28, 28), seed) for key, size, seed in [*small, *mobile]]


def test_keras_to_tf1_to_keras_is_bit_exact(tmp_path):
    situations = round_trip_situations()
    assert len(situations) == 17
    for index, (key, size, image_size, seed) in enumerate(situations):
        model = _keras_model(key, size, image_size, seed)
        values, paired, _ = keras_bridge.tf1_values_of(model)
        assert paired.keras_size == size and paired.background == (1 if (key, size) == ("MobileNet", 1000) else 0)
        folder = tmp_path / str(index)
        folder.mkdir()
        prefix = str(folder / keras_bridge.write_tf1(values, paired, str(folder)))
        read, dropped, _ = keras_bridge.read_tf1_model_values(prefix)
        assert dropped == []
        again, _ = keras_bridge.keras_model_of(
            read, keras_bridge.find_pairing({n: v.shape for n, v in read.items()}, image_size)
        )
        for a, b in zip(model.weights, again.weights, strict=True):
            assert a.path == b.path and keras_bridge._same_bits(a.numpy(), b.numpy()), (key, size, a.path)
        if paired.background:
            assert keras_bridge._background_note(paired, "tf1") == [
                "background: TF-Slim's logit 0 given back with zero weights and bias -10000"
            ]
            logits = read["MobilenetV1/Logits/Conv2d_1c_1x1/biases"]
            assert logits[0] == keras_bridge.BACKGROUND_LOGIT and logits.shape == (1001,)


def _classifier_checkpoint(directory, seed=0, classes=10, slots=True):
    """A digit classifier checkpoint with random weights (and an Adam slot and global_step, as a run has)."""
    paired = keras_bridge.pairing(keras_bridge.TWINS["digit_classifier"], classes)
    values = random_values(paired.shapes, seed)
    if slots:
        values["fc1/kernel/Adam"] = np.zeros_like(values["fc1/kernel"])
        values["global_step"] = np.int64(7)
    os.makedirs(directory, exist_ok=True)
    with tf.Graph().as_default():
        holders = {name: v1.placeholder(tf.as_dtype(np.asarray(v).dtype), np.shape(v)) for name, v in values.items()}
        save = tf.raw_ops.SaveV2(
            prefix=os.path.join(directory, "model.ckpt"),
            tensor_names=list(holders),
            shape_and_slices=[""] * len(holders),
            tensors=list(holders.values()),
        )
        with v1.Session() as sess:
            sess.run(save, {holders[name]: value for name, value in values.items()})
    return os.path.join(directory, "model.ckpt"), values


def _convert(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = convert.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_the_command_writes_keras_tf2_and_back(tmp_path):
    import keras

    prefix, values = _classifier_checkpoint(str(tmp_path / "run"))
    code, out, _ = _convert([prefix, "--output", tmp_path / "k", "--to", "keras"])
    assert code == 0
    assert "conv1/kernel -> conv1/kernel  [5, 5, 1, 16]  float32  none" in out and "fc1/kernel/Adam" in out
    model = keras.saving.load_model(str(tmp_path / "k" / "model.keras"), safe_mode=True)
    assert keras_bridge._same_bits(model.get_layer("fc1").kernel.numpy(), values["fc1/kernel"])
    mine = keras_bridge.TWINS["digit_classifier"].keras_model(keras, 10, (28, 28))
    mine.load_weights(str(tmp_path / "k" / "model.weights.h5"))  # a user's matching model
    assert keras_bridge._same_bits(mine.get_layer("logits").bias.numpy(), values["logits/bias"])
    report = json.loads((tmp_path / "k" / "conversion.json").read_text())
    assert report["network"] == networks.DEFAULT and [d["source"] for d in report["dropped"]] == [
        "fc1/kernel/Adam",
        "global_step",
    ]

    code, _, _ = _convert([tmp_path / "k" / "model.keras", "--output", tmp_path / "back"])
    assert code == 0
    read, _, _ = keras_bridge.read_tf1_model_values(str(tmp_path / "back" / "model.ckpt"))
    assert set(read) == set(values) - {"fc1/kernel/Adam", "global_step"}
    assert all(keras_bridge._same_bits(read[name], values[name]) for name in read)

    code, _, _ = _convert([tmp_path / "run", "--output", tmp_path / "t2", "--to", "tf2"])
    assert code == 0
    # A user's own tf.Module tree with the same names restores it.
    root = tf.Module()
    for scope in ("conv1", "conv2", "fc1", "logits"):
        layer = tf.Module()
        layer.kernel = tf.Variable(tf.zeros(values[f"{scope}/kernel"].shape))
        layer.bias = tf.Variable(tf.zeros(values[f"{scope}/bias"].shape))
        setattr(root, scope, layer)
    tf.train.Checkpoint(root=root).read(str(tmp_path / "t2" / "model")).assert_existing_objects_matched()
    assert keras_bridge._same_bits(root.conv2.kernel.numpy(), values["conv2/kernel"])


def _network_checkpoint(directory, name):
    network = networks.get(name)
    with tf.Graph().as_default():
        network.build(v1.placeholder(tf.float32, network.input_shape()), num_classes=network.num_classes)
        saver = v1.train.Saver(v1.get_collection(v1.GraphKeys.MODEL_VARIABLES))
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, os.path.join(directory, "model.ckpt"), write_meta_graph=False)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("efficientnet_lite0", "error: efficientnet_lite0 has no Keras 3 twin: keras.applications builds no model"),
        ("resnet_v1_50", "error: resnet_v1_50 has no Keras 3 twin: keras.applications builds no model"),
        ("keras_to_keras", "is a Keras model: it converts into a TF1 checkpoint only (--to tf1)"),
        ("drop", "error: --drop applies to safetensors and PyTorch conversions"),
        ("missing", "ckpt/model.ckpt does not exist"),
        ("not_keras", "model.keras is not a Keras 3 .keras file: File is not a zip file"),
        ("foreign_module", "model.keras names module 'os' in its config.json: only Keras's own are loaded"),
        ("lambda", "model.keras holds a Lambda layer (code): not loaded"),
        ("wrong_shape", "error: not a cae checkpoint: fc1/kernel is [1568, 30], cae has [1568, 200]"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(tmp_path, case, expected):
    out = tmp_path / "out"
    argv = [tmp_path / "ckpt" / "model.ckpt", "--output", out, "--to", "keras"]
    if case in ("efficientnet_lite0", "resnet_v1_50"):
        os.makedirs(tmp_path / "ckpt")
        _network_checkpoint(str(tmp_path / "ckpt"), case)
    elif case == "wrong_shape":
        prefix, values = _classifier_checkpoint(str(tmp_path / "ckpt"), slots=False)
        values["fc1/kernel"] = values["fc1/kernel"][:, :30]
        os.remove(prefix + ".index")
        with tf.Graph().as_default(), v1.Session() as sess:
            holders = [v1.placeholder(tf.float32, v.shape) for v in values.values()]
            sess.run(
                tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(values), shape_and_slices=[""] * 8, tensors=holders),
                dict(zip(holders, values.values())),
            )
    elif case == "drop":
        argv += ["--drop", "Adam"]
    elif case == "missing":
        pass  # the prefix names nothing: refused before TensorFlow starts
    else:
        model = tmp_path / "model.keras"
        model.write_bytes(b"not a zip")
        if case in ("foreign_module", "lambda"):
            layer = {"module": "os", "class_name": "system"} if case == "foreign_module" else {"class_name": "Lambda"}
            with zipfile.ZipFile(model, "w") as archive:
                archive.writestr("config.json", json.dumps({"class_name": "Functional", "config": {"layers": [layer]}}))
                archive.writestr("model.weights.h5", b"")
        if case == "keras_to_keras":
            _convert([_classifier_checkpoint(str(tmp_path / "ckpt"))[0], "--output", tmp_path / "k", "--to", "keras"])
            model = tmp_path / "k" / "model.keras"
        argv = [model, "--output", out, "--to", "keras" if case == "keras_to_keras" else "tf1"]
    code, _, err = _convert(argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not out.exists()


CLEAN_SCRIPT = """
import json, sys
import numpy as np
import keras
from PIL import Image

model = keras.saving.load_model(sys.argv[1], safe_mode=True)
images = np.stack([np.asarray(Image.open(p), np.float32)[..., None] / 255.0 for p in sys.argv[2:]])
probabilities = np.asarray(keras.ops.softmax(model.predict(images, verbose=0)))
ours = sorted(m for m in sys.modules if m.split(".")[0] in {"models", "transfer", "runtime", "data", "autoencoder"})
print(json.dumps({"probabilities": probabilities.tolist(), "tf_keras": "tf_keras" in sys.modules, "ours": ours}))
"""


@pytest.mark.slow
def test_a_clean_keras_process_reproduces_predict_py(tmp_path):
    """Acceptance: the exported .keras digit classifier of a trained run, in a process without this toolkit."""
    import test_export

    from data import sources

    sample = sources.load_sample()
    run_dir = str(tmp_path / "run")
    test_export.write_run(run_dir, sample, steps=60)
    from transfer import export

    assert export.main(["--model-dir", run_dir, "--output", str(tmp_path / "exported")]) == 0
    paths = test_export._digit_pngs(str(tmp_path / "digits"), sample, count=20)
    alone = tmp_path / "alone"  # no PYTHONPATH, run from here: an import of the toolkit would fail
    alone.mkdir()
    (alone / "predict.py").write_bytes((REPO / "predict.py").read_bytes())
    (alone / "clean.py").write_text(CLEAN_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def alone_run(*argv):
        done = subprocess.run(
            [sys.executable, *argv], cwd=alone, env=env, check=True, capture_output=True, text=True, timeout=600
        )
        return done.stdout

    predicted = alone_run("predict.py", *paths, "--model", str(tmp_path / "exported"), "--top-k", "10", "--json")
    expected = np.zeros((20, 10))
    for row, record in enumerate(json.loads(predicted)):
        for top in record["top"]:
            expected[row, top["class_id"]] = top["probability"]

    assert _convert([os.path.join(run_dir, "best"), "--output", tmp_path / "keras", "--to", "keras"])[0] == 0
    done = alone_run("clean.py", str(tmp_path / "keras" / "model.keras"), *paths)
    result = json.loads(done.strip().splitlines()[-1])
    assert result["tf_keras"] is False and result["ours"] == []
    got = np.asarray(result["probabilities"])
    assert got.shape == (20, 10) and np.allclose(expected.sum(1), 1.0, atol=1e-4)
    print(f"max |diff| of the 200 probabilities: {np.max(np.abs(got - expected)):.3g}")
    assert np.max(np.abs(got - expected)) < 1e-5, np.max(np.abs(got - expected))


def _ema_checkpoint(directory, steps=3):
    """A digit classifier after a few Adam steps with tf.train.ExponentialMovingAverage shadows of its kernels."""
    rng = np.random.default_rng(5)
    with tf.Graph().as_default():
        v1.set_random_seed(5)
        images = v1.placeholder(tf.float32, [None, 28, 28, 1])
        labels = v1.placeholder(tf.int64, [None])
        logits, _ = networks.get(networks.DEFAULT).build(images, num_classes=10)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train = v1.train.AdamOptimizer(1e-2).minimize(loss)
        kernels = [v for v in v1.trainable_variables() if v.op.name.endswith("kernel")]
        ema = v1.train.ExponentialMovingAverage(0.5)
        with tf.control_dependencies([train]):
            step = ema.apply(kernels)
        saver = v1.train.Saver()
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(steps):
                batch = {images: rng.uniform(0, 1, (8, 28, 28, 1)), labels: rng.integers(0, 10, 8)}
                sess.run(step, batch)
            return saver.save(sess, os.path.join(directory, "model.ckpt"), write_meta_graph=False)


def test_moving_average_takes_the_shadows_and_says_so(tmp_path):
    prefix = _ema_checkpoint(str(tmp_path / "ema"))
    reader = tf.train.load_checkpoint(prefix)
    shadow = reader.get_tensor("fc1/kernel/ExponentialMovingAverage")
    assert not np.array_equal(shadow, reader.get_tensor("fc1/kernel"))  # the two differ: a choice to see
    for target in ("keras", "safetensors", "tf2"):
        code, out, _ = _convert([prefix, "--output", tmp_path / target, "--to", target, "--moving-average"])
        assert code == 0
        assert "fc1/kernel/ExponentialMovingAverage -> fc1/kernel" in out and "none, moving average" in out
        assert "--moving-average: 4 variables take their ExponentialMovingAverage shadow, 4 their raw value" in out
        assert "fc1/bias -> fc1/bias" in out  # a variable without a shadow keeps its own value
    model = __import__("keras").saving.load_model(str(tmp_path / "keras" / "model.keras"))
    assert keras_bridge._same_bits(model.get_layer("fc1").kernel.numpy(), shadow)
    from transfer import safetensors_io

    tensors, _ = safetensors_io.read(str(tmp_path / "safetensors" / safetensors_io.TENSORS_NAME))
    assert (
        keras_bridge._same_bits(tensors["fc1/kernel"], shadow) and "fc1/kernel/ExponentialMovingAverage" not in tensors
    )
    # Without the flag the raw values, the shadows dropped as slots; asked of a checkpoint without any, one line.
    code, out, _ = _convert([prefix, "--output", tmp_path / "raw", "--to", "keras"])
    assert code == 0 and "  fc1/kernel/ExponentialMovingAverage  [1568, 200]  float32  dropped:" in out
    plain, _ = _classifier_checkpoint(str(tmp_path / "plain"))
    for target in ("keras", "safetensors"):
        code, _, err = _convert([plain, "--output", tmp_path / "none", "--to", target, "--moving-average"])
        assert code == 2 and not (tmp_path / "none").exists()
        assert err.startswith("error: --moving-average: ") and "holds no ExponentialMovingAverage shadow" in err
        assert len(err.strip().splitlines()) == 1
