"""Training on TensorFlow's own distributed runtime: parameter servers, workers, a chief.

Between-graph replication in the TF1 way: every worker builds the whole graph with its
variables placed on the ps tasks (`tf.compat.v1.train.replica_device_setter`), runs its
own session against its own in-process `tf.distribute.Server`, and updates the shared
variables asynchronously (or, with --sync-replicas, through `SyncReplicasOptimizer`). The
chief (the `chief` task, else worker 0) initialises or restores the variables and alone
writes checkpoints and summaries; the others wait until the model is ready.

A cluster comes from the `TF_CONFIG` environment variable or from the classic flags
(`--ps-hosts`, `--worker-hosts`, `--job-name`, `--task-index`); with neither, `task_from`
returns None and a script runs as a single local process.

What a training script calls, in order (train_autoencoder.py is the worked example;
transfer/train.py adds a partial restore and a check of each worker's first read):

1. `task_from(flags)` (the run's `ClusterFlags`) -> a `ClusterTask` or None; `serve(task)` for a ps task, which returns
   once every worker said it is done (and stops with an error after --ps-idle-timeout
   seconds without a heartbeat from any).
2. Build the graph under `tf.compat.v1.device(device_function(task))`; make the train op
   with `train_op(task, loss, var_list, global_step, total_steps, optimizer, hold_every)`.
   A partial restore must happen inside the init op (`tf.compat.v1.train.init_from_checkpoint`),
   so that every worker sees the restored values before its first step.
3. `create_session(task, step, config, init_fn)` -> a session: the chief runs init_fn (restore
   or initialise), the others wait (bounded) until the model is ready.
4. `runtime.training.train_loop(sess, step, loss, ...)`, the step standing where a local run
   passes a `LocalStep`, and, at the end, `step.finish(sess)`, which stops
   the sync machinery and tells the ps tasks this worker is done.

The launcher, `python -m runtime.cluster --ps 1 --workers 2 -- train_autoencoder.py ARGS`,
runs a whole cluster on this machine's loopback interface; no task outlives it, however it
ends (`launch`).

The gRPC servers have no authentication and listen on all interfaces: run a cluster on a
trusted network only.

The package, one concern a module: `spec` (TF_CONFIG and the cluster flags, `ClusterTask`),
`session` (servers, sessions, a ps task's serving and its idle timeout), `step` (the
step-ticket protocol, `TrainStep`, `train_op`) and `launcher` (the local launcher and its
lease). The names the rest of the toolkit uses are re-exported here: `cluster.X` for all.
"""

from runtime.cluster.launcher import launch, local_cluster
from runtime.cluster.session import (
    FAIL_FAST_ENV,
    _done_queue,
    create_session,
    device_function,
    fail_fast,
    serve,
    start_server,
    task_config,
)
from runtime.cluster.spec import (
    CLUSTER_FLAGS,
    ENV,
    ClusterFlags,
    ClusterTask,
    owns_model_dir,
    replica_seed,
    task_from,
    tf_config,
)
from runtime.cluster.step import TrainStep, connection_errors, train_op

__all__ = [
    "CLUSTER_FLAGS",
    "ENV",
    "FAIL_FAST_ENV",
    "ClusterFlags",
    "ClusterTask",
    "TrainStep",
    "_done_queue",
    "connection_errors",
    "create_session",
    "device_function",
    "fail_fast",
    "launch",
    "local_cluster",
    "owns_model_dir",
    "replica_seed",
    "serve",
    "start_server",
    "task_config",
    "task_from",
    "tf_config",
    "train_op",
]
