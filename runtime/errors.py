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
