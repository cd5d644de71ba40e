"""Tests for `python -m transfer.inspect`: the checkpoint inventory and the --plan view.

Checkpoints are made here, in a fresh graph each, with one Adam step so that slots and
counters exist: the real autoencoder (names and shapes of docs/ARCHITECTURE.md) and a tiny one whose
names probe the grouping (`conv1` beside `conv10`, a nested scope, a bare name).
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, invoke
from model_variables import AE_VARIABLES, by_scope

import train_transfer
from models.cae import build_autoencoder, reconstruction_loss
from transfer import inspect
from transfer.source import read_variables

v1 = tf.compat.v1

# The autoencoder's model variables by scope, in build order, leaves kernel first.
AE_SCOPES = by_scope(AE_VARIABLES)
AE_TOTAL = sum(math.prod(shape) for leaves in AE_SCOPES.values() for shape in leaves.values())
TINY = {
    "conv1/kernel": [5, 5, 1, 16],
    "conv1/bias": [16],
    "conv10/kernel": [3],
    "encoder/conv2/kernel": [2, 2],
    "w": [4],
}


def adam_step_and_save(model_dir, loss):
    """Runs one Adam step on loss in the current graph and saves model.ckpt-1 into model_dir."""
    global_step = v1.train.get_or_create_global_step()
    train_op = v1.train.AdamOptimizer(1e-3).minimize(loss, global_step=global_step)
    saver = v1.train.Saver()
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        sess.run(train_op)
        return saver.save(sess, os.path.join(str(model_dir), "model.ckpt"), global_step=global_step)


@pytest.fixture(scope="module")
def ae_ckpt(tmp_path_factory):
    """(model dir, prefix) of the real autoencoder after one Adam step on two random images."""
    model_dir = tmp_path_factory.mktemp("inspect_ae")
    with tf.Graph().as_default():
        images = tf.constant(np.random.default_rng(0).random((2, 28, 28, 1)), tf.float32)
        end_points = build_autoencoder(images)
        prefix = adam_step_and_save(model_dir, reconstruction_loss(images, end_points))
    return str(model_dir), prefix


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """Prefix of a tiny checkpoint whose names test the grouping."""
    model_dir = tmp_path_factory.mktemp("inspect_tiny")
    with tf.Graph().as_default():
        variables = [
            v1.get_variable(name, shape, initializer=v1.ones_initializer(), use_resource=True)
            for name, shape in TINY.items()
        ]
        prefix = adam_step_and_save(model_dir, tf.add_n([tf.reduce_sum(tf.square(var)) for var in variables]))
    return prefix


def inspect_run(*argv):
    return invoke(inspect.main, list(argv))


def one_error_line(run):
    lines = run.error_lines()
    assert run.code == 2, (run.out, run.err)
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    assert "Traceback" not in run.err
    return lines[0]


def table_rows(out):
    """{first cell: the rest of the row's cells} of the model variable table; leaves keyed 'scope/leaf'."""
    rows, scope = {}, None
    for line in out.splitlines():
        if not line.startswith("  "):
            continue
        cells = line.split("  ")
        cells = [cell.strip() for cell in cells if cell.strip()]
        if line.startswith("    "):
            rows[f"{scope}/{cells[0]}"] = cells[1:]
        else:
            scope = cells[0]
            rows[scope] = cells[1:]
    return rows


# --- The inventory -----------------------------------------------------------------


def test_autoencoder_grouped_by_scope_with_counts(ae_ckpt):
    _, prefix = ae_ckpt
    run = inspect_run(prefix)
    assert run.code == 0, run.err
    assert run.out.splitlines()[0] == f"checkpoint: {prefix}"
    assert "model variables: 12 in 6 scopes" in run.out
    rows = table_rows(run.out)
    assert rows["conv1"] == ["416"]
    assert rows["conv1/kernel"] == ["[5, 5, 1, 16]", "float32", "400"]
    assert rows["conv1/bias"] == ["[16]", "float32", "16"]
    for scope, leaves in AE_SCOPES.items():
        assert rows[scope] == [f"{sum(math.prod(shape) for shape in leaves.values()):,}"]
        for leaf, shape in leaves.items():
            assert rows[f"{scope}/{leaf}"] == [str(shape), "float32", f"{math.prod(shape):,}"]
    assert rows["total"] == [f"{AE_TOTAL:,}"]
    # Build order, kernel before bias: conv1 before dconv1, not the index's alphabetical order.
    scopes = [key for key in rows if "/" not in key]
    assert scopes == [*AE_SCOPES, "total"]
    assert list(rows)[2:4] == ["conv1/kernel", "conv1/bias"]  # after the header and the conv1 row


def test_slots_and_counters_are_listed_apart(ae_ckpt):
    _, prefix = ae_ckpt
    run = inspect_run(prefix)
    lines = run.out.splitlines()
    assert "optimizer slots: 24 (Adam, Adam_1) over 12 variables" in lines
    assert "counters: beta1_power, beta2_power, global_step" in lines
    table = [line for line in lines if line.startswith("  ")]
    assert not any("Adam" in line or "power" in line or "global_step" in line for line in table)


def test_disk_bytes(ae_ckpt):
    model_dir, prefix = ae_ckpt
    data = [name for name in os.listdir(model_dir) if name.startswith(os.path.basename(prefix) + ".data-")]
    assert len(data) == 1
    size = os.path.getsize(os.path.join(model_dir, data[0]))
    index = os.path.getsize(prefix + ".index")
    run = inspect_run(prefix)
    assert f"on disk: {size:,} bytes of data in {data[0]}, {index:,} bytes of index" in run.out
    assert f"{os.path.getsize(prefix + '.meta'):,} bytes" in run.out.splitlines()[-1]


def test_grouping_is_anchored_and_nested_scopes_stay_whole(tiny_ckpt):
    summary = inspect.summarize(tiny_ckpt, read_variables(tiny_ckpt))
    groups = {group["scope"]: [row["name"] for row in group["variables"]] for group in summary["scopes"]}
    # conv1 is a known scope (build order first); the rest follow alphabetically.
    assert groups == {
        "conv1": ["conv1/kernel", "conv1/bias"],
        "conv10": ["conv10/kernel"],
        "encoder/conv2": ["encoder/conv2/kernel"],
        "w": ["w"],
    }
    assert list(groups) == ["conv1", "conv10", "encoder/conv2", "w"]
    assert summary["scopes"][0]["parameters"] == 416
    assert summary["total_parameters"] == sum(math.prod(shape) for shape in TINY.values())
    assert summary["optimizer_slots"]["count"] == 2 * len(TINY)
    assert summary["optimizer_slots"]["over_variables"] == sorted(TINY)
    assert [counter["name"] for counter in summary["counters"]] == ["beta1_power", "beta2_power", "global_step"]
    model_names = {row["name"] for group in summary["scopes"] for row in group["variables"]}
    assert model_names == set(TINY)
    assert not model_names & set(summary["optimizer_slots"]["names"])


def test_json_parses_and_matches_the_text(ae_ckpt):
    _, prefix = ae_ckpt
    run = inspect_run(prefix, "--json")
    assert run.code == 0, run.err
    facts = json.loads(run.out)
    assert facts["checkpoint"] == prefix
    assert [group["scope"] for group in facts["scopes"]] == list(AE_SCOPES)
    conv1 = facts["scopes"][0]
    assert conv1["parameters"] == 416
    assert [(row["name"], row["shape"], row["dtype"], row["values"]) for row in conv1["variables"]] == [
        ("conv1/kernel", [5, 5, 1, 16], "float32", 400),
        ("conv1/bias", [16], "float32", 16),
    ]
    assert facts["model_variables"] == 12
    assert facts["total_parameters"] == AE_TOTAL
    slots = facts["optimizer_slots"]
    assert slots["count"] == 24 and slots["slot_names"] == ["Adam", "Adam_1"] and len(slots["over_variables"]) == 12
    assert all(name.endswith(("/Adam", "/Adam_1")) for name in slots["names"])
    assert {counter["name"]: counter["dtype"] for counter in facts["counters"]}["global_step"] == "int64"
    assert facts["disk"]["data_bytes"] > 4 * AE_TOTAL  # weights and two Adam slots, float32
    text = inspect_run(prefix).out
    assert f"{facts['disk']['data_bytes']:,} bytes of data" in text
    assert table_rows(text)["total"] == [f"{facts['total_parameters']:,}"]


def test_every_form_of_the_path_resolves_to_the_prefix(ae_ckpt):
    model_dir, prefix = ae_ckpt
    data = next(name for name in os.listdir(model_dir) if ".data-" in name)
    for path in (model_dir, prefix, prefix + ".index", prefix + ".meta", os.path.join(model_dir, data)):
        run = inspect_run(path)
        assert run.code == 0, (path, run.err)
        assert run.out.splitlines()[0] == f"checkpoint: {prefix}", path


# --- The restore plan --------------------------------------------------------------


def plan_rows(out):
    """{graph variable: [shape, source, action, train, lr x]} from plan.format() text."""
    rows = {}
    for line in out.splitlines()[2:]:
        cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
        if cells and "/" in cells[0] and not cells[0].startswith("checkpoint"):
            rows[cells[0]] = cells[1:]
    return rows


def test_plan_restore_conv(ae_ckpt):
    _, prefix = ae_ckpt
    run = inspect_run(prefix, "--plan", "--restore", "conv")
    assert run.code == 0, run.err
    assert run.out.splitlines()[0] == f"restore plan (checkpoint: {prefix})"
    rows = plan_rows(run.out)
    assert rows["conv1/kernel"] == ["[5, 5, 1, 16]", "conv1/kernel", "restored", "frozen", "0"]
    assert rows["fc1/kernel"] == ["[1568, 200]", "fresh", "initialised", "yes", "1"]
    assert "checkpoint optimizer slots and counters ignored: 27" in run.out


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--restore", "conv", "--fine-tune", "--lr-mult", "conv1=0.1"],
        ["--restore", "conv", "--restore-exclude", "conv2"],
        ["--restore", "none"],
    ],
    ids=["default", "fine-tune", "exclude", "none"],
)
def test_plan_is_what_train_transfer_prints(ae_ckpt, flags):
    model_dir, prefix = ae_ckpt
    ours = inspect_run(model_dir, "--plan", *flags)
    theirs = invoke(train_transfer.main, ["--dry-run", "--checkpoint", model_dir, *flags])
    assert ours.code == theirs.code == 0, (ours.err, theirs.err)
    # The dry run first loads the data (the class count sizes the head); the plan follows.
    assert ours.out == theirs.out[theirs.out.index("restore plan") :]


