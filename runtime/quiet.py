"""Importing TensorFlow without its start-up chatter on the terminal."""

import contextlib
import os
import sys

from runtime import onednn

# The oneDNN line is printed once per process, however many entry points run in it.
_REPORTED = []


@contextlib.contextmanager
def _native_stderr_silenced():
    """Points file descriptor 2 at /dev/null for the duration; Python's own sys.stderr included."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w", encoding="utf-8") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow(log=print):
    """Imports TensorFlow for a command-line entry point, hiding the lines its C++ side prints.

    First chooses TF_ENABLE_ONEDNN_OPTS for the CPU (runtime.onednn; a value the user set
    is kept), which must happen before TensorFlow loads, and reports the choice in one
    line the first time it is called in a process.

    TensorFlow 2.21 writes INFO lines (oneDNN notes, "Could not find cuda drivers")
    before its logging is configured, so TF_CPP_MIN_LOG_LEVEL cannot hide them. They are
    hidden unless the user sets TF_CPP_MIN_LOG_LEVEL to 0 or 1 to see them. An import
    failure still raises after stderr is back, so its message is not lost.

    Args:
      log: where the oneDNN line goes (stdout by default: an error must stay the one
        line on stderr); None chooses without a word, for a tool whose stdout is its
        output (transfer.inspect).
    """
    if not _REPORTED:
        decided = onednn.choose() if "tensorflow" not in sys.modules else onednn.state()
        if log is not None:
            log(onednn.describe(decided))
        _REPORTED.append(decided)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("0", "1"):
        import tensorflow

        return
    with _native_stderr_silenced():
        import tensorflow  # noqa: F401
