"""Step-numbered checkpoints in a model dir, with relative paths and a bounded window.

Only names this module writes are ever deleted: `model.ckpt-N` parts, the temporary
files TensorFlow's writers give them, and the `checkpoint` state file's temporary copy.
The window of kept checkpoints is trimmed only after a save succeeded, so the newest
checkpoint that reads back is never the one removed. Every path TensorFlow sees goes
through `runtime.paths`, so a model dir named `run[1]` works like any other.
"""

import os
import re
import shutil
import stat

import tensorflow as tf

from runtime.errors import CheckpointError, disk_full_reason, one_line
from runtime.paths import DirAlias, shown

v1 = tf.compat.v1

PREFIX = "model.ckpt"
STATE_FILE = "checkpoint"
_INDEX = re.compile(r"^model\.ckpt-(\d+)\.index$")
# The temporary names of interrupted writes, whole names only: the bundle writer's
# `<part>.tempstate<n>`, the `.tmp<32 hex>` of TensorFlow's atomic file writes (the .meta
# graph, the state file), the `_temp` folders of sharded saves, and write_json's `.tmp`.
_PART_NAME = r"model\.ckpt(-\d+)?(\.index|\.data-\d{5}-of-\d{5}|\.meta)"
_TEMPORARY = re.compile(
    rf"^{_PART_NAME}(\.tempstate\d+|\.tmp[0-9a-f]{{32}})$|^checkpoint\.tmp[0-9a-f]{{32}}$|^[a-z_]+\.json\.tmp$"
)
_TEMPORARY_DIR = re.compile(r"^model\.ckpt(-\d+)?_temp(_[0-9a-f]{32})?$")
# The parts of a step-numbered checkpoint besides its index.
_PART = re.compile(r"^model\.ckpt-(\d+)(\.data-\d{5}-of-\d{5}|\.meta)$")
# What TensorFlow's checkpoint reader raises on damaged files: OpErrors from the C++
# side, and plain IndexError ("Read less bytes than requested") from a short read.
READ_ERRORS = (tf.errors.OpError, ValueError, IndexError, RuntimeError)


def checkpoint_step(prefix):
    """The global step in a prefix such as `.../model.ckpt-1200`, or None."""
    match = _INDEX.match(os.path.basename(prefix) + ".index")
    return int(match.group(1)) if match else None


def _names(directory):
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def list_checkpoints(model_dir):
    """Prefixes of the step-numbered checkpoints in model_dir that have an index file, oldest first."""
    found = [(int(m.group(1)), name[: -len(".index")]) for name in _names(model_dir) if (m := _INDEX.match(name))]
    return [os.path.join(model_dir, name) for _, name in sorted(found)]


