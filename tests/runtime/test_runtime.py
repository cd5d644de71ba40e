"""Tests for runtime/: the session config (and that both scripts hand it to their
session), the shared flag types, and the Checkpointer (step-numbered prefixes, relative
state file, max_to_keep across restarts, fallback past a damaged checkpoint).
"""

import argparse
import contextlib
import itertools
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, invoke

import train_autoencoder
import train_transfer
from runtime import cli, errors, lifecycle
from runtime.checkpoints import Checkpointer, checkpoint_step, list_checkpoints
from runtime.errors import CheckpointError, UserError
from runtime.session import session_config
from runtime.training import LoopHooks, LoopSettings

v1 = tf.compat.v1


# --- session_config ---------------------------------------------------------------


def test_session_config_gpu_memory_fraction():
    config = session_config(gpu_memory_fraction=0.3)
    assert config.gpu_options.per_process_gpu_memory_fraction == pytest.approx(0.3)
    assert isinstance(config, v1.ConfigProto)


def test_session_config_allow_growth():
    assert session_config(allow_growth=True).gpu_options.allow_growth is True
    assert session_config(allow_growth=False).gpu_options.allow_growth is False


def test_session_config_threads():
    config = session_config(intra_op_threads=3, inter_op_threads=2)
    assert config.intra_op_parallelism_threads == 3
    assert config.inter_op_parallelism_threads == 2


def test_session_config_defaults():
    config = session_config()
    assert config.gpu_options.per_process_gpu_memory_fraction == 0  # TensorFlow's default
    assert config.gpu_options.allow_growth is False
    assert config.intra_op_parallelism_threads == 0
    assert config.inter_op_parallelism_threads == 0


@pytest.mark.parametrize("fraction, shown", [(0, "0"), (-0.1, "-0.1"), (1.5, "1.5")])
def test_session_config_rejects_fraction(fraction, shown):
    with pytest.raises(UserError, match=r"--gpu-memory-fraction .*got " + re.escape(shown) + r"$"):
        session_config(gpu_memory_fraction=fraction)


@pytest.mark.parametrize(
    "keyword, flag", [("intra_op_threads", "--intra-op-threads"), ("inter_op_threads", "--inter-op-threads")]
)
def test_session_config_rejects_negative_threads(keyword, flag):
    with pytest.raises(UserError, match=re.escape(flag) + r".*got -1"):
        session_config(**{keyword: -1})


DATA_DIR = object()  # stands for the small_mnist fixture's path in a parametrised argv
RESOURCE_FLAGS = [
    "--gpu-memory-fraction",
    "0.25",
    "--allow-growth",
    "--intra-op-threads",
    "2",
    "--inter-op-threads",
    "1",
]


def test_resource_flags_parse():
    args = train_autoencoder.parse_args(RESOURCE_FLAGS)
    assert args.gpu_memory_fraction == 0.25
    assert args.allow_growth is True
    assert (args.intra_op_threads, args.inter_op_threads) == (2, 1)
    defaults = train_transfer.parse_args([])
    assert defaults.gpu_memory_fraction is None and defaults.allow_growth is False


@pytest.fixture
def recorded_session_configs(monkeypatch):
    """Replaces tf.compat.v1.Session by a subclass that records the config it is given."""
    configs = []
    original = v1.Session

    class RecordingSession(original):
        def __init__(self, target="", graph=None, config=None):
            configs.append(config)
            super().__init__(target, graph, config)

    monkeypatch.setattr(v1, "Session", RecordingSession)
    return configs


