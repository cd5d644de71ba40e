"""A run deletes only what it wrote, resumes only what matches, and fails in one line.

The property test trains into a table of folders as a user might have them and checks the
rule itself: the run either refuses in one line or succeeds, and every file that was
there before is still there, byte for byte, unless it is the toolkit's own (a checkpoint
rotated out of the run's window, the run's config, metrics, state file or events).
The other tests cover the paths TensorFlow would misread, the `checkpoint` state file,
a full disk, signals at any moment, and the warnings a suspicious input deserves.
"""

import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, invoke

import train_autoencoder
import train_transfer
from data.sources import Dataset
from runtime.checkpoints import list_checkpoints

# Two steps an epoch on 60 real digits (see ae_flags): a run costs its start-up and its saves.
TRAINING = ["--batch-size", "30", "--epochs", "2", "--save-every", "1", "--summary-every", "0"]
HEX32 = "0123456789abcdef" * 2
# Names a run in an owned dir may write, rewrite or rotate away.
OWN = re.compile(
    r"^(config\.json|metrics\.json|checkpoint|checkpoint\.tmp[0-9a-f]{32}|model\.ckpt-\d+\..*|events\.out\.tfevents\..*|projector/.*|\.lock)$"
)


def _snapshot(root):
    """{relative path: sha256} of every file and symlink under root (symlinks followed for files)."""
    state = {}
    for path in sorted(Path(root).rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            state[relative] = "link:" + os.readlink(path)
        elif path.is_file():
            state[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture(scope="module")
def ae_flags(small_mnist):
    return ["--data-dir", str(small_mnist), *TRAINING]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ae_flags):
    """A finished autoencoder run made with ae_flags: checkpoints at steps 2, 3 and 4."""
    model_dir = tmp_path_factory.mktemp("finished") / "run"
    run = invoke(train_autoencoder.main, [*ae_flags, "--model-dir", model_dir])
    assert run.code == 0, run.err
    assert [int(p.rsplit("-", 1)[1]) for p in list_checkpoints(str(model_dir))] == [2, 3, 4]
    os.remove(model_dir / ".lock")
    return model_dir


def _files(directory, names):
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name.endswith("/"):
            (directory / name).mkdir()
            (directory / name / "inside.txt").write_text("mine")
        else:
            (directory / name).write_text(f"the user's {name}")


def _copy_finished(finished, directory):
    shutil.copytree(finished, directory)


def _truncate_newest(directory):
    (data,) = directory.glob("model.ckpt-4.data-*")
    os.truncate(data, data.stat().st_size // 2)


def _edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


# (id, builds the folder state at path, extra flags, whether the run may succeed)
STATES = [
    ("missing", lambda f, d: None, [], True),
    ("empty", lambda f, d: d.mkdir(), [], True),
    ("only_a_stale_lock", lambda f, d: _files(d, [".lock"]), [], True),
    ("foreign_files", lambda f, d: _files(d, ["notes.txt", "photo.jpg"]), [], False),
    (
        "lookalikes_of_our_temporary_names",
        lambda f, d: _files(
            d, ["notes_temp/", "checkpoint.tmp.bak", "results.tempstate", f"report.tmp{HEX32}", "model.ckpt-5.meta"]
        ),
        [],
        False,
    ),
    ("a_folder_of_photos", lambda f, d: _files(d, ["images/"]), [], False),
    ("a_read_only_file", lambda f, d: (_files(d, ["readme.txt"]), os.chmod(d / "readme.txt", 0o444)), [], False),
    ("finished_run_same_settings", lambda f, d: _copy_finished(f, d), [], True),
    ("finished_run_other_settings", lambda f, d: _copy_finished(f, d), ["--latent-size", "10"], False),
    ("finished_run_keep_one", lambda f, d: _copy_finished(f, d), ["--keep-checkpoints", "1"], True),
    (
        "damaged_newest_keep_one",
        lambda f, d: (_copy_finished(f, d), _truncate_newest(d)),
        ["--keep-checkpoints", "1"],
        True,
    ),
    ("checkpoints_without_config", lambda f, d: (_copy_finished(f, d), os.remove(d / "config.json")), [], False),
    (
        "checkpoints_without_config_other_latent",
        lambda f, d: (_copy_finished(f, d), os.remove(d / "config.json")),
        ["--latent-size", "10"],
        False,
    ),
    (
        "config_edited_to_lie_about_shapes",
        lambda f, d: (_copy_finished(f, d), _edit_config(d, latent_size=10)),
        ["--latent-size", "10"],
        False,
    ),
    (
        "another_toolkits_run",
        lambda f, d: _files(
            d,
            [
                "checkpoint",
                "model.ckpt-100.index",
                "model.ckpt-100.data-00000-of-00001",
                "graph.pbtxt",
                "events.out.tfevents.1.host",
            ],
        ),
        [],
        False,
    ),
    (
        "another_toolkits_config",
        lambda f, d: (_files(d, []), (d / "config.json").write_text('{"name": "resnet"}')),
        [],
        False,
    ),
    ("config_is_a_json_list", lambda f, d: (_files(d, []), (d / "config.json").write_text("[1, 2]")), [], False),
    ("a_transfer_run", lambda f, d: (_copy_finished(f, d), _edit_config(d, model="transfer")), [], False),
    (
        "our_run_with_orphans_and_lookalikes",
        lambda f, d: (
            _copy_finished(f, d),
            _files(
                d,
                [
                    "model.ckpt-5.index.tempstate123",
                    f"checkpoint.tmp{HEX32}",
                    "notes_temp/",
                    f"report.tmp{HEX32}",
                    "checkpoint.tmp.bak",
                ],
            ),
        ),
        [],
        True,
    ),
    (
        "a_symlink_to_a_foreign_folder",
        lambda f, d: (_files(d.parent / "target", ["notes.txt"]), os.symlink(d.parent / "target", d)),
        [],
        False,
    ),
    ("a_file", lambda f, d: (d.parent.mkdir(exist_ok=True), d.write_text("not a folder")), [], False),
    (
        "our_run_with_projector_linked_to_a_foreign_folder",
        lambda f, d: (
            _copy_finished(f, d),
            shutil.rmtree(d / "projector"),
            _files(d.parent / "photos", ["notes.txt", "embeddings.tsv"]),
            os.symlink(d.parent / "photos", d / "projector"),
        ),
        [],
        False,
    ),
    (
        "a_lone_lock_linked_to_a_foreign_file",
        lambda f, d: (d.mkdir(), _files(d.parent, ["diary.txt"]), os.symlink(d.parent / "diary.txt", d / ".lock")),
        [],
        False,
    ),
]


def test_the_state_table_is_big_enough():
    assert len(STATES) >= 15
    assert len({state[0] for state in STATES}) == len(STATES)


@pytest.mark.parametrize("name, build, flags, may_succeed", STATES, ids=[state[0] for state in STATES])
def test_training_into_a_folder_refuses_or_keeps_every_file(
    name, build, flags, may_succeed, finished, ae_flags, tmp_path
):
    root = tmp_path / "world"
    root.mkdir()
    model_dir = root / "model_dir"
    build(finished, model_dir)
    before = _snapshot(root)

    run = invoke(train_autoencoder.main, [*ae_flags, *flags, "--model-dir", model_dir])

    after = _snapshot(root)
    assert "Traceback" not in run.out + run.err
    if run.code == 0:
        assert may_succeed, f"{name}: the run trained in a folder it should refuse:\n{run.out}"
        gone_or_changed = [path for path in before if after.get(path) != before[path]]
        foreign = [path for path in gone_or_changed if not OWN.match(os.path.relpath(path, "model_dir"))]
        assert not foreign, f"{name}: the run changed or removed files it did not write: {foreign}"
        assert list_checkpoints(str(model_dir)), name
    else:
        assert not may_succeed, f"{name}: refused: {run.err}"
        assert run.code == 2 and len(run.error_lines()) == 1 and run.err.startswith("error: "), run.err
        if "model_dir/config.json" in before and "model_dir/.lock" not in before:
            after.pop("model_dir/.lock", None)  # refused under its own lock: in a dir of ours, a name of ours
        assert after == before, f"{name}: a refused run changed the folder"


def test_a_damaged_newest_checkpoint_with_keep_one_resumes_from_the_intact_one(finished, ae_flags, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(finished, model_dir)
    _truncate_newest(model_dir)
    run = invoke(train_autoencoder.main, [*ae_flags, "--keep-checkpoints", "1", "--model-dir", model_dir])
    assert run.code == 0, run.err
    assert "model.ckpt-4 cannot be read" in run.out and "resumed from" in run.out and "at step 3" in run.out
    assert [os.path.basename(p) for p in list_checkpoints(str(model_dir))] == ["model.ckpt-4"]


def test_a_finished_run_resumes_and_keeps_its_window(finished, ae_flags, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(finished, model_dir)
    run = invoke(train_autoencoder.main, [*ae_flags, "--epochs", "3", "--model-dir", model_dir])
    assert run.code == 0, run.err
    assert [int(p.rsplit("-", 1)[1]) for p in list_checkpoints(str(model_dir))] == [4, 5, 6]
    assert json.loads((model_dir / "config.json").read_text())["epochs"] == 3


def test_other_data_at_another_path_is_refused_on_resume(tmp_path):
    from data import idx

    rng = np.random.default_rng(0)
    first, second = tmp_path / "data_a", tmp_path / "data_b"
    first.mkdir()
    for role, stem in idx.IDX_STEMS.items():
        count = 60 if role.startswith("train") else 20
        array = (
            rng.integers(0, 256, (count, 28, 28), np.uint8)
            if "images" in role
            else rng.integers(0, 10, count, np.uint8)
        )
        idx.write_idx(first / (stem + ".gz"), array)
    shutil.copytree(first, second)
    model_dir = tmp_path / "run"
    flags = ["--batch-size", "30", "--epochs", "1", "--summary-every", "0", "--model-dir", model_dir]
    assert invoke(train_autoencoder.main, ["--data-dir", first, *flags]).code == 0
    run = invoke(train_autoencoder.main, ["--data-dir", second, *flags])
    assert run.code == 2 and "data_identity" in run.err and "data_b" in run.err, run.err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["run [1]", "run*?", "caf\u00e9 run", os.fsdecode(b"run-\xff\xfe")])
def test_any_model_dir_name_trains_resumes_and_transfers(name, ae_flags, small_mnist, tmp_path):
    model_dir = str(tmp_path / name)
    run = invoke(train_autoencoder.main, [*ae_flags, "--epochs", "1", "--model-dir", model_dir])
    assert run.code == 0, run.err
    run = invoke(train_autoencoder.main, [*ae_flags, "--model-dir", model_dir])
    assert run.code == 0, run.err
    assert "at step 2" in run.out
    assert [int(p.rsplit("-", 1)[1]) for p in list_checkpoints(model_dir)] == [2, 3, 4]
    events = [entry for entry in os.listdir(model_dir) if entry.startswith("events.out.tfevents")]
    assert events
    target = str(tmp_path / (name + " transfer"))
    run = invoke(
        train_transfer.main,
        [
            "--data-dir",
            small_mnist,
            "--validation-size",
            "20",
            "--epochs",
            "1",
            "--batch-size",
            "20",
            "--summary-every",
            "0",
            "--checkpoint",
            model_dir,
            "--model-dir",
            target,
        ],
    )
    assert run.code == 0, run.err
    assert "max |diff| = 0" in run.out
    run = invoke(
        train_transfer.main,
        [
            "--data-dir",
            small_mnist,
            "--validation-size",
            "20",
            "--epochs",
            "2",
            "--batch-size",
            "20",
            "--summary-every",
            "0",
            "--checkpoint",
            model_dir,
            "--model-dir",
            target,
        ],
    )
    assert run.code == 0 and "resumed from" in run.out, run.err


def _source_with_state(finished, tmp_path, state):
    source = tmp_path / "source"
    shutil.copytree(finished, source)
    (source / "checkpoint").write_bytes(state)
    return source


def _plan(source, tmp_path):
    return invoke(
        train_transfer.main, ["--sample", "--dry-run", "--checkpoint", source, "--model-dir", tmp_path / "tl"]
    )


@pytest.mark.parametrize(
    "state",
    [b"\x00\xff\xfe binary \x89PNG", b"this is not a checkpoint state {{{", b""],
    ids=["binary", "garbage", "empty"],
)
def test_an_unreadable_state_file_is_named_and_the_numbered_files_used(state, finished, tmp_path):
    run = _plan(_source_with_state(finished, tmp_path, state), tmp_path)
    assert run.code == 0, run.err
    assert "model.ckpt-4" in run.out.split("restore plan", 1)[1].splitlines()[0]
    if state:
        assert "warning: ignoring the state file" in run.out


def test_a_state_file_naming_a_missing_checkpoint_is_named(finished, tmp_path):
    run = _plan(_source_with_state(finished, tmp_path, b'model_checkpoint_path: "model.ckpt-9"\n'), tmp_path)
    assert run.code == 0, run.err
    assert "names model.ckpt-9, which is not there" in run.out


def test_a_state_file_pointing_outside_its_dir_is_refused(finished, tmp_path):
    run = _plan(
        _source_with_state(finished, tmp_path, f'model_checkpoint_path: "{finished}/model.ckpt-4"\n'.encode()), tmp_path
    )
    assert run.code == 2 and "points outside its directory" in run.err, run.err
    # Passing that checkpoint itself is the way out.
    run = invoke(train_transfer.main, ["--sample", "--dry-run", "--checkpoint", f"{finished}/model.ckpt-4"])
    assert run.code == 0, run.err


def test_a_transfer_run_never_writes_into_its_source(tmp_path, finished):
    from runtime.errors import UserError
    from transfer.source import refuse_writing_into

    with pytest.raises(UserError, match="never writes there"):
        refuse_writing_into(str(finished / "model.ckpt-4"), str(finished))
    with pytest.raises(UserError, match="never writes there"):
        refuse_writing_into(str(tmp_path / "tl" / "best" / "model.ckpt"), str(tmp_path / "tl"))
    refuse_writing_into(str(finished / "model.ckpt-4"), str(finished / "transfer"))  # a subfolder is another dir


def test_restoring_nothing_is_said(finished, tmp_path):
    run = invoke(
        train_transfer.main,
        ["--sample", "--dry-run", "--restore", "conv", "--restore-exclude", "conv", "--checkpoint", finished],
    )
    assert run.code == 0, run.err
    assert "warning: this plan restores nothing" in run.out


def _dataset(train, test, name="mnist"):
    labels = np.zeros(len(train), np.uint8)
    return Dataset(name, "test", "test", train, labels, test, np.zeros(len(test), np.uint8))


def test_suspicious_data_is_warned_about():
    rng = np.random.default_rng(0)
    digits = (rng.random((200, 28, 28)) < 0.13).astype(np.uint8) * 255  # MNIST-like: mostly black, mean ~33
    clothes = (rng.random((200, 28, 28)) < 0.29).astype(np.uint8) * 255  # mean ~73
    assert _dataset(digits, digits[:50]).warnings() == []
    assert _dataset(clothes, clothes[:50], "fashion_mnist").warnings() == []
    (line,) = _dataset(digits, digits[:50], "fashion_mnist").warnings()
    assert "look like mnist, not fashion_mnist" in line
    (line,) = _dataset(digits[:50], digits).warnings()
    assert "smaller than the test split" in line
    black = digits.copy()
    black[:10] = 0
    assert any(
        "10 of the 200 training images are entirely black" in line for line in _dataset(black, digits).warnings()
    )


def test_inspect_refuses_a_data_part_that_is_a_directory(finished, tmp_path):
    from transfer import inspect

    source = tmp_path / "source"
    shutil.copytree(finished, source)
    (data,) = source.glob("model.ckpt-4.data-*")
    os.remove(data)
    data.mkdir()
    run = invoke(inspect.main, [str(source / "model.ckpt-4")])
    assert run.code == 2 and "is not a file" in run.err, run.err


# --- real processes: a full disk and signals ---------------------------------------------


def _script(script, *args):
    return [sys.executable, str(REPO / script), *map(str, args)]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: too small for one autoencoder checkpoint. Needs root (CI and these machines)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_config(small_disk, ae_flags):
    model_dir = small_disk / "run"
    result = subprocess.run(
        _script("train_autoencoder.py", *ae_flags, "--model-dir", model_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no space left on device" in lines[0], lines
    assert "Traceback" not in result.stdout + result.stderr
    assert "Hint" not in lines[0]


def _start(args):
    """Starts a script with unbuffered stdout: each line reaches the test when the script prints it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_line(process, pattern):
    """Reads the script's stdout until a line matches the regular expression; False when it ended first."""
    return any(re.match(pattern, line) for line in process.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 1.5, 4.0])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_any_moment_is_one_line(delay, signum, tmp_path):
    """Early (importing TensorFlow), later (loading data, building), or training: one line, 128 + signal.

    The moments count from the script's first line (the oneDNN choice, printed once
    runtime.quiet.guard_startup holds the signals, before TensorFlow's import): before it
    the interpreter is still starting, which no script can guard, and how long that takes
    depends on the machine's load.
    """
    process = _start(
        _script(
            "train_autoencoder.py", "--sample", "--epochs", "3", "--summary-every", "0", "--model-dir", tmp_path / "run"
        )
    )
    assert _wait_for_line(process, "oneDNN"), process.communicate(timeout=300)
    time.sleep(delay)  # any moment after the guard: every outcome below holds whenever it lands
    process.send_signal(signum)
    out, err = process.communicate(timeout=300)
    assert "Traceback" not in out + err, err
    if process.returncode == 0:  # the machine was fast enough to finish first: nothing to check
        return
    assert process.returncode == 128 + signum, (process.returncode, err)
    assert len(err.strip().splitlines()) <= 1, err


# A signal that lands while a C++ extension module initialises: pybind11 turns the handler's
# Stopped into ImportError("initialization failed"), which an optional import may swallow
# ("swallow") or let through to the top ("escape"). raise_signal runs the handler at once.
LOST_STOP = """
import signal, sys
from runtime.quiet import guard_startup
guard_startup()
try:
    try:
        signal.raise_signal(signal.{name})
    except BaseException as stop:
        raise ImportError("initialization failed") from stop
except ImportError:
    if "{how}" == "escape":
        raise
import train_autoencoder
sys.exit(train_autoencoder.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("how", ["swallow", "escape"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_whose_stop_an_import_lost_still_stops_the_run(how, signum, tmp_path):
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", LOST_STOP.format(name=signum.name, how=how), "--sample", "--model-dir", model_dir],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 128 + signum, (result.returncode, result.stderr[-2000:])
    assert result.stderr == f"interrupted by {signum.name}; the last saved checkpoint is intact\n", result.stderr
    assert not model_dir.exists()


def test_the_training_loop_refuses_to_start_after_a_lost_stop(monkeypatch):
    from runtime import quiet, training
    from runtime.errors import Stopped

    monkeypatch.setattr(quiet, "_STOPPING", [signal.SIGTERM])
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(Stopped) as stop:
        with training._StopOnSignal():
            pytest.fail("the loop's body ran")
    assert stop.value.signum == signal.SIGTERM
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers  # nothing taken over


# A file a library leaves in the temporary folder (AutoGraph's converted functions are removed
# only by exit handlers), then the end: by a signal, an exit without them, or a normal one.
TEMPORARY_FILE = """
import signal, sys, tempfile
from runtime.quiet import exit_now, guard_startup
guard_startup()
with tempfile.NamedTemporaryFile(delete=False, prefix="__autograph_generated_file") as made:
    made.write(b"def f(): pass")
end = sys.argv[1]
if end == "signal":
    signal.raise_signal(signal.SIGINT)
elif end == "exit_now":
    exit_now(2)
"""


@pytest.mark.parametrize("end", ["signal", "exit_now", "normal"])
def test_what_libraries_leave_in_the_temporary_folder_goes_with_the_process(tmp_path, end):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", TEMPORARY_FILE, end],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(temporary)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == {"signal": 130, "exit_now": 2, "normal": 0}[end], result.stderr
    assert list(temporary.iterdir()) == []


def test_output_to_a_reader_that_is_gone_ends_quietly(tmp_path):
    """`command | head -1`: the pipe's reader has gone, so a print fails; no traceback, the status of SIGPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the command writes a byte
    script = "from runtime.quiet import guard_startup\nguard_startup()\nfor line in range(1000):\n    print(line)\n"
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 128 + signal.SIGPIPE and result.stderr == "", result.stderr


@pytest.mark.slow
def test_a_fast_second_ctrl_c_exits_at_once_without_an_abort(tmp_path):
    args = _script(
        "train_autoencoder.py",
        "--sample",
        "--epochs",
        "20",
        "--save-every",
        "5",
        "--summary-every",
        "0",
        "--model-dir",
        tmp_path / "run",
    )
    process = _start(args)
    # The first progress line comes from inside the training loop, which holds the signals.
    assert _wait_for_line(process, r"epoch \d+/20  step "), process.communicate(timeout=300)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # a second one, or (both before the handler ran) one: 130 either way
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, (process.returncode, err)
    assert "Traceback" not in err and "terminate called" not in err and "FATAL" not in err, err


def test_resuming_a_run_with_a_garbled_state_file_says_so(finished, ae_flags, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(finished, model_dir)
    (model_dir / "checkpoint").write_text("this is not a checkpoint state {{{")
    run = invoke(train_autoencoder.main, [*ae_flags, "--model-dir", model_dir])
    assert run.code == 0, run.err
    assert "warning: ignoring the state file" in run.out and "at step 4" in run.out


def test_a_relative_model_dir_writes_a_state_file_that_reads_back(finished, ae_flags, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = invoke(train_autoencoder.main, [*ae_flags, "--epochs", "1", "--model-dir", os.path.join("checkpoints", "ae")])
    assert run.code == 0, run.err
    assert 'model_checkpoint_path: "model.ckpt-2"' in (tmp_path / "checkpoints" / "ae" / "checkpoint").read_text()
    run = invoke(train_transfer.main, ["--sample", "--dry-run", "--checkpoint", os.path.join("checkpoints", "ae")])
    assert run.code == 0, run.err


# --- links in a model dir, and outputs inside the data --------------------------------------

# Where a link may be planted: what a run writes, reads or deletes (and a user's subfolder).
LINK_PLACES = [
    "config.json",
    "metrics.json",
    "labels.txt",
    "restore_plan.json",
    "checkpoint",
    "model.ckpt-4.index",
    "model.ckpt-4.data-00000-of-00001",
    "model.ckpt-9.meta",
    "model.ckpt-4.index.tempstate7",
    "events.out.tfevents.1.host",
    "projector_config.pbtxt",
    ".lock",
    "best",
    "best/model.ckpt.index",
    "best/best.json",
    "projector",
    "projector/embeddings.tsv",
    "plugins/projector/config.pbtxt",
    "notes/deep/link",
]
LINK_KINDS = ["outside_folder", "outside_file", "dangling", "itself", "dot", "parent", "sibling"]


def _model_dir_with_link(finished, root, kind_of_run, place, kind):
    """A finished run of kind_of_run at root/run with a link at place; returns (model dir, link path)."""
    outside = root / "outside"
    _files(outside, ["notes.txt", "photos/"])
    model_dir = root / "run"
    # What check_owner reads is config.json; the other names stand for the run's files.
    _files(model_dir, [name for name in LINK_PLACES if "/" not in name and "." in name] + ["best/", "projector/"])
    shutil.copy(finished / "config.json", model_dir)
    _edit_config(model_dir, model=kind_of_run)
    link = model_dir / place
    if link.is_dir():
        shutil.rmtree(link)
    elif link.exists():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    target = {
        "outside_folder": outside / "photos",
        "outside_file": outside / "notes.txt",
        "dangling": outside / "nowhere",
        "itself": link.name,
        "dot": ".",
        "parent": "..",
        "sibling": model_dir / "config.json" if place != "config.json" else model_dir / "metrics.json",
    }[kind]
    os.symlink(target, link)
    return model_dir, link


MODEL_DIR_LINKS = list(itertools.product(["autoencoder", "transfer"], LINK_PLACES, LINK_KINDS))


def test_a_link_anywhere_in_a_model_dir_is_refused_naming_it(finished, tmp_path):
    """The rule over every place a run writes, every kind of link and both kinds of run."""
    from runtime import rundir
    from runtime.errors import UserError
    from runtime.paths import shown

    assert len(MODEL_DIR_LINKS) == 2 * 19 * 7
    for index, (kind_of_run, place, kind) in enumerate(MODEL_DIR_LINKS):
        root = tmp_path / str(index)
        model_dir, link = _model_dir_with_link(finished, root, kind_of_run, place, kind)
        before = _snapshot(root)
        with pytest.raises(UserError) as refused:
            rundir.check_owner(str(model_dir), kind_of_run)
        line = str(refused.value)
        assert "\n" not in line and f"holds a symbolic link, {shown(place)} -> " in line, (place, kind, line)
        assert _snapshot(root) == before, (place, kind)
        os.remove(link)
        if place == "config.json":
            shutil.copy(finished / "config.json", link)
            _edit_config(model_dir, model=kind_of_run)
        assert rundir.check_owner(str(model_dir), kind_of_run)["model"] == kind_of_run  # the link was the reason
    # A model dir that is itself a link is the path the user named: followed.
    os.symlink(model_dir, tmp_path / "latest")
    assert rundir.check_owner(str(tmp_path / "latest"), kind_of_run)["model"] == kind_of_run


@pytest.mark.slow
def test_a_transfer_run_refuses_a_best_folder_linked_outside_before_writing(finished, tmp_path):
    """One real run as a separate process: best/ linked to a folder of the user's files."""
    model_dir, _ = _model_dir_with_link(finished, tmp_path, "transfer", "best", "outside_folder")
    before = _snapshot(tmp_path)
    result = subprocess.run(
        _script("train_transfer.py", "--sample", "--checkpoint", finished, "--epochs", "1", "--model-dir", model_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: model dir {model_dir} holds a symbolic link, best -> {tmp_path}/outside/photos, which cae-transfer "
        "never makes; remove the link or pass another --model-dir"
    ]
    assert _snapshot(tmp_path) == before


def _overlap_situations():
    """(data dir, output, whether they overlap) over layouts of two folders, links and spellings."""
    situations = []
    for data, output, overlap in [
        ("data", "data/run", True),
        ("data", "data/a/b/run", True),
        ("data", "data", True),
        ("data", "data/", True),
        ("data", "data/../data/run", True),
        ("data", "run", False),
        ("data", "data-run", False),  # a common prefix is not a parent
        ("data", "datarun/x", False),
        ("data", ".", True),  # the data inside the output
        ("data/inner", "data", True),
        ("runs/x/data", "runs/x", True),
        ("runs/x/data", "runs/y", False),
        ("data", "link-to-data/run", True),  # links resolved
        ("link-to-data", "data/run", True),
        ("data", "link-to-runs/run", False),
    ]:
        for absolute in (False, True):
            situations.append((data, output, overlap, absolute))
    return situations


OVERLAP_SITUATIONS = _overlap_situations()


def test_outputs_and_the_data_folder_never_hold_each_other(tmp_path, monkeypatch):
    from runtime import rundir
    from runtime.errors import UserError

    monkeypatch.chdir(tmp_path)
    for folder in ("data/a", "data/inner", "runs/x/data", "runs/y"):
        os.makedirs(folder)
    os.symlink(tmp_path / "data", "link-to-data")
    os.symlink(tmp_path / "runs", "link-to-runs")
    before = _snapshot(tmp_path)
    assert len(OVERLAP_SITUATIONS) == 30
    for data, output, overlap, absolute in OVERLAP_SITUATIONS:
        if absolute:
            data, output = str(tmp_path / data), str(tmp_path / output)
        for flag in ("--model-dir", "--feature-cache"):
            outputs = {"--model-dir": "elsewhere", "--feature-cache": None, flag: output}
            if overlap:
                with pytest.raises(UserError, match=re.escape(flag)) as refused:
                    rundir.check_apart(data, outputs)
                assert "\n" not in str(refused.value)
            else:
                rundir.check_apart(data, outputs)
        rundir.check_apart(None, {"--model-dir": output})  # no --data-dir: nothing to compare
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_feature_cache_inside_the_image_folder_is_refused_before_anything_is_made(finished, tmp_path):
    """The issue's example, as a separate process: the cache used to become an empty class for good."""
    from data import make_image_folder
    from data.sources import load_sample

    sample = load_sample()
    subset = Dataset(
        "mnist", "test", "test", sample.train_images[:40], sample.train_labels[:40], sample.test_images[:10],
        sample.test_labels[:10],
    )  # fmt: skip
    folder = tmp_path / "digits"
    make_image_folder.write_folder(subset, folder)
    before = _snapshot(tmp_path)
    result = subprocess.run(
        _script(
            "train_transfer.py",
            "--data-dir",
            folder,
            "--checkpoint",
            finished,
            "--feature-cache",
            folder / "cache",
            "--model-dir",
            tmp_path / "run",
        ),  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: --feature-cache {folder}/cache lies inside --data-dir {folder}: a run never writes into the data "
        "it reads (a later scan would take it for a class); pass a --feature-cache outside it"
    ]
    assert _snapshot(tmp_path) == before
