"""The restore plan, the partial restore and the frozen proof, for any tf.compat.v1 graph.

The public library of the toolkit: a graph written with tf.compat.v1.layers, TF-Slim,
get_variable or imported from a MetaGraph, and the user's own Session loop. These names
are the stable interface; docs/LIBRARY.md shows them on three graphs. Every error a
function raises is a runtime.errors.UserError (PlanError, CheckpointError) with a one-line
message, raised before anything is written or trained where it can be:

    variables = library.model_variables()
    plan = library.make_plan(variables, "zoo/model.ckpt", library.RestoreSelection(("encoder",)))
    print(plan.format())
    train_op = library.train_op(loss, plan, variables, tf.compat.v1.train.AdamOptimizer(1e-3))
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        source_values = library.restore(sess, plan, variables)
        ...  # the user's loop runs train_op
        library.frozen_check(sess, plan, variables, source_values)

Plan first: on TensorFlow 2.21 a Saver or init_from_checkpoint loads a checkpoint tensor of
the wrong shape without a word (tests/transfer/test_library.py pins it); the plan compares every
shape before a session exists.
"""

import dataclasses

from transfer import own_packages

with own_packages.imported():
    import tensorflow as tf

    from runtime.errors import CheckpointError, UserError
    from transfer import channels as _channels
    from transfer import class_heads as _class_heads
    from transfer import graph as _graph
    from transfer import source as _source
    from transfer import writes as _writes
    from transfer.plan import PlanError, RestorePlan, RestoreSelection, VariableInfo
    from transfer.plan import make_plan as _make_plan
    from transfer.selection import parse_scopes

v1 = tf.compat.v1

CHANNEL_RULES = _channels.RULES

__all__ = [
    "CHANNEL_RULES",
    "CheckpointError",
    "PlanError",
    "RestorePlan",
    "RestoreSelection",
    "UserError",
    "VariableInfo",
    "check_graph",
    "class_sources",
    "frozen_check",
    "make_plan",
    "model_variables",
    "restore",
    "train_op",
    "var_lists",
]


def model_variables(graph=None):
    """The graph's model variables, in creation order: what a plan is made of and checked against.

    Every global variable except optimizer slots (a variable whose name is another
    variable's plus one component: `conv1/kernel/Adam`, `.../Momentum`), the global step,
    integer variables and Adam's `beta1_power`/`beta2_power` (the counters a checkpoint
    holds too). BatchNorm's moving statistics are kept: they are not trainable, but they
    are the model. Found by structure, so it works for tf.compat.v1.layers (which fills
    no MODEL_VARIABLES collection), TF-Slim, get_variable graphs and an imported
    MetaGraph, before or after the optimizer is built.

    Args:
      graph: a tf.Graph; default: the default graph.

    Raises:
      PlanError: when the graph has no model variable.
    """
    found = _source.model_variables_of(graph or v1.get_default_graph())
    if not found:
        raise PlanError("the graph has no model variables: build the model before making its plan")
    return found


def class_sources(lines, label_offset=0, class_map=None):
    """The checkpoint head's class names, for RestoreSelection(classes=...) (class-aware heads).

    Args:
      lines: one line per checkpoint head row after the background logits, synonyms
        comma-separated ("tench, Tinca tinca"); a name matches case and "_" against " " aside.
      label_offset: the head's background logits before the first class (1 for the slim
        ImageNet networks); they never match.
      class_map: None, or the path of a JSON file {"new class": ["source class", ...]} for
        names that differ (a class of several starts from their rows' mean).

    Raises:
      UserError: for a class map that cannot be read or does not parse.
    """
    mapped = _class_heads.load_class_map(class_map) if class_map else ()
    return _class_heads.sources_of(tuple(lines), label_offset, mapped)