@pytest.mark.parametrize(
    "main, flags",
    [
        # Two steps of 30 of the small_mnist digits (DATA_DIR is replaced by its path).
        (
            train_autoencoder.main,
            ["--data-dir", DATA_DIR, "--epochs", "1", "--batch-size", "30", "--save-every", "0"]
            + ["--summary-every", "0"],
        ),
        (
            train_transfer.main,
            [
                "--sample",
                "--restore",
                "none",
                "--labels-per-class",
                "10",
                "--validation-size",
                "0",
                "--epochs",
                "1",
                "--save-every",
                "0",
                "--summary-every",
                "0",
            ],
        ),
    ],
    ids=["autoencoder", "transfer"],
)
def test_scripts_pass_the_session_config(main, flags, recorded_session_configs, small_mnist, tmp_path):
    flags = [small_mnist if flag is DATA_DIR else flag for flag in flags]
    run = invoke(main, [*flags, *RESOURCE_FLAGS, "--model-dir", tmp_path / "run"])
    assert run.code == 0, run.err
    assert recorded_session_configs, "the script made no tf.compat.v1.Session"
    for config in recorded_session_configs:
        assert config is not None, "a session was made without the resource config"
        assert config.gpu_options.per_process_gpu_memory_fraction == pytest.approx(0.25)
        assert config.gpu_options.allow_growth is True
        assert config.intra_op_parallelism_threads == 2
        assert config.inter_op_parallelism_threads == 1


# --- flag types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, text, expected",
    [
        (cli.fraction, "1", 1.0),
        (cli.fraction, "0.25", 0.25),
        (cli.positive_int, "3", 3),
        (cli.non_negative_int, "0", 0),
        (cli.positive_float, "1e-4", 1e-4),
    ],
)
def test_flag_types_accept(kind, text, expected):
    assert kind(text) == expected


@pytest.mark.parametrize(
    "kind, text, message",
    [
        (cli.fraction, "0", "(0, 1]"),
        (cli.fraction, "1.5", "1.5"),
        (cli.fraction, "-0.1", "-0.1"),
        (cli.fraction, "nan", "nan"),
        (cli.fraction, "x", "'x'"),
        (cli.positive_int, "0", "got 0"),
        (cli.positive_int, "-2", "got -2"),
        (cli.positive_int, "x", "'x'"),
        (cli.positive_int, "1.5", "'1.5'"),
        (cli.non_negative_int, "-1", "got -1"),
        (cli.positive_float, "0", "got 0"),
        (cli.positive_float, "inf", "inf"),
        (cli.positive_float, "nan", "nan"),
        (cli.positive_float, "abc", "'abc'"),
    ],
)
def test_flag_types_reject(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as raised:
        kind(text)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "main, flags, flag",
    [
        (train_autoencoder.main, ["--epochs", "-1"], "--epochs"),
        (train_autoencoder.main, ["--batch-size", "0"], "--batch-size"),
        (train_autoencoder.main, ["--gpu-memory-fraction", "1.5"], "--gpu-memory-fraction"),
        (train_transfer.main, ["--labels-per-class", "0"], "--labels-per-class"),
        (train_transfer.main, ["--learning-rate", "0"], "--learning-rate"),
        (train_transfer.main, ["--gpu-memory-fraction", "0"], "--gpu-memory-fraction"),
    ],
)
def test_bad_flag_exits_2_with_one_line(main, flags, flag, capsys, tmp_path):
    with pytest.raises(SystemExit) as raised:
        main([*flags, "--model-dir", str(tmp_path / "run")])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert f"argument {flag}" in errors[0] and flags[1] in errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists(), "flags are checked before anything is written"


# --- Checkpointer -------------------------------------------------------------------

SIZE = 100


def _value(step):
    return np.full([SIZE], float(step), np.float32)


def _save_steps(model_dir, steps, max_to_keep=5):
    """A fresh graph with one variable; saves it at each step with the step as its value."""
    with tf.Graph().as_default():
        weights = v1.get_variable("w", shape=[SIZE], initializer=v1.zeros_initializer(), use_resource=True)
        value = v1.placeholder(tf.float32, [SIZE])
        assign = weights.assign(value)
        checkpointer = Checkpointer(str(model_dir), max_to_keep=max_to_keep, log=lambda line: None)
        prefixes = []
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for step in steps:
                sess.run(assign, {value: _value(step)})
                prefixes.append(checkpointer.save(sess, step))
        return prefixes