def test_plan_json(ae_ckpt):
    _, prefix = ae_ckpt
    run = inspect_run(prefix, "--plan", "--json", "--restore", "conv1")
    assert run.code == 0, run.err
    plan = json.loads(run.out)
    assert plan["checkpoint"] == prefix
    by_name = {row["name"]: row for row in plan["variables"]}
    assert by_name["conv1/kernel"]["action"] == "restored" and not by_name["conv1/kernel"]["trainable"]
    assert by_name["conv2/kernel"]["action"] == "initialised" and by_name["conv2/kernel"]["trainable"]


def test_plan_restore_fc_from_an_autoencoder_is_one_line(ae_ckpt):
    _, prefix = ae_ckpt
    line = one_error_line(inspect_run(prefix, "--plan", "--restore", "fc"))
    assert prefix in line and "fc1/kernel" in line
    assert "NotFoundError" not in line


def test_plan_bad_flag_value_is_one_line(ae_ckpt):
    _, prefix = ae_ckpt
    one_error_line(inspect_run(prefix, "--plan", "--lr-mult", "conv1=x"))
    assert "--map" in one_error_line(inspect_run(prefix, "--plan", "--map", "encoder/conv1"))


def test_transfer_flags_need_plan(ae_ckpt, capsys):
    _, prefix = ae_ckpt
    with pytest.raises(SystemExit) as stop:
        inspect.main([prefix, "--restore", "fc"])
    assert stop.value.code == 2
    assert "--restore only mean something with --plan" in capsys.readouterr().err


