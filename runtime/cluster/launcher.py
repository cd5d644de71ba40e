"""The local launcher: `python -m runtime.cluster --ps 1 --workers 2 -- SCRIPT ARGS` runs a
whole cluster on this machine's loopback interface, each task a subprocess holding the
read end of the launcher's lease pipe, so that no task outlives the launcher (`launch`).
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from runtime.cluster.spec import ENV, tf_config
from runtime.options import Flags, Option
from runtime.quiet import LAUNCHER_FD_ENV

# What the launcher stops on; a hang-up (its terminal closed) stops the tasks as SIGTERM does.
_LAUNCHER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def free_ports(count, host="127.0.0.1"):
    """`count` distinct ports free on host right now (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def local_cluster(num_ps, num_workers, host="127.0.0.1"):
    """A cluster spec of num_ps ps and num_workers worker tasks on free ports of host."""
    ports = free_ports(num_ps + num_workers, host)
    return {
        "ps": [f"{host}:{port}" for port in ports[:num_ps]],
        "worker": [f"{host}:{port}" for port in ports[num_ps:]],
    }


def _say(out, text):
    """Writes to the launcher's output; a terminal that is gone (SIGHUP) or a closed pipe is no error."""
    try:
        out.write(text)
        out.flush()
    except (OSError, ValueError):
        pass


class _Task:
    def __init__(self, job, index, command, env, out, lease):
        self.job, self.index = job, index
        self.label = f"[{job} {index}] "
        self.process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our own signals reach it, once: the launcher forwards them
            pass_fds=(lease,),  # the read end of the lease: it ends when the launcher does (launch)
        )
        self.reader = threading.Thread(target=self._copy, args=(out,), daemon=True)
        self.reader.start()

    def _copy(self, out):
        # Read to the end even when `out` is gone, so that the task never blocks on a full pipe.
        for raw in iter(self.process.stdout.readline, b""):
            _say(out, self.label + raw.decode("utf-8", "backslashreplace"))

    @property
    def name(self):
        return f"{self.job} {self.index}"

    def signal(self, signum):
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, signum)
            except ProcessLookupError:
                pass


