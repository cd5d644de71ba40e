"""Interruption, locking, leftovers of killed saves, and divergence."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import train_autoencoder
from runtime.checkpoints import Checkpointer, list_checkpoints, remove_orphans
from runtime.lock import ModelDirLock
from runtime.training import LocalStep, LoopHooks, LoopSettings, Span, TrainingDiverged, train_loop

v1 = tf.compat.v1
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE_STEPS_PER_EPOCH = 4500 // 64


def _autoencoder_command(model_dir, epochs):
    return [
        sys.executable,
        os.path.join(REPO, "train_autoencoder.py"),
        "--sample",
        "--epochs",
        str(epochs),
        "--model-dir",
        str(model_dir),
        "--save-every",
        "0",
        "--summary-every",
        "0",
    ]


@pytest.mark.slow
def test_sigterm_saves_at_a_step_boundary_and_the_rerun_ends_on_the_exact_step(tmp_path):
    model_dir = tmp_path / "ae"
    # Unbuffered: a piped stdout is otherwise written in blocks, and "epoch 1:" would reach
    # the test only when the run has ended, too late to interrupt it.
    process = subprocess.Popen(
        _autoencoder_command(model_dir, 3),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in process.stdout:
        if line.startswith("epoch 1:"):  # one epoch done: training is under way
            process.send_signal(signal.SIGTERM)
            break
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopped at step" in out
    assert "Traceback" not in err
    saved = list_checkpoints(str(model_dir))
    assert len(saved) == 1
    stopped_step = int(saved[0].rsplit("-", 1)[1])
    assert SAMPLE_STEPS_PER_EPOCH <= stopped_step < 3 * SAMPLE_STEPS_PER_EPOCH
    assert f"step {stopped_step}/{3 * SAMPLE_STEPS_PER_EPOCH}" in out

    rerun = subprocess.run(_autoencoder_command(model_dir, 3), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"at step {stopped_step}" in rerun.stdout
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 3 * SAMPLE_STEPS_PER_EPOCH
    assert (
        tf.train.load_checkpoint(str(model_dir / f"model.ckpt-{3 * SAMPLE_STEPS_PER_EPOCH}")).get_tensor("global_step")
        == 3 * SAMPLE_STEPS_PER_EPOCH
    )


def test_a_second_run_on_a_locked_model_dir_is_refused(tmp_path, capsys):
    model_dir = tmp_path / "ae"
    model_dir.mkdir()
    with ModelDirLock(str(model_dir)):
        code = train_autoencoder.main(["--sample", "--epochs", "1", "--model-dir", str(model_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: another run (pid ") and str(os.getpid()) in err
    assert err.count("\n") == 1
    assert not list_checkpoints(str(model_dir))


def test_a_lock_is_released_when_its_holder_exits(tmp_path):
    with ModelDirLock(str(tmp_path)):
        pass
    with ModelDirLock(str(tmp_path)) as lock:  # would raise if the first were still held
        assert open(lock.path).read().strip() == str(os.getpid())


def test_a_lock_held_by_a_killed_process_does_not_block(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from runtime.lock import ModelDirLock\n"
            f"with ModelDirLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Exception, match="another run"):
        with ModelDirLock(str(tmp_path)):
            pass
    holder.kill()
    holder.wait()
    with ModelDirLock(str(tmp_path)):
        pass


def test_leftovers_of_interrupted_saves_are_removed_and_checkpoints_kept(tmp_path):
    keep = ["model.ckpt-5.index", "model.ckpt-5.data-00000-of-00001", "checkpoint", "config.json"]
    hex32 = "0123456789abcdef" * 2
    junk = [
        "model.ckpt-9.data-00000-of-00001.tempstate8123456789",
        "model.ckpt-9.index.tempstate77",
        f"checkpoint.tmp{hex32}",
        f"model.ckpt-5.meta.tmp{hex32}",
        "config.json.tmp",
    ]
    # Names that only look like ours: a loose pattern would take them, the toolkit never wrote them.
    lookalikes = [
        "checkpoint.tmp.bak",
        "results.tempstate",
        f"report.tmp{hex32}",
        "model.ckpt-9.index.tempstate",
        "notes_temp",
        "my.json.tmp.txt",
    ]
    for name in keep + junk + lookalikes:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "model.ckpt-9_temp").mkdir()
    (tmp_path / "model.ckpt-9_temp" / "part-00000-of-00001.index").write_bytes(b"x")
    (tmp_path / "data_temp").mkdir()

    removed = remove_orphans(str(tmp_path))

    assert sorted(os.path.basename(path) for path in removed) == sorted(junk + ["model.ckpt-9_temp"])
    assert sorted(os.listdir(tmp_path)) == sorted(keep + lookalikes + ["data_temp"])


def test_a_nan_loss_stops_the_run_without_saving(tmp_path):
    with tf.Graph().as_default():
        weight = v1.get_variable("w", initializer=1.0, use_resource=True)
        step = v1.train.get_or_create_global_step()
        loss = weight * np.float32("nan")
        train_op = v1.assign_add(step, 1)
        checkpointer = Checkpointer(str(tmp_path), max_to_keep=2, log=lambda line: None)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            with pytest.raises(TrainingDiverged, match="loss is nan at step 1"):
                train_loop(
                    sess,
                    LocalStep(train_op, 0),
                    loss,
                    Span(0, 10, 5),
                    LoopSettings(1, save_every=1),
                    checkpointer,
                    LoopHooks(log=lambda line: None),
                )
    assert not list_checkpoints(str(tmp_path))
