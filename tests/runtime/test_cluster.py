"""Tests for runtime.cluster: where a cluster comes from (TF_CONFIG, flags) and its errors,
then real clusters on 127.0.0.1 running train_autoencoder.py: the launcher with 1 ps and
2 workers, a worker killed and restarted mid-run, a missing ps, a failing task; and
train_transfer.py on 1 ps and 2 workers from the cluster's autoencoder checkpoint.
"""

import contextlib
import itertools
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    AE_VARIABLES,
    CONV_NAMES,
    REPO,
    SAMPLE_TRAIN,
    invoke,
    latest_prefix,
    read_checkpoint,
    read_events,
    write_checkpoint,
)

import train_autoencoder
import train_transfer
from models import networks
from models.cae import build_autoencoder
from runtime import cluster, options
from runtime.cluster import session as session_module
from runtime.errors import CheckpointError, UserError
from transfer.graph import LearningRateGroups

v1 = tf.compat.v1

BATCH = 16
STEPS = SAMPLE_TRAIN // BATCH  # one epoch: 281 global steps
TRAIN = ["--sample", "--epochs", "1", "--batch-size", str(BATCH), "--save-every", "100", "--summary-every", "50"]
SPEC = {"ps": ["127.0.0.1:2222"], "worker": ["127.0.0.1:2223", "127.0.0.1:2224"]}
OWN_STEPS = re.compile(r"^\[worker (\d)\] worker \d: done at global step (\d+), (\d+) steps of its own", re.M)


def _task(env_config=None, argv=()):
    args = train_autoencoder.parse_args(list(argv))
    environ = {} if env_config is None else {cluster.ENV: env_config}
    return cluster.task_from(options.record(cluster.ClusterFlags, args), environ)


def _config(job, index, spec=None):
    return cluster.tf_config(spec or SPEC, job, index)


# --- where a cluster comes from ------------------------------------------------------------------


def test_no_cluster_is_a_local_run():
    assert _task() is None
    assert _task("  ") is None  # an empty TF_CONFIG counts as none, as in TensorFlow


def test_tf_config_task():
    task = _task(_config("worker", 1))
    assert (task.job, task.index, task.is_chief, task.is_ps) == ("worker", 1, False, False)
    assert task.spec == {job: tuple(hosts) for job, hosts in SPEC.items()}
    assert task.target == "grpc://localhost:2224"
    assert task.replica_index == 1 and task.num_replicas == 2
    assert _task(_config("worker", 0)).is_chief
    assert _task(_config("ps", 0)).is_ps


def test_a_chief_job_is_the_chief_and_worker_0_is_not():
    spec = dict(SPEC, chief=["127.0.0.1:2225"])
    assert _task(_config("chief", 0, spec)).is_chief
    assert not _task(_config("worker", 0, spec)).is_chief
    assert _task(_config("chief", 0, spec)).replicas == [("chief", 0), ("worker", 0), ("worker", 1)]


def test_classic_flags_equal_tf_config():
    flags = ["--ps-hosts", "127.0.0.1:2222", "--worker-hosts", "127.0.0.1:2223,127.0.0.1:2224", "--job-name", "worker"]
    by_flags = _task(argv=[*flags, "--task-index", "1"])
    assert by_flags == _task(_config("worker", 1))
    assert _task(argv=flags).index == 0  # --task-index defaults to 0
    assert _task(_config("worker", 1), [*flags, "--task-index", "1"]) == by_flags  # both given, agreeing


@pytest.mark.parametrize(
    "env_config, argv, message",
    [
        ("{not json", [], "TF_CONFIG is not valid JSON"),
        ('["ps"]', [], "must be a JSON object"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), [], "has no 'cluster' object"),
        (json.dumps({"cluster": SPEC}), [], "has no 'task' object"),
        (_config("evaluator", 0), [], "unknown job 'evaluator'"),
        (_config("worker", 2), [], "task index 2 is out of range for job 'worker', which has 2 tasks (0..1)"),
        (_config("worker", 0, {"ps": ["127.0.0.1"], "worker": ["h:1"]}), [], "'127.0.0.1' is not host:port"),
        (_config("worker", 0, {"ps": ["a:70000"], "worker": ["h:1"]}), [], "port 70000 of a:70000 is outside"),
        (_config("worker", 0, {"worker": ["h:1"]}), [], "the cluster has no ps task"),
        (_config("worker", 0, {"ps": ["h:1"], "worker": ["h:1"]}), [], "h:1 is given to both ps 0 and worker 0"),
        (
            _config("worker", 1),
            ["--ps-hosts", "127.0.0.1:2222", "--worker-hosts", "127.0.0.1:2223,127.0.0.1:2224", "--job-name", "ps"],
            "TF_CONFIG (worker 1 of 1 ps, 2 worker) and the cluster flags (ps 0 of 1 ps, 2 worker) disagree",
        ),
        (None, ["--job-name", "worker"], "also needs --ps-hosts and --worker-hosts"),
        (
            None,
            ["--ps-hosts", "a:1", "--worker-hosts", "b:2", "--job-name", "chief"],
            "--job-name must be ps or worker",
        ),
        (None, ["--ps-hosts", "a:1", "--worker-hosts", "b", "--job-name", "worker"], "--worker-hosts: 'b' is not"),
        (None, ["--sync-replicas"], "--sync-replicas needs a cluster"),
        (_config("worker", 0), ["--cluster-timeout", "0"], "--cluster-timeout must be a positive number"),
        (
            _config("ps", 0),
            ["--ps-idle-timeout", "1"],
            "--ps-idle-timeout must be a finite number of seconds, at least 5, got 1",
        ),
        (_config("ps", 0), ["--ps-idle-timeout", "inf"], "--ps-idle-timeout must be a finite number of seconds"),
        (_config("ps", 0), ["--ps-idle-timeout", "nan"], "--ps-idle-timeout must be a finite number of seconds"),
    ],
)
def test_bad_clusters_are_one_line(env_config, argv, message):
    with pytest.raises(UserError) as caught:
        _task(env_config, argv)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_device_function_puts_variables_on_ps():
    task = _task(_config("worker", 1))
    with tf.Graph().as_default(), v1.device(cluster.device_function(task)):
        images = v1.placeholder(tf.float32, [None, 28, 28, 1])
        build_autoencoder(images, 20)
        variables = v1.global_variables()
        assert {var.op.name: var.shape.as_list() for var in variables} == AE_VARIABLES  # names are the API
        assert {var.device for var in variables} == {"/job:ps/task:0"}
        assert images.device == "/job:worker/task:1"


