"""Errors that a user can cause, reported as one line and a non-zero exit."""


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
_FRAMING = ("Graph execution error", "Detected at node", "Node:", "File ", "Original stack trace", "[[")


def one_line(error):
    """What went wrong, from an exception, as one line for a user-facing message.

    A graph-mode TensorFlow OpError's message starts "Graph execution error:" and lists
    the ops involved; the cause is the last line that is not such framing ("Read less
    bytes than requested"). Any other exception gives its text with whitespace folded.
    """
    text = getattr(error, "message", None) or str(error)
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_FRAMING)]
    return (useful[-1] if useful else lines[0] if lines else type(error).__name__)[:300]
