"""The one place that makes a session's `ConfigProto`: every session uses it."""

import tensorflow as tf

from runtime.errors import UserError


def session_config(gpu_memory_fraction=None, allow_growth=False, intra_op_threads=0, inter_op_threads=0):
    """Builds the session config from the user's resource flags.

    Args:
      gpu_memory_fraction: share of each GPU's memory the process may take, in
        (0, 1]; None leaves TensorFlow's default (take what it needs).
      allow_growth: start with little GPU memory and grow on demand.
      intra_op_threads: threads inside one op; 0 lets TensorFlow choose.
      inter_op_threads: ops run at once; 0 lets TensorFlow choose.

    Returns:
      A `tf.compat.v1.ConfigProto`.

    Raises:
      UserError: for a fraction outside (0, 1] or a negative thread count.
    """
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    if gpu_memory_fraction is not None:
        if not 0.0 < gpu_memory_fraction <= 1.0:
            raise UserError(f"--gpu-memory-fraction must be in (0, 1], got {gpu_memory_fraction}")
        config.gpu_options.per_process_gpu_memory_fraction = gpu_memory_fraction
    config.gpu_options.allow_growth = bool(allow_growth)
    for flag, value in (("--intra-op-threads", intra_op_threads), ("--inter-op-threads", inter_op_threads)):
        if value < 0:
            raise UserError(f"{flag} must be 0 (let TensorFlow choose) or more, got {value}")
    config.intra_op_parallelism_threads = intra_op_threads
    config.inter_op_parallelism_threads = inter_op_threads
    return config


def set_process_threads(intra_op_threads=0, inter_op_threads=0, log=print):
    """Sizes TensorFlow's process-wide thread pools; call before any graph is built.

    A session's intra_op_parallelism_threads alone is not enough: tf.data traces its
    map functions in the eager context, which creates the CPU device and its intra-op
    pool (sized by these process settings) before our Session exists, and the session
    then shares that pool. 0 leaves TensorFlow's choice. In a process where TensorFlow
    has already started (an earlier run in the same Python process), the pools cannot
    change any more, and a warning says so.
    """
    threading = tf.config.threading
    for flag, value, getter, setter in (
        (
            "--intra-op-threads",
            intra_op_threads,
            threading.get_intra_op_parallelism_threads,
            threading.set_intra_op_parallelism_threads,
        ),
        (
            "--inter-op-threads",
            inter_op_threads,
            threading.get_inter_op_parallelism_threads,
            threading.set_inter_op_parallelism_threads,
        ),
    ):
        if value <= 0 or getter() == value:
            continue
        try:
            setter(value)
        except RuntimeError:
            log(
                f"warning: {flag} {value} cannot resize TensorFlow's thread pools, "
                "which started earlier in this process"
            )
