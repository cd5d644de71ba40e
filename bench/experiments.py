"""Alternative forms of our step, timed beside it with `python -m bench.throughput --experiment NAME`.

transpose: our autoencoder step with dconv1 and dconv2 computed by
  tf.nn.conv2d_transpose (`build_autoencoder(..., transpose_implementation="transpose")`),
  the form the project had before the sub-pixel one (models/layers.py) replaced it.
  Same variables and checkpoints; timing both in one run shows what the sub-pixel form
  is worth on this CPU.

xla: our autoencoder step, the same graph and variables, compiled by XLA through the
  two routes TensorFlow 2.21 offers a tf.compat.v1 session on the CPU:
  - `ours+xla-auto`: auto-clustering, `global_jit_level = ON_1` in the session's
    ConfigProto. On the CPU TensorFlow honours that level only with
    `TF_XLA_FLAGS=--tf_xla_cpu_global_jit`, which `enable_cpu_auto_clustering()` adds
    before the first session of the process runs (the flags are read once, lazily);
    the flag alone compiles nothing: sessions that leave global_jit_level at DEFAULT
    stay unclustered.
  - `ours+xla-scope`: explicit clusters, the attributes `tf.xla.experimental.jit_scope()`
    sets (`_XlaCompile`, `_XlaScope`), put on the model's forward, loss and gradient ops
    once the graph is built (jit_scope itself needs the graph it marks to be the default
    one at entry, and the graph is made inside the contender's build); the input
    pipeline and Adam's updates stay outside, as a jit_scope around the model would
    leave them, and so do the variables' initialisers (XLA's random numbers differ).
  Both check after warming up that the step really runs `_XlaRun` nodes, so the
  experiment never times an uncompiled step under an XLA label. Beside them, Keras fit
  with `jit_compile=True` (`ae/keras-fit-jit`, in both oneDNN workers): Keras 3 leaves
  it off for this model, and the peer is to be measured at its best.
"""

import os

import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2

from bench import contenders

v1 = tf.compat.v1
CPU_GLOBAL_JIT_FLAG = "--tf_xla_cpu_global_jit"
XLA_RUN_OP = "_XlaRun"
# Ops that jit_scope leaves out when it wraps only the model and its loss: the index
# stream and iterator of the input pipeline, the optimizer's slots and updates.
_NOT_SCOPED = ("input", "images", "Adam", "beta1_power", "beta2_power", "global_step", "init")


class TransposeAutoencoder(contenders.OursAutoencoder):
    """Our autoencoder step (same wiring) with tf.nn.conv2d_transpose in dconv1 and dconv2."""

    transpose_implementation = "transpose"


def enable_cpu_auto_clustering(environ=os.environ):
    """Adds `--tf_xla_cpu_global_jit` to TF_XLA_FLAGS, keeping flags the user set.

    Must run before the process's first session runs: TensorFlow parses TF_XLA_FLAGS
    once, at the first graph optimisation. `XlaAutoencoder.warm_up` checks that it did.

    Args:
      environ: the environment to change (os.environ by default).
    """
    flags = environ.get("TF_XLA_FLAGS", "").split()
    if CPU_GLOBAL_JIT_FLAG not in flags:
        environ["TF_XLA_FLAGS"] = " ".join([*flags, CPU_GLOBAL_JIT_FLAG])


def xla_run_nodes(sess, fetches, feed_dict=None):
    """Runs `fetches` once and returns how many `_XlaRun` nodes the executed partition graphs hold."""
    metadata = v1.RunMetadata()
    sess.run(fetches, feed_dict, options=v1.RunOptions(output_partition_graphs=True), run_metadata=metadata)
    return sum(node.op == XLA_RUN_OP for graph in metadata.partition_graphs for node in graph.node)


def set_auto_jit(config):
    """Sets `global_jit_level = ON_1` on a session ConfigProto, in place; returns it."""
    config.graph_options.optimizer_options.global_jit_level = v1.OptimizerOptions.ON_1
    return config


def mark_for_xla(graph, scope="xla_step"):
    """Puts jit_scope's attributes on the model's forward, loss and gradient ops of `graph`.

    What `with tf.xla.experimental.jit_scope():` around the model build, the loss and
    the optimizer's gradient computation does, except that the variables' initialisers
    stay out, as do ops under a top-level name in _NOT_SCOPED (input pipeline, Adam,
    global initialiser). One `_XlaScope` for all: TensorFlow may put them in one cluster.

    Returns:
      The number of ops marked.
    """
    marked = 0
    for op in graph.get_operations():
        # Initialisers stay out too: XLA's random numbers are not TensorFlow's, and the
        # compiled step is to start from the same weights as the plain one.
        if op.name.split("/", 1)[0] in _NOT_SCOPED or "/Initializer/" in op.name:
            continue
        op._set_attr("_XlaCompile", attr_value_pb2.AttrValue(b=True))
        op._set_attr("_XlaScope", attr_value_pb2.AttrValue(s=scope.encode()))
        op._set_attr("_XlaSeparateCompiledGradients", attr_value_pb2.AttrValue(b=False))
        marked += 1
    return marked


class _CheckedXla(contenders.OursAutoencoder):
    def warm_up(self):
        super().warm_up()
        self.reserve(1)
        self.xla_nodes = xla_run_nodes(self.sess, [self.train_op, self.loss])
        self.step += 1
        if not self.xla_nodes:
            raise RuntimeError(f"{self.name}: XLA compiled nothing (no {XLA_RUN_OP} node in the step)")


class XlaAutoencoder(_CheckedXla):
    """Our autoencoder step with XLA auto-clustering (global_jit_level ON_1; call enable_cpu_auto_clustering)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        set_auto_jit(self.config)


class XlaScopeAutoencoder(_CheckedXla):
    """Our autoencoder step with its model, loss and gradient ops in one explicit XLA scope."""

    def _build(self):
        super()._build()
        self.marked = mark_for_xla(self.graph)


class KerasJitAutoencoder(contenders.KerasAutoencoder):
    """The Keras peer compiled with `jit_compile=True` (Keras 3's default leaves it off for this model)."""

    def _build_model(self, keras):
        model = super()._build_model(keras)
        model.jit_compile = True  # read when fit first builds its train function
        if not model.jit_compile:
            raise RuntimeError(f"{self.name}: Keras refused jit_compile=True for this model")
        return model
