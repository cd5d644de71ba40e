"""The first moments of an entry point: signals, terminal output, and a quiet TensorFlow import."""

import argparse
import atexit
import contextlib
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time

from runtime import onednn
from runtime.errors import Stopped
from runtime.native_stderr import native_stderr_silenced  # also imported from here by the toolkit

# The oneDNN line is printed once per process, however many entry points run in it.
_REPORTED = []

# The cluster launcher's lease: the number of a file descriptor, the read end of a pipe
# whose write end only the launcher holds (runtime.cluster.launch).
LAUNCHER_FD_ENV = "CAE_TRANSFER_LAUNCHER_FD"
LAUNCHER_GONE_GRACE = 5.0  # seconds a task whose launcher is gone has to stop before it exits at once


# The signal numbers `guard_startup`'s handler raised `Stopped` for.
_STOPPING = []
# What the line of a stopped entry point says is safe (guard_startup's `kept`).
CHECKPOINT_KEPT = "the last saved checkpoint is intact"
OUTPUT_KEPT = "the output is whole or as it was before (written in a staging folder, swapped in at the end)"
_KEPT = [CHECKPOINT_KEPT]


def _raise_stopped(signum, frame):
    if _STOPPING:  # a second signal while the first unwinds: leave at once
        print(f"{signal.Signals(signum).name} again: exiting at once", file=sys.stderr)
        exit_now(128 + signum)
    _STOPPING.append(signum)
    raise Stopped(signum)


def pending_stop():
    """The signal `guard_startup` raised `Stopped` for, or None.

    A raised `Stopped` does not always reach the entry point: raised while a C++ extension
    module initialises (TensorFlow's pybind11 modules, imported on the way), it comes out
    as an ImportError ("initialization failed"), which an optional import's
    `except ImportError` may swallow, and the process would run on as if no signal came.
    The entry point asks again here once the imports are done, and when the training loop
    takes the signals over (`stop_if_signalled`); an error that escapes while a stop is
    pending is reported as that stop.
    """
    return _STOPPING[0] if _STOPPING else None


def stop_if_signalled():
    """Raises `Stopped` again for a signal whose first `Stopped` was lost on the way (pending_stop)."""
    if _STOPPING:
        raise Stopped(_STOPPING[0])


def exit_now(code):
    """Ends an entry point with `code` without interpreter shutdown.

    After an interruption or an error TensorFlow's threads (tf.data, the session's pools)
    may still be running; Python's shutdown then kills them inside C++ code that catches
    the forced unwinding, and the process aborts ("FATAL: exception not rethrown").
    Everything of ours is closed by then, so only the terminal streams need flushing and
    the process's temporary folder removing (its exit handlers do not run).
    """
    with contextlib.suppress(OSError, ValueError):  # a reader that is gone, a stream closed
        sys.stdout.flush()
        sys.stderr.flush()
    remove_temporary_folder()
    os._exit(code)


# The process's own temporary folder (guard_startup), removed on the way out.
_TEMPORARY = []


def _own_temporary_folder():
    """Points the tempfile module at a folder of this process's own, removed however it exits but SIGKILL.

    Libraries write there without a word: AutoGraph a module for each function it converts
    (SavedModel and TFLite export convert theirs), removed by exit handlers that an exit
    by `exit_now` skips; so every interrupted run left them in the system's temporary folder.
    """
    if _TEMPORARY:
        return
    folder = tempfile.mkdtemp(prefix="cae-transfer-")
    _TEMPORARY.append(folder)
    tempfile.tempdir = folder
    atexit.register(remove_temporary_folder)


def remove_temporary_folder():
    """Removes the folder _own_temporary_folder made (nothing without one)."""
    for folder in _TEMPORARY:
        shutil.rmtree(folder, ignore_errors=True)


def exit_on_failure(code):
    """Ends an entry point that returned a non-zero `code` at once (exit_now); returns on 0.

    An error or a signal may leave TensorFlow's threads running, which interpreter
    shutdown would abort on; a clean run shuts down as usual.
    """
    if code:
        exit_now(code)


def interrupted_line(signum):
    """The one line an entry point stopped by signum ends with."""
    return f"interrupted by {signal.Signals(signum).name}; {_KEPT[0]}"


def _excepthook(kind, value, traceback):
    if isinstance(value, (Stopped, KeyboardInterrupt)) or _STOPPING:
        signum = getattr(value, "signum", _STOPPING[0] if _STOPPING else signal.SIGINT)
        print(interrupted_line(signum), file=sys.stderr)
        exit_now(128 + signum)
    if isinstance(value, BrokenPipeError):
        # Whoever read the output is gone (`| head`): end as a process killed by SIGPIPE
        # would, without a word, rather than with a traceback about it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        exit_now(128 + signal.SIGPIPE)
    sys.__excepthook__(kind, value, traceback)


