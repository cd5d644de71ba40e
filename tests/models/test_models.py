"""Tests for models/: the checkpoint format (variable names and shapes), initialisers,
losses, a training smoke test and checkpoint compatibility with TF1 `tf.compat.v1.layers`.

Variable names are an API: the tables below are literal on purpose. Changing one breaks
every checkpoint written before, so a failure here means "think twice", not "update the
table".
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from model_variables import AE_VARIABLES, CLASSIFIER_VARIABLES

from models import cae, classifier

v1 = tf.compat.v1

SEED = 20240611
LEGACY_SCRIPT = Path(__file__).resolve().parents[1] / "legacy_layers_graph.py"

CAE_VARIABLES = list(AE_VARIABLES.items())
EXPECTED_VARIABLES = {"cae": CAE_VARIABLES, "classifier": list(CLASSIFIER_VARIABLES.items())}


def _images(batch, seed=SEED):
    return np.random.default_rng(seed).random((batch, 28, 28, 1), dtype=np.float32)


def _build(model, **kwargs):
    """Builds `model` ("cae" or "classifier") into the default graph on a placeholder."""
    images = v1.placeholder(tf.float32, [None, 28, 28, 1], name="images")
    if model == "cae":
        return images, cae.build_autoencoder(images, **kwargs)
    return images, classifier.build_classifier(images, **kwargs)


def _table(variables):
    return [(v.op.name, v.shape.as_list()) for v in variables]


def _scopes(model):
    return cae.AUTOENCODER_SCOPES if model == "cae" else classifier.CLASSIFIER_SCOPES


# --- 1. Names, shapes, collections, endpoints, scope constants ----------------------


@pytest.mark.parametrize("model", ["cae", "classifier"])
def test_variable_names_shapes_and_dtypes(model):
    with tf.Graph().as_default():
        _build(model)
        variables = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        assert _table(variables) == EXPECTED_VARIABLES[model]
        assert all(v.dtype.base_dtype == tf.float32 for v in variables)


@pytest.mark.parametrize("model", ["cae", "classifier"])
def test_model_global_and_trainable_collections_agree_for_a_bare_build(model):
    with tf.Graph().as_default():
        _build(model)
        model_vars = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        assert model_vars == v1.global_variables()
        assert model_vars == v1.trainable_variables()
        assert len(model_vars) == len(EXPECTED_VARIABLES[model])


def test_latent_size_changes_exactly_the_latent_shapes():
    with tf.Graph().as_default():
        _build("cae", latent_size=7)
        table = dict(_table(v1.global_variables()))
    default = dict(CAE_VARIABLES)
    assert table.keys() == default.keys()
    changed = {name: shape for name, shape in table.items() if shape != default[name]}
    assert changed == {
        "latent_var/kernel": [1568, 7],
        "latent_var/bias": [7],
        "z_matrix/kernel": [7, 1568],
    }


def test_autoencoder_endpoints():
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        images, end_points = _build("cae")
        static = {name: t.shape.as_list() for name, t in end_points.items()}
        assert static == {
            "conv1": [None, 14, 14, 16],
            "conv2": [None, 7, 7, 32],
            "features": [None, 1568],
            "latent": [None, 20],
            "z_matrix": [None, 7, 7, 32],
            "dconv1": [None, 14, 14, 16],
            "logits": [None, 28, 28, 1],
            "reconstruction": [None, 28, 28, 1],
        }
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            values = sess.run(end_points, {images: _images(3)})
    for name, value in values.items():
        assert value.shape == (3, *static[name][1:]), name
        assert value.dtype == np.float32, name
    reconstruction = values["reconstruction"]
    assert np.all((reconstruction >= 0.0) & (reconstruction <= 1.0))
    np.testing.assert_allclose(reconstruction, 1 / (1 + np.exp(-values["logits"])), rtol=1e-5)


def test_classifier_endpoints():
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        images, end_points = _build("classifier")
        static = {name: t.shape.as_list() for name, t in end_points.items()}
        assert static == {
            "conv1": [None, 14, 14, 16],
            "conv2": [None, 7, 7, 32],
            "features": [None, 1568],
            "fc1": [None, 200],
            "logits": [None, 10],
        }
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            logits = sess.run(end_points["logits"], {images: _images(3)})
    assert logits.shape == (3, 10) and np.all(np.isfinite(logits))


def test_scope_constants():
    assert cae.ENCODER_SCOPES == ("conv1", "conv2")
    assert cae.DECODER_SCOPES == ("latent_var", "z_matrix", "dconv1", "dconv2")
    assert cae.AUTOENCODER_SCOPES == cae.ENCODER_SCOPES + cae.DECODER_SCOPES
    assert classifier.HEAD_SCOPES == ("fc1", "logits")
    assert classifier.CLASSIFIER_SCOPES == cae.ENCODER_SCOPES + classifier.HEAD_SCOPES


@pytest.mark.parametrize("model", ["cae", "classifier"])
def test_every_scope_constant_owns_exactly_a_kernel_and_a_bias(model):
    with tf.Graph().as_default():
        _build(model)
        names = [v.op.name for v in v1.global_variables()]
    owned = []
    for scope in _scopes(model):
        mine = sorted(n for n in names if n.startswith(scope + "/"))
        assert mine == [f"{scope}/bias", f"{scope}/kernel"], scope
        owned += mine
    # The scopes partition the model: no variable outside them, none owned twice.
    assert sorted(owned) == sorted(names)


# --- 2. Initialisers ------------------------------------------------------------------


def _glorot_limit(shape):
    # As TF's glorot_uniform: fans from the stored shape's last two dimensions, times the
    # receptive field. For a transpose kernel [k, k, out, in] that is k*k*out and k*k*in.
    receptive_field = int(np.prod(shape[:-2]))
    fan_in, fan_out = shape[-2] * receptive_field, shape[-1] * receptive_field
    return np.sqrt(6.0 / (fan_in + fan_out))


def test_glorot_limit_helper():
    assert _glorot_limit([1568, 20]) == pytest.approx(np.sqrt(6 / 1588))
    assert _glorot_limit([5, 5, 16, 32]) == pytest.approx(np.sqrt(6 / (25 * 48)))


@pytest.mark.parametrize("model", ["cae", "classifier"])
def test_initialisers_are_glorot_uniform_kernels_and_zero_biases(model):
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        _build(model)
        variables = v1.global_variables()
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            values = sess.run({v.op.name: v for v in variables})
    for name, shape in EXPECTED_VARIABLES[model]:
        value = values[name]
        if name.endswith("/bias"):
            assert not value.any(), name
            continue
        limit = _glorot_limit(shape)
        assert np.abs(value).max() <= limit, name
        # Uniform(-limit, limit) has std limit / sqrt(3). The smallest kernel has 400
        # entries, whose sample std is within ~2.2 % (1 sigma): 15 % is loose.
        assert value.std() == pytest.approx(limit / np.sqrt(3), rel=0.15), name
        assert abs(value.mean()) < 0.2 * limit, name


# --- 3. Losses and argument errors ----------------------------------------------------


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("kind", ["bce", "l2"])
def test_reconstruction_loss_matches_numpy(kind):
    rng = np.random.default_rng(SEED)
    targets = rng.random((5, 28, 28, 1), dtype=np.float32)
    targets[:2] = np.round(targets[:2])  # binary images as well as grey ones
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        images, end_points = _build("cae")
        target_ph = v1.placeholder(tf.float32, [None, 28, 28, 1])
        loss = cae.reconstruction_loss(target_ph, end_points, kind)
        assert loss.shape.as_list() == []
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            # Corrupted inputs, clean targets: the loss must use the targets given.
            feed = {images: _images(5, seed=SEED + 1), target_ph: targets}
            loss_value, logits = sess.run([loss, end_points["logits"]], feed)
    x, z = logits.astype(np.float64), targets.astype(np.float64)
    p = _np_sigmoid(x)
    if kind == "bce":
        per_pixel = -(z * np.log(p) + (1 - z) * np.log(1 - p))
    else:
        per_pixel = (p - z) ** 2
    expected = per_pixel.reshape(5, -1).sum(axis=1).mean()
    assert loss_value == pytest.approx(expected, rel=1e-4)


def test_unknown_loss_kind_raises_naming_it():
    with tf.Graph().as_default():
        images, end_points = _build("cae")
        with pytest.raises(ValueError, match="'hinge'"):
            cae.reconstruction_loss(images, end_points, kind="hinge")


@pytest.mark.parametrize("latent_size", [0, -3, 2.5])
def test_bad_latent_size_raises_before_building(latent_size):
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, 28, 28, 1])
        with pytest.raises(ValueError, match=rf"latent_size.*{latent_size}"):
            cae.build_autoencoder(images, latent_size=latent_size)
        assert v1.global_variables() == []


# --- 4. Training smoke test -----------------------------------------------------------


def test_two_adam_steps_lower_the_loss_and_change_every_variable():
    batch = _images(8)
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        images, end_points = _build("cae")
        loss = cae.reconstruction_loss(images, end_points, "bce")
        train_op = v1.train.AdamOptimizer(1e-3).minimize(loss)
        model_vars = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        # Adam's slots and counters are global but never model variables.
        assert _table(model_vars) == CAE_VARIABLES
        assert len(v1.global_variables()) > len(model_vars)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            before, loss_before = sess.run([model_vars, loss], {images: batch})
            for _ in range(2):
                sess.run(train_op, {images: batch})
            after, loss_after = sess.run([model_vars, loss], {images: batch})
    assert np.isfinite(loss_after) and loss_after < loss_before
    for (name, _), old, new in zip(CAE_VARIABLES, before, after):
        assert not np.array_equal(old, new), f"{name} did not change"


# --- 5. Checkpoint compatibility with tf.compat.v1.layers (TF_USE_LEGACY_KERAS=1) -------


def _run_legacy(*invocations):
    """Runs tests/legacy_layers_graph.py's main once per argv, all in one process with legacy Keras.

    One process for both directions: TensorFlow and tf-keras are imported once. Fails
    with its stderr.
    """
    if importlib.util.find_spec("tf_keras") is None:
        pytest.skip(
            "tf-keras is not installed: tf.compat.v1.layers needs it on "
            "TensorFlow >= 2.16 (pip install 'cae-transfer[test]')"
        )
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    argvs = [[str(arg) for arg in argv] for argv in invocations]
    code = (
        f"import sys; sys.path.insert(0, {str(LEGACY_SCRIPT.parent)!r}); import legacy_layers_graph\n"
        f"for argv in {argvs!r}:\n    legacy_layers_graph.main(argv)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"legacy_layers_graph.py exited with {result.returncode}:\n{result.stderr[-4000:]}")


def _our_checkpoints(root, inputs):
    """Both models built by us, initialised, biases made non-zero, saved: {model: checkpoint, values, outputs}."""
    rng = np.random.default_rng(SEED + 5)
    ours = {}
    for model in ("cae", "classifier"):
        with tf.Graph().as_default():
            v1.set_random_seed(SEED + 6)
            images, end_points = _build(model)
            saver = v1.train.Saver()  # default var_list, as the legacy side uses
            with v1.Session() as sess:
                sess.run(v1.global_variables_initializer())
                # Non-zero biases, so that the forward pass also checks how they are applied.
                sess.run(
                    [
                        v.assign(rng.uniform(-0.1, 0.1, v.shape.as_list()).astype(np.float32))
                        for v in v1.global_variables()
                        if v.op.name.endswith("/bias")
                    ]
                )
                (root / "ours" / model).mkdir(parents=True)
                checkpoint = saver.save(sess, str(root / "ours" / model / "model.ckpt"), write_meta_graph=False)
                ours[model] = {
                    "checkpoint": checkpoint,
                    "values": sess.run({v.op.name: v for v in v1.global_variables()}),
                    "outputs": sess.run(end_points, {images: inputs}),
                }
    return ours


@pytest.fixture(scope="module")
def legacy_runs(tmp_path_factory):
    """Both directions in one legacy process: its export, and its import of our checkpoints."""
    root = tmp_path_factory.mktemp("legacy")
    np.save(root / "inputs.npy", _images(4, seed=SEED + 2))
    np.save(root / "our_inputs.npy", _images(4, seed=SEED + 4))
    ours = _our_checkpoints(root, np.load(root / "our_inputs.npy"))
    _run_legacy(
        ["export", "--inputs", root / "inputs.npy", "--out-dir", root / "out", "--seed", SEED + 3],
        [
            "import",
            "--inputs",
            root / "our_inputs.npy",
            "--out-dir",
            root / "legacy",
            "--cae-checkpoint",
            ours["cae"]["checkpoint"],
            "--classifier-checkpoint",
            ours["classifier"]["checkpoint"],
        ],
    )
    return root, ours


@pytest.fixture(scope="module")
def legacy_export(legacy_runs):
    """Checkpoints and outputs of both models built with tf.compat.v1.layers."""
    return legacy_runs[0]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cae", "classifier"])
def test_legacy_tf_layers_create_exactly_our_variables(legacy_export, model):
    legacy = json.loads((legacy_export / "out" / "variables.json").read_text())[model]
    with tf.Graph().as_default():
        _build(model)
        ours = [[v.op.name, v.shape.as_list(), v.dtype.base_dtype.name] for v in v1.global_variables()]
    assert sorted(legacy) == sorted(ours)
    checkpoint = legacy_export / "out" / model / "model.ckpt"
    assert sorted(tf.train.list_variables(str(checkpoint))) == sorted(
        (name, shape) for name, shape in EXPECTED_VARIABLES[model]
    )


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cae", "classifier"])
def test_legacy_tf_layers_checkpoint_restores_into_ours(legacy_export, model):
    out = legacy_export / "out"
    checkpoint = str(out / model / "model.ckpt")
    reader = tf.train.load_checkpoint(checkpoint)
    with tf.Graph().as_default():
        images, end_points = _build(model)
        model_vars = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        saver = v1.train.Saver(var_list=model_vars)
        with v1.Session() as sess:
            saver.restore(sess, checkpoint)
            values = sess.run({v.op.name: v for v in model_vars})
            outputs = sess.run(end_points, {images: np.load(legacy_export / "inputs.npy")})
    assert values.keys() == dict(EXPECTED_VARIABLES[model]).keys()
    for name, value in values.items():
        np.testing.assert_array_equal(value, reader.get_tensor(name), err_msg=name)
    if model == "cae":
        np.testing.assert_allclose(outputs["reconstruction"], np.load(out / "cae_reconstruction.npy"), atol=1e-5)
    np.testing.assert_allclose(outputs["logits"], np.load(out / f"{model}_logits.npy"), rtol=1e-5, atol=1e-5)


def test_our_checkpoint_restores_into_legacy_tf_layers(legacy_runs):
    root, ours = legacy_runs
    legacy = root / "legacy"
    for model in ("cae", "classifier"):
        with np.load(legacy / f"{model}_values.npz") as restored:
            assert sorted(restored.files) == sorted(ours[model]["values"])
            for name in restored.files:
                np.testing.assert_array_equal(restored[name], ours[model]["values"][name], err_msg=name)
        np.testing.assert_allclose(
            np.load(legacy / f"{model}_logits.npy"), ours[model]["outputs"]["logits"], rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(
        np.load(legacy / "cae_reconstruction.npy"), ours["cae"]["outputs"]["reconstruction"], atol=1e-5
    )
