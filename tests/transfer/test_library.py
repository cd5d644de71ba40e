"""transfer.library on graphs the toolkit did not build (docs/LIBRARY.md).

The rules, each a property over generated graphs: which variables are model variables
(slots and counters dropped, moving statistics kept, whatever built them), and the graph
check (no op moves what the plan freezes; every "updated" statistic is moved by the step,
and only those). The three worked examples of docs/LIBRARY.md run as they are written, in
subprocesses (tf.compat.v1.layers and TF-Slim need TF_USE_LEGACY_KERAS=1 before TensorFlow,
and the toolkit's own modules never import TF-Slim). TensorFlow's silent reshape on restore
is pinned, since it is the reason to plan first.
"""

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from transfer import library

v1 = tf.compat.v1
REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "LIBRARY.md"


def _python(script, cwd, legacy_keras=True):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    if legacy_keras:
        env["TF_USE_LEGACY_KERAS"] = "1"
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )


# --- TensorFlow's silent reshape: the reason to plan first -----------------------------------


@pytest.mark.parametrize("how", ["saver", "init_from_checkpoint"])
def test_tensorflow_restores_a_wrong_shaped_tensor_without_error(tmp_path, how):
    """If this fails, TensorFlow now refuses a wrong shape: README's "Your own graph" must say so."""
    prefix = str(tmp_path / "small.ckpt")
    with tf.Graph().as_default():
        v1.get_variable("conv/kernel", [3, 3, 1, 4])
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver().save(sess, prefix, write_meta_graph=False)
    with tf.Graph().as_default():
        kernel = v1.get_variable("conv/kernel", [5, 5, 1, 4])
        if how == "init_from_checkpoint":
            v1.train.init_from_checkpoint(prefix, {"conv/": "conv/"})
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            if how == "saver":
                v1.train.Saver().restore(sess, prefix)
            assert sess.run(kernel).shape == (3, 3, 1, 4)
        variables = library.model_variables()
        with pytest.raises(library.PlanError, match=r"shape \[3, 3, 1, 4\] in checkpoint, \[5, 5, 1, 4\] in graph"):
            library.make_plan(variables, prefix, "all")


# --- model_variables: slots and counters dropped by structure ---------------------------------

OPTIMIZERS = {
    "none": None,
    "adam": lambda: v1.train.AdamOptimizer(0.1),
    "momentum": lambda: v1.train.MomentumOptimizer(0.1, 0.9),
    "sgd": lambda: v1.train.GradientDescentOptimizer(0.1),
}


def _dense_bn(x, name, resource):
    """A dense layer and a BatchNorm layer by get_variable; the statistics' updates go to UPDATE_OPS."""
    with v1.variable_scope(name, use_resource=resource):
        kernel = v1.get_variable("dense/kernel", [int(x.shape[-1]), 3])
        net = tf.matmul(x, kernel)
        gamma = v1.get_variable("bn/gamma", [3], initializer=v1.ones_initializer())
        beta = v1.get_variable("bn/beta", [3], initializer=v1.zeros_initializer())
        mean = v1.get_variable("bn/moving_mean", [3], initializer=v1.zeros_initializer(), trainable=False)
        variance = v1.get_variable("bn/moving_variance", [3], initializer=v1.ones_initializer(), trainable=False)
        return net, (gamma, beta, mean, variance)


def test_model_variables_drop_slots_and_counters_whatever_built_them():
    situations = list(itertools.product(OPTIMIZERS, (False, True), (False, True), (False, True), (False, True)))
    assert len(situations) == 64
    expected = [
        f"{scope}/{name}"
        for scope in ("enc", "head")
        for name in ("dense/kernel", "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance")
    ]
    for optimizer, global_step, counter, resource, imported in situations:
        with tf.Graph().as_default() as graph:
            x = v1.placeholder(tf.float32, [None, 4])
            net, _ = _dense_bn(x, "enc", resource)
            net, _ = _dense_bn(net, "head", resource)
            loss = tf.reduce_sum(net)
            step = v1.train.get_or_create_global_step() if global_step else None
            if counter:
                v1.get_variable("examples_seen", [], tf.int64, initializer=v1.zeros_initializer(), trainable=False)
            if OPTIMIZERS[optimizer]:
                OPTIMIZERS[optimizer]().minimize(loss, step)
            if imported:
                meta = v1.train.export_meta_graph()
                graph = tf.Graph()
                with graph.as_default():
                    v1.train.import_meta_graph(meta)
            names = [var.op.name for var in library.model_variables(graph)]
        assert names == expected, (optimizer, global_step, counter, resource, imported)


