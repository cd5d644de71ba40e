"""Step-numbered checkpoints in a model dir, with relative paths and a bounded window."""

import glob
import os
import re
import shutil

import tensorflow as tf

from runtime.errors import CheckpointError

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


def remove_orphans(model_dir):
    """Deletes what interrupted saves leave behind; returns the paths removed.

    A save killed midway leaves `<file>.tempstate<hex>` files (TensorFlow's bundle
    writer renames them into place only when done), `<prefix>_temp` folders (sharded
    saves) and `checkpoint.tmp<hex>` state files; none of them is ever read again.
    """
    removed = []
    for path in glob.glob(os.path.join(glob.escape(model_dir), "*")):
        name = os.path.basename(path)
        if ".tempstate" in name or name.startswith("checkpoint.tmp") or (os.path.isdir(path) and re.search(r"_temp(_[0-9a-f]+)?$", name)):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
            removed.append(path)
    return removed


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
        # Every checkpoint on disk joins the window, so the next save trims it to
        # max_to_keep even when earlier runs left more behind.
        self.saver.recover_last_checkpoints(list_checkpoints(model_dir))

    def save(self, sess, step):
        """Writes `model.ckpt-<step>` and updates the state file; returns the prefix.

        Raises:
          CheckpointError: when the files cannot be written (a full disk, a folder
            made read-only underneath the run).
        """
        try:
            return self.saver.save(sess, os.path.join(self.model_dir, PREFIX), global_step=step)
        except (tf.errors.OpError, OSError) as error:
            reason = (getattr(error, "message", None) or str(error)).strip().splitlines()[0]
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
                reason = str(error).strip().splitlines()[0]
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
