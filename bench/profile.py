"""Where a training step's time goes, by op type, from TensorFlow's step trace."""

import collections
import statistics

import tensorflow as tf

v1 = tf.compat.v1


def op_type(node):
    """The kernel that ran for a NodeExecStats: "conv1/Relu = _MklNativeFusedConv2D(...)" -> "_MklNativeFusedConv2D".

    The timeline label names the kernel after grappler's and oneDNN's rewrites, which is
    what the time was spent in; the graph's op type would still say Conv2D.
    """
    label = node.timeline_label
    if " = " in label:
        return label.split(" = ", 1)[1].split("(", 1)[0]
    return node.node_name.split(":")[0]


def profile_steps(contender, steps):
    """Traces `steps` runs of a train-loop contender's step (FULL_TRACE).

    Args:
      contender: a bench.contenders train-loop contender, warmed up.
      steps: steps to trace.

    Returns:
      (rows, wall_ms): rows of (op type, nodes per step, ms per step), most time first,
      where the time of a node is from its scheduling to its end (the trace's
      all_end_rel_micros); and the median wall time of a traced step in ms, from the
      first node's start to the last node's end. Nodes of one step overlap when
      inter-op threads run them at once, so the rows can add up to more than the wall.
    """
    contender.reserve(steps)
    options = v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE)
    micros, counts, walls = collections.Counter(), collections.Counter(), []
    for _ in range(steps):
        metadata = v1.RunMetadata()
        contender.sess.run([contender.train_op, contender.loss], options=options, run_metadata=metadata)
        contender.step += 1
        starts, ends = [], []
        for device in metadata.step_stats.dev_stats:
            for node in device.node_stats:
                kind = op_type(node)
                micros[kind] += node.all_end_rel_micros
                counts[kind] += 1
                starts.append(node.all_start_micros)
                ends.append(node.all_start_micros + node.all_end_rel_micros)
        walls.append((max(ends) - min(starts)) / 1000.0)
    rows = [(kind, counts[kind] / steps, total / steps / 1000.0) for kind, total in micros.most_common()]
    return rows, statistics.median(walls)