# --- the graph check: nothing frozen moves, every "updated" statistic does ------------------


def _graph(situation):
    """enc (restored) and head (fresh), each a dense layer and a BatchNorm normalising by batch or moving statistics."""
    enc_training, head_training, collected = (
        situation["enc_training"],
        situation["head_training"],
        situation["collected"],
    )
    x = v1.placeholder(tf.float32, [None, 4], name="x")
    net = x
    for scope, training in (("enc", enc_training), ("head", head_training)):
        net, (gamma, beta, mean, variance) = _dense_bn(net, scope, True)
        if training:
            batch_mean, batch_variance = tf.nn.moments(net, [0])
            for statistic, value in ((mean, batch_mean), (variance, batch_variance)):
                update = v1.assign_sub(statistic, (statistic - value) * 0.5)
                if collected:
                    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, update)
            net = tf.nn.batch_normalization(net, batch_mean, batch_variance, beta, gamma, 1e-3)
        else:
            net = tf.nn.batch_normalization(net, mean, variance, beta, gamma, 1e-3)
    return x, tf.reduce_mean(tf.square(net - 1.0))


def _expected_refusal(situation):
    """The oracle: the first rule the situation breaks, or None."""
    enc_updated = situation["fine_tune"] and situation["train_batch_norm"]
    enc_written = situation["enc_training"] and situation["collected"]
    head_written = situation["head_training"] and situation["collected"]
    if enc_written and not enc_updated:
        return "writes enc/bn/moving_mean, which the plan freezes"
    if enc_updated and not enc_written:
        return "the plan updates enc/bn/moving_mean, but no op"
    if not head_written:
        return "the plan updates head/bn/moving_mean, but no op"
    return None


@pytest.fixture(scope="module")
def enc_checkpoint(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("enc") / "model.ckpt")
    with tf.Graph().as_default():
        v1.set_random_seed(1)
        _graph(dict(enc_training=False, head_training=False, collected=False))
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver().save(sess, prefix, write_meta_graph=False)
    return prefix


SITUATION_KEYS = ("enc_training", "head_training", "collected", "fine_tune", "train_batch_norm", "textbook")


def test_graph_check_holds_the_plan_on_generated_graphs(enc_checkpoint):
    """Refused exactly when the oracle says; accepted graphs move exactly the updated statistics, never a frozen one."""
    situations = [dict(zip(SITUATION_KEYS, values)) for values in itertools.product((False, True), repeat=6)]
    assert len(situations) == 64
    accepted = 0
    rng = np.random.default_rng(0)
    for situation in situations:
        with tf.Graph().as_default():
            v1.set_random_seed(2)
            x, loss = _graph(situation)
            variables = library.model_variables()
            selection = library.RestoreSelection(
                ("enc",), fine_tune=situation["fine_tune"], train_batch_norm=situation["train_batch_norm"]
            )
            plan = library.make_plan(variables, enc_checkpoint, selection)
            expected = _expected_refusal(situation)
            with pytest.raises(library.PlanError) if expected else _nothing() as refusal:
                step = _step(situation["textbook"], loss, plan, variables)
            if expected:
                assert expected in str(refusal.value), situation
                continue
            accepted += 1
            updated = {row.name for row in plan.rows if row.updated}
            statistics = [var for var in variables if var.op.name.endswith(("moving_mean", "moving_variance"))]
            with v1.Session() as sess:
                sess.run(v1.global_variables_initializer())
                values = library.restore(sess, plan, variables)
                before = sess.run(statistics)
                sess.run(step, {x: rng.normal(size=(8, 4))})
                after = sess.run(statistics)
                library.frozen_check(sess, plan, variables, values)
            moved = {var.op.name for var, old, new in zip(statistics, before, after) if not np.array_equal(old, new)}
            assert moved == updated, situation
    assert accepted == 8  # head written (2 of 8 combinations) and enc updated exactly when written (4 of 8), both steps


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _step(textbook, loss, plan, variables):
    """The textbook train op (all of UPDATE_OPS, then check_graph) or the library's."""
    if not textbook:
        return library.train_op(loss, plan, variables, v1.train.GradientDescentOptimizer(0.1))
    [(_, trained)] = library.var_lists(plan, variables)
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        step = v1.train.GradientDescentOptimizer(0.1).minimize(loss, var_list=trained)
    library.check_graph(plan, variables, step)
    return step


