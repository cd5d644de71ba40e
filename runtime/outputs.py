"""The folders a command writes as a whole (an export, a conversion, an image folder): the one rule.

A command writes only the output the user named, and only when it is new, an empty
folder, or (with --force) an earlier output of the same command that holds nothing but
the files that command wrote. The proof is the marker file `.cae-transfer-output.json`,
written last into every such output: it names the command and lists every file with its
sha256. A folder without it, with a file it does not list, with a listed file changed,
or written by another command is refused, --force or not, naming the first such entry.

The output is written into a hidden sibling `.<name>.staging-<pid>-<token>` and swapped
into place at the end, so nothing half-written ever bears the output's name:

- a new output is renamed into place (which never replaces a non-empty folder);
- an earlier one is exchanged with the new one in one step (renameat2 RENAME_EXCHANGE),
  so OUT names the old output or the new one at every instant; the old one, now at the
  staging name, is removed. Where the file system cannot exchange, the old output is
  first renamed aside to `.<name>.old-<pid>-<token>`.

The writing process holds an flock on its staging folder (on the folder itself, so the
lock moves with it when it is renamed). The kernel drops the lock when the process dies,
however it dies, so the next command for the same output can tell a killed run's sibling
from a live one: it removes each unlocked sibling whose name follows the pattern and that
belongs to this user, puts an old output back when a kill left OUT without one, and says
so in one line. A sibling held by a live process, and every other name, is left alone.
"""

import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat

from runtime.errors import UserError, disk_full_reason, one_line
from runtime.paths import shown

TOOLKIT = "cae-transfer"
MARKER = ".cae-transfer-output.json"
SCHEMA = 1
# Each kind of output, by the command that writes it.
KINDS = {
    "conversion": "transfer.convert",
    "export": "transfer.export",
    "image-folder": "data.make_image_folder",
}
_NOUN = {"conversion": "conversion", "export": "export", "image-folder": "image folder"}
_STAGING, _OLD = "staging", "old"


def _what(kind):
    return f"an earlier {_NOUN[kind]} written by {KINDS[kind]}"


