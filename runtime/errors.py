"""Errors that a user can cause, reported as one line and a non-zero exit."""

import errno
import signal


class UserError(Exception):
    """A problem with the user's input: a flag, a path, a data or checkpoint file.

    Scripts catch it at the top level, print ``error: <message>`` on stderr and
    exit with status 2, so no TensorFlow traceback reaches the user.
    """


class DataError(UserError):
    """A data file is missing, malformed or fails its checksum."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or does not fit the graph."""


# Lines of a TensorFlow graph-mode error that frame the cause rather than state it.
_FRAMING = ("Graph execution error", "Detected at node", "Node:", "File ", "Original stack trace", "[[", "Hint:")
# errno values, and the texts TensorFlow's C++ side uses for them, of a disk that cannot take more.
_DISK_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}


def one_line(error):
    """What went wrong, from an exception, as one line for a user-facing message.

    A graph-mode TensorFlow OpError's message starts "Graph execution error:" and lists
    the ops involved; the cause is the last line that is not such framing ("Read less
    bytes than requested"). Any other exception gives its text with whitespace folded.
    """
    text = getattr(error, "message", None) or str(error)
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    # A rule of "=" or "-" under a heading says nothing either.
    useful = [line for line in lines if not line.startswith(_FRAMING) and any(c.isalnum() for c in line)]
    return (useful[-1] if useful else lines[0] if lines else type(error).__name__)[:300]


def disk_full_reason(error):
    """ "no space left on device" (or quota, read-only) when that is what an exception says, else None.

    A full disk reaches Python as OSError from our own writes, as RuntimeError from
    TensorBoard's event writer and as a TensorFlow OpError (with an out-of-memory hint that
    has nothing to do with it) from a checkpoint save.
    """
    if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
        return _DISK_ERRNOS[error.errno]
    text = str(getattr(error, "message", None) or error).lower()
    for reason in _DISK_ERRNOS.values():
        if reason in text:
            return reason
    return None


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived outside the training loop (while importing, loading or building).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it.
    """

    def __init__(self, signum):
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        super().__init__(self.name)