def test_plan_never_calls_a_statistic_the_graph_updates_never_updated(enc_checkpoint):
    with tf.Graph().as_default():
        _graph(dict(enc_training=True, head_training=True, collected=True))
        plan = library.make_plan(library.model_variables(), enc_checkpoint, library.RestoreSelection(("enc",)))
    note = plan.format().splitlines()[-1]
    assert note == (
        "  BatchNorm moving statistics: 2 frozen, of which the graph's UPDATE_OPS write 2 "
        "(first: enc/bn/moving_mean; the graph check refuses them), 2 updated by their layers"
    )
    assert "never updated" not in plan.markdown()


def test_frozen_check_names_what_moved_and_warns_about_left_out_statistics(enc_checkpoint, capsys):
    with tf.Graph().as_default():
        x, loss = _graph(dict(enc_training=True, head_training=True, collected=True))
        variables = library.model_variables()
        plan = library.make_plan(variables, enc_checkpoint, library.RestoreSelection(("enc",)))
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            step = v1.train.GradientDescentOptimizer(0.1).minimize(
                loss, var_list=library.var_lists(plan, variables)[0][1]
            )
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            values = library.restore(sess, plan, variables)
            sess.run(step, {x: np.random.default_rng(0).normal(size=(8, 4))})
            with pytest.raises(library.UserError) as error:
                library.frozen_check(sess, plan, variables, values)
            assert re.fullmatch(
                r"frozen check failed: 2 frozen variables moved: enc/bn/moving_mean by [0-9.e-]+; "
                r"enc/bn/moving_variance by [0-9.e-]+",
                str(error.value),
            )
            assert library.frozen_check(sess, plan, v1.trainable_variables(), values) == (3, 0.0)
    assert (
        "warning: frozen check: 2 frozen restored variables are not among the variables handed to it, 2 of them "
        "BatchNorm moving statistics (first: enc/bn/moving_mean)"
    ) in capsys.readouterr().out


def test_wrong_arguments_are_one_line_saying_what_to_pass(enc_checkpoint):
    """The slips a user makes calling the library: each a PlanError of one line, never an IndexError or KeyError."""
    with tf.Graph().as_default():
        _, loss = _graph(dict(enc_training=False, head_training=False, collected=False))
        variables = library.model_variables()
        enc = library.RestoreSelection(("enc",))
        plan = library.make_plan(variables, enc_checkpoint, enc)
        slips = [
            (lambda: library.make_plan([], enc_checkpoint, enc), "make_plan: no variables given: pass library.mod"),
            (lambda: library.make_plan(["enc/w"], enc_checkpoint, enc), "make_plan: variables holds a str, not a va"),
            (lambda: library.make_plan(variables, enc_checkpoint, ("enc",)), "selection is a tuple: pass a RestoreSel"),
            (
                lambda: library.make_plan(variables, enc_checkpoint, library.RestoreSelection("enc")),
                "RestoreSelection's restore is a tuple of scopes or patterns, not the string 'enc': write ('enc',)",
            ),
            (lambda: library.check_graph(plan, []), "these are not the variables the plan was made from (0 given"),
            (lambda: library.train_op(loss, plan, [], v1.train.AdamOptimizer()), "train_op: no variables given"),
        ]
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            slips.append((lambda: library.frozen_check(sess, plan, variables, {}), "frozen_check: source_values la"))
            for call, start in slips:
                with pytest.raises(library.PlanError) as error:
                    call()
                assert str(error.value).startswith(start) and "\n" not in str(error.value), str(error.value)


# --- the worked examples of docs/LIBRARY.md, as written ---------------------------------------


def _examples():
    return dict(re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S))


def test_the_doc_has_three_examples():
    assert sorted(_examples()) == ["layers", "loop", "slim"]


EXPECTED = {
    "slim": [
        "BatchNorm moving statistics: 98 frozen (inference mode, never updated, unlike TF-Slim's UPDATE_OPS), "
        "0 updated by their layers",
        "restored 270 variables from zoo/resnet_v2_50.ckpt; each equals the checkpoint exactly",
        "frozen check: 270 variables (98 of them BatchNorm moving statistics), max |diff| = 0",
    ],
    "layers": [
        "restored 6 variables from model_a/model.ckpt; each equals the checkpoint exactly",
        "frozen check: 6 variables (2 of them BatchNorm moving statistics), max |diff| = 0",
    ],
    "loop": [
        "refused: the UPDATE_OPS op encoder/bn1/AssignMovingAvg/AssignSubVariableOp writes encoder/bn1/moving_mean, "
        "which the plan freezes",
        "encoder/bn1/moving_mean      [8]           encoder/bn1/moving_mean      restored     updated  0",
        "restored 6 variables from start/model.ckpt; each equals the checkpoint exactly",
        "frozen check: 2 variables, max |diff| = 0",
    ],
}