def check(path, kind, force, flag="--output", reads=()):
    """Refuses an output this command may not write; reads, never writes.

    Args:
      path: the output folder the user named.
      kind: a key of KINDS.
      force: whether the user passed --force.
      flag: the output's name in messages ("--output"; "" for a positional argument).
      reads: paths the command reads (its source): an output that is one of them or holds
        one is refused, --force or not, since replacing it would delete what it reads.

    Returns:
      The absolute path of the output.

    Raises:
      UserError: one line naming what is in the way: a parent that is missing or not
        writable, a link, a file, a folder that is not an earlier output of this kind
        (with its first foreign entry), or an earlier output without --force.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind of output {kind!r}")
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    label = f"{flag} {shown(path)}" if flag else shown(path)
    name, parent = os.path.basename(path), os.path.dirname(path)
    if not name:
        raise UserError(f"{label} names no folder; pass a new folder's path")
    if not os.path.isdir(parent):
        raise UserError(f"{label}: its parent directory {shown(parent)} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{label}: its parent directory {shown(parent)} is not writable")
    for source in reads:
        real = os.path.realpath(os.path.expanduser(os.fspath(source)))
        if os.path.commonpath([real, os.path.realpath(path)]) == os.path.realpath(path):
            raise UserError(f"{label} holds {shown(source)}, which this command reads; choose another folder")
    if not os.path.lexists(path):
        return path
    refused = "; refused even with --force" if force else "; choose a new folder"
    if os.path.islink(path):
        raise UserError(f"{label} is a symbolic link, not a folder this command wrote{refused}")
    if not os.path.isdir(path):
        raise UserError(f"{label} already exists and is a file, not {_what(kind)}{refused}")
    try:
        if not os.listdir(path):
            return path  # an empty folder: nothing in it to lose
        foreign = foreign_entry(path, kind)
    except OSError as error:
        raise UserError(f"cannot read {label}: {one_line(error)}") from None
    if foreign is not None:
        if force:
            raise UserError(f"{label} is not {_what(kind)}: {foreign}{refused}")
        raise UserError(f"{label} already exists and is not {_what(kind)}: {foreign}{refused}")
    if not force:
        raise UserError(f"{label} already exists and is {_what(kind)}; pass --force to replace it")
    return path


def foreign_entry(path, kind):
    """Why folder `path` is not an untouched earlier output of `kind`, or None when it is one.

    Returns:
      None, or a phrase naming the first entry that is not the command's own: "it holds
      notes.txt and no .cae-transfer-output.json", "notes.txt is not one of its files",
      "labels.txt changed since it was written", "its .cae-transfer-output.json is a
      transfer.convert output's".
    """
    marker_path = os.path.join(path, MARKER)
    if not os.path.lexists(marker_path):
        first = min(os.listdir(path))
        return f"it holds {shown(first)} and no {MARKER}"
    marker = _read_marker(marker_path)
    if marker is None:
        return f"its {MARKER} is not one this toolkit wrote"
    if marker["kind"] != kind:
        return f"its {MARKER} is a {KINDS.get(marker['kind'], 'another command')} output's"
    files, dirs = marker["files"], set(marker["dirs"])
    for here, dirnames, filenames in _walk(path):
        for name in sorted(dirnames + filenames):
            full = os.path.join(here, name)
            relative = os.path.relpath(full, path)
            if relative == MARKER:
                continue
            mode = os.lstat(full).st_mode
            if stat.S_ISDIR(mode) and relative in dirs:
                continue
            if not stat.S_ISREG(mode) or relative not in files:
                return f"{shown(relative)} is not one of its files"
            if file_sha256(full) != files[relative]:
                return f"{shown(relative)} changed since it was written"
    return None


def _walk(path):
    """os.walk that never follows a link and lists in a fixed order."""
    for here, dirnames, filenames in os.walk(path, followlinks=False, onerror=_raise):
        dirnames.sort()
        yield here, list(dirnames), sorted(filenames)


def _raise(error):
    raise error


def _read_marker(path):
    """The marker's content when it is this toolkit's and well formed, else None."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        with open(path, encoding="utf-8", errors="surrogateescape") as stream:
            marker = json.load(stream)
    except (OSError, ValueError):
        return None
    if not (
        isinstance(marker, dict)
        and marker.get("toolkit") == TOOLKIT
        and isinstance(marker.get("kind"), str)
        and isinstance(marker.get("files"), dict)
        and isinstance(marker.get("dirs"), list)
    ):
        return None
    return marker


