"""`python -m runtime.cluster ...`: the local launcher (runtime.cluster.launcher)."""

import os
import sys

from runtime.cluster.launcher import main


def _exit(status):
    """Exits with `status`; when the terminal is gone (SIGHUP), without the interpreter's failing last flush."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    _exit(main())