@pytest.mark.parametrize("name", [pytest.param("slim", marks=pytest.mark.slow), "layers", "loop"])
def test_doc_example_runs(tmp_path, name):
    result = _python(_examples()[name], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for line in EXPECTED[name]:
        assert line in result.stdout, result.stdout
    assert "tf_slim" not in "".join(Path(module).read_text() for module in (REPO / "transfer").glob("*.py"))


# --- importing the library beside a user's own packages --------------------------------------

BESIDE = """
import tensorflow as tf
from transfer import library
import data, runtime
assert data.MINE and runtime.MINE, "the user's own packages"
v1 = tf.compat.v1
with tf.Graph().as_default():
    v1.get_variable("enc/kernel", [2, 2])
    v1.get_variable("head/kernel", [2, 2])
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        v1.train.Saver().save(sess, "ckpt/model.ckpt", write_meta_graph=False)
    variables = library.model_variables()
    plan = library.make_plan(variables, "ckpt", library.RestoreSelection(("enc",)))
    step = library.train_op(tf.reduce_sum(variables[1]), plan, variables, v1.train.AdamOptimizer(0.1))
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        values = library.restore(sess, plan, variables)
        sess.run(step)
        library.frozen_check(sess, plan, variables, values)
print(plan.format().splitlines()[2])
"""


@pytest.mark.parametrize("imported_first", [False, True])
def test_library_imports_beside_user_data_and_runtime_packages(tmp_path, imported_first):
    for name in ("data", "runtime"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("MINE = True\n")
    script = ("import data, runtime\n" if imported_first else "") + BESIDE
    (tmp_path / "script.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-3:] == [
        "restored 1 variables from ckpt/model.ckpt; each equals the checkpoint exactly",
        "frozen check: 1 variables, max |diff| = 0",
        "  enc/kernel   [2, 2]  enc/kernel  restored     frozen  0",
    ]


def test_a_user_models_package_is_refused_in_one_line(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "script.py").write_text("from transfer import library\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"ImportError: the package 'models' at {tmp_path / 'models' / '__init__.py'} hides cae-transfer's own models "
        "package (the network registry, which the toolkit and your network code share): rename your models/ "
        "package or run your script from another folder"
    )
    assert "models.scopes" not in result.stderr


# --- --train-batch-norm on a foreign network's BatchNorm (transfer.graph.build) ---------------


def _foreign_network(honours_layer_mode):
    """A registry record whose builder, like TF-Slim's, puts its BatchNorm updates in UPDATE_OPS.

    honours_layer_mode: it builds each BatchNorm layer in the mode the toolkit asks for it;
    else, like a builder that takes is_training for a bool, all in training mode.
    """
    import dataclasses

    from models import networks

    def build(images, num_classes=None, is_training=False):
        training = is_training("net/layer/bn") if callable(is_training) and honours_layer_mode else bool(is_training)
        with v1.variable_scope("net", reuse=v1.AUTO_REUSE):
            net = tf.reshape(images, [-1, 28 * 28])
            net, (gamma, beta, mean, variance) = _dense_bn(net, "layer", True)
            if training is not False:  # True, or the toolkit's is_training tensor
                batch_mean, batch_variance = tf.nn.moments(net, [0])
                for statistic, value in ((mean, batch_mean), (variance, batch_variance)):
                    v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, v1.assign_sub(statistic, (statistic - value) * 0.5))
                net = tf.nn.batch_normalization(net, batch_mean, batch_variance, beta, gamma, 1e-3)
            else:
                net = tf.nn.batch_normalization(net, mean, variance, beta, gamma, 1e-3)
        return net, {}

    def head(features, num_classes, is_training=False, dropout_keep_prob=1.0):
        with v1.variable_scope("logits", reuse=v1.AUTO_REUSE):
            return tf.matmul(features, v1.get_variable("kernel", [3, num_classes]))

    return dataclasses.replace(
        networks.get(networks.DEFAULT), name="foreign", build=build, head=head, feature_units=3, head_scopes=("logits",)
    )


@pytest.mark.parametrize("honours", [False, True])
@pytest.mark.parametrize("train_batch_norm", [False, True])
def test_train_batch_norm_on_a_foreign_network_runs_its_updates_or_is_refused(honours, train_batch_norm):
    from data import image_folder
    from transfer import graph as transfer_graph
    from transfer import writes
    from transfer.plan import make_plan

    network = _foreign_network(honours)
    spec = transfer_graph.input_spec(network)
    shape = transfer_graph.DataShape(image_folder.MNIST_INPUT, 2)
    infos = transfer_graph.variables_of(network, 2, shape.spec, spec)
    stand_in = [info for info in infos if info.name.startswith("net/")]
    selection = library.RestoreSelection(("net",), fine_tune=True, train_batch_norm=train_batch_norm)
    plan = make_plan(infos, stand_in, selection, "stand-in")
    statistics = {"net/layer/bn/moving_mean", "net/layer/bn/moving_variance"}
    assert {row.name for row in plan.rows if row.updated} == (statistics if train_batch_norm else set())
    with tf.Graph().as_default():
        hyper = transfer_graph.Hyperparameters(4, 0.1)
        if not honours and not train_batch_norm:
            with pytest.raises(library.PlanError, match="writes net/layer/bn/moving_mean, which the plan freezes"):
                transfer_graph.build(network, plan, shape, spec, hyper, use_cache=False)
            return
        built = transfer_graph.build(network, plan, shape, spec, hyper, use_cache=False)
        written = set(writes.written_variables([built.train_op]))
    assert written & statistics == (statistics if train_batch_norm else set())


# --- big foreign graphs: one capped line per mistake; V1 checkpoints ---------------------------

LAYERS = 120  # 360 variables, more than any message may list


def _save(prefix, names, shape=(2,), write_version=None):
    with tf.Graph().as_default():
        for name in names:
            v1.get_variable(name, shape)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            saver = v1.train.Saver(write_version=write_version or tf.compat.v1.train.SaverDef.V2)
            saver.save(sess, prefix, write_meta_graph=False)


def _layer_names(outer):
    return [f"{outer}block{i // 10}/unit_{i % 10}/conv/{part}" for i in range(LAYERS) for part in ("weights", "biases")]


MISTAKES = {
    # the checkpoint's names, its shape, and what the one line must say
    "forgotten outer scope": (_layer_names(""), (2,), "pass --map block0=resnet_v2_50/block0"),
    "wrong network": (_layer_names("resnet_v1_50/"), (2,), "checkpoint scopes: resnet_v1_50"),
    "wrong shape": (_layer_names("resnet_v2_50/"), (3,), "(pass --skip-mismatched to initialise these instead)"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_mistake_on_a_big_foreign_graph_is_one_short_line(tmp_path, mistake):
    names, shape, says = MISTAKES[mistake]
    _save(str(tmp_path / "model.ckpt"), names, shape)
    with tf.Graph().as_default():
        for name in _layer_names("resnet_v2_50/"):
            v1.get_variable(name, [2])
        with pytest.raises(library.PlanError) as error:
            library.make_plan(library.model_variables(), str(tmp_path), "all")
    message = str(error.value)
    assert "\n" not in message and len(message) < 1000, (len(message), message)
    assert says in message and "more" in message


@pytest.mark.parametrize("given", ["file", "folder"])
def test_a_v1_checkpoint_restores_bit_exact(tmp_path, given, capsys):
    names = _layer_names("net/")[:6]
    prefix = str(tmp_path / "old" / "model.ckpt")
    (tmp_path / "old").mkdir()
    _save(prefix, names, write_version=tf.compat.v1.train.SaverDef.V1)
    assert sorted(path.name for path in (tmp_path / "old").iterdir()) == ["checkpoint", "model.ckpt"]
    with tf.Graph().as_default():
        for name in names:
            v1.get_variable(name, [2])
        v1.get_variable("head/kernel", [2])
        variables = library.model_variables()
        plan = library.make_plan(variables, prefix if given == "file" else str(tmp_path / "old"), "net")
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            values = library.restore(sess, plan, variables)
            assert library.frozen_check(sess, plan, variables, values) == (6, 0.0)
    assert f"restored 6 variables from {prefix}; each equals the checkpoint exactly" in capsys.readouterr().out
