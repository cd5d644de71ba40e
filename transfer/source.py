"""The transfer source: reading its checkpoint, restoring part of it, and proving what stayed frozen."""

import os
import stat

import numpy as np
import tensorflow as tf

from runtime.checkpoints import READ_ERRORS as _READ_ERRORS
from runtime.checkpoints import list_checkpoints, read_state
from runtime.errors import CheckpointError, UserError, one_line
from runtime.paths import DirAlias, shown
from transfer import channels
from transfer.plan import MOVING_STATISTICS, VariableInfo
from transfer.selection import capped, model_variable_names

v1 = tf.compat.v1

_FILE_SUFFIXES = (".index", ".meta")


def _listing(directory):
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return "(cannot list it)"
    return capped(names) or "(empty)"


# The footer every TensorFlow table file ends with: a V2 checkpoint's .index, and the
# whole of a V1 single-file checkpoint (written by Saver(write_version=V1), as in older
# model zoos' `inception_v1.ckpt`).
_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")
_TABLE_FOOTER_BYTES = 48


def _is_v1_file(path):
    """Whether path is a V1 single-file checkpoint: a regular file that is one TensorFlow table.

    Only its last 8 bytes are read; a FIFO or device is never opened.
    """
    name = os.path.basename(path)
    if name.endswith(_FILE_SUFFIXES) or ".data-" in name:
        return False
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode) or status.st_size < _TABLE_FOOTER_BYTES:
            return False
        with open(path, "rb") as file:
            file.seek(-len(_TABLE_MAGIC), os.SEEK_END)
            return file.read() == _TABLE_MAGIC
    except OSError:
        return False


def is_checkpoint(prefix):
    """Whether prefix names a checkpoint: a V2 prefix with its .index, or a V1 single file."""
    return os.path.isfile(prefix + ".index") or _is_v1_file(prefix)