def launch(script_argv, num_ps=1, num_workers=2, host="127.0.0.1", grace=30.0, out=None, python=None):
    """Runs one cluster on this machine: every task a subprocess of script_argv with its TF_CONFIG.

    Each task's output is prefixed with its name ("[worker 0] "). SIGINT is forwarded to every
    task, SIGTERM and SIGHUP (the terminal closed) as SIGTERM, with one line; a second signal
    kills them. When a task fails, every other one is stopped. A stop reaches the ps tasks once
    the training tasks have ended (the chief saves as it stops). When the chief ends or the
    tasks were told to stop, they get `grace` seconds to end on their own, then are killed.

    No task outlives the launcher, however it ends: each holds the read end of a pipe whose
    write end only the launcher holds, and a task's `runtime.quiet.watch_launcher` stops it
    at that pipe's end of file, which the kernel brings when the launcher exits, by SIGKILL too.

    Returns:
      128 + the signal's number after a signal; else the chief's exit status (128 + n for a
      signal, as a shell reports it), or, when another task failed first and the launcher
      stopped the chief, that task's status.
    """
    out = sys.stdout if out is None else out
    spec = local_cluster(num_ps, num_workers, host)
    python = python or sys.executable
    tasks = []
    received = []
    # The handler only notes the signal; the loop below passes it on, so that a task started
    # while it arrived is not missed.
    previous = {signum: signal.signal(signum, lambda n, f: received.append(n)) for signum in _LAUNCHER_SIGNALS}
    lease, lease_end = os.pipe()  # neither is inherited, but the read end by the tasks it is passed to
    try:
        for job, index, env in _task_environments(spec, lease):
            if received:
                break
            tasks.append(_Task(job, index, [python, *script_argv], env, out, lease))
        os.close(lease)
        lease = None
        watch = _Watch(tasks, received, out, grace)
        while not watch.ended():
            time.sleep(0.1)
            watch.check()
        for task in tasks:
            task.reader.join(timeout=5)
        return 128 + received[0] if received else watch.status()
    finally:
        for task in tasks:
            task.signal(signal.SIGKILL)
        for fd in (lease, lease_end):
            if fd is not None:
                os.close(fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Watch:
    """The launcher's loop over its tasks: signals passed on, failures, the grace before a kill.

    Args:
      tasks: the started _Task list.
      received: the signal numbers the launcher's handler notes, in order (it keeps appending).
      out: where the launcher's lines go.
      grace: seconds the tasks get to end on their own once told to stop, or once the chief ended.
    """

    def __init__(self, tasks, received, out, grace):
        self.tasks, self.received, self.out, self.grace = tasks, received, out, grace
        self.chief = next((task for task in tasks if task.job == "worker" and task.index == 0), None)
        self.forwarded = 0  # how many of the received signals were passed on
        self.stop_at, self.since = None, None  # when the tasks' grace began, and after what
        self.ps_stop = None  # the signal the ps tasks get once no training task runs
        self.first_failure = None

    def ended(self):
        """Passes on a new signal (and a stop due to the ps tasks); whether the loop is over."""
        tasks, received = self.tasks, self.received
        if self.forwarded < len(received):
            if self.forwarded == 0:
                self.stop_at, self.since = time.monotonic(), signal.Signals(received[0]).name
            self.ps_stop = _forward(received, self.forwarded, tasks, self.out) or self.ps_stop
            self.forwarded += 1
        if self.ps_stop is not None and not any(t.process.poll() is None for t in tasks if t.job != "ps"):
            for task in tasks:
                task.signal(self.ps_stop)
            self.ps_stop = None
        if any(task.process.poll() is None for task in tasks):
            return False
        # Every task may have exited between two polls on a loaded machine: a failure
        # nobody reported yet still gets its line (check) before the loop ends.
        return self.stop_at is not None or bool(received) or all(t.process.returncode == 0 for t in tasks)

    def check(self):
        """Stops every task when one failed; starts the grace when the chief ended; kills after it."""
        tasks, out = self.tasks, self.out
        failed = [t for t in tasks if t.process.poll() not in (None, 0)]
        if failed and self.stop_at is None and not self.received:
            if self.chief.process.poll() in (
                None,
                0,
            ):  # the chief is stopped by us (or done): the failure is the status
                self.first_failure = _status(failed[0].process.returncode)
            names = ", ".join(f"{t.name} (exit {_status(t.process.returncode)})" for t in failed)
            _say(out, f"[cluster] {names} failed: stopping every task\n")
            self.ps_stop = _stop_training(tasks, signal.SIGTERM)
            self.stop_at, self.since = time.monotonic(), "the failure"
        if self.stop_at is None and self.chief.process.poll() is not None:  # (no chief: a signal came first)
            self.stop_at, self.since = time.monotonic(), "the chief"
        if self.stop_at is not None and time.monotonic() - self.stop_at > self.grace:
            for task in tasks:
                if task.process.poll() is None:
                    _say(out, f"[cluster] {task.name} still runs {self.grace:g} s after {self.since}: killing it\n")
                    task.signal(signal.SIGKILL)

    def status(self):
        """The launcher's status when no signal came: the first failure's, else the chief's."""
        return self.first_failure if self.first_failure is not None else _status(self.chief.process.returncode)


def _stop_training(tasks, signum):
    """Sends signum to the training tasks; returns it for the ps tasks, which are to get it once
    those have ended: a chief that saves as it stops still has its ps to save from."""
    for task in tasks:
        if task.job != "ps":
            task.signal(signum)
    return signum


def _forward(received, forwarded, tasks, out):
    """Passes the launcher's signal number `forwarded` on: the first one with a line, to the
    training tasks (SIGINT as SIGINT, SIGTERM and SIGHUP as SIGTERM), returning it for the ps
    tasks (`_stop_training`); any later one to every task as SIGKILL, with a line the first time.
    """
    name = signal.Signals(received[forwarded]).name
    if forwarded == 0:
        _say(out, f"[cluster] {name}: stopping every task\n")
        return _stop_training(tasks, signal.SIGINT if received[0] == signal.SIGINT else signal.SIGTERM)
    if forwarded == 1:
        _say(out, f"[cluster] {name} again: killing every task\n")
    for task in tasks:
        task.signal(signal.SIGKILL)
    return None


def _task_environments(spec, lease):
    """(job, index, environment) of every task of `spec`, ps first: this process's environment,
    its TF_CONFIG and the number of the lease's file descriptor."""
    for job in ("ps", "worker"):
        for index in range(len(spec[job])):
            extra = {ENV: tf_config(spec, job, index), "PYTHONUNBUFFERED": "1", LAUNCHER_FD_ENV: str(lease)}
            yield job, index, dict(os.environ, **extra)


def _status(returncode):
    return 128 - returncode if returncode < 0 else returncode


LAUNCHER = Flags(
    (
        Option("--ps", type=int, default=1, help="parameter-server tasks (default: %(default)s)"),
        Option("--workers", type=int, default=2, help="worker tasks; worker 0 is the chief (default: %(default)s)"),
        Option(
            "--grace",
            type=float,
            default=30.0,
            help="seconds the other tasks may run on after the chief ended, a task failed or the launcher was "
            "signalled, before they are killed (default: %(default)s)",
        ),
        Option("script", nargs=argparse.REMAINDER, help="-- then the script and its flags"),
    )
)


def main(argv=None):
    parser = LAUNCHER.parser(
        prog="python -m runtime.cluster",
        description="Run a training script as a TensorFlow cluster on this machine (loopback ports): "
        "python -m runtime.cluster --ps 1 --workers 2 -- train_autoencoder.py ARGS...",
    )
    args = parser.parse_args(argv)
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        parser.error("give the script to run after --, e.g. -- train_autoencoder.py --sample")
    if not 1 <= args.ps <= 64 or not 1 <= args.workers <= 64:
        parser.error(f"--ps and --workers must be from 1 to 64, got {args.ps} and {args.workers}")
    return launch(script, args.ps, args.workers, grace=args.grace)
