"""Paths as data: a directory reaches TensorFlow intact whatever its name holds.

TensorFlow matches checkpoint prefixes as glob patterns (`Saver.restore`, the checkpoint
reader and the RestoreV2 op all look for `<prefix>.index` through a file-name match), so a
model dir called `run[1]` or `best*` is written once and can never be read back. Its C++
side also takes only UTF-8 names, so a directory whose name holds other bytes cannot be
opened at all. On Linux a directory held open by the process is also reachable as
`/proc/self/fd/N`, a name with neither problem: that alias is what TensorFlow is given for
such directories, and everything shown to the user names the real path.
"""

import os
import re

from runtime.errors import UserError

_GLOB = re.compile(r"[][*?]")
_PROC_FD = "/proc/self/fd"


def needs_alias(path):
    """Whether TensorFlow would misread this path: glob characters, or bytes that are not UTF-8."""
    if _GLOB.search(path):
        return True
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def shown(path):
    """The path as one line of text that any terminal can print.

    Bytes that are not UTF-8 become \\x escapes, and so do characters that are not
    printable (newlines, tabs, control and format characters, separators other than a
    plain space), written as Python writes them in a string: \\n, \\t, \\x1b, \\u202e.
    """
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class DirAlias:
    """A name for an existing directory that TensorFlow reads and writes correctly.

    For an ordinary name it is the path itself. Otherwise it is `/proc/self/fd/N` of a
    descriptor held open for the life of the process (or until `close`), so the alias
    keeps pointing at the same directory even if the user renames it meanwhile.
    """

    def __init__(self, path):
        """Opens the alias.

        Args:
          path: an existing directory.

        Raises:
          UserError: when the name needs an alias and this system has no /proc/self/fd.
        """
        self.path = path
        self._fd = None
        self.tf = path
        if needs_alias(path):
            if not os.path.isdir(_PROC_FD):
                raise UserError(
                    f"{shown(path)}: TensorFlow cannot use a path with [ ] * ? or non-UTF-8 bytes here; rename it"
                )
            self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            self.tf = f"{_PROC_FD}/{self._fd}"

    def join(self, *names):
        """The TensorFlow-side path of a file inside the directory."""
        return os.path.join(self.tf, *names)

    def real(self, tf_path):
        """The user's path for a path that starts with this alias."""
        if self._fd is not None and tf_path.startswith(self.tf + os.sep):
            return os.path.join(self.path, tf_path[len(self.tf) + 1 :])
        return tf_path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.tf = self.path
