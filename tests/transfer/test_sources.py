"""Transfer sources the toolkit did not write, and the plan's messages about them.

A V1 single-file checkpoint restores bit-exact; a folder is resolved by one rule over
every state it can be in; error lists stay one short line and suggest the --map that a
forgotten outer scope needs; --skip-mismatched skips whole layers.
"""

import itertools
import os
import random
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import CONV_NAMES, invoke, latest_prefix, read_checkpoint
from model_variables import CLASSIFIER_VARIABLES

import train_transfer
from runtime.errors import CheckpointError
from transfer import source
from transfer.plan import PlanError, RestoreSelection, VariableInfo, make_plan
from transfer.selection import in_scope

v1 = tf.compat.v1

TR_FLAGS = ["--sample", "--labels-per-class", "10", "--validation-size", "100", "--epochs", "1"]
TR_FLAGS += ["--save-every", "0", "--summary-every", "0"]
TABLE_MAGIC = bytes.fromhex("57fb808b247547db")


def _write_v1(path, values):
    """A V1 single-file checkpoint holding {name: array}, written by TensorFlow's own V1 Saver."""
    with tf.Graph().as_default():
        variables = [v1.get_variable(name, initializer=tf.constant(value)) for name, value in values.items()]
        saver = v1.train.Saver(variables, write_version=v1.train.SaverDef.V1)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            written = saver.save(sess, str(path), write_meta_graph=False, write_state=False)
    assert written == str(path) and os.path.isfile(path) and not os.path.exists(str(path) + ".index")
    return str(path)


def _encoder_values(seed=3):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(CLASSIFIER_VARIABLES[name]).astype(np.float32) for name in CONV_NAMES}


@pytest.fixture(scope="module")
def v1_source(tmp_path_factory):
    values = _encoder_values()
    return _write_v1(tmp_path_factory.mktemp("v1") / "inception_like.ckpt", values), values


# --- V1 single-file checkpoints -------------------------------------------------------------


def test_v1_file_is_read_and_resolved(v1_source):
    path, values = v1_source
    assert source.resolve_checkpoint(path) == path
    assert source.resolve_checkpoint(os.path.dirname(path)) == path  # the folder's only checkpoint
    assert {info.name: info.shape for info in source.read_variables(path)} == {
        name: value.shape for name, value in values.items()
    }
    read = source.read_values(path, sorted(values))
    assert all(np.array_equal(read[name], values[name]) for name in values)


def test_v1_dry_run_plans_the_restore(v1_source, tmp_path):
    path, _ = v1_source
    run = invoke(
        train_transfer.main,
        [*TR_FLAGS, "--checkpoint", path, "--restore", "conv", "--dry-run", "--model-dir", tmp_path],
    )
    assert run.code == 0, run.err
    assert f"restore plan (checkpoint: {path})" in run.out
    for name in CONV_NAMES:
        assert f"{name}  " in run.out and "restored" in next(line for line in run.out.splitlines() if name in line)
    assert not os.listdir(tmp_path)


def test_v1_restore_is_bit_exact(v1_source, tmp_path):
    path, values = v1_source
    model_dir = tmp_path / "run"
    run = invoke(train_transfer.main, [*TR_FLAGS, "--checkpoint", path, "--restore", "conv", "--model-dir", model_dir])
    assert run.code == 0, run.err
    assert "frozen check: 4 variables, max |diff| = 0\n" in run.out
    trained = read_checkpoint(latest_prefix(model_dir))
    for name in CONV_NAMES:
        assert trained[name].dtype == values[name].dtype and np.array_equal(trained[name], values[name]), name