def make_plan(variables, checkpoint, selection=RestoreSelection(None), class_names=None):
    """Decides, for each variable, restore or not, train or not, and which BatchNorm statistics update.

    Args:
      variables: the graph's model variables (see model_variables).
      checkpoint: a checkpoint prefix, one of its files, a V1 single file or a folder
        holding one checkpoint; None when the selection restores nothing.
      selection: a RestoreSelection (restore scopes, None for everything the checkpoint
        holds, () for nothing; exclude, maps, skip_mismatched, fine_tune, lr_mults,
        train_batch_norm, moving_average: each restored variable's ExponentialMovingAverage
        shadow where the checkpoint holds one; adapt_channels, one of CHANNEL_RULES, with
        first_conv, the checkpoint name of the first convolution's kernel, for data of other
        input channels: its row is "adapted", restore() writes the adapted value and
        frozen_check compares it), or the text of --restore ("all", "none", "enc,dec",
        "re:enc/.*/kernel": a `re:` item matches whole names). With `classes` (see
        class_sources) the fresh head variables whose last axis has one entry per class name
        become rows of kind "classes": restore() writes the checkpoint's rows of the classes
        both share into their columns, the others keep their fresh values.
      class_names: the new head's class names, in output order; needed with `classes`.

    Returns:
      A RestorePlan (`format()` prints it). A statistic the graph's UPDATE_OPS write is
      never called "never updated" in it.

    Raises:
      CheckpointError: when the checkpoint cannot be found or read, or holds no shadow moving_average asks for.
      UserError: with `classes`, when no fresh variable is a head of the class names, or the class map
        names a class or row that is not there.
      PlanError: for a scope or map that matches nothing, a variable the checkpoint lacks,
        a shape or dtype difference (unless skip_mismatched), or nothing left to train.
    """
    variables = _variables_given(variables, "make_plan")
    selection = _selection_given(selection)
    prefix, checkpoint_variables = None, []
    if checkpoint is not None or not selection.restores_nothing:
        if checkpoint is None:
            raise PlanError("the selection restores variables but no checkpoint was given")
        prefix = _source.resolve_checkpoint(checkpoint)
        checkpoint_variables = _source.read_variables(prefix)
    graph = variables[0].graph
    with graph.as_default():
        infos = _source.graph_variables(variables)
    plan = _make_plan(infos, checkpoint_variables, selection, prefix)
    if selection.classes is not None:
        if not class_names:
            raise PlanError("the selection keeps classes (classes=...): pass class_names, the new head's classes")
        plan = _class_heads.keep_classes(plan, list(class_names), selection, checkpoint_variables)
    return dataclasses.replace(plan, graph_updates=_writes.written_statistics(graph))


def _variables_given(variables, caller):
    """variables as a list, refused in one line when it holds no variable or something else."""
    variables = list(variables)
    if not variables:
        raise PlanError(
            f"{caller}: no variables given: pass library.model_variables() (tf.compat.v1.model_variables() "
            "is empty for a tf.compat.v1.layers or get_variable graph)"
        )
    strays = [type(var).__name__ for var in variables if not hasattr(var, "op") or not hasattr(var, "graph")]
    if strays:
        raise PlanError(f"{caller}: variables holds a {strays[0]}, not a variable: pass library.model_variables()")
    return variables


def _selection_given(selection):
    """A RestoreSelection from a RestoreSelection or the text of --restore; anything else refused in one line."""
    if isinstance(selection, str):
        try:
            return RestoreSelection(parse_scopes(selection))
        except ValueError as error:
            raise PlanError(str(error)) from None
    if not isinstance(selection, RestoreSelection):
        raise PlanError(
            f"selection is a {type(selection).__name__}: pass a RestoreSelection or the text of --restore "
            '("all", "enc,dec", "re:enc/.*")'
        )
    for field in ("restore", "exclude"):
        if isinstance(getattr(selection, field), str):
            raise PlanError(
                f"RestoreSelection's {field} is a tuple of scopes or patterns, not the string "
                f"{getattr(selection, field)!r}: write ({getattr(selection, field)!r},)"
            )
    return selection


def check_graph(plan, variables, train_op=None):
    """Refuses a graph that would break the plan, before any session.

    Refused: any op in UPDATE_OPS, or any op the train op runs, that writes a variable the
    plan freezes (the first one named); a statistic the plan marks "updated" that no op of
    the train op (without one: of UPDATE_OPS) writes; variables that are not the ones the
    plan was made from.

    Raises:
      PlanError: naming the first such variable and the op.
    """
    names = [var.op.name for var in variables]
    if names != [row.name for row in plan.rows]:
        missing = [row.name for row in plan.rows if row.name not in names]
        raise PlanError(
            f"these are not the variables the plan was made from ({len(names)} given, {len(plan.rows)} planned"
            + (f"; first missing: {missing[0]})" if missing else ")")
        )
    _writes.check_writes(plan, variables[0].graph, None if train_op is None else [train_op])


