"""Silencing file descriptor 2, where TensorFlow's C++ side and the image libraries print.

This module imports only the standard library: predict.py imports it, and the predict.py
every export carries has its source in place of that import (transfer/standalone.py).
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
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