def test_task_config_filters_devices():
    task = _task(_config("worker", 1))
    assert list(cluster.task_config(task).device_filters) == ["/job:ps/task:0", "/job:worker/task:1"]


# --- real clusters on 127.0.0.1 ------------------------------------------------------------------


def _env(config):
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env[cluster.ENV] = config
    return env


def _start(spec, job, index, argv, script="train_autoencoder.py", **kwargs):
    return subprocess.Popen(
        [sys.executable, str(REPO / script), *argv],
        cwd=REPO,
        env=_env(cluster.tf_config(spec, job, index)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("cluster") / "ae"
    result = subprocess.run(
        [sys.executable, "-m", "runtime.cluster", "--ps", "1", "--workers", "2", "--grace", "20", "--"]
        + ["train_autoencoder.py", *TRAIN, "--model-dir", str(model_dir), "--cluster-timeout", "60"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result, model_dir


@pytest.mark.slow
def test_launcher_trains_one_global_step(launched):
    result, model_dir = launched
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    own = {int(worker): (int(final), int(steps)) for worker, final, steps in OWN_STEPS.findall(result.stdout)}
    assert set(own) == {0, 1}
    assert all(final == STEPS for final, _ in own.values()), result.stdout[-3000:]
    assert all(steps > 0 for _, steps in own.values())  # both workers advanced the shared step
    assert sum(steps for _, steps in own.values()) == STEPS
    assert "[ps 0] ps 0: every training task is done; exiting" in result.stdout
    assert re.search(r"^\[worker 1\] worker 1: joined the cluster at global step \d+$", result.stdout, re.M)


@pytest.mark.slow
def test_only_the_chief_writes(launched):
    result, model_dir = launched
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["global_step"] == STEPS and metrics["cluster"]["spec"]["worker"]
    assert metrics["own_steps"] > 0
    config = json.loads((model_dir / "config.json").read_text())
    assert config["cluster"]["sync_replicas"] is False and "ps_hosts" not in config
    assert len(list(model_dir.glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_chief_checkpoint_restores_locally(launched):
    _, model_dir = launched
    prefix = latest_prefix(model_dir)
    assert prefix.endswith(f"model.ckpt-{STEPS}")
    stored = read_checkpoint(prefix)
    assert int(stored["global_step"]) == STEPS  # exactly the requested step, not one more
    with tf.Graph().as_default():
        build_autoencoder(v1.placeholder(tf.float32, [None, 28, 28, 1]), 20)
        saver = v1.train.Saver(v1.global_variables())
        with v1.Session() as sess:
            saver.restore(sess, prefix)
            values = sess.run({var.op.name: var for var in v1.global_variables()})
    assert set(values) == set(AE_VARIABLES)
    for name, value in values.items():
        np.testing.assert_array_equal(value, stored[name])


@pytest.mark.slow
def test_chief_checkpoint_is_a_transfer_source(launched, tmp_path):
    _, model_dir = launched
    result = subprocess.run(
        [sys.executable, "train_transfer.py", "--checkpoint", str(model_dir), "--restore", "conv", "--dry-run"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    plan = [line.split() for line in result.stdout.splitlines() if line.strip().startswith("conv")]
    assert {row[0] for row in plan if "restored" in row} == {"conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias"}


def _wait_for_line(process, pattern, lines, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError(f"no line matching {pattern!r}:\n{''.join(lines)[-2000:]}")


@pytest.mark.slow
def test_killed_worker_rejoins_and_the_run_ends_at_the_requested_step(tmp_path):
    spec = cluster.local_cluster(1, 2)
    model_dir = tmp_path / "ae"
    argv = [*TRAIN, "--model-dir", str(model_dir), "--cluster-timeout", "60"]
    processes = {name: _start(spec, *name, argv) for name in (("ps", 0), ("worker", 0), ("worker", 1))}
    try:
        seen = []
        # Killed as soon as it is in the training loop: a progress line comes only every 5 s,
        # and on a fast machine the worker's whole share of the run takes less than that.
        _wait_for_line(processes["worker", 1], r"joined the cluster at global step", seen)
        processes["worker", 1].send_signal(signal.SIGKILL)
        processes["worker", 1].wait(timeout=30)
        processes["worker", 1] = _start(spec, "worker", 1, argv)
        outputs = {name: process.communicate(timeout=300)[0] for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    codes = {name: process.returncode for name, process in processes.items()}
    assert codes == {("ps", 0): 0, ("worker", 0): 0, ("worker", 1): 0}, outputs
    rejoined = re.search(r"worker 1: joined the cluster at global step (\d+)", outputs["worker", 1])
    assert rejoined and 0 < int(rejoined.group(1)) <= STEPS
    assert f"done at global step {STEPS}" in outputs["worker", 1]
    assert f"done: step {STEPS}" in outputs["worker", 0]
    assert int(read_checkpoint(latest_prefix(model_dir))["global_step"]) == STEPS
    assert latest_prefix(model_dir).endswith(f"model.ckpt-{STEPS}")


@pytest.mark.slow
def test_missing_ps_is_a_clear_error(tmp_path):
    spec = cluster.local_cluster(1, 1)  # nothing listens on the ps port
    began = time.monotonic()
    process = _start(spec, "worker", 0, [*TRAIN, "--model-dir", str(tmp_path / "ae"), "--cluster-timeout", "3"])
    out = process.communicate(timeout=120)[0]
    assert process.returncode == 2, out
    assert f"error: worker 0: cannot reach ps 0 at {spec['ps'][0]} after 3 s" in out
    assert "Traceback" not in out
    assert time.monotonic() - began < 120  # bounded: the wait gave up instead of hanging


@pytest.mark.slow
def test_launcher_stops_every_task_when_one_fails(tmp_path):
    # The workers refuse the flags; the ps, which does not read them, is stopped by the launcher.
    result = subprocess.run(
        [sys.executable, "-m", "runtime.cluster", "--ps", "1", "--workers", "1", "--"]
        + ["train_autoencoder.py", "--sample", "--batch-size", "100000", "--model-dir", str(tmp_path / "ae")],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2, result.stdout[-2000:]
    assert "[worker 0] error: --batch-size 100000 is larger than the 4500 training images" in result.stdout
    assert "failed: stopping every task" in result.stdout
    assert not (tmp_path / "ae").exists()


# --- nothing the launcher starts outlives it ---------------------------------------------------------

KILL_RUN = ["--sample", "--epochs", "5", "--batch-size", str(BATCH), "--save-every", "100"]
# Where in the run a process is killed: the line of the launcher's output that marks it.
KILL_POINTS = {
    "importing": r"^\[(ps|worker) \d\] oneDNN",  # a task is up, no server yet
    "serving": r"^\[ps 0\] ps 0: serving variables",
    "training": r"^\[worker 1\] worker 1: joined the cluster",
}
GONE_WITHIN = 120  # seconds: generous, for a machine whose cores other jobs hold
# The launcher's --grace in the kill tests: a task still running this long after the stop is
# killed with a second line, which a loaded machine reached at the default 30 s (workers
# saving on stop); kept below GONE_WITHIN so the launcher's own kill still counts.
KILL_GRACE = 90


def _run_processes(marker):
    """{pid: (job, index) or None for the launcher} of every process whose command line names `marker`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                if marker.encode() not in file.read():
                    continue
            with open(f"/proc/{entry}/environ", "rb") as file:
                environ = dict(item.split(b"=", 1) for item in file.read().split(b"\0") if b"=" in item)
        except OSError:  # gone meanwhile
            continue
        config = environ.get(cluster.ENV.encode())
        task = json.loads(config)["task"] if config else None
        found[int(entry)] = (task["type"], task["index"]) if task else None
    return found


class _LaunchedRun:
    """The launcher on a run whose --model-dir names a folder unique to it; its output collected as it comes."""

    def __init__(self, model_dir):
        self.marker = model_dir.name
        self.lines = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime.cluster", "--ps", "1", "--workers", "2", "--grace", str(KILL_GRACE)]
            + ["--", "train_autoencoder.py", *KILL_RUN, "--model-dir", str(model_dir)],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def wait_for(self, pattern, timeout=180):
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in list(self.lines)):
            assert time.monotonic() < deadline and self.process.poll() is None, "".join(self.lines)[-3000:]
            time.sleep(0.05)

    def kill(self, victim, signum):
        """Sends signum to the launcher (victim None) or to the task (job, index)."""
        if victim is None:
            self.process.send_signal(signum)
            return
        pid = next(pid for pid, task in _run_processes(self.marker).items() if task == victim)
        os.kill(pid, signum)

    def left_running(self):
        """The processes of the run still there GONE_WITHIN seconds after the kill at most: polled, not timed."""
        began = time.monotonic()
        while _run_processes(self.marker) and time.monotonic() < began + GONE_WITHIN:
            time.sleep(0.1)
        self.clean_after = time.monotonic() - began  # reported, never asserted
        return _run_processes(self.marker)

    def close(self):
        for pid in _run_processes(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        self.reader.join(timeout=10)

    def launcher_lines(self):
        return [line for line in self.lines if line.startswith("[cluster]")]


def _kill_and_check(tmp_path, victim, signum, point, delay):
    """Kills `victim` (None: the launcher) with signum at `point` of a run, `delay` s after it; checks that
    nothing of the run is left and that the launcher ended with one line (none after its own SIGKILL).

    The tasks' own output is not judged here: how a task stopped mid-start reports it is the
    training scripts' rule, not the launcher's."""
    run = _LaunchedRun(tmp_path / f"ae-{os.getpid()}-{time.monotonic_ns()}")
    try:
        run.wait_for(KILL_POINTS[point])
        time.sleep(delay)
        run.kill(victim, signum)
        left = run.left_running()
        run.reader.join(timeout=30)
    finally:
        run.close()
    situation = f"{signal.Signals(signum).name} to {victim or 'the launcher'} while {point}"
    assert not left, f"{situation}: still running {left}\n" + "".join(run.lines)[-3000:]
    lines = run.launcher_lines()
    if victim is None and signum == signal.SIGKILL:
        assert run.process.returncode == -signal.SIGKILL and lines == [], situation
    elif victim is None:
        assert run.process.returncode == 128 + signum, situation
        assert lines == [f"[cluster] {signal.Signals(signum).name}: stopping every task\n"], situation
    else:
        name = f"{victim[0]} {victim[1]}"
        assert run.process.returncode != 0, situation
        assert len(lines) == 1 and re.match(
            rf"\[cluster\] .*{name} \(exit \d+\).* failed: stopping every task", lines[0]
        )
    own = "".join(line for line in run.lines if not re.match(r"\[(ps|worker) \d+\] ", line))
    assert "Traceback" not in own, f"{situation}: the launcher's own output:\n{own[-3000:]}"
    print(f"{situation}: nothing left after {run.clean_after:.1f} s")
    return run


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_no_task_outlives_a_launcher_killed_mid_run(tmp_path, signum):
    # The case: the launcher dies without passing a signal on (kill -9), or its terminal
    # closes (SIGHUP); the ps used to serve on for ever.
    run = _kill_and_check(tmp_path, None, signum, "training", 0.5)
    if signum == signal.SIGHUP:  # passed on as SIGTERM: the chief stops and saves, then the ps stops
        out = "".join(run.lines)
        assert re.search(r"^\[worker 0\] SIGTERM: stopped at step \d+/\d+, (saved|nothing new to save)", out, re.M)
        assert "[ps 0] interrupted by SIGTERM; the last saved checkpoint is intact\n" in run.lines


KILL_SITUATIONS = 8


def _kill_situations(seed=19):
    """Who is killed, by which signal, where in the run and how long after: KILL_SITUATIONS of the
    3 x 4 x 3 combinations, drawn so that each victim and each signal comes up twice at least."""
    rng = random.Random(seed)
    victims = [None, ("worker", 1), ("ps", 0)]
    signals = [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT]
    pairs = list(itertools.product(victims, signals))
    rng.shuffle(pairs)
    while not all(sum(v == victim for v, _ in pairs[:KILL_SITUATIONS]) >= 2 for victim in victims):
        rng.shuffle(pairs)
    return [
        (victim, signum, rng.choice(sorted(KILL_POINTS)), rng.uniform(0, 0.5))
        for victim, signum in pairs[:KILL_SITUATIONS]
    ]


@pytest.mark.slow
def test_no_process_of_a_run_outlives_any_kill(tmp_path):
    situations = _kill_situations()
    assert len(situations) == KILL_SITUATIONS
    assert {s[0] for s in situations} == {None, ("worker", 1), ("ps", 0)}
    assert {s[1] for s in situations} == {signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
    for victim, signum, point, delay in situations:
        _kill_and_check(tmp_path, victim, signum, point, delay)


# A stand-in task for the launcher's own rules: starts like a training script, says it is up,
# and on its stop says when it ended (CLOCK_MONOTONIC, the same in every process); a worker
# takes a moment first, as a chief that saves.
FAKE_TASK = """
import json, os, sys, time
from runtime.quiet import guard_startup
guard_startup()
job = json.loads(os.environ["TF_CONFIG"])["task"]["type"]
print("up", flush=True)
try:
    while True:
        time.sleep(0.05)
except BaseException as stop:
    if job == "worker":
        time.sleep(0.3)
    print(f"ended by {stop.name} at {time.monotonic_ns()}", flush=True)
    os._exit(128 + stop.signum)
"""


class _Output:
    """The launcher's output, kept by line; calls `when(lines)` after each write."""

    def __init__(self, when):
        self.lines, self.when = [], when
        self._lock = threading.Lock()

    def write(self, text):
        with self._lock:
            self.lines.append(text)
            lines = list(self.lines)
        self.when(lines)

    def flush(self):
        pass


LAUNCHER_SIGNAL_SITUATIONS = list(
    itertools.product([signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ["a task is up", "every task is up"])
)


@pytest.mark.parametrize(("signum", "moment"), LAUNCHER_SIGNAL_SITUATIONS)
def test_a_signalled_launcher_stops_the_workers_then_the_ps_with_one_line(monkeypatch, signum, moment):
    assert len(LAUNCHER_SIGNAL_SITUATIONS) == 6
    marker = f"fake-task-{os.getpid()}-{time.monotonic_ns()}"
    sent = []

    def when(lines):
        ups = sum(line.endswith("] up\n") for line in lines)
        if not sent and ups >= (1 if moment == "a task is up" else 3):
            sent.append(signum)
            os.kill(os.getpid(), signum)  # the launcher's handler, in this process, only notes it

    out = _Output(when)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    status = cluster.launch(["-c", FAKE_TASK, marker], num_ps=1, num_workers=2, grace=60, out=out)
    name = signal.Signals(signum).name
    passed_on = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
    assert status == 128 + signum
    assert [line for line in out.lines if line.startswith("[cluster]")] == [f"[cluster] {name}: stopping every task\n"]
    ended = {line.split("]")[0][1:]: line for line in out.lines if " ended by " in line}
    assert all(f"ended by {passed_on} at" in line for line in ended.values()), out.lines
    at = {task: int(line.rsplit(" ", 1)[1]) for task, line in ended.items()}
    if "ps 0" in at:  # the ps last: once no worker runs
        assert all(at["ps 0"] > time for task, time in at.items() if task != "ps 0"), out.lines
    assert not _run_processes(marker)  # launch returns once every task it started has ended


# A stand-in launched task: watches its lease from guard_startup on, then waits; with "deaf" it
# ignores SIGTERM, as a task stuck where no signal handler runs.
WATCHING_TASK = """
import signal, sys, time
from runtime.quiet import guard_startup
guard_startup()
if sys.argv[1] == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("watching", flush=True)
try:
    while True:
        time.sleep(0.05)
except BaseException as stop:
    print(f"stopped by {stop.name}", flush=True)
    raise
"""


@pytest.mark.parametrize("hearing", ["listens", "deaf"])
@pytest.mark.parametrize("launcher_gone", ["before the task starts", "while it runs"])
def test_a_launched_task_ends_when_its_lease_ends(tmp_path, launcher_gone, hearing):
    from runtime import quiet

    lease, lease_end = os.pipe()
    if launcher_gone == "before the task starts":
        os.close(lease_end)  # no race: the end of file is there when the task first looks
    env = dict(os.environ, PYTHONPATH=str(REPO), **{quiet.LAUNCHER_FD_ENV: str(lease)})
    task = subprocess.Popen(
        [sys.executable, "-c", WATCHING_TASK, hearing],
        env=env,
        pass_fds=(lease,),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    os.close(lease)
    try:
        if launcher_gone == "while it runs":
            assert task.stdout.readline() == "watching\n"
            os.close(lease_end)
        out = task.communicate(timeout=GONE_WITHIN)[0]
    finally:
        if task.poll() is None:
            task.kill()
    assert task.returncode == 128 + signal.SIGTERM, out
    assert "the cluster launcher is gone: stopping this task\n" in out
    # Its later lines go to /dev/null: nobody reads them once the launcher is gone.
    assert "stopped by" not in out and "Traceback" not in out


@pytest.mark.slow
def test_a_ps_that_hears_from_no_worker_stops_with_one_line(tmp_path):
    spec = cluster.local_cluster(1, 2)  # no worker is ever started
    process = _start(spec, "ps", 0, ["--sample", "--model-dir", str(tmp_path / "ae"), "--ps-idle-timeout", "5"])
    out = process.communicate(timeout=180)[0]
    assert process.returncode == 2, out
    assert out.splitlines()[-1] == (
        "error: ps 0: heard from no training task for 5 s; stopping (start the workers within --ps-idle-timeout, "
        "or raise it)"
    )
    assert "Traceback" not in out


def test_a_training_task_tells_every_ps_it_is_alive_until_it_is_done():
    task, server = _in_process_chief()
    with tf.Graph().as_default(), v1.device(cluster.device_function(task)):
        w = v1.get_variable("w", initializer=tf.ones([3]))
        step = v1.train.get_or_create_global_step()
        optimizer = LearningRateGroups(_Groups({1.0: ["w"]}), [w], 0.1)
        step_op = cluster.train_op(task, tf.reduce_sum(w * w), [w], step, total_steps=2, optimizer=optimizer)
        tokens = cluster._done_queue(0, task.num_replicas).dequeue()
        wait = v1.RunOptions(timeout_in_ms=GONE_WITHIN * 1000)
        with v1.Session(server.target, config=cluster.task_config(task)) as sess:
            sess.run(v1.global_variables_initializer())
            step_op.after_session(sess)
            heard = [int(sess.run(tokens, options=wait)) for _ in range(3)]
            step_op.finish(sess)
            while heard[-1] < 0:
                heard.append(int(sess.run(tokens, options=wait)))
    assert heard[:3] == [-1, -1, -1]  # heartbeats of replica 0, the chief
    assert heard[-1] == 0  # then its done token


@pytest.mark.slow
def test_sync_replicas_end_at_the_requested_step(tmp_path):
    model_dir = tmp_path / "ae"
    result = subprocess.run(
        [sys.executable, "-m", "runtime.cluster", "--ps", "1", "--workers", "2", "--grace", "20", "--"]
        + ["train_autoencoder.py", *TRAIN, "--batch-size", "32", "--sync-replicas", "--model-dir", str(model_dir)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    steps = SAMPLE_TRAIN // 32
    assert result.returncode == 0, result.stdout[-3000:]
    own = {int(worker): int(count) for worker, final, count in OWN_STEPS.findall(result.stdout) if int(final) == steps}
    assert set(own) == {0, 1}
    # One global step takes a gradient from each worker (a few stale ones are dropped).
    assert sum(own.values()) >= 2 * steps - 2
    assert "Traceback" not in result.stdout
    assert int(read_checkpoint(latest_prefix(model_dir))["global_step"]) == steps
    assert json.loads((model_dir / "config.json").read_text())["cluster"]["sync_replicas"] is True


@pytest.mark.slow
def test_killed_chief_resumes_and_the_run_ends_at_the_requested_step(tmp_path):
    spec = cluster.local_cluster(1, 2)
    model_dir = tmp_path / "ae"
    argv = [*TRAIN, "--model-dir", str(model_dir), "--cluster-timeout", "60"]
    processes = {name: _start(spec, *name, argv) for name in (("ps", 0), ("worker", 0), ("worker", 1))}
    try:
        deadline = time.monotonic() + 180
        # Named by the step the chief saw when it crossed 100: other workers may have moved it further.
        while not list(model_dir.glob("model.ckpt-*.index")):
            assert time.monotonic() < deadline and processes["worker", 0].poll() is None, "no checkpoint by step 100"
            time.sleep(0.05)
        processes["worker", 0].send_signal(signal.SIGKILL)
        processes["worker", 0].wait(timeout=30)
        processes["worker", 0] = _start(spec, "worker", 0, argv)
        outputs = {name: process.communicate(timeout=300)[0] for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    codes = {name: process.returncode for name, process in processes.items()}
    assert codes == {("ps", 0): 0, ("worker", 0): 0, ("worker", 1): 0}, outputs
    resumed = re.search(r"resumed from \S+model\.ckpt-(\d+) at step (\d+)", outputs["worker", 0])
    # Rolled back to its checkpoint: the step stored there, which other workers may have moved
    # a few steps past the one in its name while it was written.
    assert resumed and STEPS > int(resumed.group(2)) >= int(resumed.group(1)) >= 100
    assert f"done: step {STEPS}" in outputs["worker", 0]
    assert int(read_checkpoint(latest_prefix(model_dir))["global_step"]) == STEPS


# --- train_transfer.py in a cluster -----------------------------------------------------------------

TRANSFER_BATCH = 32
TRANSFER_STEPS = 10 * (200 // TRANSFER_BATCH)  # 10 epochs of 20 labels per class: 60 global steps
TRANSFER = ["--sample", "--restore", "conv", "--labels-per-class", "20", "--epochs", "10"]
TRANSFER += ["--batch-size", str(TRANSFER_BATCH), "--summary-every", "20"]
FIRST_READ = (
    r"^\[worker {0}\] worker {0}: first read of (\d+) (restored|frozen restored) variables equals the checkpoint"
)


def _launch_transfer(argv, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "runtime.cluster", "--ps", "1", "--workers", "2", "--grace", "20", "--"]
        + ["train_transfer.py", *argv, "--cluster-timeout", "60"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def transfer_launched(launched, tmp_path_factory):
    """--restore conv (frozen, head on cached features) from the cluster's autoencoder, in a cluster and locally."""
    _, ae_dir = launched
    root = tmp_path_factory.mktemp("cluster_transfer")
    argv = [*TRANSFER, "--checkpoint", str(ae_dir)]
    result = _launch_transfer([*argv, "--model-dir", str(root / "cluster")])
    local = invoke(train_transfer.main, [*argv, "--model-dir", str(root / "local")])
    return result, root / "cluster", local, root / "local", latest_prefix(ae_dir)


@pytest.mark.slow
def test_transfer_cluster_restores_before_every_worker_s_first_step(transfer_launched):
    result, model_dir, _, _, _ = transfer_launched
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-2000:]
    for worker in (0, 1):
        read = re.search(FIRST_READ.format(worker), out, re.M)
        assert read and read.groups() == ("4", "restored"), out[-3000:]  # conv1 and conv2, frozen
        assert f"[worker {worker}] worker {worker}: done at global step {TRANSFER_STEPS}" in out
    assert "[worker 0] frozen check: 4 variables, max |diff| = 0" in out
    assert "[ps 0] ps 0: every training task is done; exiting" in out
    # The plan is the chief's to print; the other worker computed it silently.
    assert "[worker 0] restore plan" in out and "[worker 1] restore plan" not in out
    assert "[worker 1] epoch 1: val accuracy" not in out  # only the chief evaluates
    own = re.findall(r"^\[worker (\d)\] worker \d: done at global step \d+, (\d+) steps of its own", out, re.M)
    assert sorted(int(worker) for worker, _ in own) == [0, 1]
    assert sum(int(steps) for _, steps in own) == TRANSFER_STEPS
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["frozen_check_max_abs_diff"] == 0.0 and metrics["frozen_check_variables"] == 4
    assert metrics["global_step"] == TRANSFER_STEPS and metrics["cache_features"] is True
    assert metrics["cluster"]["spec"]["worker"] and metrics["own_steps"] > 0


@pytest.mark.slow
def test_transfer_cluster_chief_evaluates_every_epoch_at_its_boundary(transfer_launched):
    # The workers wait at each epoch's last step until the chief has evaluated it: every epoch
    # is evaluated, at exactly its step, on weights no other worker changes while it reads them.
    result, model_dir, _, _, _ = transfer_launched
    assert result.returncode == 0, result.stdout[-3000:]
    per_epoch = TRANSFER_STEPS // 10
    evaluated = re.findall(r"^\[worker 0\] epoch (\d+): val accuracy", result.stdout, re.M)
    assert evaluated == [str(epoch) for epoch in range(1, 11)]
    events = [event for event in read_events(model_dir) if any(v.tag == "accuracy/val" for v in event.summary.value)]
    assert [event.step for event in events] == [per_epoch * epoch for epoch in range(1, 11)]
    best = json.loads((model_dir / "best" / "best.json").read_text())
    assert best["step"] == per_epoch * best["epoch"]


@pytest.mark.slow
def test_ps_lost_while_the_chief_evaluates_is_a_clear_error_on_every_worker(launched, tmp_path):
    # Killed right after the chief's first evaluation: the chief is at its epoch boundary and
    # the other worker waits there for it, two places outside a training step.
    _, ae_dir = launched
    spec = cluster.local_cluster(1, 2)
    argv = [*TRANSFER, "--checkpoint", str(ae_dir), "--model-dir", str(tmp_path / "t"), "--cluster-timeout", "10"]
    tasks = {name: _start(spec, *name, argv, script="train_transfer.py") for name in (("ps", 0), ("worker", 0))}
    tasks["worker", 1] = _start(spec, "worker", 1, argv, script="train_transfer.py")
    try:
        _wait_for_line(tasks["worker", 0], r"^epoch 1: val accuracy", [])
        tasks["ps", 0].kill()
        outputs = {name: tasks[name].communicate(timeout=120)[0] for name in (("worker", 0), ("worker", 1))}
    finally:
        for process in tasks.values():
            if process.poll() is None:
                process.kill()
    for (_, index), out in outputs.items():
        assert tasks["worker", index].returncode == 2, out
        assert f"error: worker {index}: lost ps 0 at {spec['ps'][0]}, which no longer accepts connections" in out
        assert "Traceback" not in out


@pytest.mark.slow
def test_transfer_cluster_writes_what_a_local_run_writes(transfer_launched):
    result, model_dir, local, local_dir, source = transfer_launched
    assert result.returncode == 0 and local.code == 0, local.err
    for name in ("config.json", "metrics.json", "labels.txt", "restore_plan.json", "best/best.json"):
        assert (model_dir / name).is_file(), name
    assert len(list(model_dir.glob("events.out.tfevents.*"))) == 1  # one writer: the chief's
    config = json.loads((model_dir / "config.json").read_text())
    assert config["cluster"]["sync_replicas"] is False and "ps_hosts" not in config and "job_name" not in config
    assert "cluster" not in json.loads((local_dir / "config.json").read_text())
    # The same variables, names and shapes (optimizer slots included): the checkpoint is a public interface.
    stored, local_stored = read_checkpoint(latest_prefix(model_dir)), read_checkpoint(latest_prefix(local_dir))
    assert {k: v.shape for k, v in stored.items()} == {k: v.shape for k, v in local_stored.items()}
    assert int(stored["global_step"]) == TRANSFER_STEPS
    expected = read_checkpoint(source)
    for name in CONV_NAMES:  # frozen on the ps: bit for bit the autoencoder's
        np.testing.assert_array_equal(stored[name], expected[name])
    assert not np.array_equal(stored["fc1/kernel"], local_stored["fc1/kernel"])  # two workers' updates differ


@pytest.mark.slow
def test_transfer_cluster_accuracy_against_a_single_process(transfer_launched, record_property):
    result, model_dir, local, local_dir, _ = transfer_launched
    cluster_accuracy = json.loads((model_dir / "metrics.json").read_text())["test_accuracy"]
    local_accuracy = json.loads((local_dir / "metrics.json").read_text())["test_accuracy"]
    assert f"[worker 0] test accuracy: {cluster_accuracy:.4f} (500 images)" in result.stdout
    assert f"test accuracy: {local_accuracy:.4f} (500 images)" in local.out
    record_property("test_accuracy_cluster", cluster_accuracy)
    record_property("test_accuracy_local", local_accuracy)
    print(f"test accuracy after {TRANSFER_STEPS} steps: cluster {cluster_accuracy:.4f}, local {local_accuracy:.4f}")
    # 60 steps are too few for the 1-point criterion (docs/CLUSTER.md has a longer run); both must have learnt.
    assert cluster_accuracy > 0.3 and local_accuracy > 0.3


@pytest.mark.slow
def test_fine_tuned_transfer_cluster_resumes_without_the_source(launched, tmp_path):
    _, ae_dir = launched
    model_dir = tmp_path / "ft"
    # conv1 frozen, conv2 fine-tuned at 0.1x: two Adam groups, the full forward pass on every worker.
    argv = [*TRANSFER, "--checkpoint", str(ae_dir), "--fine-tune", "--lr-mult", "conv1=0", "--lr-mult", "conv2=0.1"]
    first = _launch_transfer([*argv, "--epochs", "2", "--model-dir", str(model_dir)])
    assert first.returncode == 0, first.stdout[-3000:]
    assert "inside the init op" in first.stdout
    assert "[worker 0] frozen check: 2 variables, max |diff| = 0" in first.stdout
    second = _launch_transfer([*argv, "--epochs", "4", "--model-dir", str(model_dir)])
    out = second.stdout
    assert second.returncode == 0, out[-3000:]
    assert re.search(r"^\[worker 0\] resumed from \S+model\.ckpt-12: its weights win", out, re.M), out[-3000:]
    assert "inside the init op" not in out  # the source is not applied again over trained weights
    for worker in (0, 1):  # joined at step 12: the fine-tuned conv2 has moved, the frozen conv1 has not
        read = re.search(FIRST_READ.format(worker), out, re.M)
        assert read and read.groups() == ("2", "frozen restored"), out[-3000:]
    assert "[worker 0] frozen check: 2 variables, max |diff| = 0" in out
    stored, source = read_checkpoint(latest_prefix(model_dir)), read_checkpoint(latest_prefix(ae_dir))
    assert int(stored["global_step"]) == 24
    assert {"conv2/kernel/Adam_x0.1", "fc1/kernel/Adam"} <= set(stored) and "conv1/kernel/Adam" not in stored
    np.testing.assert_array_equal(stored["conv1/kernel"], source["conv1/kernel"])
    assert not np.array_equal(stored["conv2/kernel"], source["conv2/kernel"])


class _Groups:
    """What LearningRateGroups asks of a plan: {multiplier: variable names}, and no adapted rows."""

    adapted = ()

    def __init__(self, groups):
        self._groups = groups

    def lr_groups(self):
        return self._groups


def test_learning_rate_groups_train_each_group_at_its_rate():
    with tf.Graph().as_default():
        a = v1.get_variable("a", initializer=tf.ones([3]))
        b = v1.get_variable("b", initializer=tf.ones([3]))
        step = v1.train.get_or_create_global_step()
        loss = tf.reduce_sum(a * 2.0) + tf.reduce_sum(b * 3.0)
        optimizer = LearningRateGroups(_Groups({1.0: ["a"], 0.1: ["b"]}), [a, b], 0.01)
        assert [var.op.name for var in optimizer.var_list] == ["a", "b"]  # the larger rate first
        grads = optimizer.compute_gradients(loss, var_list=optimizer.var_list)  # as SyncReplicasOptimizer asks
        train = optimizer.apply_gradients(grads, step)
        slots = {var.op.name for var in v1.global_variables()} - {"a", "b", "global_step"}
        assert {"a/Adam", "a/Adam_1", "b/Adam_x0.1", "b/Adam_x0.1_1"} <= slots
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train)
            moved_a, moved_b = 1.0 - sess.run(a), 1.0 - sess.run(b)
            assert int(sess.run(step)) == 1
    # Adam's steps are about the learning rate whatever the gradient's scale: 0.01 and 0.001.
    np.testing.assert_allclose(moved_a, 0.01, rtol=0.05)
    np.testing.assert_allclose(moved_b, 0.001, rtol=0.05)


def _in_process_chief():
    """Worker 0 of a 1 ps + 1 worker cluster, both servers in this process: (task, its server)."""
    spec = cluster.local_cluster(1, 1)
    task = _task(_config("worker", 0, spec))
    cluster.start_server(_task(_config("ps", 0, spec)))
    return task, cluster.start_server(task)


def test_a_ticket_past_the_limit_changes_no_variable_and_is_given_back():
    # A chief's asynchronous train op with an epoch limit of 2, over in-process servers.
    task, server = _in_process_chief()
    with tf.Graph().as_default(), v1.device(cluster.device_function(task)):
        w = v1.get_variable("w", initializer=tf.ones([3]))
        mean = v1.get_variable("moving_mean", initializer=tf.zeros([3]), trainable=False)
        step = v1.train.get_or_create_global_step()
        update = mean.assign_add(tf.ones([3]))  # stands for BatchNorm's moving statistics
        step_op = cluster.train_op(
            task,
            tf.reduce_sum(w * w),
            [w],
            step,
            total_steps=4,
            optimizer=LearningRateGroups(_Groups({1.0: ["w"]}), [w], 0.1, extra_updates=[update]),
            hold_every=2,
        )
        with v1.Session(server.target, config=cluster.task_config(task)) as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(step_op.local_init_op)  # the limit, from the initialised global step
            state = lambda: sess.run({var.op.name: var for var in v1.global_variables()})  # noqa: E731
            for expected in (1, 2):
                assert sess.run(step_op.fetches + [step_op.op])[:2] == [expected, True]
            before = state()
            assert sess.run(step_op.fetches + [step_op.op])[:2] == [2, False]  # ticket 3 > limit 2
            after = state()
    assert set(after) == set(before) and {"w/Adam", "w/Adam_1", "beta1_power"} <= set(after)
    for name, value in before.items():  # the weights, Adam's moments and its powers
        if name != "moving_mean":
            np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert not np.array_equal(before["w"], np.ones(3))
    # Updates made outside the optimizer run with every step, counted or not (docs/CLUSTER.md).
    assert before["moving_mean"].tolist() == [2.0] * 3 and after["moving_mean"].tolist() == [3.0] * 3


@contextlib.contextmanager
def _chief_of_a_two_step_run():
    """The chief's asynchronous step of a run of 2 global steps, over in-process servers, with
    another worker's ticket to take and give back by hand; yields them as a namespace."""
    task, server = _in_process_chief()
    with tf.Graph().as_default(), v1.device(cluster.device_function(task)):
        w = v1.get_variable("w", initializer=tf.ones([3]))
        step = v1.train.get_or_create_global_step()
        loss = tf.reduce_sum(w * w)
        optimizer = LearningRateGroups(_Groups({1.0: ["w"]}), [w], 0.1)
        step_op = cluster.train_op(task, loss, [w], step, total_steps=2, optimizer=optimizer)
        other_takes, other_gives_back = step.assign_add(1), step.assign_sub(1)
        with v1.Session(server.target, config=cluster.task_config(task)) as sess:
            sess.run(v1.global_variables_initializer())
            yield types.SimpleNamespace(
                sess=sess,
                step=step,
                loss=loss,
                step_op=step_op,
                other_takes=other_takes,
                other_gives_back=other_gives_back,
            )


def _step_while_the_other_ticket_comes_back(chief, sess):
    """One step of the chief through `sess`, the other worker's ticket given back 0.3 s into it."""
    timer = threading.Timer(0.3, lambda: chief.sess.run(chief.other_gives_back))
    timer.start()
    try:
        return chief.step_op.run(sess, [chief.loss])
    finally:
        timer.join()


def test_a_refused_ticket_at_the_end_reports_the_total_once_the_others_are_back():
    # The chief's ticket past the end while another worker's refused ticket is still out: the
    # step it reports is the total, not total + 1 (its last epoch's evaluation is logged there).
    with _chief_of_a_two_step_run() as chief:
        assert [chief.step_op.run(chief.sess, [chief.loss])[1:] for _ in range(2)] == [(1, True), (2, True)]
        chief.sess.run(chief.other_takes)  # another worker's ticket 3, refused, not yet given back
        _, reached, counted = _step_while_the_other_ticket_comes_back(chief, chief.sess)
    assert (reached, counted) == (2, False)


class _ReadAfterAnotherTicket:
    """A chief's session whose next step reads the global step just after another worker took a
    ticket past the end: the interleaving of two tasks that one process cannot make happen."""

    def __init__(self, sess, other_takes):
        self.sess, self.other_takes, self.pending = sess, other_takes, True

    def run(self, fetches, *args, **kwargs):
        values = self.sess.run(fetches, *args, **kwargs)
        if self.pending and isinstance(fetches, list):
            self.pending = False
            self.sess.run(self.other_takes)
            values[-2] += 1  # this step's own ticket counted; its read comes after the other one
        return values


def test_a_counted_ticket_read_after_a_refused_one_reports_the_total():
    # The chief's last ticket counts, but another worker's ticket past the end lands before the
    # chief reads the global step: the step it reports is still the total once that one is back.
    with _chief_of_a_two_step_run() as chief:
        assert chief.step_op.run(chief.sess, [chief.loss])[1:] == (1, True)
        late_read = _ReadAfterAnotherTicket(chief.sess, chief.other_takes)
        _, reached, counted = _step_while_the_other_ticket_comes_back(chief, late_read)
        final = chief.sess.run(chief.step)
    assert (reached, counted, final) == (2, True, 2)


@pytest.mark.parametrize(("given", "kept"), [(None, "true"), ("false", "false"), ("use_caller", "use_caller")])
def test_cluster_tasks_fail_fast_unless_the_user_chose(given, kept):
    environ = {} if given is None else {cluster.FAIL_FAST_ENV: given}
    cluster.fail_fast(environ)
    assert environ == {cluster.FAIL_FAST_ENV: kept}


def test_a_ps_task_of_a_dry_run_does_not_serve(monkeypatch, tmp_path):
    # No worker of a dry run ever says it is done: a ps that served would wait for ever.
    def serve(task):
        raise AssertionError(f"{task.name} served a dry run")

    monkeypatch.setattr(cluster, "serve", serve)
    monkeypatch.setenv(cluster.ENV, _config("ps", 0))
    model_dir = tmp_path / "never"
    run = invoke(train_transfer.main, ["--sample", "--dry-run", "--restore", "none", "--model-dir", model_dir])
    assert run.code == 0, run.err
    assert not model_dir.exists()


def test_first_read_check_names_the_worker_whose_restore_did_not_arrive(capsys):
    from types import SimpleNamespace

    from transfer.train import check_first_read, first_read

    task = _task(_config("worker", 1))
    row = SimpleNamespace(name="conv1/kernel", source="encoder/conv1/kernel")
    plan = SimpleNamespace(restored=[row], frozen_restored=[row], checkpoint="/runs/ae/model.ckpt-70")
    with tf.Graph().as_default():
        kernel = v1.get_variable("conv1/kernel", initializer=tf.fill([2, 2], 0.25))
        graph = SimpleNamespace(model_variables=[kernel], global_step=v1.train.get_or_create_global_step())
        fetches = first_read(plan, graph)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            check_first_read(sess, task, plan, fetches, {"encoder/conv1/kernel": np.full([2, 2], 0.25, np.float32)})
            with pytest.raises(UserError) as caught:
                check_first_read(sess, task, plan, fetches, {"encoder/conv1/kernel": np.zeros([2, 2], np.float32)})
    out = capsys.readouterr().out
    assert "worker 1: first read of 1 restored variables equals the checkpoint (global step 0)" in out
    assert str(caught.value) == (
        "worker 1: its first read of the restored variables differs from /runs/ae/model.ckpt-70 by up to 0.25: "
        "the restore did not reach it"
    )


def test_a_source_the_ps_cannot_read_is_named(tmp_path):
    from types import SimpleNamespace

    from transfer.train import init_from_source, initialise_from_source

    prefix = write_checkpoint(tmp_path / "ae" / "model.ckpt-1", {"conv1/bias": np.arange(4)})
    plan = SimpleNamespace(checkpoint=prefix, adapted=(), restore_names=lambda: {"conv1/bias": "conv1/bias"})
    with tf.Graph().as_default():
        bias = v1.get_variable("conv1/bias", initializer=tf.zeros([4]))
        init_from_source(plan, [bias])  # reads the names and shapes here, in the worker
        init = v1.global_variables_initializer()
        with v1.Session() as sess:
            initialise_from_source(sess, init, plan)
            np.testing.assert_array_equal(sess.run(bias), np.arange(4))  # restored by the init op itself
            for data in (tmp_path / "ae").glob("model.ckpt-1.data-*"):
                data.unlink()  # what a ps host that does not share the path sees
            with pytest.raises(CheckpointError) as caught:
                initialise_from_source(sess, init, plan)
    assert str(caught.value).startswith(f"the ps tasks cannot read the transfer source {prefix} (")
    assert "\n" not in str(caught.value)


def test_a_port_that_closes_during_the_checks_is_gone():
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    assert not session_module._gone(address, checks=2, pause=0.01)  # listening throughout
    closer = threading.Timer(0.1, listener.close)
    closer.start()
    try:
        assert session_module._gone(address, checks=50, pause=0.01)
    finally:
        closer.join()
    assert not session_module._reachable(address)


def _digit_classifier_checkpoint(folder):
    """A digit classifier's checkpoint (random weights, head included) and its labels file, in folder."""
    network = networks.get("cae")
    with tf.Graph().as_default():
        network.build(tf.compat.v1.placeholder(tf.float32, network.input_shape()), num_classes=10)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(sess, str(folder / "model.ckpt"))
    (folder / "labels.txt").write_text("".join(f"{digit}\n" for digit in range(10)))
    return folder


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--channels", "2"], "conv1/kernel is adapted to other input channels (--adapt-channels), which only a local"),
        (
            ["--restore", "backbone", "--keep-classes", "--source-labels", "LABELS"],
            "--keep-classes writes the head's rows",
        ),
    ],
    ids=["adapted", "keep-classes"],
)
def test_rows_only_a_local_restore_writes_are_refused_before_a_cluster_starts(monkeypatch, tmp_path, flags, message):
    # The chief's dry run reaches the plan and no server: the refusal comes before any task serves or joins.
    source = _digit_classifier_checkpoint(tmp_path)
    flags = ["--sample", "--dry-run", "--checkpoint", str(source), *flags]
    flags = [str(source / "labels.txt") if flag == "LABELS" else flag for flag in flags]
    model_dir = tmp_path / "never"
    monkeypatch.setenv(cluster.ENV, _config("worker", 0))
    run = invoke(train_transfer.main, [*flags, "--model-dir", model_dir])
    assert run.code == 2 and run.err.startswith(f"error: {message}"), run.err
    assert len(run.err.strip().splitlines()) == 1
    assert not model_dir.exists()
    monkeypatch.delenv(cluster.ENV)
    local = invoke(train_transfer.main, [*flags, "--model-dir", model_dir])
    assert local.code == 0, local.err  # the same flags plan a local run