def var_lists(plan, variables):
    """[(learning-rate multiplier, [variables])] of what the plan trains, largest multiplier first.

    For a user's own optimizer: `optimizer.minimize(loss, var_list=var_lists(plan, variables)[0][1])`
    when the plan has one multiplier. Frozen and "updated" variables are never in it.
    """
    return _graph.trainable_in_groups(plan, variables)


def train_op(loss, plan, variables, optimizer, global_step=None):
    """The train op: the plan's trainable variables, each at its multiplier, and exactly the planned BatchNorm updates.

    The UPDATE_OPS ops that write a statistic the plan updates run with every step; no
    other. The result is checked (check_graph) before it is returned.

    Args:
      loss: the scalar loss.
      plan: the RestorePlan.
      variables: the model variables the plan was made from.
      optimizer: a tf.compat.v1.train.Optimizer, or a function of the learning-rate
        multiplier returning one (needed when the plan has several multipliers; Adam is
        invariant to a gradient's scale, so each multiplier needs its own optimizer).
      global_step: a variable incremented once per step, or None.

    Raises:
      PlanError: for a single optimizer and several multipliers, or a graph check_graph refuses.
    """
    variables = _variables_given(variables, "train_op")
    groups = var_lists(plan, variables)
    if not callable(optimizer) or isinstance(optimizer, v1.train.Optimizer):
        if len(groups) > 1 or groups[0][0] != 1.0:
            multipliers = ", ".join(f"{mult:g}" for mult, _ in groups)
            raise PlanError(
                f"the plan trains at learning-rate multipliers {multipliers}: pass a function of the multiplier "
                "that returns an optimizer, not one optimizer"
            )
        given = optimizer

        def optimizer(_):
            return given

    trained = [var for _, group in groups for var in group]
    gradients = dict(zip([var.op.name for var in trained], tf.gradients(loss, trained)))
    gradients = _channels.masked_gradients(plan, gradients)
    with tf.control_dependencies(_writes.updates_of(plan, variables[0].graph)):
        applied = [
            optimizer(mult).apply_gradients([(gradients[var.op.name], var) for var in group]) for mult, group in groups
        ]
    with tf.control_dependencies(applied):
        step = v1.assign_add(global_step, 1) if global_step is not None else tf.no_op()
    result = tf.group(step, name="train_op")
    check_graph(plan, variables, result)
    return result


def restore(sess, plan, variables):
    """Restores the plan's variables from its checkpoint and proves each equals the checkpoint bit for bit.

    Run it after the initialiser. Prints one line: how many were restored; with kept class
    columns (make_plan's class_names) one more: they are written and equal the checkpoint's rows.

    Returns:
      {checkpoint name: numpy value} of what was restored, for frozen_check.

    Raises:
      CheckpointError: when the checkpoint cannot be read, is damaged, or holds NaN.
      UserError: when a restored value differs from the checkpoint.
    """
    values = _source.read_values(plan.checkpoint, _class_heads.reads(plan))
    saver = _source.restore_saver(plan, variables)
    if saver is not None:
        _source.restore_and_prove(sess, plan, saver, variables, values)
    if plan.class_rows:
        _class_heads.write(sess, plan.class_rows, variables, values)
    return values


def frozen_check(sess, plan, variables, source_values):
    """Proves every frozen restored variable, and a frozen head's kept class columns, still equals the checkpoint.

    Prints how many were compared. Warns (one `warning:` line) when `variables` leave out
    frozen restored variables, BatchNorm moving statistics above all (handing it
    `tf.trainable_variables()` does): those are not checked.

    Returns:
      (number compared, max |difference|), which is 0.0.

    Raises:
      UserError: naming every frozen variable that moved and by how much.
    """
    missing = [row.source for row in plan.frozen_restored if row.source not in source_values]
    if missing:
        raise PlanError(
            f"frozen_check: source_values lacks {missing[0]} ({len(missing)} frozen restored variables in all): "
            "pass what restore() returned"
        )
    held = {var.op.name for var in variables}
    left_out = [row for row in plan.frozen_restored if row.name not in held]
    if left_out:
        statistics = _source.statistics_among(left_out)
        print(
            f"warning: frozen check: {len(left_out)} frozen restored variables are not among the variables handed "
            f"to it, {statistics} of them BatchNorm moving statistics (first: {left_out[0].name}); they are not "
            "checked: pass model_variables()"
        )
    _class_heads.check_frozen(sess, plan, variables, source_values)
    return _source.frozen_check(sess, plan, variables, source_values)
