"""Step-numbered checkpoints in a model dir, with relative paths and a bounded window."""

import glob
import os
import re
import shutil

import tensorflow as tf

from runtime.errors import CheckpointError, one_line

v1 = tf.compat.v1

PREFIX = "model.ckpt"
_STEP = re.compile(re.escape(PREFIX) + r"-(\d+)\.index$")


def checkpoint_step(prefix):
    """The global step in a prefix such as `.../model.ckpt-1200`, or None."""
    match = _STEP.search(os.path.basename(prefix) + ".index")
    return int(match.group(1)) if match else None


def list_checkpoints(model_dir):
    """Prefixes of the step-numbered checkpoints in model_dir that have an index file, oldest first."""
    prefixes = []
    for index in glob.glob(os.path.join(glob.escape(model_dir), PREFIX + "-*.index")):
        match = _STEP.search(os.path.basename(index))
        if match:
            prefixes.append((int(match.group(1)), index[: -len(".index")]))
    return [prefix for _, prefix in sorted(prefixes)]


# Temporary names of interrupted writes: the bundle writer's `.tempstate<n>`, the
# `.tmp<32 hex>` of TensorFlow's atomic file writes (the .meta graph, the state file) and
# the `_temp` folders of sharded saves.
_TEMPORARY = re.compile(r"\.tempstate\d*$|\.tmp[0-9a-f]{32}$|^checkpoint\.tmp")
_TEMPORARY_DIR = re.compile(r"_temp(_[0-9a-f]+)?$")
# The parts of a step-numbered checkpoint besides its index.
_PART = re.compile(re.escape(PREFIX) + r"-(\d+)(\.data-\d+-of-\d+|\.meta)$")


def _delete(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def remove_orphans(model_dir):
    """Deletes what interrupted saves and deletions leave behind; returns the paths removed.

    Call only while holding the model dir's lock: nothing else may be writing there.
    Temporary files of a killed write are never read again, and neither are the .data
    and .meta files of a prefix without an index: a save killed before it wrote its
    index, or a deletion killed after it removed the index (the Saver deletes the
    .meta, the .index, then the .data).
    """
    removed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(model_dir), "*"))):
        name = os.path.basename(path)
        part = _PART.search(name)
        orphan = (
            _TEMPORARY.search(name)
            or (os.path.isdir(path) and _TEMPORARY_DIR.search(name))
            or (part and not os.path.exists(os.path.join(model_dir, f"{PREFIX}-{part.group(1)}.index")))
        )
        if orphan:
            _delete(path)
            removed.append(path)
    return removed


def delete_checkpoint(prefix):
    """Deletes a checkpoint's index first, so a kill midway leaves only index-less parts."""
    for path in [prefix + ".index", *glob.glob(glob.escape(prefix) + ".data-*"), prefix + ".meta"]:
        _delete(path)


class Checkpointer:
    """Saves every checkpoint to a new step-numbered prefix and restores the newest intact one.

    The `checkpoint` state file holds relative paths, so a copied or moved model dir
    stays self-contained, and the max_to_keep window counts the checkpoints already on
    disk, so restarts do not pile them up.
    """

    def __init__(self, model_dir, var_list=None, max_to_keep=5, log=print):
        """Builds the Saver; call inside the graph whose variables it saves.

        Args:
          model_dir: the run's directory; created if missing.
          var_list: variables to save; None saves every global variable.
          max_to_keep: how many checkpoints stay on disk.
          log: function that prints one line.
        """
        self.model_dir = model_dir
        self.max_to_keep = max_to_keep
        self.log = log
        for path in remove_orphans(model_dir):
            log(f"removed {path}, left by an interrupted save")
        self.saver = v1.train.Saver(var_list=var_list, max_to_keep=max_to_keep, save_relative_paths=True)
        # A run killed between a save and the Saver's trim leaves one checkpoint too
        # many; the window is restored here, oldest first, so disk use stays bounded.
        existing = list_checkpoints(model_dir)
        for prefix in existing[:-max_to_keep]:
            delete_checkpoint(prefix)
            log(f"removed {prefix}, beyond the last {max_to_keep} checkpoints")
        self.saver.recover_last_checkpoints(existing[-max_to_keep:])

    def save(self, sess, step):
        """Writes `model.ckpt-<step>` and updates the state file; returns the prefix.

        Raises:
          CheckpointError: when the files cannot be written (a full disk, a folder
            made read-only underneath the run).
        """
        try:
            return self.saver.save(sess, os.path.join(self.model_dir, PREFIX), global_step=step)
        except (tf.errors.OpError, OSError) as error:
            reason = one_line(error)
            raise CheckpointError(f"cannot write checkpoint for step {step} in {self.model_dir}: {reason}") from None

    def restore_latest(self, sess):
        """Restores the newest checkpoint that reads back; older ones are the fallback.

        Returns:
          The prefix restored, or None when the model dir holds no checkpoint.

        Raises:
          CheckpointError: when checkpoints exist but none of them can be read.
        """
        candidates = list_checkpoints(self.model_dir)
        failures = []
        for prefix in reversed(candidates):
            try:
                self.saver.restore(sess, prefix)
            except (tf.errors.OpError, ValueError) as error:
                reason = one_line(error)
                self.log(f"warning: checkpoint {prefix} cannot be read ({reason}); trying an older one")
                failures.append(prefix)
                continue
            if failures:
                self.log(f"resumed from {prefix}, the newest intact checkpoint")
            return prefix
        if failures:
            raise CheckpointError(
                f"no checkpoint in {self.model_dir} can be read (tried {', '.join(failures)}); "
                "move the model dir aside or pass another --model-dir"
            )
        return None