# --- Errors and the entry point ---------------------------------------------------


def test_missing_path(tmp_path):
    path = str(tmp_path / "nowhere" / "model.ckpt-5")
    assert path in one_error_line(inspect_run(path))


def test_directory_without_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("no weights here\n")
    line = one_error_line(inspect_run(tmp_path))
    assert str(tmp_path) in line and "no checkpoint" in line


@pytest.mark.parametrize("name", ["junk.txt", "junk.index"])
def test_junk_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not a checkpoint\n" * 3)
    line = one_error_line(inspect_run(path))
    assert str(path).removesuffix(".index") in line


def test_every_flag_has_help():
    parser = inspect.make_parser()
    for action in parser._actions:  # argparse keeps its actions only here
        assert action.help, action.option_strings or action.dest
    assert "python -m transfer.inspect" in inspect.__doc__


@pytest.mark.slow
def test_module_entry_point(ae_ckpt):
    """One run in its own process (TensorFlow's import is the slow part): the error path,
    where a traceback would most likely leak, through resolve, read, graph and plan."""
    model_dir, prefix = ae_ckpt
    process = subprocess.run(
        [sys.executable, "-m", "transfer.inspect", model_dir, "--plan", "--restore", "fc"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2, process.stderr
    assert process.stdout == ""
    # TensorFlow's C++ start-up lines may share stderr; ours is the one error line.
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and prefix in errors[0] and "fc1/kernel" in errors[0], process.stderr
    assert "Traceback" not in process.stderr
