"""Which ops of a graph write which variables, and the rule a plan puts on them.

A plan freezes variables and says which BatchNorm statistics are updated; a graph the
toolkit did not build may disagree: TF-Slim's and tf.layers' BatchNorm put their
moving-average updates in the UPDATE_OPS collection, and the textbook TF1 loop runs all of
them with the train op. `check_writes` is the one check of a graph against its plan,
made before any session: the library's `check_graph` and `train_op` and the transfer
classifier's graph (transfer.graph.build) call it.

A write is found by structure, whatever built the op: an op whose type assigns to or
applies an update to its first input (`Assign*`, `ResourceApply*`, `Apply*`, `Scatter*`,
...), traced through identities to a variable (reference or resource).
"""

import tensorflow as tf

from transfer.plan import PlanError
from transfer.selection import capped

v1 = tf.compat.v1

_WRITING_PREFIXES = (
    "Assign",
    "ResourceApply",
    "Apply",
    "ResourceSparseApply",
    "SparseApply",
    "Scatter",
    "ResourceScatter",
)
_PASS_THROUGH = {"Identity", "RefIdentity", "Enter", "RefEnter", "Switch", "RefSwitch"}
_VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp"}


def _variable_written(op):
    """The name of the variable op writes, or None when it writes none."""
    if not op.type.startswith(_WRITING_PREFIXES) or not op.inputs:
        return None
    source = op.inputs[0].op
    while source.type in _PASS_THROUGH and source.inputs:
        source = source.inputs[0].op
    return source.name if source.type in _VARIABLE_OPS else None


def written_variables(ops):
    """{variable name: name of the first op writing it} over ops and every op they depend on.

    Args:
      ops: operations (or tensors): what a session.run would run, e.g. the train op.
    """
    stack = [getattr(op, "op", op) for op in reversed(list(ops))]
    seen, written = set(), {}
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        name = _variable_written(op)
        if name is not None:
            written.setdefault(name, op.name)
        stack.extend(reversed([tensor.op for tensor in op.inputs] + list(op.control_inputs)))
    return written


def update_ops(graph):
    """The ops of graph's UPDATE_OPS collection (BatchNorm's moving-average updates in TF-Slim and tf.layers)."""
    return [getattr(op, "op", op) for op in graph.get_collection(v1.GraphKeys.UPDATE_OPS)]


def updates_of(plan, graph):
    """The UPDATE_OPS ops that write a statistic the plan updates, and only those: what a train op runs."""
    updated = {row.name for row in plan.rows if row.updated}
    return [op for op in update_ops(graph) if set(written_variables([op])) & updated]


def check_writes(plan, graph, step=None):
    """Refuses a graph whose ops would move what the plan freezes, or leave an "updated" row inert.

    Args:
      plan: the RestorePlan made from the graph's model variables.
      graph: the tf.Graph.
      step: what the training loop runs each step (the train op, or the update ops it runs);
        None when there is none yet: then UPDATE_OPS must write every updated statistic.

    Raises:
      PlanError: naming the first frozen variable an op in UPDATE_OPS or in the step writes,
        and the op; or the first statistic the plan says is updated that no op of the step
        (with step None, of UPDATE_OPS) writes.
    """
    by_updates = written_variables(update_ops(graph))
    by_step = written_variables(step or ())
    frozen = [row.name for row in plan.rows if not row.trainable and not row.updated]
    moved = [name for name in frozen if name in by_updates or name in by_step]
    if moved:
        first = moved[0]
        where = f"the UPDATE_OPS op {by_updates[first]}" if first in by_updates else f"the op {by_step[first]}"
        raise PlanError(
            f"{where} writes {first}, which the plan freezes ({len(moved)} frozen variables would move: "
            f"{capped(moved)}); build those BatchNorm layers in inference mode (training=False), or train them "
            "and update their statistics (fine_tune or lr_mults, with train_batch_norm)"
        )
    writers = by_updates if step is None else by_step
    inert = [row.name for row in plan.rows if row.updated and row.name not in writers]
    if inert:
        raise PlanError(
            f"the plan updates {inert[0]}, but no op {'in UPDATE_OPS' if step is None else 'the step runs'} writes it "
            f"({len(inert)} such statistics: {capped(inert)}); build those BatchNorm layers in training mode and run "
            "their update ops with the step (transfer.library.train_op does), or leave train_batch_norm off"
        )


def written_statistics(graph):
    """Names of the variables graph's UPDATE_OPS write (what the plan's statistics note must not deny)."""
    return frozenset(written_variables(update_ops(graph)))