def _restore(model_dir):
    """Restores the newest intact checkpoint into a fresh graph; (prefix, value, log lines)."""
    lines = []
    with tf.Graph().as_default():
        weights = v1.get_variable("w", shape=[SIZE], initializer=v1.zeros_initializer(), use_resource=True)
        checkpointer = Checkpointer(str(model_dir), max_to_keep=5, log=lines.append)
        with v1.Session() as sess:
            prefix = checkpointer.restore_latest(sess)
            value = sess.run(weights) if prefix else None
    return prefix, value, lines


def _state_paths(model_dir):
    """The paths written in the `checkpoint` state file, as written (not resolved)."""
    text = (model_dir / "checkpoint").read_text()
    return re.findall(r'^\s*(?:all_)?model_checkpoint_paths?: "(.*)"$', text, re.MULTILINE)


def _truncate_data(prefix):
    (data,) = [
        path for path in os.listdir(os.path.dirname(prefix)) if path.startswith(os.path.basename(prefix) + ".data-")
    ]
    path = os.path.join(os.path.dirname(prefix), data)
    os.truncate(path, os.path.getsize(path) // 2)
    return path


def test_checkpointer_saves_step_numbered_prefixes(tmp_path):
    prefixes = _save_steps(tmp_path, [10, 20])
    assert prefixes == [str(tmp_path / "model.ckpt-10"), str(tmp_path / "model.ckpt-20")]
    for prefix in prefixes:
        assert os.path.exists(prefix + ".index")
        assert checkpoint_step(prefix) == int(prefix.rsplit("-", 1)[1])
    assert list_checkpoints(str(tmp_path)) == prefixes


def test_list_checkpoints_orders_by_step_not_text(tmp_path):
    _save_steps(tmp_path, [9, 100, 20])
    assert [checkpoint_step(prefix) for prefix in list_checkpoints(str(tmp_path))] == [9, 20, 100]


def test_state_file_holds_relative_paths_and_copy_restores(tmp_path):
    original = tmp_path / "original"
    _save_steps(original, [1, 2, 3])
    paths = _state_paths(original)
    assert paths, (original / "checkpoint").read_text()
    assert all(not os.path.isabs(path) and "/" not in path for path in paths), paths

    copy = tmp_path / "moved"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    assert tf.train.latest_checkpoint(str(copy)) == str(copy / "model.ckpt-3")
    prefix, value, lines = _restore(copy)
    assert prefix == str(copy / "model.ckpt-3")
    np.testing.assert_array_equal(value, _value(3))
    assert lines == []


def test_max_to_keep_counts_checkpoints_from_before_a_restart(tmp_path):
    _save_steps(tmp_path, [1, 2, 3], max_to_keep=3)
    _save_steps(tmp_path, [4, 5, 6], max_to_keep=3)  # a new process: a new Checkpointer
    indexes = sorted(path for path in os.listdir(tmp_path) if path.endswith(".index"))
    assert indexes == ["model.ckpt-4.index", "model.ckpt-5.index", "model.ckpt-6.index"]
    assert not [path for path in os.listdir(tmp_path) if re.match(r"model\.ckpt-[123]\.", path)]
    assert sorted(set(_state_paths(tmp_path))) == ["model.ckpt-4", "model.ckpt-5", "model.ckpt-6"]


def test_restore_falls_back_past_a_truncated_checkpoint(tmp_path):
    prefixes = _save_steps(tmp_path, [1, 2])
    _truncate_data(prefixes[1])
    prefix, value, lines = _restore(tmp_path)
    assert prefix == prefixes[0]
    np.testing.assert_array_equal(value, _value(1))
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and prefixes[1] in warnings[0], lines


def test_restore_with_every_checkpoint_broken_raises(tmp_path):
    for prefix in _save_steps(tmp_path, [1, 2]):
        _truncate_data(prefix)
    with pytest.raises(CheckpointError) as raised:
        _restore(tmp_path)
    message = str(raised.value)
    assert str(tmp_path) in message and "model.ckpt-1" in message and "model.ckpt-2" in message
    assert "\n" not in message


def test_restore_from_empty_dir_returns_none(tmp_path):
    prefix, value, lines = _restore(tmp_path)
    assert prefix is None and value is None and lines == []
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_thread_flags_size_the_process_pools_in_a_fresh_process(small_mnist, tmp_path):
    """tf.data starts TensorFlow's intra-op pool before the Session, so the flag must reach it first."""
    code = (
        "import sys, train_autoencoder, tensorflow as tf\n"
        f"status = train_autoencoder.main(['--data-dir', {str(small_mnist)!r}, '--epochs', '1', '--batch-size', '30',"
        " '--save-every', '0', '--summary-every', '0', '--intra-op-threads', '1', '--inter-op-threads', '1',"
        " '--model-dir', "
        f"{str(tmp_path)!r}])\n"
        "print(status, tf.config.threading.get_intra_op_parallelism_threads(), "
        "tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.stdout.splitlines()[-1] == "0 1 1", result.stdout + result.stderr
    assert "warning" not in result.stdout


class _Recorder:
    """A run's hooks for runtime.lifecycle.run over a tiny graph, recording the phases in order."""

    def __init__(self, task, serves, prepared, resumed, model_dir):
        self.task, self.serves, self.prepared, self.resumed = task, serves, prepared, resumed
        self.model_dir, self.calls = model_dir, []

    def ps_serves(self, settings):
        self.calls.append("ps_serves")
        return self.serves

    def prepare(self, settings, task):
        self.calls.append("prepare")
        if not self.prepared:
            return None
        runtime = argparse.Namespace(
            model_dir=self.model_dir, keep_checkpoints=1, intra_op_threads=0, inter_op_threads=0
        )
        runtime.session_config = lambda: None
        chief = task is None or task.is_chief
        return argparse.Namespace(
            runtime=runtime, loop=LoopSettings(batch_size=1), task=task, chief=chief, total_steps=3, steps_per_epoch=1
        )

    def build(self, state):
        self.calls.append("build")
        step = v1.train.get_or_create_global_step()
        graph = argparse.Namespace(global_step=step, train_op=v1.assign_add(step, 1), loss=tf.constant(0.5))
        graph.cluster_step = None if state.task is None else _FakeClusterStep(graph, self.calls)
        return lifecycle.Built(graph)

    def restore(self, state, built):
        self.calls.append("restore")

        def initialise(sess, init):
            self.calls.append("initialise")
            sess.run(init)

        return lifecycle.Restore(initialise, lambda sess, resumed: self.calls.append(("check", resumed)))

    def begin(self, sess, state, built, resumed, span):
        self.calls.append(("begin", span.start_step, span.total_steps))
        if not state.chief:
            return lifecycle.Began(LoopHooks(log=_quiet))

        def evaluate(result):
            self.calls.append(("evaluate", result.final_step))
            return "evaluation"

        hooks = LoopHooks(on_epoch_end=lambda epoch, step: self.calls.append(("epoch", epoch)), log=_quiet)
        return lifecycle.Began(hooks, evaluate)

    def finish(self, state, outcome):
        self.calls.append(("finish", outcome.evaluation, outcome.resumed))
        return {"metrics": outcome.result.final_step}


def _quiet(line):
    pass


class _FakeClusterStep:
    """runtime.cluster.TrainStep's interface over a local session (the global step read back)."""

    def __init__(self, graph, calls):
        self.op, self.graph, self.calls, self.own_steps = graph.train_op, graph, calls, 0

    def run(self, sess, fetches):
        values = sess.run(fetches)
        self.own_steps += 1
        return values, int(sess.run(self.graph.global_step)), True

    def after_step(self, sess, step):
        pass

    def settle(self, sess, step):
        return step

    def finish(self, sess):
        self.calls.append("cluster_finish")


class _FakeCheckpointer:
    """Restores a 'checkpoint' at step 1 when the situation resumes; saves nothing but a name."""

    def __init__(self, resumed):
        self.resumed = resumed

    def restore_latest(self, sess):
        if not self.resumed:
            return None
        sess.run(v1.global_variables_initializer())
        sess.run(v1.assign(v1.train.get_global_step(), 1))
        return "model.ckpt-1"

    def save(self, sess, step):
        return f"model.ckpt-{step}"


def _lifecycle_situations():
    return list(itertools.product(["local", "ps", "chief", "worker"], [True, False], [True, False], [True, False]))


def test_the_lifecycle_runs_every_run_s_phases_in_one_order(monkeypatch, tmp_path, capsys):
    """runtime.lifecycle.run over every task kind x ps serves x prepare ends the run x resumed:
    the phases in the one order, the restore strategy initialising only where nothing is resumed
    (in a cluster, only on the chief), evaluation and metrics only on the chief."""
    situations = _lifecycle_situations()
    assert len(situations) == 32
    served = []

    @contextlib.contextmanager
    def create_session(task, step, conf, init_fn):
        with v1.Session() as sess:
            if task.is_chief:
                init_fn(sess)
            else:  # another process's chief initialised the variables
                sess.run(v1.global_variables_initializer())
            yield sess

    for kind, serves, prepared, resumed in situations:
        task = None if kind == "local" else argparse.Namespace(is_ps=kind == "ps", is_chief=kind == "chief", name=kind)
        hooks = _Recorder(task, serves, prepared, resumed, str(tmp_path))
        chief = kind in ("local", "chief")
        monkeypatch.setattr(lifecycle.cluster, "task_from", lambda flags, task=task: task)
        monkeypatch.setattr(lifecycle.cluster, "serve", served.append)
        monkeypatch.setattr(lifecycle.cluster, "device_function", lambda task: None)
        monkeypatch.setattr(lifecycle.cluster, "create_session", create_session)
        monkeypatch.setattr(lifecycle, "set_process_threads", lambda intra, inter: None)
        monkeypatch.setattr(lifecycle, "Checkpointer", lambda model_dir, max_to_keep: _FakeCheckpointer(resumed))
        served.clear()
        result = lifecycle.run(argparse.Namespace(cluster=None), hooks)
        situation = (kind, serves, prepared, resumed)
        if kind == "ps":
            assert hooks.calls == ["ps_serves"], situation
            assert served == ([task] if serves else []) and result is None, situation
            continue
        if not prepared:
            assert hooks.calls == ["prepare"] and result is None, situation
            continue
        restored = resumed and chief  # only the chief restores; a worker reads what it restored
        start = 1 if restored else 0
        expected = ["prepare", "build", "restore"]
        expected += [] if restored or kind == "worker" else ["initialise"]
        expected += [("check", "model.ckpt-1" if restored else None), ("begin", start, 3)]
        expected += [("epoch", epoch) for epoch in range(start + 1, 4)] + [("evaluate", 3)] if chief else []
        expected += ["cluster_finish"] if task is not None else []
        expected += [("finish", "evaluation", "model.ckpt-1" if restored else None)] if chief else []
        assert hooks.calls == expected, situation
        assert result == ({"metrics": 3} if chief else None), situation
        assert served == [], situation
    out = capsys.readouterr().out
    assert out.count("worker: done at global step 3, 3 steps of its own") == 4  # serves x resumed


def test_one_line_skips_framing_and_rules():
    text = "Graph execution error:\n\nDetected at node 'x'\nsocket closed\n=====================\n"
    assert errors.one_line(RuntimeError(text)) == "socket closed"
    assert errors.one_line(RuntimeError("=====")) == "====="  # nothing better to say
