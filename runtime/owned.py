"""The folders the toolkit owns are never reached through a link it did not make.

The toolkit writes no symbolic links. One inside a folder it owns (a model dir, the
feature cache) was put there by someone else, and following it would read, write or
delete outside that folder: a link named like a cache key folder would take every entry
of a run elsewhere, a `best` link in a model dir would take the best epoch's checkpoint,
and an eviction through one would delete a user's files. There are two ways to keep to
this, one for each kind of writer:

- Code that opens a folder level by level (the feature cache) opens each level relative
  to the one above with O_NOFOLLOW (`open_folder`), so a link at any level raises
  `LinkFound` and is never a way through; files are then opened, replaced and deleted
  relative to that descriptor.
- A folder that TensorFlow writes by path (a model dir) is walked the same way before the
  run writes anything (`find_link`), and a run refuses it when the walk meets a link.

The path the user names is followed like any other path a user gives (`open_named`):
`--model-dir runs/latest` may itself be a link; nothing below it may be.
"""

import errno
import os
import stat

from runtime.paths import shown

# Opens a folder to reach what is inside it: like a path lookup, it needs search permission only.
_SEARCH = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
# Opens a folder to list it.
_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class LinkFound(OSError):
    """A symbolic link where the toolkit expects a folder or a file of its own."""

    def __init__(self, path, target=None):
        super().__init__(errno.ELOOP, "a symbolic link", path)
        self.target = target

    def __str__(self):
        to = "" if self.target is None else f" to {shown(self.target)}"
        return f"{shown(self.filename)} is a symbolic link{to}, which this toolkit never makes"


def link_target(name, dir_fd=None):
    """What the link name (relative to dir_fd) points to, for messages; None when it cannot be read."""
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def is_link(name, dir_fd=None):
    """Whether name (relative to dir_fd) is a symbolic link itself; False when it is absent."""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def refuse_link(name, dir_fd=None, path=None):
    """Raises LinkFound when name (relative to dir_fd) is a symbolic link; path names it in the message."""
    if is_link(name, dir_fd):
        raise LinkFound(path or name, link_target(name, dir_fd))


def open_named(path, listing=False):
    """A descriptor of a folder the user named, following links in the path as given.

    Args:
      path: the folder's path.
      listing: open it for os.scandir; otherwise only to reach what is inside.

    Raises:
      OSError: FileNotFoundError, NotADirectoryError, PermissionError and the like.
    """
    return os.open(path, _LIST if listing else _SEARCH)


def open_folder(name, dir_fd, listing=False, path=None):
    """A descriptor of the folder name inside dir_fd, opened only when it is a folder, not a link.

    Args:
      name: one path component.
      dir_fd: a descriptor of the folder holding it.
      listing: open it for os.scandir; otherwise only to reach what is inside.
      path: the folder's path for messages (default: name).

    Raises:
      LinkFound: when name is a symbolic link (to a folder or not, dangling or not).
      OSError: FileNotFoundError when it is absent, NotADirectoryError for a file, and the like.
    """
    try:
        return os.open(name, (_LIST if listing else _SEARCH) | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as error:
        # O_NOFOLLOW with O_DIRECTORY refuses a link as "not a directory" (ELOOP elsewhere).
        if error.errno in (errno.ENOTDIR, errno.ELOOP):
            refuse_link(name, dir_fd, path)
        raise


def _listing(fd):
    """(the first symbolic link's name or None, the subfolders' names), both in sorted order."""
    with os.scandir(fd) as listing:
        entries = sorted(listing, key=lambda entry: entry.name)
    links = [entry.name for entry in entries if entry.is_symlink()]
    return (links[0] if links else None), [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]


def find_link(root):
    """The path of the first symbolic link below root, depth first in sorted order, or None.

    Nothing is followed: each folder is opened relative to its parent (`open_folder`), and
    one descriptor is held per level. A folder that cannot be read is skipped; root itself
    is the user's (`open_named`).

    Raises:
      OSError: when root cannot be listed.
    """
    stack = [(open_named(root, listing=True), root)]  # (descriptor, path) of each level down to here
    pending = []  # the subfolders of each level still to visit
    try:
        while stack:
            fd, path = stack[-1]
            if len(pending) < len(stack):
                try:
                    link, folders = _listing(fd)
                except OSError:
                    link, folders = None, []  # unreadable or gone: nothing in it is reached either
                if link is not None:
                    return os.path.join(path, link)
                pending.append(folders[::-1])
            if not pending[-1]:
                os.close(stack.pop()[0])
                pending.pop()
                continue
            inner = os.path.join(path, pending[-1].pop())
            try:
                stack.append((open_folder(os.path.basename(inner), fd, listing=True, path=inner), inner))
            except LinkFound:
                return inner  # it became a link since the listing
            except OSError:
                pass
    finally:
        for fd, _ in stack:
            os.close(fd)
    return None
