"""One run per model dir at a time."""

import errno
import fcntl
import os

from runtime.errors import UserError
from runtime.paths import shown

LOCK_NAME = ".lock"


class ModelDirLock:
    """An exclusive lock on `<model_dir>/.lock`, held for the life of a run.

    The kernel drops an flock when its process dies, however it dies, so a lock left
    by a killed run never blocks the next one: there is no stale state to take over.
    """

    def __init__(self, model_dir):
        self.path = os.path.join(model_dir, LOCK_NAME)
        self._file = None

    def __enter__(self):
        # Never through a link (runtime.owned): the pid written below would truncate its target.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UserError(
                    f"{shown(self.path)} is a symbolic link, which this toolkit never makes; "
                    "remove it or pass another --model-dir"
                ) from None
            raise
        handle = open(fd, "r+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(
                f"another run (pid {holder}) is using {os.path.dirname(self.path)}; "
                "wait for it or pass another --model-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None
