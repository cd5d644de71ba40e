"""The output rule (runtime.outputs), as a property over generated situations.

A command that writes a folder as a whole (transfer.convert, transfer.export,
data.make_image_folder) writes only the output the user named; --force replaces only an
earlier output of the same command that holds nothing but the files its marker lists;
staging siblings left by a killed run are removed by the next one; nothing half-written
ever bears the output's name.

The rule is checked on the shared functions over every folder state crossed with --force,
the kind of output and what lies beside the output (a killed run's staging folder, a live
one, an old output moved aside, look-alike names of the user's), then by killing a writer
at each of its file-system steps, then through the real commands for a representative
subset, and finally the commands' start-up: arguments refused in one line before
TensorFlow is imported.
"""

import contextlib
import fcntl
import hashlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime import outputs
from runtime.errors import UserError

REPO = Path(__file__).resolve().parents[2]
KINDS = tuple(outputs.KINDS)
OTHER_KIND = {kind: KINDS[(index + 1) % len(KINDS)] for index, kind in enumerate(KINDS)}
SIBLING = re.compile(r"\.OUT\.(staging|old)-\d+-[0-9a-f]{8}\Z")  # of an output named OUT


def tree(root):
    """{relative path: what it is} of everything below root, links not followed."""
    state = {}
    for here, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(here, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                state[relative] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                state[relative] = ("dir",)
            else:
                state[relative] = ("file", hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return state


def write_content(folder, tag):
    """What a command writes: a few files, one in a subfolder."""
    Path(folder, "model.bin").write_bytes(f"weights {tag}".encode())
    Path(folder, "labels.txt").write_text(f"a\nb {tag}\n")
    os.makedirs(os.path.join(folder, "variables"))
    Path(folder, "variables", "data").write_bytes(bytes(range(256)) * 3 + tag.encode())


def write_ours(out, kind, tag="old"):
    with outputs.Staged(out, kind, force=True, log=lambda line: None) as folder:
        write_content(folder, tag)


def _set_state(state, out, kind, case):
    """Puts OUT in `state`; returns (expect "new"/"ours"/"refused", whether the user's files live under OUT)."""
    if state == "absent":
        return "new"
    if state == "empty_dir":
        os.mkdir(out)
        return "new"
    if state == "file":
        Path(out).write_text("the user's file")
        return "refused"
    if state in ("link_to_dir", "link_to_our_output"):
        target = os.path.join(case, "target")
        if state == "link_to_dir":
            os.mkdir(target)
            Path(target, "notes.txt").write_text("mine")
        else:
            write_ours(target, kind)
        os.symlink(target, out)
        return "refused"
    if state == "dangling_link":
        os.symlink(os.path.join(case, "nowhere"), out)
        return "refused"
    if state == "user_files_no_marker":
        os.mkdir(out)
        Path(out, "notes.txt").write_text("mine")
        os.mkdir(os.path.join(out, "photos"))
        Path(out, "photos", "cat.png").write_bytes(b"\x89PNG")
        return "refused"
    write_ours(out, OTHER_KIND[kind] if state == "marker_of_another_kind" else kind)
    marker = os.path.join(out, outputs.MARKER)
    if state == "ours":
        return "ours"
    if state == "ours_plus_user_file":
        Path(out, "notes.txt").write_text("mine")
    elif state == "ours_plus_nested_user_file":
        Path(out, "variables", "notes.txt").write_text("mine")
    elif state == "ours_plus_empty_user_dir":
        os.mkdir(os.path.join(out, "drafts"))
    elif state == "ours_file_edited":
        Path(out, "labels.txt").write_text("a\nb edited by the user\n")
    elif state == "ours_file_replaced_by_link":
        os.remove(os.path.join(out, "labels.txt"))
        os.symlink(os.path.join(case, "elsewhere.txt"), os.path.join(out, "labels.txt"))
    elif state == "marker_not_json":
        Path(marker).write_text("{not json")
    elif state == "marker_of_another_tool":
        payload = json.loads(Path(marker).read_text())
        Path(marker).write_text(json.dumps(dict(payload, toolkit="someone-else")))
    elif state == "marker_is_a_dir":
        os.remove(marker)
        os.mkdir(marker)
    return "refused"


STATES = (
    "absent",
    "empty_dir",
    "file",
    "link_to_dir",
    "link_to_our_output",
    "dangling_link",
    "user_files_no_marker",
    "ours",
    "ours_plus_user_file",
    "ours_plus_nested_user_file",
    "ours_plus_empty_user_dir",
    "ours_file_edited",
    "ours_file_replaced_by_link",
    "marker_of_another_kind",
    "marker_not_json",
    "marker_of_another_tool",
    "marker_is_a_dir",
)
BESIDE = ("nothing", "killed_staging", "live_staging", "killed_old_output", "look_alikes")


def _set_beside(beside, out, kind):
    """Puts things beside OUT; returns (names a run must remove, a descriptor to close or None)."""
    parent, name = os.path.split(out)
    if beside == "killed_staging":
        stale = os.path.join(parent, f".{name}.staging-999999-0123abcd")
        os.mkdir(stale)
        Path(stale, "model.bin").write_bytes(b"half")
        return {os.path.basename(stale)}, None
    if beside == "live_staging":
        live = os.path.join(parent, f".{name}.staging-{os.getpid()}-89abcdef")
        os.mkdir(live)
        Path(live, "model.bin").write_bytes(b"being written")
        fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: the lock of another writer
        return set(), fd
    if beside == "killed_old_output":
        old = os.path.join(parent, f".{name}.old-999999-4567cdef")
        write_ours(old, kind, tag="moved aside")
        return {os.path.basename(old)}, None
    if beside == "look_alikes":
        os.mkdir(os.path.join(parent, f".{name}.staging-notes"))
        Path(parent, f".{name}.staging-notes", "n.txt").write_text("mine")
        Path(parent, f".{name}.staging-1-0123abcd").write_text("a file, not a folder")
        os.mkdir(os.path.join(parent, f".{name}x.staging-1-0123abcd"))  # another output's
    return set(), None


def _run(out, kind, force, tag):
    """What a command does: check before the heavy part, then write through Staged."""
    lines = []
    try:
        outputs.check(out, kind, force)
        with outputs.Staged(out, kind, force, log=lines.append) as folder:
            write_content(folder, tag)
    except UserError as error:
        return str(error), lines
    return None, lines


def test_the_output_rule_over_generated_situations(tmp_path):
    situations = list(itertools.product(STATES, BESIDE, (False, True), KINDS))
    assert len(situations) == 17 * 5 * 2 * 3 == 510
    outcomes = {"new": 0, "replaced": 0, "refused": 0, "restored": 0}
    for index, (state, beside, force, kind) in enumerate(situations):
        case = str(tmp_path / f"c{index}")
        parent = os.path.join(case, "parent")
        os.makedirs(parent)
        out = os.path.join(parent, "OUT")
        expect = _set_state(state, out, kind, case)
        stale, live_fd = _set_beside(beside, out, kind)
        restored = beside == "killed_old_output" and state == "absent"
        if restored:  # the old output is put back first, then judged as an existing one
            expect = "ours"
        before = tree(case)
        try:
            error, lines = _run(out, kind, force, tag=f"new {index}")
        finally:
            if live_fd is not None:
                os.close(live_fd)
        after = tree(case)
        where = f"situation {index}: {state}, {beside}, force={force}, {kind}: {error}"
        accepted = expect == "new" or (expect == "ours" and force)
        assert (error is None) == accepted, where

        # Nothing but OUT and its killed siblings changed; nothing new outside OUT.
        replaced = accepted and expect == "ours"
        for path, what in before.items():
            top = path.split(os.sep)[1] if path.startswith("parent" + os.sep) else None
            if top in stale or (replaced and top == "OUT") or (restored and top == "OUT"):
                continue
            if accepted and path == os.path.join("parent", "OUT") and state == "empty_dir":
                continue
            assert after.get(path) == what, f"{where}: {path} changed"
        for path in set(after) - set(before):
            assert path.startswith(os.path.join("parent", "OUT")), f"{where}: {path} created"
        siblings = {name for name in os.listdir(parent) if SIBLING.match(name) and os.path.isdir(parent + "/" + name)}
        live = {name for name in siblings if "staging-" + str(os.getpid()) + "-89abcdef" in name}
        if error is None or restored:
            assert siblings == live, f"{where}: left {siblings - live}"
            assert not stale & set(os.listdir(parent)), where
        if error is None:
            assert outputs.foreign_entry(out, kind) is None, where
            assert Path(out, "labels.txt").read_text() == f"a\nb new {index}\n", where
            assert sorted(os.listdir(out)) == [outputs.MARKER, "labels.txt", "model.bin", "variables"], where
            if stale:
                assert lines and "left by interrupted runs" in lines[-1] or restored, where
            outcomes["replaced" if expect == "ours" else "new"] += 1
        else:
            assert "\n" not in error and "OUT" in error, where
            if restored:
                assert Path(out, "labels.txt").read_text() == "a\nb moved aside\n", where
                assert lines and lines[0].startswith("put back "), where
                outcomes["restored"] += 1
            else:
                assert after == before, f"{where}: a refusal changed something"
            outcomes["refused"] += 1
    assert outcomes == {"new": 54, "replaced": 18, "refused": 438, "restored": 3}, outcomes


def test_the_refusals_name_the_first_foreign_entry(tmp_path):
    out = str(tmp_path / "OUT")
    write_ours(out, "export")
    Path(out, "notes.txt").write_text("mine")
    with pytest.raises(UserError) as refused:
        outputs.check(out, "export", force=True)
    assert str(refused.value) == (
        f"--output {out} is not an earlier export written by transfer.export: "
        "notes.txt is not one of its files; refused even with --force"
    )
    os.remove(os.path.join(out, "notes.txt"))
    with pytest.raises(UserError) as refused:
        outputs.check(out, "conversion", force=True)
    assert str(refused.value) == (
        f"--output {out} is not an earlier conversion written by transfer.convert: "
        f"its {outputs.MARKER} is a transfer.export output's; refused even with --force"
    )
    with pytest.raises(UserError) as refused:
        outputs.check(out, "export", force=False)
    assert str(refused.value) == (
        f"--output {out} already exists and is an earlier export written by transfer.export; pass --force to replace it"
    )
    with pytest.raises(UserError, match="its parent directory .*missing does not exist"):
        outputs.check(tmp_path / "missing" / "OUT", "export", force=False)


# --- kills -----------------------------------------------------------------------------------

# A writer in a child process that counts its file-system steps and kills itself with
# SIGKILL at step KILL_AT (never when KILL_AT is -1: it then prints how many steps there were).
CHILD = textwrap.dedent(
    """
    import builtins, io, os, signal, sys
    from pathlib import Path
    from runtime import outputs

    out, kind, force, kill_at, exchange = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), sys.argv[5]
    steps = [0]

    def counted(function):
        def step(*args, **kwargs):
            if steps[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            steps[0] += 1
            return function(*args, **kwargs)
        return step

    for name in ("mkdir", "rename", "rmdir", "remove", "unlink"):
        setattr(os, name, counted(getattr(os, name)))
    builtins.open = io.open = counted(io.open)
    outputs._exchange = counted(outputs._exchange if exchange == "exchange" else lambda a, b: False)
    with outputs.Staged(out, kind, force, log=lambda line: None) as folder:
        for index in range(4):
            os.makedirs(os.path.join(folder, f"part{index}"))
            Path(folder, f"part{index}", "data").write_bytes(b"new %d" % index)
    print(steps[0])
    """
)


def _child(out, kind, force, kill_at, exchange):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-S", "-c", CHILD, out, kind, "1" if force else "0", str(kill_at), exchange]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_a_kill_at_any_step_leaves_the_old_or_the_new_output_and_the_next_run_cleans_up(tmp_path):
    tried = 0
    for start, exchange in itertools.product(("absent", "ours"), ("exchange", "no_exchange")):
        probe = str(tmp_path / f"probe-{start}-{exchange}" / "OUT")
        os.makedirs(os.path.dirname(probe))
        if start == "ours":
            write_ours(probe, "export")
        done = _child(probe, "export", True, -1, exchange)
        assert done.returncode == 0, done.stderr
        steps = int(done.stdout)
        assert steps >= 15
        for kill_at in range(steps):  # every step: a kill just before it
            parent = tmp_path / f"k{tried}"
            parent.mkdir()
            out = str(parent / "OUT")
            if start == "ours":
                write_ours(out, "export")
            old = tree(out) if start == "ours" else None
            Path(parent, "user.txt").write_text("mine")
            killed = _child(out, "export", True, kill_at, exchange)
            assert killed.returncode == -9, (kill_at, killed.stderr)
            where = f"{start}, {exchange}, killed at step {kill_at} of {steps}"
            # OUT names the old output or the complete new one, never a half-written one.
            if os.path.lexists(out):
                now = tree(out)
                assert now == old or outputs.foreign_entry(out, "export") is None and "part3" in now, where
            elif start == "ours":  # only between the two renames of a file system that cannot exchange
                assert exchange == "no_exchange", where
            # The next run removes what the kill left, puts back an old output moved aside, and writes.
            lines = []
            with outputs.Staged(out, "export", True, log=lines.append) as folder:
                write_content(folder, "next")
            assert sorted(os.listdir(parent)) == ["OUT", "user.txt"], where
            assert Path(parent, "user.txt").read_text() == "mine"
            assert Path(out, "labels.txt").read_text() == "a\nb next\n" and outputs.foreign_entry(out, "export") is None
            tried += 1
    assert tried > 60
    print(f"{tried} kills")


def test_concurrent_writers_never_take_each_others_staging(tmp_path):
    out = str(tmp_path / "OUT")
    with outputs.Staged(out, "export", log=lambda line: None) as first:
        Path(first, "model.bin").write_bytes(b"first")
        lines = []
        outputs.clean_stale(out, lines.append)  # another run starting now
        assert os.path.isdir(first) and not lines
    assert Path(out, "model.bin").read_bytes() == b"first"


# --- the real commands ------------------------------------------------------------------------


def _small_dataset(seed=0):
    from tests.data.test_image_folder import small_dataset

    return small_dataset(seed)


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("state", ["absent", "ours", "ours_plus_user_file", "user_files_no_marker", "file"])
def test_make_image_folder_keeps_the_rule(tmp_path, state, force):
    from data import make_image_folder

    out = str(tmp_path / "OUT")
    if state.startswith("ours"):
        assert make_image_folder.write_folder(_small_dataset(), out, log=lambda line: None) == 40
    if state == "ours_plus_user_file":
        Path(out, "train", "notes.txt").write_text("mine")
    elif state == "user_files_no_marker":
        os.mkdir(out)
        Path(out, "notes.txt").write_text("mine")
    elif state == "file":
        Path(out).write_text("mine")
    before = tree(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = make_image_folder.main([out, "--data-dir", str(tmp_path / "no-data")] + ["--force"] * force)
    accepted = state == "absent" or (state == "ours" and force)
    if not accepted:
        assert code == 2 and err.getvalue().count("\n") == 1 and err.getvalue().startswith("error: ")
        assert tree(tmp_path) == before
        return
    # Accepted: the data is read next, and --data-dir no-data stops it there, having written nothing.
    assert code == 2 and "no-data" in err.getvalue() and tree(tmp_path) == before
    lines = []
    assert make_image_folder.write_folder(_small_dataset(1), out, force=force, log=lines.append) == 40
    assert outputs.foreign_entry(out, "image-folder") is None and sorted(os.listdir(tmp_path)) == ["OUT"]


# --- start-up: arguments before TensorFlow ----------------------------------------------------


def _start(module, args, cwd):
    """Runs `python -X importtime -m module args`; returns (status, stderr lines that are not import times, modules)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = done.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    return done.returncode, [line for line in lines if not line.startswith("import time:")], imported


START_CASES = (
    ("transfer.convert", ["w.pth", "--output", "out", "--bogus"], "unrecognized arguments: --bogus"),
    ("transfer.convert", ["w.pth"], "the following arguments are required: --output"),
    ("transfer.convert", ["w.pth", "--output", "notes", "--force"], "notes is not an earlier conversion"),
    ("transfer.convert", ["w.pth", "--output", "out"], "cannot read w.pth"),
    ("transfer.convert", ["notes/n.txt", "--output", "out"], "n.txt is not a legacy PyTorch file"),
    ("transfer.convert", ["w.pth", "--output", "missing/out"], "missing does not exist"),
    ("transfer.export", ["--model-dir", "notes", "--output", "out", "--tflite=1"], "ignored explicit argument"),
    ("transfer.export", ["--model-dir", "notes", "--output", "notes/x/y"], "x does not exist"),
    ("transfer.export", ["--model-dir", "notes", "--output", "notes"], "would overlap the run"),
    ("transfer.export", ["--model-dir", "nowhere", "--output", "out"], "--model-dir"),
    ("transfer.export", ["--model-dir", "run", "--output", "export"], "export already exists and is an earlier"),
    ("transfer.export", ["--model-dir", "run", "--output", "notes", "--force"], "notes is not an earlier export"),
    ("transfer.export", ["--model-dir", "notes", "--output", "out"], "notes/config.json does not exist"),
    ("transfer.export", ["--model-dir", "run", "--output", "out", "--checkpoint", "x"], "invalid choice: 'x'"),
    ("data.make_image_folder", ["notes"], "notes already exists and is not an earlier image folder"),
    ("data.make_image_folder", ["out", "--data-dir", "nowhere"], "nowhere"),
    ("data.make_image_folder", ["out", "--split"], "unrecognized arguments: --split"),
    ("data.make_image_folder", [], "the following arguments are required: out"),
)


def test_refusals_are_one_line_before_tensorflow_is_imported(tmp_path):
    Path(tmp_path, "notes").mkdir()
    Path(tmp_path, "notes", "n.txt").write_text("mine")
    Path(tmp_path, "run").mkdir()
    Path(tmp_path, "run", "config.json").write_text(json.dumps({"model": "transfer"}))
    write_ours(str(tmp_path / "export"), "export")
    before = tree(tmp_path)
    for module, args, expected in START_CASES:
        code, lines, imported = _start(module, args, tmp_path)
        where = f"python -m {module} {' '.join(args)}: {lines}"
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], where
        assert "tensorflow" not in imported, where
    assert tree(tmp_path) == before
    assert len(START_CASES) == 18


@pytest.mark.slow
def test_a_successful_make_image_folder_prints_nothing_on_stderr(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "data.make_image_folder", str(tmp_path / "OUT"), "--no-split"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("wrote 5000 PNGs from ") and done.stdout.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["OUT"]


@pytest.mark.slow
def test_make_image_folder_killed_mid_write_leaves_nothing_the_next_run_does_not_remove(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = tmp_path / "OUT"
    argv = [sys.executable, "-m", "data.make_image_folder", str(out), "--no-split"]
    for written in (1, 700):  # PNGs in the staging folder when SIGKILL arrives
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(6000):  # polls, a tenth of a second apart: generous for a loaded machine
                staging = [name for name in os.listdir(tmp_path) if name.startswith(".OUT.staging-")]
                if staging and sum(len(files) for _, _, files in os.walk(tmp_path / staging[0])) >= written:
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=0.1)
                assert process.returncode is None, "finished before it could be killed"
            process.kill()
        finally:
            process.wait()
        # One left behind, not one more per killed run: each run removes what the one before left.
        assert len([name for name in os.listdir(tmp_path) if name.startswith(".OUT.staging-")]) == 1
        assert not out.exists()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith(f"removed 1 folder(s) beside {out} left by interrupted runs: .OUT.staging-")
    assert sorted(os.listdir(tmp_path)) == ["OUT"]