def _thread_excepthook(args):
    # TensorBoard's event-writer thread re-raises a write failure (a full disk) in the main
    # thread at the next write, which reports it in one line: its own traceback is noise.
    if type(args.thread).__name__ == "_EventLoggerThread":
        return
    threading.__excepthook__(args)


def guard_startup(kept=CHECKPOINT_KEPT):
    """Makes SIGINT and SIGTERM end an entry point with one line at any moment, imports included.

    Until the training loop takes them over, both raise `Stopped`, which the entry-point
    wrapper (or, during the imports, the excepthook) turns into one line and exit status
    128 + the signal's number, never a traceback. Terminal output escapes bytes that are
    not UTF-8 (a path's) instead of failing on them. In a task of the cluster launcher it
    also starts `watch_launcher`, so the task ends with the launcher, even during the imports.

    Args:
      kept: what that line says is safe (`interrupted by SIGINT; <kept>`): the training
        scripts' checkpoint, or a tool's output left as it was (OUTPUT_KEPT).
    """
    _KEPT[0] = kept
    _own_temporary_folder()
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    signal.signal(signal.SIGINT, _raise_stopped)
    signal.signal(signal.SIGTERM, _raise_stopped)
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    watch_launcher()


def watch_launcher():
    """In a task started by the cluster launcher: ends this process when the launcher ends.

    The launcher hands each task the read end of a pipe (its number in CAE_TRANSFER_LAUNCHER_FD)
    and alone holds the write end, which the kernel closes when the launcher exits, however
    it exits (SIGKILL included). A thread reads the pipe; at its end of file (at once when the
    launcher died before this call) it says so in one line, points stdout and stderr, which
    nobody reads any more, at /dev/null and sends this process SIGTERM, the usual way to stop
    with a save, then exits at once after LAUNCHER_GONE_GRACE seconds if it is still running.
    Does nothing, returning False, outside a launched task.
    """
    text = os.environ.pop(LAUNCHER_FD_ENV, "")  # popped: a process this one starts has no such pipe
    if not text.isdigit():
        return False
    fd = int(text)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
    except OSError:
        return False
    threading.Thread(target=_end_with_launcher, args=(fd,), name="launcher-watch", daemon=True).start()
    return True


def _end_with_launcher(fd):
    with contextlib.suppress(OSError):
        while os.read(fd, 512):  # the launcher never writes: only the end of file comes
            pass
    code = 128 + signal.SIGTERM
    with contextlib.suppress(OSError, ValueError):  # the launcher read our output: the pipe may be broken
        sys.stderr.write("the cluster launcher is gone: stopping this task\n")  # one write: no other line splits it
        sys.stderr.flush()
    # Nobody reads this task's output any more: the stop's own lines must not fail on the
    # broken pipe (an error in an error handler, then an interpreter shutdown that waits).
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (1, 2):
        os.dup2(devnull, stream)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(LAUNCHER_GONE_GRACE)
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    remove_temporary_folder()
    os._exit(code)


def import_tensorflow(log=None):
    """Imports TensorFlow for a command-line entry point, hiding the lines its C++ side prints.

    First chooses TF_ENABLE_ONEDNN_OPTS for the CPU (runtime.onednn; a value the user set
    is kept), which must happen before TensorFlow loads, and reports the choice in one
    line the first time it is called in a process.

    TensorFlow 2.21 writes INFO lines (oneDNN notes, "Could not find cuda drivers")
    before its logging is configured, so TF_CPP_MIN_LOG_LEVEL cannot hide them. They are
    hidden unless the user sets TF_CPP_MIN_LOG_LEVEL to 0 or 1 to see them. An import
    failure still raises after stderr is back, so its message is not lost.

    Args:
      log: where the oneDNN line goes (the training scripts pass print; an error stays the one
        line on stderr); None, the default, chooses without a word, for tools whose stdout is their
        output (inspect, the fault-injection zygote).
    """
    if not _REPORTED:
        decided = onednn.choose() if "tensorflow" not in sys.modules else onednn.state()
        if log is not None:
            log(onednn.describe(decided))
        _REPORTED.append(decided)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("0", "1"):
        import tensorflow  # noqa: F401
    else:
        with native_stderr_silenced():
            import tensorflow  # noqa: F401
    stop_if_signalled()  # TensorFlow's import is where a Stopped gets lost (pending_stop)


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, `error: <what> (see <prog> --help)`, and exit status 2.

    A command parses with it before it imports TensorFlow, so a mistyped flag costs no
    start-up and prints neither a usage block nor TensorFlow's lines.
    """

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