def checkpoints_in(directory):
    """Prefixes of every checkpoint directly in directory (V2 prefixes and V1 files), sorted."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    found = {name.removesuffix(".index") for name in names if name.endswith(".index")}
    found.update(name for name in names if _is_v1_file(os.path.join(directory, name)))
    return [os.path.join(directory, name) for name in sorted(found)]


def _checkpoint_of_directory(path):
    """The one checkpoint a directory means: its state file's choice, its one run's newest, or its only one.

    Raises:
      CheckpointError: when it holds none, or several that no state file chooses between.
    """
    named = read_state(path)
    if named is not None:
        return named
    found = checkpoints_in(path)
    numbered = list_checkpoints(path)
    if numbered and len(numbered) == len(found):
        return numbered[-1]  # one run's step-numbered series: its newest
    if len(found) == 1:
        return found[0]
    if not found:
        raise CheckpointError(
            f"no checkpoint in directory {shown(path)} (it holds: {_listing(path)}); "
            "train one with train_autoencoder.py"
        )
    listed = capped([shown(os.path.basename(prefix)) for prefix in found])
    raise CheckpointError(
        f"directory {shown(path)} holds {len(found)} checkpoints and no `checkpoint` state file naming one: "
        f"{listed}; pass the one you mean as a prefix"
    )


def resolve_checkpoint(path):
    """Turns a model dir, a checkpoint prefix or one of its files into a checkpoint prefix.

    A prefix is a V2 checkpoint's (its .index beside it) or a V1 single file. A directory
    gives the checkpoint its `checkpoint` state file names; else, when every checkpoint
    in it is a step-numbered `model.ckpt-N`, the highest-numbered; else its only one.

    Raises:
      CheckpointError: when the path does not exist or holds no checkpoint, or when a
        directory holds several checkpoints and no state file naming one (all listed).
    """
    if os.path.isdir(path):
        return _checkpoint_of_directory(path)
    if _is_v1_file(path):
        return path
    for suffix in _FILE_SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if ".data-" in os.path.basename(path):
        path = path[: path.rindex(".data-")]
    if is_checkpoint(path):
        return path
    if os.path.exists(path + ".meta"):
        raise CheckpointError(
            f"{shown(path)} has a .meta graph file but no .index: the checkpoint's variables were never (fully) written"
        )
    if os.path.exists(path):
        raise CheckpointError(
            f"{shown(path)} is not a checkpoint: expected a V1 checkpoint file, or a prefix with "
            f"{shown(os.path.basename(path))}.index beside it"
        )
    parent = os.path.dirname(path) or "."
    if os.path.isdir(parent):
        raise CheckpointError(f"checkpoint {shown(path)} does not exist; {shown(parent)} holds: {_listing(parent)}")
    raise CheckpointError(f"checkpoint {shown(path)} does not exist, nor does its directory {shown(parent)}")


def refuse_writing_into(prefix, model_dir):
    """Refuses a model dir that is the transfer source's directory or holds it: a run never writes there.

    Raises:
      UserError: naming both paths.
    """
    source_dir = os.path.realpath(os.path.dirname(prefix) or ".")
    target = os.path.realpath(model_dir)
    if source_dir == target or source_dir.startswith(target + os.sep):
        raise UserError(
            f"--model-dir {shown(model_dir)} holds the transfer source {shown(prefix)}; "
            "a transfer run never writes there: pass another --model-dir"
        )


def _read_failure(prefix, error, what):
    """The CheckpointError for a failed read: a source deleted meanwhile is not called damaged."""
    if not is_checkpoint(prefix):
        return CheckpointError(
            f"checkpoint {shown(prefix)} was deleted while this run was reading it "
            "(is another run still writing that model dir?); run again, or pass a finished run's checkpoint"
        )
    return CheckpointError(f"{what}: {one_line(error)}")


def read_variables(prefix):
    """VariableInfo for everything a checkpoint holds, sorted by name.

    Raises:
      CheckpointError: when the index cannot be read.
    """
    try:
        with DirAlias(os.path.dirname(prefix) or ".") as alias:
            reader = tf.train.load_checkpoint(alias.join(os.path.basename(prefix)))
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except _READ_ERRORS as error:
        raise _read_failure(prefix, error, f"cannot read checkpoint {shown(prefix)}") from None
    return [VariableInfo(name, tuple(shapes[name]), dtypes[name].name) for name in sorted(shapes)]


def read_values(prefix, names):
    """{name: numpy value} for the named tensors, after reading every tensor the checkpoint holds.

    Reading checks each tensor's checksum, and all of them are read so that a damaged
    file is refused even where the damage misses the tensors that will be restored: a
    source with a broken part is not one to build on.

    Raises:
      CheckpointError: when a tensor cannot be read (a truncated or corrupt data file), or
        when one to restore holds NaN or infinite values.
    """
    name = None
    try:
        with DirAlias(os.path.dirname(prefix) or ".") as alias:
            reader = tf.train.load_checkpoint(alias.join(os.path.basename(prefix)))
            values = {}
            for name in sorted(reader.get_variable_to_shape_map()):
                values[name] = reader.get_tensor(name)
    except _READ_ERRORS as error:
        where = f" at {name}" if name else ""
        what = f"checkpoint {shown(prefix)} is damaged (its .data file is truncated or corrupt{where})"
        raise _read_failure(prefix, error, what) from None
    for name in names:
        value = values[name]
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            bad = int(np.count_nonzero(~np.isfinite(value)))
            raise CheckpointError(
                f"checkpoint {shown(prefix)} holds {bad:,} NaN or infinite values in {name}: "
                "it cannot be a transfer source"
            )
    return {name: values[name] for name in names}


def model_variables_of(graph):
    """The graph's model variables in creation order, found by structure whatever built them.

    Every global variable but optimizer slots (another variable's name plus one
    component, the rule checkpoints are read by: transfer.selection.model_variable_names),
    the global step, integer variables and Adam's beta powers. BatchNorm's moving
    statistics are kept. A graph of tf.compat.v1.layers or get_variable fills no
    MODEL_VARIABLES collection, so the collection is not what decides.
    """
    variables = graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)
    counters = {var.op.name for var in graph.get_collection(v1.GraphKeys.GLOBAL_STEP)}
    counters.update(var.op.name for var in variables if var.dtype.base_dtype.is_integer)
    model = set(model_variable_names(var.op.name for var in variables)) - counters
    return [var for var in variables if var.op.name in model]


def graph_variables(variables):
    """VariableInfo of graph variables, in their order."""
    trainable = {var.op.name for var in tf.compat.v1.trainable_variables()}
    return [
        VariableInfo(var.op.name, tuple(var.shape.as_list()), var.dtype.base_dtype.name, var.op.name in trainable)
        for var in variables
    ]


def restore_saver(plan, variables):
    """A Saver over exactly the plan's restored variables, keyed by checkpoint name.

    Args:
      plan: a RestorePlan.
      variables: the graph's model variables.

    Returns:
      A `tf.compat.v1.train.Saver`, or None when the plan restores nothing.
    """
    by_name = {var.op.name: var for var in variables}
    var_list = {source: by_name[name] for source, name in plan.restore_names().items()}
    return v1.train.Saver(var_list=var_list, name="transfer_restore") if var_list else None


def restore(sess, saver, prefix):
    """Runs a partial restore; a read failure becomes a CheckpointError."""
    try:
        with DirAlias(os.path.dirname(prefix) or ".") as alias:
            saver.restore(sess, alias.join(os.path.basename(prefix)))
    except _READ_ERRORS as error:
        raise _read_failure(prefix, error, f"restoring from {shown(prefix)} failed") from None


def restore_and_prove(sess, plan, saver, variables, source_values):
    """Restores the plan's variables with `saver` (restore_saver's) and proves each equals the checkpoint exactly.

    Raises:
      CheckpointError: when the checkpoint cannot be read.
      UserError: when a restored value differs from source_values.
    """
    restore(sess, saver, plan.checkpoint)
    count, worst = max_abs_diff(sess, plan.restored, variables, source_values)
    load_adapted(sess, plan, variables, source_values)
    adapted_count, adapted_worst = adapted_check(sess, plan, variables, source_values, whole=True)
    count, worst = count + adapted_count, max(worst, adapted_worst)
    if worst != 0.0:
        raise UserError(f"restore check failed: restored values differ from {plan.checkpoint} by up to {worst:g}")
    taken = sum(row.shadow for row in plan.restored + plan.adapted)
    read = f" ({taken} from their ExponentialMovingAverage shadow)" if taken else ""
    print(f"restored {count} variables{read} from {plan.checkpoint}; each equals the checkpoint exactly")


def load_adapted(sess, plan, variables, source_values):
    """Writes each adapted row's value (transfer.channels.adapt_kernel of its checkpoint kernel) into its variable."""
    by_name = {var.op.name: var for var in variables}
    for name, value in channels.adapted_values(plan, source_values).items():
        # What Variable.load does, without its deprecation warning or a new op in a finalised graph.
        sess.run(by_name[name].initializer, {by_name[name].initializer.inputs[1]: value})