def _delete(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _kind(path):
    """ "file", "folder" or None (a link, never followed, or anything else) for what is at path."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else None


def remove_orphans(model_dir):
    """Deletes what interrupted saves and deletions leave behind; returns the paths removed.

    Call only on a model dir this toolkit owns (runtime.rundir) while holding its lock.
    Temporary files of a killed write are never read again, and neither are the .data and
    .meta files of a prefix without an index: a save killed before it wrote its index, or
    a deletion killed after it removed the index (`delete_checkpoint` removes it first).
    Only regular files and folders are orphans: a symbolic link is left alone (and a model
    dir holding one is refused by runtime.rundir before this runs).
    """
    removed = []
    for name in _names(model_dir):
        path = os.path.join(model_dir, name)
        part = _PART.match(name)
        kind = _kind(path)
        orphan = (
            (_TEMPORARY.match(name) and kind == "file")
            or (_TEMPORARY_DIR.match(name) and kind == "folder")
            or (
                part
                and kind == "file"
                and not os.path.lexists(os.path.join(model_dir, f"{PREFIX}-{part.group(1)}.index"))
            )
        )
        if orphan:
            _delete(path)
            removed.append(path)
    return removed


def delete_checkpoint(prefix):
    """Deletes a checkpoint's index first, so a kill midway leaves only index-less parts."""
    directory, base = os.path.split(prefix)
    parts = [name for name in _names(directory) if name.startswith(base + ".data-") and _PART.match(name)]
    for name in [base + ".index", *parts, base + ".meta"]:
        _delete(os.path.join(directory, name))


def read_state(model_dir, log=print):
    """The checkpoint the `checkpoint` state file names, as a path inside model_dir, or None.

    The file is parsed by TensorFlow's own reader, defensively: a binary or garbled file,
    or one naming a checkpoint that is not there, is reported in one line and ignored, and
    the caller falls back to the numbered files.

    Raises:
      CheckpointError: when the file names a checkpoint outside model_dir.
    """
    path = os.path.join(model_dir, STATE_FILE)
    if not os.path.isfile(path):
        return None
    with DirAlias(model_dir) as alias:
        try:
            state = tf.train.get_checkpoint_state(alias.tf)
        except (UnicodeDecodeError, *READ_ERRORS) as error:
            log(f"warning: ignoring the state file {shown(path)}, which is not readable text ({one_line(error)[:80]})")
            return None
        except Exception as error:  # text_format.ParseError has no stable public home
            log(f"warning: ignoring the state file {shown(path)}, which does not parse ({one_line(error)[:80]})")
            return None
        if state is None or not state.model_checkpoint_path:
            if os.path.getsize(path):  # TensorFlow logs a parse error and returns None
                log(f"warning: ignoring the state file {shown(path)}, which does not parse as a checkpoint state")
            return None
        named = alias.real(state.model_checkpoint_path)
        # TensorFlow joins a relative entry to the directory it was given: inside means that directory.
        inside = os.path.realpath(os.path.dirname(named)) == os.path.realpath(model_dir)
    if not inside:
        raise CheckpointError(
            f"the state file {shown(path)} points outside its directory, at {shown(named)}; "
            "pass the checkpoint you mean as a prefix instead of the directory"
        )
    prefix = os.path.join(model_dir, os.path.basename(named))
    if not os.path.isfile(prefix + ".index"):
        log(
            f"warning: the state file {shown(path)} names {shown(os.path.basename(named))}, which is not there; "
            "using the numbered files"
        )
        return None
    return prefix


def latest_checkpoint(model_dir, log=print):
    """The newest checkpoint in a model dir: the state file's choice, else the highest step."""
    named = read_state(model_dir, log)
    if named is not None:
        return named
    found = list_checkpoints(model_dir)
    return found[-1] if found else None


def checkpoint_shapes(prefix):
    """{name: shape} of what a checkpoint holds; READ_ERRORS when its index cannot be read."""
    with DirAlias(os.path.dirname(prefix) or ".") as alias:
        reader = tf.train.load_checkpoint(alias.join(os.path.basename(prefix)))
        return {name: list(shape) for name, shape in reader.get_variable_to_shape_map().items()}


def misfits(variables, shapes):
    """(name, checkpoint shape or None when missing, graph shape) of each graph variable a checkpoint does not fit.

    The one shape check between graph variables and {name: shape} of a checkpoint, in the
    variables' order; shapes are lists.
    """
    found = []
    for var in variables:
        name, want = var.op.name, var.shape.as_list()
        held = shapes.get(name)
        if held is None or list(held) != want:
            found.append((name, None if held is None else list(held), want))
    return found


def shape_differences(variables, shapes):
    """Lines naming each variable whose checkpoint entry is missing or of another shape."""
    return [
        f"{name} is missing" if held is None else f"{name} is {held}, the graph has {want}"
        for name, held, want in misfits(variables, shapes)
    ]


class Checkpointer:
    """Saves every checkpoint to a new step-numbered prefix and restores the newest intact one.

    The `checkpoint` state file holds relative paths, so a copied or moved model dir stays
    self-contained. The window of kept checkpoints is kept here, not by the Saver (whose
    deletion matches names as globs): it counts the checkpoints already on disk, so
    restarts do not pile them up, and it is trimmed only after a save succeeded.
    """

    def __init__(self, model_dir, var_list=None, max_to_keep=5, log=print):
        """Builds the Saver; call inside the graph whose variables it saves.

        Args:
          model_dir: the run's directory, which must exist and belong to the run.
          var_list: variables to save; None saves every global variable.
          max_to_keep: how many checkpoints stay on disk.
          log: function that prints one line.
        """
        self.model_dir = model_dir
        self.max_to_keep = max_to_keep
        self.log = log
        self.variables = list(var_list) if var_list is not None else v1.global_variables()
        self.saver = v1.train.Saver(var_list=self.variables, max_to_keep=None, save_relative_paths=True)
        self._alias = DirAlias(model_dir)
        self._kept = list_checkpoints(model_dir)

    def save(self, sess, step):
        """Writes `model.ckpt-<step>`, updates the state file, then trims the window; returns the prefix.

        Raises:
          CheckpointError: when the files cannot be written (a full disk, a folder made
            read-only underneath the run); the checkpoints already there are untouched.
        """
        try:
            written = self.saver.save(sess, self._alias.join(PREFIX), global_step=step, write_state=False)
            prefix = self._alias.real(written)
            self._kept = [kept for kept in self._kept if kept != prefix] + [prefix]
            names = [os.path.basename(kept) for kept in self._kept[-self.max_to_keep :]]
            # An absolute directory: TensorFlow rewrites relative entries against a relative one.
            v1.train.update_checkpoint_state(os.path.abspath(self._alias.tf), names[-1], names)
        except (tf.errors.OpError, OSError, RuntimeError) as error:
            reason = disk_full_reason(error) or one_line(error)
            raise CheckpointError(
                f"cannot write checkpoint for step {step} in {shown(self.model_dir)}: {reason}"
            ) from None
        self._trim(keep={prefix})
        return prefix

    def _trim(self, keep):
        """Deletes the oldest checkpoints of the window, never one in `keep`, until it fits max_to_keep."""
        for old in list(self._kept):
            if len(self._kept) <= self.max_to_keep:
                break
            if old not in keep:
                delete_checkpoint(old)
                self._kept.remove(old)

    def restore_latest(self, sess):
        """Restores the newest checkpoint that reads back; older ones are the fallback.

        Shapes are compared with the graph before anything is restored (TF2 resource
        variables would take a tensor of another shape without a word).

        Returns:
          The prefix restored, or None when the model dir holds no checkpoint.

        Raises:
          CheckpointError: when checkpoints exist but none of them can be read, or when
            one holds variables of other shapes than the graph's.
        """
        candidates = list_checkpoints(self.model_dir)
        if candidates:
            try:  # the numbered files decide; a damaged state file is still worth a word
                read_state(self.model_dir, self.log)
            except CheckpointError as error:
                self.log(f"warning: {error}")
        failures = []
        for prefix in reversed(candidates):
            try:
                shapes = checkpoint_shapes(prefix)
            except READ_ERRORS as error:
                self._cannot_read(prefix, error, failures)
                continue
            differences = shape_differences(self.variables, shapes)
            if differences:
                raise CheckpointError(
                    f"checkpoint {shown(prefix)} does not fit this graph ({'; '.join(differences[:3])}): "
                    "it was written with other settings; pass another --model-dir"
                )
            try:
                self.saver.restore(sess, self._alias.join(os.path.basename(prefix)))
            except READ_ERRORS as error:
                self._cannot_read(prefix, error, failures)
                continue
            if failures:
                self.log(f"resumed from {shown(prefix)}, the newest intact checkpoint")
            # Unreadable newer ones go first, so the next save's trim removes them before any good
            # one; this trim (a run killed between a save and its trim left one too many) spares
            # them and the checkpoint just restored.
            self._kept = failures[::-1] + [kept for kept in candidates if kept not in failures]
            self._trim(keep={prefix, *failures})
            return prefix
        if failures:
            raise CheckpointError(
                f"no checkpoint in {shown(self.model_dir)} can be read (tried {', '.join(map(shown, failures))}); "
                "move the model dir aside or pass another --model-dir"
            )
        return None

    def _cannot_read(self, prefix, error, failures):
        self.log(f"warning: checkpoint {shown(prefix)} cannot be read ({one_line(error)}); trying an older one")
        failures.append(prefix)