def file_sha256(path):
    """The sha256 of a file's bytes, hex."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def seal(folder, kind):
    """Writes the marker into a finished output: every file below `folder` with its sha256."""
    files, dirs = {}, []
    for here, dirnames, filenames in _walk(folder):
        for name in dirnames:
            dirs.append(os.path.relpath(os.path.join(here, name), folder))
        for name in filenames:
            full = os.path.join(here, name)
            if stat.S_ISREG(os.lstat(full).st_mode):  # the command writes regular files only
                files[os.path.relpath(full, folder)] = file_sha256(full)
    marker = {"toolkit": TOOLKIT, "schema": SCHEMA, "kind": kind, "files": files, "dirs": dirs}
    # surrogateescape: a file name that is not UTF-8 is recorded byte for byte.
    with open(os.path.join(folder, MARKER), "x", encoding="utf-8", errors="surrogateescape") as stream:
        json.dump(marker, stream, indent=1, sort_keys=True, ensure_ascii=False)
        stream.write("\n")


def _sibling_pattern(name):
    return re.compile(r"\." + re.escape(name) + rf"\.({_STAGING}|{_OLD})-\d+-[0-9a-f]{{8}}\Z")


def _lock(path):
    """An flock held on folder `path` (a descriptor), or None when another process holds it.

    Raises:
      FileNotFoundError: the folder is gone (or is not a folder).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise FileNotFoundError(errno.ENOENT, "no such folder", path) from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def clean_stale(path, log=print):
    """Removes what killed runs for output `path` left beside it; returns the names removed.

    A sibling `.<name>.staging-<pid>-<token>` or `.<name>.old-<pid>-<token>` is removed
    when it is a real folder of this user that no process holds. An `.old-` one is put
    back as `path` instead when `path` is missing (a kill between the two renames of a
    file system that cannot exchange). One line says what was done.
    """
    parent, name = os.path.split(path)
    pattern = _sibling_pattern(name)
    removed, restored = [], None
    for entry in sorted(os.listdir(parent)):
        if not pattern.match(entry):
            continue
        full = os.path.join(parent, entry)
        try:
            info = os.lstat(full)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue
            fd = _lock(full)
        except OSError:
            continue
        if fd is None:
            continue  # a live run's
        try:
            if f".{_OLD}-" in entry[len(name) + 1 :] and not os.path.lexists(path):
                os.rename(full, path)
                restored = entry
            else:
                shutil.rmtree(full)
                removed.append(entry)
        except OSError as error:
            raise UserError(f"cannot remove {shown(full)}, left by an interrupted run: {one_line(error)}") from None
        finally:
            os.close(fd)
    if restored:
        log(f"put back {shown(path)} from {shown(restored)}, where an interrupted --force had moved it")
    if removed:
        listed = ", ".join(shown(entry) for entry in removed)
        log(f"removed {len(removed)} folder(s) beside {shown(path)} left by interrupted runs: {listed}")
    return removed


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a, b):
    """Swaps two paths atomically; False when this system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), a)


class Staged:
    """Writes an output through a staging sibling; a context manager giving the folder to write into.

        output = outputs.check(args.output, "export", args.force)   # before the heavy imports
        ...
        with outputs.Staged(output, "export", args.force) as folder:
            write everything into folder
        # here output is the complete new output; on an exception it is as it was

    On entering: the siblings killed runs left are cleaned (clean_stale), the output is
    checked again, and a locked staging folder is made. On a normal exit: the marker is
    written last, the output checked once more (the user may have put a file into it
    meanwhile) and the staging folder swapped into place. On an exception the staging
    folder is removed and the output is untouched.
    """

    def __init__(self, path, kind, force=False, flag="--output", log=print):
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.kind, self.force, self.flag, self.log = kind, force, flag, log
        self.folder = None
        self._fd = None

    def __enter__(self):
        clean_stale(self.path, self.log)
        check(self.path, self.kind, self.force, self.flag)
        self.folder, self._fd = self._make_staging()
        return self.folder

    def _make_staging(self):
        """A new staging folder beside the output, made and locked by this process."""
        parent, name = os.path.split(self.path)
        while True:
            folder = os.path.join(parent, f".{name}.{_STAGING}-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                os.mkdir(folder)
            except FileExistsError:
                continue
            except OSError as error:
                raise UserError(self._cannot(error)) from None
            try:
                fd = _lock(folder)
                if fd is not None and os.fstat(fd).st_ino == os.lstat(folder).st_ino:
                    return folder, fd
            except FileNotFoundError:
                fd = None  # a cleaner took it between mkdir and lock: it was not ours yet
            if fd is not None:
                os.close(fd)

    def _cannot(self, error):
        reason = disk_full_reason(error) or one_line(error)
        return f"cannot write {f'{self.flag} ' if self.flag else ''}{shown(self.path)}: {reason}"

    def __exit__(self, kind, value, traceback):
        try:
            if kind is None:
                self._commit()
        finally:
            if self.folder is not None and os.path.lexists(self.folder):
                shutil.rmtree(self.folder, ignore_errors=True)
            os.close(self._fd)
        return False

    def _commit(self):
        try:
            seal(self.folder, self.kind)
        except OSError as error:
            raise UserError(self._cannot(error)) from None
        check(self.path, self.kind, self.force, self.flag)
        try:
            if os.path.isdir(self.path) and os.listdir(self.path):
                self._replace()
            else:
                os.rename(self.folder, self.path)  # never replaces a folder that holds anything
        except OSError as error:
            raise UserError(self._cannot(error)) from None

    def _replace(self):
        """Puts the staging folder in the place of the earlier output, then removes that."""
        if _exchange(self.folder, self.path):
            shutil.rmtree(self.folder)  # the earlier output, now at the staging name
            return
        parent, name = os.path.split(self.path)
        fd = _lock(self.path)  # held while it is aside, so no other run takes it for a killed run's
        if fd is None:
            raise UserError(f"{shown(self.path)} is being replaced by another run; wait for it")
        try:
            old = os.path.join(parent, f".{name}.{_OLD}-{os.getpid()}-{secrets.token_hex(4)}")
            os.rename(self.path, old)
            try:
                os.rename(self.folder, self.path)
            except OSError:
                os.rename(old, self.path)
                raise
            shutil.rmtree(old)
        finally:
            os.close(fd)