def adapted_check(sess, plan, variables, source_values, whole=False):
    """Compares the adapted rows among `variables` with the adapted checkpoint values: all of each value right
    after the restore (`whole`), else the part that must not have moved (transfer.channels.frozen_mask).

    Returns:
      (number of rows compared, max |difference|; NaN compares as inf).
    """
    by_name = {var.op.name: var for var in variables}
    rows = [row for row in plan.adapted if row.name in by_name and (whole or channels.frozen_mask(row).any())]
    if not rows:
        return 0, 0.0
    expected = channels.adapted_values(plan, source_values)
    values = sess.run([by_name[row.name] for row in rows])
    masks = [np.ones(row.shape, bool) if whole else channels.frozen_mask(row) for row in rows]
    pairs = [(value[mask], expected[row.name][mask]) for row, value, mask in zip(rows, values, masks)]
    return len(rows), worst_difference(pairs)


def max_abs_diff(sess, rows, variables, source_values):
    """Compares graph variables with the checkpoint values they were restored from.

    Used right after the restore (every restored variable) and after training (the
    frozen ones): frozen must mean bit-identical, so 0.0 is the only passing value.

    Args:
      sess: the session.
      rows: PlanRows of restored variables.
      variables: the graph's model variables.
      source_values: {checkpoint name: numpy value} read from the transfer source.

    Returns:
      (number of variables compared, max |difference|; NaN compares as inf).
    """
    moving = moved(sess, rows, variables, source_values)
    return len(rows), max((difference for _, difference in moving), default=0.0)


def worst_difference(pairs):
    """The largest |value - source| over (value, source) array pairs: the one bit-identity rule.

    0.0 only when every pair is bit-identical; a NaN on either side counts as inf, so it
    never passes (NaN equals nothing, itself included).
    """
    worst = 0.0
    for value, source in pairs:
        if not np.array_equal(value, source):
            difference = np.abs(np.asarray(value, np.float64) - source)
            worst = max(worst, float(np.nan_to_num(difference, nan=np.inf).max()))
    return worst


def statistics_among(rows):
    """How many of the PlanRows are BatchNorm moving statistics."""
    return sum(row.name.endswith(MOVING_STATISTICS) for row in rows)


def moved(sess, rows, variables, source_values):
    """[(graph name, max |difference|)] of the rows whose variable no longer equals the checkpoint, in row order."""
    if not rows:
        return []
    by_name = {var.op.name: var for var in variables}
    values = sess.run([by_name[row.name] for row in rows])
    differences = [
        (row.name, worst_difference([(value, source_values[row.source])])) for row, value in zip(rows, values)
    ]
    return [(name, difference) for name, difference in differences if difference != 0.0]


def frozen_check(sess, plan, variables, source_values):
    """Proves every frozen restored variable among `variables` (moving statistics included) equals the checkpoint.

    Args:
      sess: the session, after training.
      plan: the RestorePlan.
      variables: the graph's model variables.
      source_values: {checkpoint name: numpy value} read from the transfer source.

    Returns:
      (number of variables compared, max |difference|), 0.0 when none moved.

    Raises:
      UserError: naming every frozen variable that moved and by how much (the first 20, then how many more).
    """
    held = {var.op.name for var in variables}
    rows = [row for row in plan.frozen_restored if row.name in held]
    count, worst = max_abs_diff(sess, rows, variables, source_values)
    if rows:
        statistics = statistics_among(rows)
        of_which = f" ({statistics} of them BatchNorm moving statistics)" if statistics else ""
        print(f"frozen check: {len(rows)} variables{of_which}, max |diff| = {worst:g}")
    adapted_count, adapted_worst = adapted_check(sess, plan, variables, source_values)
    if adapted_count:
        print(
            f"frozen check of adapted kernels (their frozen channels against the adapted checkpoint value): "
            f"{adapted_count} variables, max |diff| = {adapted_worst:g}"
        )
    if adapted_worst != 0.0:
        raise UserError(f"frozen check failed: the frozen channels of adapted kernels moved by {adapted_worst:g}")
    count += adapted_count
    if worst != 0.0:
        moving = moved(sess, rows, variables, source_values)
        listed = capped((f"{name} by {difference:g}" for name, difference in moving), separator="; ")
        raise UserError(f"frozen check failed: {len(moving)} frozen variables moved: {listed}")
    return count, worst