def test_a_file_that_only_ends_like_a_table_is_refused_when_read(tmp_path):
    path = tmp_path / "fake.ckpt"
    path.write_bytes(b"\0" * 64 + TABLE_MAGIC)
    assert source.resolve_checkpoint(str(path)) == str(path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        source.read_variables(str(path))


# --- one rule for a folder -------------------------------------------------------------------

STATE_FILE = ("none", "names_one")
COUNTS = (0, 1, 2)


def _make_folder(root, state, numbered, other_v2, v1_files):
    """A folder in one state: index and V1 files stand in for checkpoints (resolving reads no tensor)."""
    root.mkdir()
    for step in range(1, numbered + 1):
        (root / f"model.ckpt-{step}.index").write_bytes(b"index")
    for n in range(other_v2):
        (root / f"net{n}.ckpt.index").write_bytes(b"index")
    for n in range(v1_files):
        (root / f"old{n}.ckpt").write_bytes(b"\0" * 64 + TABLE_MAGIC)
    (root / "notes.txt").write_text("not a checkpoint\n")
    found = sorted(
        [f"model.ckpt-{s}" for s in range(1, numbered + 1)]
        + [f"net{n}.ckpt" for n in range(other_v2)]
        + [f"old{n}.ckpt" for n in range(v1_files)]
    )
    if state == "names_one" and found:
        (root / "checkpoint").write_text(f'model_checkpoint_path: "{found[0]}"\n')
    return found


def _expected(state, numbered, found):
    """The rule: the state file's choice; else one run's newest numbered; else the only one; else refused.

    runtime.checkpoints.read_state honours a state file only when it names a V2 prefix
    (an .index beside it); naming a V1 file it warns and is ignored.
    """
    if not found:
        return "none"
    if state == "names_one" and not found[0].startswith("old"):
        return found[0]
    if numbered and numbered == len(found):
        return f"model.ckpt-{numbered}"
    if len(found) == 1:
        return found[0]
    return "several"


def test_folder_rule_over_every_state(tmp_path):
    cases = list(itertools.product(STATE_FILE, COUNTS, COUNTS, COUNTS))
    assert len(cases) == 54
    for index, (state, numbered, other_v2, v1_files) in enumerate(cases):
        root = tmp_path / f"case{index}"
        found = _make_folder(root, state, numbered, other_v2, v1_files)
        expected = _expected(state, numbered, found)
        try:
            got = os.path.basename(source.resolve_checkpoint(str(root)))
        except CheckpointError as error:
            message = str(error)
            assert "\n" not in message
            got = "several" if "no `checkpoint` state file naming one" in message else "none"
            if got == "several":
                assert all(name in message for name in found), message
        assert got == expected, (state, numbered, other_v2, v1_files, got)


def test_a_folder_of_many_checkpoints_is_listed_capped(tmp_path):
    for n in range(25):
        (tmp_path / f"net{n:02d}.index").write_bytes(b"index")
    with pytest.raises(CheckpointError) as raised:
        source.resolve_checkpoint(str(tmp_path))
    message = str(raised.value)
    assert "holds 25 checkpoints" in message and "net19" in message
    assert "net20" not in message and message.count("net") == 20
    assert "and 5 more" in message and len(message) < 1000


# --- error lists are capped, and a forgotten outer scope gets its --map ---------------------

WHERE = "/tmp/zoo/resnet_v2_50.ckpt"
LEAVES = ("weights", "biases", "gamma", "beta", "moving_mean", "moving_variance")


def _generated_names(rng, count, tops=6, max_depth=4):
    """`count` distinct variable names: a top scope s0..s{tops-1}, random inner scopes, one leaf."""
    count = min(count, tops * 9 ** (max_depth - 1) * len(LEAVES) // 2)  # well below how many there can be
    names = set()
    while len(names) < count:
        depth = rng.randint(0, max_depth - 1)
        inner = [f"s{rng.randrange(tops)}"] + [f"u{rng.randrange(9)}" for _ in range(depth)]
        names.add("/".join([*inner, rng.choice(LEAVES)]))
    return sorted(names)


def _infos(names, shape=(3,)):
    return [VariableInfo(name, shape, "float32") for name in names]


def _error_line(raised):
    line = f"error: {raised.value}"
    assert "\n" not in line and len(line) < 1000, (len(line), line[:300])
    return line


def test_wrong_shape_of_hundreds_is_one_short_line():
    names = _generated_names(random.Random(1), 300)
    with pytest.raises(PlanError) as raised:
        make_plan(_infos(names), _infos(names, shape=(4,)), RestoreSelection(None), WHERE)
    line = _error_line(raised)
    assert "shape mismatch" in line and "shape [4] in checkpoint, [3] in graph" in line
    assert re.search(r"; and (\d+) more \(pass --skip-mismatched", line)


def test_wrong_scope_of_hundreds_is_one_short_line():
    names = _generated_names(random.Random(2), 300)
    graph = [f"resnet_v1_50/{name}" for name in names]
    checkpoint = [f"resnet_v2_50/{name}" for name in names]
    with pytest.raises(PlanError) as raised:
        make_plan(_infos(graph), _infos(checkpoint), RestoreSelection(None), WHERE)
    line = _error_line(raised)
    assert "no graph variable is in" in line and "--map" not in line
    with pytest.raises(PlanError) as raised:
        make_plan(_infos(graph), _infos(checkpoint), RestoreSelection(("resnet_v1_50",)), WHERE)
    line = _error_line(raised)
    assert f"{WHERE} lacks resnet_v1_50/" in line and re.search(r", and \d+ more; checkpoint scopes: ", line)


def test_forgotten_outer_scope_suggests_the_map():
    names = _generated_names(random.Random(3), 300, tops=3)
    checkpoint = [f"resnet_v2_50/{name}" for name in names]
    with pytest.raises(PlanError) as raised:
        make_plan(_infos(names), _infos(checkpoint), RestoreSelection(None), WHERE)
    line = _error_line(raised)
    assert line.endswith(
        "; the names differ by an outer scope: pass "
        "--map resnet_v2_50/s0=s0 --map resnet_v2_50/s1=s1 --map resnet_v2_50/s2=s2"
    ), line
    graph = [f"encoder/{name}" for name in names]
    with pytest.raises(PlanError) as raised:
        make_plan(_infos(graph), _infos(names), RestoreSelection(("encoder/s1",)), WHERE)
    assert _error_line(raised).endswith("; the names differ by an outer scope: pass --map s1=encoder/s1")


def _situations(count=240, seed=21):
    """Seeded situations: names of random depth, an outer scope of 1-2 levels added on one side, a selection."""
    rng = random.Random(seed)
    for _ in range(count):
        tops = rng.randint(1, 6)
        names = _generated_names(rng, rng.randint(5, 200), tops=tops, max_depth=rng.randint(1, 5))
        outer = "/".join(f"o{rng.randrange(3)}" for _ in range(rng.randint(1, 2)))
        side = rng.choice(("checkpoint", "graph"))
        graph = names if side == "checkpoint" else [f"{outer}/{name}" for name in names]
        checkpoint = [f"{outer}/{name}" for name in names] if side == "checkpoint" else names
        used_tops = sorted({name.split("/")[0] for name in names})
        chosen = rng.sample(used_tops, rng.randint(1, len(used_tops)))
        restore = rng.choice((None, tuple(chosen if side == "checkpoint" else (f"{outer}/{t}" for t in chosen))))
        yield graph, checkpoint, restore


def test_the_suggested_map_makes_the_plan_match():
    situations = list(_situations())
    assert len(situations) == 240
    for graph, checkpoint, restore in situations:
        with pytest.raises(PlanError) as raised:
            make_plan(_infos(graph), _infos(checkpoint), RestoreSelection(restore, fine_tune=True), WHERE)
        maps = re.findall(r"--map (\S+)=(\S+)", _error_line(raised))
        assert maps and "more" not in str(raised.value).rsplit("pass", 1)[-1], str(raised.value)
        plan = make_plan(_infos(graph), _infos(checkpoint), RestoreSelection(restore, maps=maps, fine_tune=True), WHERE)
        selected = [name for name in graph if restore is None or any(in_scope(name, s) for s in restore)]
        assert [row.name for row in plan.restored] == selected
        assert all(row.source in set(checkpoint) for row in plan.restored)
        assert sorted(row.source for row in plan.restored) == sorted(checkpoint[graph.index(name)] for name in selected)


# --- --skip-mismatched skips whole layers ---------------------------------------------------


def _layered(channels):
    """A conv+BatchNorm net and a head, TF-Slim style: conv1/weights, conv1/BatchNorm/{gamma,...}, logits/..."""
    table = [
        ("conv0/weights", (3, 3, 1, 8)),
        ("conv0/biases", (8,)),
        ("conv1/weights", (3, 3, 8, channels)),
        ("conv1/biases", (8,)),
        ("conv1/BatchNorm/gamma", (channels,)),
        ("conv1/BatchNorm/beta", (8,)),
        ("conv1/BatchNorm/moving_mean", (8,)),
        ("conv1/BatchNorm/moving_variance", (8,)),
        ("logits/weights", (8, 5)),
        ("logits/biases", (5,)),
    ]
    return [VariableInfo(name, shape, "float32", not name.endswith(("mean", "variance"))) for name, shape in table]


def test_skip_mismatched_skips_every_variable_of_a_mismatching_layer():
    graph, checkpoint = _layered(8), _layered(16)
    plan = make_plan(graph, checkpoint, RestoreSelection(("conv0", "conv1"), skip_mismatched=True), WHERE)
    actions = {row.name: row.action for row in plan.rows}
    assert [name for name, action in actions.items() if action == "skipped"] == [
        "conv1/weights",
        "conv1/biases",
        "conv1/BatchNorm/gamma",
        "conv1/BatchNorm/beta",
        "conv1/BatchNorm/moving_mean",
        "conv1/BatchNorm/moving_variance",
    ]
    assert [row.name for row in plan.restored] == ["conv0/weights", "conv0/biases"]
    rows = {row.name: row for row in plan.rows}
    assert rows["conv1/BatchNorm/moving_mean"].updated  # a fresh BatchNorm layer learns its statistics
    assert plan.skipped_layer_notes() == [
        "skipped layer conv1 (2 variables initialised): conv1/weights has shape [3, 3, 8, 16] in checkpoint, "
        "[3, 3, 8, 8] in graph",
        "skipped layer conv1/BatchNorm (4 variables initialised): conv1/BatchNorm/gamma has shape [16] in "
        "checkpoint, [8] in graph",
    ]
    text = plan.format()
    assert all("  " + note in text.splitlines() for note in plan.skipped_layer_notes())


def test_no_layer_is_ever_half_restored():
    """Over every choice of mismatching variables: a layer's selected variables are all restored or all skipped."""
    graph = _layered(8)
    names = [info.name for info in graph if not info.name.startswith("logits")]
    tried = 0
    for mask in itertools.product((False, True), repeat=len(names)):
        wrong = {name for name, bad in zip(names, mask) if bad}
        checkpoint = [
            VariableInfo(info.name, (*info.shape, 2) if info.name in wrong else info.shape, "float32") for info in graph
        ]
        plan = make_plan(
            graph, checkpoint, RestoreSelection(("conv0", "conv1"), skip_mismatched=True, fine_tune=True), WHERE
        )
        by_layer = {}
        for row in plan.rows[: len(names)]:
            by_layer.setdefault(row.name.rsplit("/", 1)[0], set()).add(row.action)
        assert all(len(actions) == 1 for actions in by_layer.values()), (wrong, by_layer)
        skipped_layers = {name.rsplit("/", 1)[0] for name in wrong}
        assert {layer for layer, actions in by_layer.items() if actions == {"skipped"}} == skipped_layers
        assert len(plan.skipped_layer_notes()) == len(skipped_layers)
        tried += 1
    assert tried == 256


def _resnet_like(seed=3):
    """263 names as long as a TF-Slim resnet_v2_50's: block{1-4}/unit_{1-6}/bottleneck_v2/conv{1-3}/LEAF."""
    rng = random.Random(seed)
    names = set()
    for _ in range(400):
        unit = f"block{rng.randrange(4) + 1}/unit_{rng.randrange(6) + 1}/bottleneck_v2/conv{rng.randrange(3) + 1}"
        names.add(f"{unit}/{rng.choice(LEAVES)}")
    return sorted(names)


def test_the_issue_cases_with_resnet_length_names():
    names = _resnet_like()
    assert len(names) == 263
    cases = [
        (names, _infos(names, shape=(4,)), None, "shape mismatch"),
        (
            [f"resnet_v1_50/{n}" for n in names],
            _infos([f"resnet_v2_50/{n}" for n in names]),
            ("resnet_v1_50",),
            "lacks",
        ),
        (names, _infos([f"resnet_v2_50/{n}" for n in names]), None, "--map resnet_v2_50/block4=block4"),
        ([f"encoder/{n}" for n in names], _infos(names), ("encoder/block1",), "pass --map block1=encoder/block1"),
    ]
    for graph, checkpoint, restore, expected in cases:
        with pytest.raises(PlanError) as raised:
            make_plan(_infos(graph), checkpoint, RestoreSelection(restore), WHERE)
        line = _error_line(raised)
        assert expected in line and "more" in line or "--map" in line, line
