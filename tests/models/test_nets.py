"""Tests for the ImageNet builders (models/vgg.py, resnet_v1.py, mobilenet_v1.py,
efficientnet_lite.py), BatchNorm (models/batch_norm.py) and the registry (models/networks.py).

Variable names are an API: each network's full table is rebuilt here from the published
architecture description, independently of the builder's code, and pinned by a digest;
vgg_16 and resnet_v1_50 are also checked against TF-Slim's own nets (tests/slim_reference.py,
run in a subprocess) in both directions. A failure means "think twice", not "update the pin".
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models import batch_norm, mobilenet_v1, net_ops, networks

v1 = tf.compat.v1

SEED = 20240611
SLIM_SCRIPT = Path(__file__).resolve().parents[1] / "slim_reference.py"
BN = ("beta", "gamma", "moving_mean", "moving_variance")


# --- Expected tables, from the published architectures --------------------------------


def _conv_bn(scope, shape, weights="weights", bn_scope="BatchNorm", gamma_first=False):
    order = ("gamma", "beta", "moving_mean", "moving_variance") if gamma_first else BN
    return [(f"{scope}/{weights}", shape)] + [
        (f"{scope}/{bn_scope}/{name}", [shape[-2] if "depthwise" in weights else shape[-1]]) for name in order
    ]


def vgg_16_table(classes=1000):
    rows, channels = [], 3
    for block, (repeats, depth) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), start=1):
        for index in range(1, repeats + 1):
            rows += [(f"vgg_16/conv{block}/conv{block}_{index}/weights", [3, 3, channels, depth])]
            rows += [(f"vgg_16/conv{block}/conv{block}_{index}/biases", [depth])]
            channels = depth
    for scope, shape in (("fc6", [7, 7, 512, 4096]), ("fc7", [1, 1, 4096, 4096]), ("fc8", [1, 1, 4096, classes])):
        rows += [(f"vgg_16/{scope}/weights", shape), (f"vgg_16/{scope}/biases", [shape[-1]])]
    return rows


def resnet_v1_50_table(classes=1000):
    rows = _conv_bn("resnet_v1_50/conv1", [7, 7, 3, 64])
    channels = 64
    for block, base, units in (("block1", 64, 3), ("block2", 128, 4), ("block3", 256, 6), ("block4", 512, 3)):
        for unit in range(1, units + 1):
            scope = f"resnet_v1_50/{block}/unit_{unit}/bottleneck_v1"
            if unit == 1:
                rows += _conv_bn(f"{scope}/shortcut", [1, 1, channels, base * 4])
            rows += _conv_bn(f"{scope}/conv1", [1, 1, channels if unit == 1 else base * 4, base])
            rows += _conv_bn(f"{scope}/conv2", [3, 3, base, base])
            rows += _conv_bn(f"{scope}/conv3", [1, 1, base, base * 4])
        channels = base * 4
    return rows + [("resnet_v1_50/logits/weights", [1, 1, 2048, classes]), ("resnet_v1_50/logits/biases", [classes])]


def mobilenet_v1_table(classes=1001):
    rows = _conv_bn("MobilenetV1/Conv2d_0", [3, 3, 3, 32])
    channels = 32
    depths = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
    for index, depth in enumerate(depths, start=1):
        rows += _conv_bn(f"MobilenetV1/Conv2d_{index}_depthwise", [3, 3, channels, 1], "depthwise_weights")
        rows += _conv_bn(f"MobilenetV1/Conv2d_{index}_pointwise", [1, 1, channels, depth])
        channels = depth
    scope = "MobilenetV1/Logits/Conv2d_1c_1x1"
    return rows + [(f"{scope}/weights", [1, 1, 1024, classes]), (f"{scope}/biases", [classes])]


def efficientnet_lite0_table(classes=1000):
    root = "efficientnet-lite0"

    def conv_bn(scope, conv, shape, bn, weights="kernel"):
        return [(f"{scope}/{conv}/{weights}", shape)] + [
            (f"{scope}/{bn}/{name}", [shape[-2] if weights == "depthwise_kernel" else shape[-1]])
            for name in ("gamma", "beta", "moving_mean", "moving_variance")
        ]

    rows = conv_bn(f"{root}/stem", "conv2d", [3, 3, 3, 32], "tpu_batch_normalization")
    groups = ("r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40", "r3_k3_s22_e6_i40_o80")
    groups += ("r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192", "r1_k3_s11_e6_i192_o320")
    index = 0
    for text in groups:
        fields = {part[0]: part[1:] for part in text.split("_")}
        kernel, expand, filters_out = int(fields["k"]), int(fields["e"]), int(fields["o"])
        for repeat in range(int(fields["r"])):
            filters_in = int(fields["i"]) if repeat == 0 else filters_out
            scope, wide = f"{root}/blocks_{index}", filters_in * expand
            bns = iter(["tpu_batch_normalization", "tpu_batch_normalization_1", "tpu_batch_normalization_2"])
            if expand != 1:
                rows += conv_bn(scope, "conv2d", [1, 1, filters_in, wide], next(bns))
            rows += conv_bn(scope, "depthwise_conv2d", [kernel, kernel, wide, 1], next(bns), "depthwise_kernel")
            rows += conv_bn(scope, "conv2d_1" if expand != 1 else "conv2d", [1, 1, wide, filters_out], next(bns))
            index += 1
    rows += conv_bn(f"{root}/head", "conv2d", [1, 1, 320, 1280], "tpu_batch_normalization")
    return rows + [(f"{root}/head/dense/kernel", [1280, classes]), (f"{root}/head/dense/bias", [classes])]


EXPECTED = {
    "vgg_16": (vgg_16_table, 32, 138_357_544, "5425bc964c58"),
    "resnet_v1_50": (resnet_v1_50_table, 267, 25_557_032, "2fd026be8103"),
    "mobilenet_v1": (mobilenet_v1_table, 137, 4_233_001, "153686976f2a"),
    "efficientnet_lite0": (efficientnet_lite0_table, 247, 4_652_008, "41d7cf49c427"),
}
IMAGENET = tuple(EXPECTED)


def _digest(table):
    text = "".join(f"{name} {shape}\n" for name, shape in table)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _build(name, num_classes="default", batch=None, size=None, is_training=False):
    network = networks.get(name)
    height, width = (size, size) if size else network.image_size
    images = v1.placeholder(tf.float32, [batch, height, width, network.channels], name="images")
    classes = network.num_classes if num_classes == "default" else num_classes
    net, end_points = network.build(images, num_classes=classes, is_training=is_training)
    return images, net, end_points


def _table(variables):
    return [(v.op.name, v.shape.as_list()) for v in variables]


# --- 1. Names and shapes ----------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGENET)
def test_variable_table_is_the_published_one(name):
    make_table, count, _, _ = EXPECTED[name]
    with tf.Graph().as_default():
        _build(name)
        table = _table(v1.global_variables())
        assert table == make_table()
        assert len(table) == count
        assert _table(v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)) == table
        # Moving statistics are model variables (saved, selectable) but never trained.
        trainable = {v.op.name for v in v1.trainable_variables()}
        for variable_name, _ in table:
            moving = variable_name.endswith(("moving_mean", "moving_variance"))
            assert (variable_name in trainable) != moving, variable_name
        assert not v1.get_collection(v1.GraphKeys.UPDATE_OPS)


@pytest.mark.parametrize("name", IMAGENET)
def test_variable_table_is_pinned(name):
    make_table, _, params, digest = EXPECTED[name]
    assert _digest(make_table()) == digest
    trainable = sum(
        int(np.prod(shape)) for var, shape in make_table() if not var.endswith(("moving_mean", "moving_variance"))
    )
    assert trainable == params


def _pretrained_table(name):
    if name in EXPECTED:
        return EXPECTED[name][0]()
    from models import classifier

    with tf.Graph().as_default():
        classifier.build_classifier(v1.placeholder(tf.float32, [None, 28, 28, 1]))
        return _table(v1.global_variables())


@pytest.mark.parametrize("name", networks.NAMES)
def test_new_head_changes_only_the_head_shapes(name):
    """What `--restore backbone` relies on: a head of other classes, the same backbone."""
    network = networks.get(name)
    pretrained = _pretrained_table(name)
    with tf.Graph().as_default():
        _build(name, num_classes=7)
        ours = _table(v1.global_variables())
    assert [n for n, _ in ours] == [n for n, _ in pretrained]
    changed = {n for (n, shape), (_, old) in zip(ours, pretrained) if shape != old}
    head = {n for n, _ in pretrained if network.is_head_variable(n)}
    assert changed and changed <= head
    assert len(head) < len(pretrained)
    assert all(any(n.startswith(scope + "/") for n, _ in pretrained) for scope in network.head_scopes)
    assert all(any(n.startswith(scope + "/") for n, _ in pretrained) for scope in network.block_scopes)


@pytest.mark.slow
@pytest.mark.parametrize("name", networks.NAMES)
def test_head_alone_makes_the_builders_head_variables_and_logits(name):
    """Network.head over the features equals the builder's own head: a cached-features run trains it."""
    network = networks.get(name)
    size = None if name in ("cae", "vgg_16") else 32
    with tf.Graph().as_default():
        features = v1.placeholder(tf.float32, [None, network.feature_units])
        network.head(features, 7, is_training=False, dropout_keep_prob=1.0)
        alone = _table(v1.global_variables())
    assert alone and all(network.is_head_variable(n) for n, _ in alone)
    assert alone == [row for row in _table_of_build(name, size) if network.is_head_variable(row[0])]
    if name == "vgg_16":
        return  # a 224x224 VGG forward pass is left to the TF-Slim round trip
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        images, net, end_points = _build(name, num_classes=7, batch=2, size=size)
        with v1.variable_scope(v1.get_variable_scope(), reuse=True):
            again = network.head(end_points["features"], 7, is_training=False, dropout_keep_prob=1.0)
        count = len(v1.global_variables())
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            pixels = np.random.default_rng(SEED).uniform(0, 1, images.shape.as_list()).astype(np.float32)
            ours, theirs = sess.run([again, net], {images: pixels})
    assert count == len(alone) + len([n for n, _ in _table_of_build(name, size) if not network.is_head_variable(n)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def _table_of_build(name, size):
    with tf.Graph().as_default():
        _build(name, num_classes=7, size=size)
        return _table(v1.global_variables())


def test_is_head_variable_matches_at_the_scope_boundary():
    network = networks.get("cae")
    assert network.is_head_variable("fc1/kernel")
    assert not network.is_head_variable("fc10/kernel")
    assert not network.is_head_variable("conv1/kernel")
    assert not network.is_head_variable("fc1")


# --- 2. Registry --------------------------------------------------------------------


def test_registry_names_and_unknown_network():
    assert networks.NAMES == ("cae", "vgg_16", "resnet_v1_50", "mobilenet_v1", "efficientnet_lite0")
    assert networks.DEFAULT == "cae"
    with pytest.raises(ValueError, match="unknown network 'resnet50'; choose one of cae, vgg_16"):
        networks.get("resnet50")


def test_cae_entry_is_the_digit_classifier_unchanged():
    reference = _pretrained_table("cae")
    with tf.Graph().as_default():
        _, logits, _ = _build("cae")
        assert _table(v1.global_variables()) == reference
        assert logits.shape.as_list() == [None, 10]
    with tf.Graph().as_default():
        _, features, _ = _build("cae", num_classes=None)
        assert [n for n, _ in _table(v1.global_variables())] == [
            "conv1/kernel",
            "conv1/bias",
            "conv2/kernel",
            "conv2/bias",
        ]
        assert features.shape.as_list() == [None, networks.get("cae").feature_units]


@pytest.mark.parametrize(
    ("name", "pixels", "expected"),
    [
        ("vgg_16", [0.0, 0.0, 0.0], [-123.68, -116.78, -103.94]),
        ("resnet_v1_50", [255.0, 255.0, 255.0], [131.32, 138.22, 151.06]),
        ("mobilenet_v1", [0.0, 127.5, 255.0], [-1.0, 0.0, 1.0]),
        ("efficientnet_lite0", [127.0, 255.0, 0.0], [0.0, 1.0, -127.0 / 128.0]),
        ("cae", [0.0, 51.0, 255.0], [0.0, 0.2, 1.0]),
    ],
)
def test_preprocessing_constants(name, pixels, expected):
    with tf.Graph().as_default(), v1.Session() as sess:
        out = sess.run(networks.get(name).preprocess(tf.constant([[[pixels]]], tf.float32)))
    np.testing.assert_allclose(out.reshape(-1), expected, rtol=1e-6, atol=1e-5)


def test_preprocessing_takes_uint8_images():
    with tf.Graph().as_default(), v1.Session() as sess:
        out = sess.run(networks.get("efficientnet_lite0").preprocess(tf.constant([[[[255, 127, 0]]]], tf.uint8)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.reshape(-1), [1.0, 0.0, -127.0 / 128.0])


def test_class_names():
    vgg = networks.get("vgg_16").class_names()
    assert len(vgg) == 1000
    assert vgg[281].startswith("tabby") and vgg[285] == "Egyptian cat" and vgg[967] == "espresso"
    assert vgg[0].startswith("tench") and vgg[999].startswith("toilet tissue")
    mobilenet = networks.get("mobilenet_v1").class_names()
    assert len(mobilenet) == 1001 and mobilenet[0] == "background" and mobilenet[286] == "Egyptian cat"
    assert networks.get("cae").class_names() == [str(d) for d in range(10)]
    with open(networks.IMAGENET_CLASSES_FILE, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("#") and sum(1 for line in lines if not line.startswith("#")) == 1000


# resnet_v1_50's forward pass is checked against TF-Slim's in section 4.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v1", "efficientnet_lite0"])
def test_small_forward_pass_in_both_modes(name):
    network = networks.get(name)
    rng = np.random.default_rng(SEED)
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        training = v1.placeholder_with_default(False, [])
        images, logits, end_points = _build(name, batch=2, size=32, is_training=training)
        features = end_points["features"]
        assert features.shape.as_list() == [2, network.feature_units]
        assert len(end_points["batch_norm_updates"]) == sum(
            1 for v in v1.global_variables() if v.op.name.endswith("moving_mean")
        )
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            batch = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
            inference, train = (sess.run(logits, {images: batch, training: t}) for t in (False, True))
    assert inference.shape == (2, network.num_classes) and np.isfinite(inference).all()
    assert np.isfinite(train).all() and not np.allclose(inference, train)


def test_vgg_refuses_inputs_below_224():
    with tf.Graph().as_default(), pytest.raises(ValueError, match="at least 224x224.*got 64x64"):
        _build("vgg_16", size=64)


# --- 3. BatchNorm ---------------------------------------------------------------------


def _bn_graph(is_training, decay=0.9, epsilon=1e-3, channels=3):
    inputs = v1.placeholder(tf.float32, [4, 5, 5, channels])
    updates = {}
    with v1.variable_scope("layer"):
        output = batch_norm.batch_norm(inputs, is_training, updates, decay, epsilon)
    return inputs, output, updates


def _bn_values(rng, channels=3):
    return {
        "beta": rng.normal(0, 0.5, channels),
        "gamma": rng.uniform(0.5, 2, channels),
        "moving_mean": rng.normal(0, 1, channels),
        "moving_variance": rng.uniform(0.5, 2, channels),
    }


def _load(sess, values):
    for variable in v1.global_variables():
        variable.load(values[variable.op.name.split("/")[-1]].astype(np.float32), sess)


def test_batch_norm_inference_uses_moving_statistics_and_makes_no_update():
    rng = np.random.default_rng(SEED)
    values = _bn_values(rng)
    x = rng.normal(1.0, 2.0, (4, 5, 5, 3)).astype(np.float32)
    with tf.Graph().as_default():
        inputs, output, updates = _bn_graph(False)
        assert updates == {} and not v1.get_collection(v1.GraphKeys.UPDATE_OPS)
        assert [v.op.name for v in v1.global_variables()] == [f"layer/BatchNorm/{n}" for n in BN]
        with v1.Session() as sess:
            _load(sess, values)
            got = sess.run(output, {inputs: x})
    expected = (x - values["moving_mean"]) / np.sqrt(values["moving_variance"] + 1e-3) * values["gamma"] + values[
        "beta"
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_batch_norm_training_uses_batch_statistics_and_updates_only_through_its_op():
    rng = np.random.default_rng(SEED)
    values = _bn_values(rng)
    x = rng.normal(1.0, 2.0, (4, 5, 5, 3)).astype(np.float32)
    with tf.Graph().as_default():
        inputs, output, updates = _bn_graph(True, decay=0.9)
        assert list(updates) == ["layer/BatchNorm"] and not v1.get_collection(v1.GraphKeys.UPDATE_OPS)
        moving = [v for v in v1.global_variables() if "moving" in v.op.name]
        with v1.Session() as sess:
            _load(sess, values)
            got = sess.run(output, {inputs: x})
            untouched = sess.run(moving)
            sess.run(updates["layer/BatchNorm"], {inputs: x})
            mean, variance = sess.run(moving)
    batch_mean, batch_var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = (x - batch_mean) / np.sqrt(batch_var + 1e-3) * values["gamma"] + values["beta"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(untouched[0], values["moving_mean"].astype(np.float32))
    np.testing.assert_allclose(mean, 0.9 * values["moving_mean"] + 0.1 * batch_mean, rtol=1e-5)
    # The fused kernel hands the moving average the unbiased batch variance (n = 100).
    np.testing.assert_allclose(variance, 0.9 * values["moving_variance"] + 0.1 * batch_var * 100 / 99, rtol=1e-5)


def test_batch_norm_with_a_training_tensor_updates_only_when_it_is_true():
    rng = np.random.default_rng(SEED)
    values = _bn_values(rng)
    x = rng.normal(1.0, 2.0, (4, 5, 5, 3)).astype(np.float32)
    with tf.Graph().as_default():
        training = v1.placeholder(tf.bool, [])
        inputs, output, updates = _bn_graph(training)
        moving = [v for v in v1.global_variables() if "moving" in v.op.name]
        with v1.Session() as sess:
            _load(sess, values)
            before = sess.run(moving)
            sess.run([output, updates["layer/BatchNorm"]], {inputs: x, training: False})
            after_inference = sess.run(moving)
            sess.run([output, updates["layer/BatchNorm"]], {inputs: x, training: True})
            after_training = sess.run(moving)
    for old, new in zip(before, after_inference):
        np.testing.assert_array_equal(old, new)
    assert not np.array_equal(before[0], after_training[0])


@pytest.mark.parametrize("depthwise", [False, True])
def test_folded_conv_batch_norm_is_conv_then_batch_norm(depthwise):
    """Inference mode folds BatchNorm into the kernel: same variables, same function."""
    rng = np.random.default_rng(SEED)
    values = _bn_values(rng, channels=4)
    x = rng.normal(0.0, 1.0, (2, 6, 6, 4)).astype(np.float32)
    kernel_value = rng.normal(0.0, 0.5, (3, 3, 4, 1) if depthwise else (3, 3, 4, 4)).astype(np.float32)
    conv = net_ops.depthwise_op(2) if depthwise else net_ops.conv_op(2)
    outputs, tables = [], []
    for folded in (True, False):
        with tf.Graph().as_default():
            inputs = v1.placeholder(tf.float32, x.shape)
            updates = {}
            with v1.variable_scope("layer"):
                kernel = net_ops.model_variable("weights", list(kernel_value.shape), v1.zeros_initializer())
                if folded:
                    norm = batch_norm.Norm(0.9, 1e-3)
                    output = batch_norm.conv_batch_norm(conv, kernel, inputs, False, updates, norm, depthwise=depthwise)
                else:
                    output = batch_norm.batch_norm(conv(inputs, kernel), False, updates, 0.9, 1e-3)
            assert updates == {}
            op_types = {op.type for op in tf.compat.v1.get_default_graph().get_operations()}
            assert ("FusedBatchNormV3" in op_types) != folded
            tables.append(_table(v1.global_variables()))
            with v1.Session() as sess:
                kernel.load(kernel_value, sess)
                for variable in v1.global_variables()[1:]:
                    variable.load(values[variable.op.name.split("/")[-1]].astype(np.float32), sess)
                outputs.append(sess.run(output, {inputs: x}))
    assert tables[0] == tables[1]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_update_ops_select_at_the_scope_boundary():
    updates = {"net/conv1/BatchNorm": "a", "net/conv10/BatchNorm": "b", "net/conv1/sub/BatchNorm": "c"}
    assert batch_norm.update_ops(updates, ["net/conv1"]) == ["a", "c"]
    assert batch_norm.update_ops(updates, ["net/conv10/BatchNorm"]) == ["b"]
    assert batch_norm.update_ops(updates) == ["a", "b", "c"]
    assert batch_norm.update_ops(updates, []) == []


def test_bad_is_training_names_the_layer():
    with tf.Graph().as_default(), pytest.raises(TypeError, match="is_training for layer/BatchNorm must be a bool"):
        _bn_graph("yes")


def test_frozen_scopes_keep_their_moving_statistics_while_a_fine_tuned_scope_trains():
    """A callable is_training trains one layer; a training step with every update op
    available moves only that layer's statistics."""
    top = "MobilenetV1/Conv2d_13_pointwise"
    rng = np.random.default_rng(SEED)
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        images = v1.placeholder(tf.float32, [2, 32, 32, 3])
        labels = tf.constant([3, 5])
        logits, end_points = mobilenet_v1.mobilenet_v1(
            images, num_classes=10, is_training=lambda scope: scope.startswith(top + "/")
        )
        updates = end_points["batch_norm_updates"]
        assert list(updates) == [f"{top}/BatchNorm"]
        assert not v1.get_collection(v1.GraphKeys.UPDATE_OPS)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        step = v1.train.GradientDescentOptimizer(0.1).minimize(loss)
        with tf.control_dependencies([step]):
            train = tf.group(*batch_norm.update_ops(updates))
        moving = [v for v in v1.global_variables() if v.op.name.endswith(("moving_mean", "moving_variance"))]
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            before = sess.run(moving)
            sess.run(train, {images: rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)})
            after = sess.run(moving)
    for variable, old, new in zip(moving, before, after):
        if variable.op.name.startswith(top + "/"):
            assert not np.array_equal(old, new), variable.op.name
        else:
            np.testing.assert_array_equal(old, new, err_msg=variable.op.name)


# --- 4. Round trips with TF-Slim's own nets ---------------------------------------------------

SLIM_NETS = {"vgg_16": (1, 224), "resnet_v1_50": (2, 64)}


def _run_slim(*args):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(SLIM_SCRIPT), *map(str, args)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode == 3:
        pytest.skip(f"tf_slim is not usable here: {result.stderr.strip().splitlines()[-1:]}")
    assert result.returncode == 0, result.stderr[-3000:]


def _randomise(sess, seed):
    """Seeded values for biases and BatchNorm variables, as slim_reference.randomise does.

    What Variable.load does, for all of them in one session.run: one run per variable
    costs ~50 ms each in resnet_v1_50's graph (267 of them).
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for variable in v1.global_variables():
        name, shape = variable.op.name, variable.shape.as_list()
        if name.endswith("moving_variance"):
            value = rng.uniform(2.0, 4.0, shape)
        elif name.endswith("gamma"):
            value = rng.uniform(0.3, 0.6, shape)
        elif name.endswith(("beta", "moving_mean", "biases")):
            value = rng.normal(0.0, 0.1, shape)
        else:
            continue
        feeds[variable] = value.astype(np.float32)
    sess.run([variable.initializer for variable in feeds], {v.initializer.inputs[1]: x for v, x in feeds.items()})


def _ours(name, inputs, checkpoint=None, save_to=None, seed=SEED):
    """Our net's (logits, features): restored from checkpoint, or initialised, randomised and saved."""
    with tf.Graph().as_default():
        v1.set_random_seed(seed)
        images = v1.placeholder(tf.float32, inputs.shape)
        logits, end_points = networks.get(name).build(images, num_classes=1000)
        features = end_points["features"] if name == "vgg_16" else end_points["resnet_v1_50/block4"]
        saver = v1.train.Saver()  # every variable, by name: none may be missing
        with v1.Session() as sess:
            if checkpoint:
                saver.restore(sess, checkpoint)
            else:
                sess.run(v1.global_variables_initializer())
                _randomise(sess, seed)
                saver.save(sess, save_to, write_meta_graph=False)
            return sess.run([logits, features], {images: inputs})


@pytest.fixture(scope="module")
def slim_dirs(tmp_path_factory):
    """Our checkpoints and outputs, then one TF-Slim run that imports them and exports its own."""
    root = tmp_path_factory.mktemp("slim")
    rng = np.random.default_rng(SEED)
    for name, (batch, size) in SLIM_NETS.items():
        (root / "inputs").mkdir(exist_ok=True)
        inputs = rng.normal(0.0, 60.0, (batch, size, size, 3)).astype(np.float32)
        np.save(root / "inputs" / f"{name}.npy", inputs)
        (root / "ours" / name).mkdir(parents=True)
        outputs = _ours(name, inputs, save_to=str(root / "ours" / name / "model.ckpt"), seed=SEED + 1)
        np.savez(root / "ours" / f"{name}.npz", *outputs)
    _run_slim("--inputs-dir", root / "inputs", "--ours-dir", root / "ours", "--out-dir", root / "theirs", "--seed", 7)
    for name in SLIM_NETS:  # 0.5 GB for vgg_16: not kept longer than needed
        os.remove(root / "ours" / name / "model.ckpt.data-00000-of-00001")
    return root


def _assert_close(ours, theirs):
    scale = max(1.0, float(np.abs(theirs).max()))
    assert ours.shape == theirs.shape
    assert float(np.abs(ours - theirs).max()) <= 1e-5 * scale


@pytest.mark.slow
def test_slim_nets_have_exactly_our_variables(slim_dirs):
    table = json.loads((slim_dirs / "theirs" / "variables.json").read_text())
    for name in SLIM_NETS:
        assert [(n, s) for n, s in table[name]] == EXPECTED[name][0]()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLIM_NETS))
def test_our_checkpoint_restores_into_slim_with_the_same_outputs(slim_dirs, name):
    ours = np.load(slim_dirs / "ours" / f"{name}.npz")
    _assert_close(np.load(slim_dirs / "theirs" / f"imported_{name}_logits.npy"), ours["arr_0"])
    _assert_close(np.load(slim_dirs / "theirs" / f"imported_{name}_features.npy"), ours["arr_1"])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLIM_NETS))
def test_slim_checkpoint_restores_into_ours_with_the_same_outputs(slim_dirs, name):
    theirs = slim_dirs / "theirs"
    inputs = np.load(slim_dirs / "inputs" / f"{name}.npy")
    logits, features = _ours(name, inputs, checkpoint=str(theirs / name / "model.ckpt"))
    _assert_close(logits, np.load(theirs / f"exported_{name}_logits.npy"))
    _assert_close(features, np.load(theirs / f"exported_{name}_features.npy"))
