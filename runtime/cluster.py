"""Training on TensorFlow's own distributed runtime: parameter servers, workers, a chief.

Between-graph replication in the TF1 way: every worker builds the whole graph with its
variables placed on the ps tasks (`tf.compat.v1.train.replica_device_setter`), runs its
own session against its own in-process `tf.distribute.Server`, and updates the shared
variables asynchronously (or, with --sync-replicas, through `SyncReplicasOptimizer`). The
chief (the `chief` task, else worker 0) initialises or restores the variables and alone
writes checkpoints and summaries; the others wait until the model is ready.

A cluster comes from the `TF_CONFIG` environment variable or from the classic flags
(`--ps-hosts`, `--worker-hosts`, `--job-name`, `--task-index`); with neither, `from_args`
returns None and a script runs as a single local process.

What a training script calls, in order (train_autoencoder.py is the worked example;
transfer/train.py adds a partial restore and a check of each worker's first read):

1. `from_args(args)` -> a `ClusterTask` or None; `serve(task)` for a ps task, which returns
   once every worker said it is done (and stops with an error after --ps-idle-timeout
   seconds without a heartbeat from any).
2. Build the graph under `tf.compat.v1.device(device_function(task))`; make the train op
   with `train_op(task, loss, var_list, global_step, total_steps, optimizer, hold_every)`.
   A partial restore must happen inside the init op (`tf.compat.v1.train.init_from_checkpoint`),
   so that every worker sees the restored values before its first step.
3. `create_session(task, step, config, init_fn)` -> a session: the chief runs init_fn (restore
   or initialise), the others wait (bounded) until the model is ready.
4. `train_loop(..., cluster_step=step)` and, at the end, `step.finish(sess)`, which stops
   the sync machinery and tells the ps tasks this worker is done.

The launcher, `python -m runtime.cluster --ps 1 --workers 2 -- train_autoencoder.py ARGS`,
runs a whole cluster on this machine's loopback interface; no task outlives it, however it
ends (`launch`).

The gRPC servers have no authentication and listen on all interfaces: run a cluster on a
trusted network only.
"""

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from runtime.errors import UserError
from runtime.options import Flags, Group, Option
from runtime.quiet import LAUNCHER_FD_ENV

ENV = "TF_CONFIG"
FAIL_FAST_ENV = "GRPC_FAIL_FAST"
JOBS = ("chief", "worker", "ps")
DEFAULT_TIMEOUT = 60.0
DEFAULT_PS_IDLE_TIMEOUT = 600.0
MIN_PS_IDLE_TIMEOUT = 5.0  # ten heartbeats: a late one or two must not stop a ps
HEARTBEAT_SECS = 0.5  # how often a training task tells every ps it is alive
# Seconds between a waiting worker's readiness checks (SessionManager's default is 30).
RECOVERY_WAIT_SECS = 0.5
HOLD_POLL_SECS = 0.02  # how often a worker held at an epoch boundary reads the limit
HOLD_NOTICE_SECS = 10.0  # a worker held longer than this says what it waits for
_ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$")
_DONE_QUEUE = "cae_transfer_done_{}"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What the launcher stops on; a hang-up (its terminal closed) stops the tasks as SIGTERM does.
_LAUNCHER_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class ClusterTask:
    """One task of a cluster: which job and index this process is, and the whole layout.

    Attributes:
      spec: {job: (address, ...)} for the jobs present, addresses as "host:port".
      job: "chief", "worker" or "ps".
      index: the task's index within its job.
      sync: aggregate gradients with SyncReplicasOptimizer instead of asynchronous updates.
      timeout: seconds a task waits for another before it gives up with an error.
      idle_timeout: seconds a ps task serves without hearing from any training task
        before it stops with an error.
    """

    spec: dict
    job: str
    index: int
    sync: bool = False
    timeout: float = DEFAULT_TIMEOUT
    idle_timeout: float = DEFAULT_PS_IDLE_TIMEOUT

    @property
    def name(self):
        """ "worker 1", "ps 0": how the task is named in messages."""
        return f"{self.job} {self.index}"

    @property
    def address(self):
        return self.spec[self.job][self.index]

    @property
    def is_ps(self):
        return self.job == "ps"

    @property
    def is_chief(self):
        """The chief task, or worker 0 when the cluster has no chief job."""
        return self.job == "chief" or (self.job == "worker" and self.index == 0 and "chief" not in self.spec)

    @property
    def device(self):
        return f"/job:{self.job}/task:{self.index}"

    @property
    def target(self):
        """The session target of this task's own server (it listens on every interface)."""
        return f"grpc://localhost:{self.address.rsplit(':', 1)[1]}"

    @property
    def replicas(self):
        """The training tasks (chief first, then workers), as (job, index) pairs."""
        return [(job, i) for job in ("chief", "worker") for i in range(len(self.spec.get(job, ())))]

    @property
    def num_replicas(self):
        return len(self.replicas)

    @property
    def replica_index(self):
        """This task's position among the training tasks: 0 for the chief."""
        return self.replicas.index((self.job, self.index))

    def describe(self):
        """A JSON-ready record of the cluster, for config.json."""
        return {"spec": {job: list(hosts) for job, hosts in self.spec.items()}, "sync_replicas": self.sync}


# --- where a cluster comes from --------------------------------------------------------------


# --ps-hosts ... --cluster-timeout: how a script becomes one task of a cluster. Not saved in
# config.json: the same run may go on as a local process or in another cluster.
CLUSTER_FLAGS = Group(
    "cluster",
    (
        Option("--ps-hosts", config=False, help="comma-separated host:port of the parameter-server tasks"),
        Option(
            "--worker-hosts",
            config=False,
            help="comma-separated host:port of the worker tasks; worker 0 is the chief",
        ),
        Option("--job-name", config=False, help="this task's job: ps or worker"),
        Option("--task-index", type=int, config=False, help="this task's index within its job (default: 0)"),
        Option(
            "--sync-replicas",
            action="store_true",
            config=False,
            help="aggregate one gradient from every worker per step (SyncReplicasOptimizer) instead of "
            "asynchronous updates",
        ),
        Option(
            "--cluster-timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            config=False,
            help="seconds a task waits for a parameter server or for the chief before it stops with an error "
            "(default: %(default)s)",
        ),
        Option(
            "--ps-idle-timeout",
            type=float,
            default=DEFAULT_PS_IDLE_TIMEOUT,
            config=False,
            help="seconds a ps task serves without hearing from any training task (each says it is alive every "
            f"{HEARTBEAT_SECS:g} s once its session is up) before it stops with an error; counted from its start "
            "too (default: %(default)s)",
        ),
    ),
    description="run as one task of a TensorFlow cluster (parameter servers and workers); the TF_CONFIG "
    "environment variable does the same; without either the run is one local process",
)


def parse_address(text, where):
    """Checks one "host:port" (IPv6 as "[::1]:port"); returns it stripped.

    Raises:
      UserError: naming `where` when the text has no port or a port outside 1..65535.
    """
    address = text.strip()
    match = _ADDRESS.match(address)
    if not match:
        raise UserError(f"{where}: {text!r} is not host:port")
    if not 1 <= int(match.group("port")) <= 65535:
        raise UserError(f"{where}: port {match.group('port')} of {address} is outside 1..65535")
    return address


def _check_spec(spec, where):
    for job in spec:
        if job not in JOBS:
            raise UserError(f"{where}: unknown job {job!r}; the jobs are {', '.join(JOBS)}")
    if not spec.get("ps"):
        raise UserError(f"{where}: the cluster has no ps task; at least one parameter server is needed")
    if not spec.get("worker") and not spec.get("chief"):
        raise UserError(f"{where}: the cluster has no worker task")
    if len(spec.get("chief", ())) > 1:
        raise UserError(f"{where}: a cluster has at most one chief, got {len(spec['chief'])}")
    seen = {}
    for job, hosts in spec.items():
        for i, address in enumerate(hosts):
            if address in seen:
                raise UserError(f"{where}: {address} is given to both {seen[address]} and {job} {i}")
            seen[address] = f"{job} {i}"


def _check_task(spec, job, index, where):
    if job not in JOBS:
        raise UserError(f"{where}: unknown job {job!r}; the jobs are {', '.join(JOBS)}")
    if job not in spec or not spec[job]:
        raise UserError(f"{where}: job {job!r} has no hosts in the cluster")
    if isinstance(index, bool) or not isinstance(index, int):
        raise UserError(f"{where}: task index must be an integer, got {index!r}")
    if not 0 <= index < len(spec[job]):
        raise UserError(
            f"{where}: task index {index} is out of range for job {job!r}, which has {len(spec[job])} "
            f"task{'s' if len(spec[job]) != 1 else ''} (0..{len(spec[job]) - 1})"
        )


def parse_tf_config(text):
    """(spec, job, index) from the text of TF_CONFIG, checked.

    Raises:
      UserError: malformed JSON, a missing or unknown job, an index out of range, a bad address.
    """
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{ENV} is not valid JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(config, dict):
        raise UserError(f"{ENV} must be a JSON object with 'cluster' and 'task', got {type(config).__name__}")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise UserError(f'{ENV} has no \'cluster\' object (e.g. {{"ps": ["host:2222"], "worker": [...]}})')
    if not isinstance(task, dict) or "type" not in task:
        raise UserError(f"{ENV} has no 'task' object with a 'type' and an 'index'")
    spec = {}
    for job, hosts in cluster.items():
        if not isinstance(hosts, list) or not all(isinstance(host, str) for host in hosts):
            raise UserError(f'{ENV}: cluster job {job!r} must be a list of "host:port" strings')
        spec[job] = tuple(parse_address(host, f"{ENV} job {job!r}") for host in hosts)
    _check_spec(spec, ENV)
    job, index = task["type"], task.get("index", 0)
    _check_task(spec, job, index, ENV)
    return spec, job, index


def parse_flags(ps_hosts, worker_hosts, job_name, task_index):
    """(spec, job, index) from the classic flags, or None when none of them is given.

    Raises:
      UserError: some flags given but not all the cluster needs, or bad values.
    """
    if ps_hosts is None and worker_hosts is None and job_name is None and task_index is None:
        return None
    missing = [
        flag
        for flag, value in (("--ps-hosts", ps_hosts), ("--worker-hosts", worker_hosts), ("--job-name", job_name))
        if not value
    ]
    if missing:
        raise UserError(f"a cluster given by flags also needs {' and '.join(missing)}")
    spec = {
        "ps": tuple(parse_address(host, "--ps-hosts") for host in ps_hosts.split(",")),
        "worker": tuple(parse_address(host, "--worker-hosts") for host in worker_hosts.split(",")),
    }
    _check_spec(spec, "--ps-hosts/--worker-hosts")
    index = 0 if task_index is None else task_index
    if job_name not in ("ps", "worker"):
        raise UserError(f"--job-name must be ps or worker, got {job_name!r}")
    _check_task(spec, job_name, index, f"--job-name {job_name} --task-index")
    return spec, job_name, index


def from_args(args, environ=None):
    """The task this process is, from TF_CONFIG and the cluster flags; None for a local run.

    When both are given they must describe the same cluster and task.

    Args:
      args: parsed flags from a parser that has CLUSTER_FLAGS.
      environ: the environment to read TF_CONFIG from (default: os.environ).

    Returns:
      A ClusterTask, or None when neither TF_CONFIG nor any cluster flag is set.

    Raises:
      UserError: a malformed or inconsistent cluster, with one line naming the value.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(ENV, "")
    from_env = parse_tf_config(text) if text.strip() else None
    from_flags = parse_flags(args.ps_hosts, args.worker_hosts, args.job_name, args.task_index)
    if from_env and from_flags and from_env != from_flags:
        raise UserError(
            f"{ENV} ({from_env[1]} {from_env[2]} of {_layout(from_env[0])}) and the cluster flags "
            f"({from_flags[1]} {from_flags[2]} of {_layout(from_flags[0])}) disagree; give one of them"
        )
    chosen = from_env or from_flags
    if chosen is None:
        if args.sync_replicas:
            raise UserError("--sync-replicas needs a cluster (TF_CONFIG or --ps-hosts/--worker-hosts)")
        return None
    if not 0 < args.cluster_timeout < float("inf"):
        raise UserError(f"--cluster-timeout must be a positive number of seconds, got {args.cluster_timeout}")
    if not MIN_PS_IDLE_TIMEOUT <= args.ps_idle_timeout < float("inf"):
        raise UserError(
            f"--ps-idle-timeout must be a finite number of seconds, at least {MIN_PS_IDLE_TIMEOUT:g}, "
            f"got {args.ps_idle_timeout:g}"
        )
    spec, job, index = chosen
    return ClusterTask(
        spec,
        job,
        index,
        sync=bool(args.sync_replicas),
        timeout=float(args.cluster_timeout),
        idle_timeout=float(args.ps_idle_timeout),
    )


def _layout(spec):
    return ", ".join(f"{len(hosts)} {job}" for job, hosts in spec.items())


def owns_model_dir(args):
    """Whether this process may create, lock and write the model dir: a local run or the chief."""
    task = from_args(args)
    return task is None or task.is_chief


# --- the runtime --------------------------------------------------------------------------------


def _tf():
    import tensorflow as tf  # imported late: parsing and the launcher do not need TensorFlow

    return tf


def task_config(task, base=None):
    """A copy of `base` (a ConfigProto) with device filters for this task.

    A training task sees only the ps tasks and itself, so it neither waits for nor
    depends on the other workers: one killed mid-run does not stall the rest.
    """
    tf = _tf()
    config = tf.compat.v1.ConfigProto()
    if base is not None:
        config.CopyFrom(base)
    del config.device_filters[:]
    config.device_filters.extend([f"/job:ps/task:{i}" for i in range(len(task.spec["ps"]))])
    if not task.is_ps:
        config.device_filters.append(task.device)
    return config


def wait_for_ps(task, log=print):
    """Waits until every ps task accepts connections, at most task.timeout seconds.

    A session to a cluster whose ps is down waits without end inside TensorFlow; checking
    the ports first turns that into an error that says which task is missing.

    Raises:
      UserError: naming each ps task still unreachable when the time is up.
    """
    deadline = time.monotonic() + task.timeout
    pending = list(enumerate(task.spec["ps"]))
    said = False
    while True:
        pending = [(i, address) for i, address in pending if not _reachable(address)]
        if not pending:
            return
        if time.monotonic() >= deadline:
            names = ", ".join(f"ps {i} at {address}" for i, address in pending)
            raise UserError(
                f"{task.name}: cannot reach {names} after {task.timeout:g} s; "
                "start the ps task(s) or check --ps-hosts / TF_CONFIG"
            )
        if not said:
            log(f"{task.name}: waiting for {', '.join(f'ps {i} at {a}' for i, a in pending)}")
            said = True
        time.sleep(0.2)


def _reachable(address):
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def fail_fast(environ=None):
    """Makes this process's gRPC calls fail at once when the task they go to is gone.

    TensorFlow reads GRPC_FAIL_FAST ("use_caller" when unset, under which some calls wait
    for a lost task to come back); with "true" a worker whose ps died reports it within
    seconds instead of waiting about 30 s in its session close. A value the user set is kept.
    The ps ports are checked before any session (`wait_for_ps`), so start-up needs no waiting
    calls.
    """
    environ = os.environ if environ is None else environ
    environ.setdefault(FAIL_FAST_ENV, "true")


def start_server(task, base_config=None):
    """Starts this task's in-process gRPC server (after `fail_fast`); returns the tf.distribute.Server.

    Raises:
      UserError: when the server cannot start (the port is taken, the host is not this machine's).
    """
    fail_fast()
    tf = _tf()
    cluster = tf.train.ClusterSpec({job: list(hosts) for job, hosts in task.spec.items()})
    try:
        return tf.distribute.Server(
            cluster, job_name=task.job, task_index=task.index, protocol="grpc", config=task_config(task, base_config)
        )
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        from runtime.errors import one_line

        raise UserError(f"{task.name}: cannot start its server at {task.address} ({one_line(error)})") from None


def device_function(task):
    """The device function that puts variables on the ps tasks and other ops on this task.

    Use it as `with tf.compat.v1.device(device_function(task)):`; `tf.device` refuses functions.
    """
    tf = _tf()
    cluster = tf.train.ClusterSpec({job: list(hosts) for job, hosts in task.spec.items()})
    return tf.compat.v1.train.replica_device_setter(cluster=cluster, worker_device=task.device)


def _done_queue(i, num_replicas):
    tf = _tf()
    with tf.compat.v1.device(f"/job:ps/task:{i}"):
        return tf.queue.FIFOQueue(
            # Room for more tokens than workers: a restarted worker may say done again.
            max(16, 4 * num_replicas),
            [tf.int32],
            shapes=[[]],
            shared_name=_DONE_QUEUE.format(i),
            name=f"done_queue_{i}",
        )


def serve(task, log=print):
    """Runs a ps task until every training task has said it is done (`TrainStep.finish`).

    `server.join()` never returns; the ps instead waits on a queue of its own that each
    worker fills at its end, and into which each training task also puts a heartbeat every
    HEARTBEAT_SECS while its session is up. The wait polls once a second so that SIGINT and
    SIGTERM stop it, and so that a ps which hears nothing for task.idle_timeout seconds (from
    its start, or from the last token) stops: a ps whose workers all died does not serve on
    for ever, its unauthenticated port open.

    Raises:
      UserError: when the server cannot start, or when no training task was heard from for
        task.idle_timeout seconds.
    """
    server = start_server(task)
    log(f"{task.name}: serving variables at {task.address} for {task.num_replicas} training task(s)")
    received = []
    # A signal is noted and acted on between two polls: raised inside a session call it
    # would surface as a garbled pybind11 error instead.
    previous = {signum: signal.signal(signum, lambda n, f: received.append(n)) for signum in _SIGNALS}
    try:
        _wait_for_done(task, server, received, log)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        from runtime.errors import Stopped

        raise Stopped(received[0])
    log(f"{task.name}: every training task is done; exiting")
    return server


def _wait_for_done(task, server, received, log):
    tf = _tf()
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        dequeue = _done_queue(task.index, task.num_replicas).dequeue()
        options = v1.RunOptions(timeout_in_ms=1000)
        with v1.Session(server.target, config=task_config(task)) as sess:
            finished = 0
            heard = time.monotonic()
            while finished < task.num_replicas and not received:
                try:
                    replica = sess.run(dequeue, options=options)
                except tf.errors.DeadlineExceededError:
                    if time.monotonic() - heard > task.idle_timeout:
                        raise UserError(
                            f"{task.name}: heard from no training task for {task.idle_timeout:g} s; stopping "
                            "(start the workers within --ps-idle-timeout, or raise it)"
                        ) from None
                    continue
                heard = time.monotonic()
                if replica < 0:  # a heartbeat
                    continue
                finished += 1
                job, index = task.replicas[replica]
                log(f"{task.name}: {job} {index} is done ({finished}/{task.num_replicas})")


class TrainStep:
    """A cluster's train op and the bookkeeping train_loop needs to run it.

    Asynchronous mode takes a ticket on the shared global step for every step
    (`assign_add`), applies the gradients only while the ticket is within total_steps
    (beyond it nothing is applied) and gives the ticket back then, so the global step
    settles at exactly the requested total however many workers race for the last steps.
    The ticket is read after the add, not atomically with it: two racing workers may both
    see a ticket past the end and both give it back, and then both try again, as they see
    the global step still below the total. Likewise the global step a worker reads after
    its own step can include another worker's ticket past the end, refused and not yet
    given back: `run` waits for it to come back before it reports the step.

    With `hold_every` (the steps of an epoch) the end that counts is a shared limit on
    the ps, raised by the chief one epoch at a time: the workers stop at each epoch
    boundary until the chief has evaluated it, so the chief evaluates (and keeps as best)
    exactly the weights of that step, and every epoch, instead of weights that other
    workers change while it reads them. The limit is no checkpoint variable: the chief
    sets it from the global step whenever it creates its session (a resumed run too).

    Synchronous mode wraps the optimizer in SyncReplicasOptimizer: one global step per
    gradient from every worker (no hold: the other workers' gradients still make steps
    while the chief evaluates).

    Attributes:
      task: the ClusterTask.
      op: the train op to pass to train_loop.
      fetches: [global step after this worker's step, 1 if the step's update counted].
      own_steps: steps of this worker that counted.
    """

    def __init__(self, task, op, fetches, global_step, total_steps, sync_optimizer=None, limit=None, hold_every=None):
        tf = _tf()
        v1 = tf.compat.v1
        self.task = task
        self.op = op
        self.fetches = fetches
        self.own_steps = 0
        self.total_steps = total_steps
        self._global_step = global_step
        self._read_step = global_step.read_value() if hasattr(global_step, "read_value") else global_step
        self._sync = sync_optimizer
        self._coordinator = None
        self._limit_var, self._hold_every, self._limit = limit, hold_every, total_steps
        held = [] if limit is None else [limit]
        self.ready_op = v1.report_uninitialized_variables(v1.global_variables() + held)
        if sync_optimizer is not None:
            self.local_init_op = sync_optimizer.chief_init_op if task.is_chief else sync_optimizer.local_step_init_op
            self.ready_for_local_init_op = sync_optimizer.ready_for_local_init_op
            self._queue_runner = sync_optimizer.get_chief_queue_runner() if task.is_chief else None
            self._init_tokens = sync_optimizer.get_init_tokens_op() if task.is_chief else None
        else:
            self.local_init_op = v1.local_variables_initializer()
            if limit is not None:
                self._read_limit = limit.read_value()
                if task.is_chief:  # after the restore or the initialisation: from the step the run is at
                    self.local_init_op = tf.group(self.local_init_op, limit.initializer)
                    self._raise_limit = v1.placeholder(limit.dtype.base_dtype, [])
                    self._assign_limit = limit.assign(self._raise_limit)
            self.ready_for_local_init_op = None
        # The done token is the replica's index; a heartbeat is a negative one.
        self._done, self._alive = (
            tf.group(
                *[
                    _done_queue(i, task.num_replicas).enqueue(tf.constant(token, tf.int32))
                    for i in range(len(task.spec["ps"]))
                ]
            )
            for token in (task.replica_index, -1 - task.replica_index)
        )
        self._quiet = threading.Event()
        self._heartbeat = None
        self.server = None

    def after_session(self, sess):
        """Starts the heartbeat, the sync machinery on the chief and reads the limit; call once the session exists."""
        if self._limit_var is not None:
            self._limit = int(sess.run(self._read_limit))
        self._heartbeat = threading.Thread(
            target=self._beat, args=(sess,), name=f"{self.task.name} heartbeat", daemon=True
        )
        self._heartbeat.start()
        if self._sync is None or not self.task.is_chief:
            return
        tf = _tf()

        class QuietCoordinator(tf.train.Coordinator):
            # The aggregation thread still blocks on the ps when the run ends; the error it
            # gets once the ps is gone is expected, not worth a traceback.
            def request_stop(self, ex=None):
                if not self.should_stop():
                    super().request_stop(ex)

        self._coordinator = QuietCoordinator()
        self._queue_runner.create_threads(sess, coord=self._coordinator, daemon=True, start=True)
        sess.run(self._init_tokens)

    def _beat(self, sess):
        """Tells every ps this task is alive, every HEARTBEAT_SECS, until `finish` or the session's close."""
        tf = _tf()
        options = tf.compat.v1.RunOptions(timeout_in_ms=int(4 * HEARTBEAT_SECS * 1000))
        while not self._quiet.wait(HEARTBEAT_SECS):
            try:
                sess.run(self._alive, options=options)
            except tf.errors.OpError:
                continue  # a ps slow or gone: the training steps report a lost one
            except RuntimeError:  # the session is closed: the run is over
                return

    def run(self, sess, fetches):
        """One step: returns (values of fetches, global step after it, counted) or None once the run is over.

        Raises:
          UserError: a ps task stopped answering (named when its port is closed).
        """
        tf = _tf()
        try:
            values = sess.run(list(fetches) + list(self.fetches))
        except tf.errors.OutOfRangeError:
            if self._sync is not None:  # the chief closed the token queue: the run is over
                return None
            raise
        except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as error:
            raise self.lost_error(error) from None
        step, counted = int(values[-2]), bool(values[-1])
        self.own_steps += counted
        if step > self.total_steps:
            # Another worker's refused ticket is still out, whether this worker's own ticket was
            # refused too or counted and read after that one: the step this worker reached is the
            # total, once that ticket is back (else the last epoch ends at total + 1).
            step = self.settle(sess, step)
        elif self._limit_var is not None and (not counted or step >= self._limit) and step < self.total_steps:
            step = self._hold(sess, step)
        return values[: len(fetches)], step, counted

    def _hold(self, sess, step):
        """At an epoch boundary: the chief's global step once the other workers' tickets are
        back; another worker's once the chief has raised the limit past it."""
        if self.task.is_chief:
            return self.settle(sess, step, self._limit)
        began, said = time.monotonic(), False
        while True:
            limit = int(sess.run(self._read_limit))
            if limit > self._limit or limit >= self.total_steps:
                self._limit = limit
                return self.global_step(sess)
            if not said and time.monotonic() - began > HOLD_NOTICE_SECS:
                print(f"{self.task.name}: waiting at step {limit} for the chief to evaluate the epoch")
                said = True
            time.sleep(HOLD_POLL_SECS)

    def after_step(self, sess, step):
        """On the chief, once an epoch's evaluation and saves are done: lets the workers into the next epoch."""
        if self._limit_var is None or not self.task.is_chief or step < self._limit or self._limit >= self.total_steps:
            return
        self._limit = min(self._limit + self._hold_every, self.total_steps)
        sess.run(self._assign_limit, {self._raise_limit: self._limit})

    def global_step(self, sess):
        return int(sess.run(self._read_step))

    def settle(self, sess, step, end=None):
        """The global step once tickets still given back by other workers have come in (at most a few seconds)."""
        end = self.total_steps if end is None else end
        deadline = time.monotonic() + min(self.task.timeout, 10.0)
        while step > end and time.monotonic() < deadline:
            time.sleep(0.05)
            step = self.global_step(sess)
        return step

    def finish(self, sess):
        """Stops the heartbeat and the sync queue (chief) and tells every ps task this worker is done."""
        self._quiet.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        if self._coordinator is not None:
            self._coordinator.request_stop()
            self._coordinator.join(stop_grace_period_secs=5, ignore_live_threads=True)
        tf = _tf()
        try:
            sess.run(self._done, options=tf.compat.v1.RunOptions(timeout_in_ms=int(self.task.timeout * 1000)))
        except tf.errors.OpError:
            pass  # a ps already gone has nothing left to wait for

    def lost_error(self, error):
        """A UserError for a connection error, naming each ps task whose port no longer answers."""
        from runtime.errors import one_line

        gone = [f"ps {i} at {address}" for i, address in enumerate(self.task.spec["ps"]) if not _reachable(address)]
        if gone:  # TensorFlow's own text for this is a page of gRPC detail: the name says it all
            return UserError(f"{self.task.name}: lost {', '.join(gone)}, which no longer accepts connections")
        return UserError(f"{self.task.name}: the cluster stopped answering ({one_line(error)[:200]})")


@contextlib.contextmanager
def connection_errors(step):
    """Turns a lost connection anywhere in a cluster session's life (a step, an evaluation,
    a save, the wait at an epoch boundary, the close) into the one-line error of
    TrainStep.lost_error; with step None (a local run) it does nothing.

    Args:
      step: the TrainStep of the task, or None.

    Raises:
      UserError: the connection to a ps task was lost.
    """
    if step is None:
        yield
        return
    tf = _tf()
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as error:
        raise step.lost_error(error) from None


def train_op(task, loss, var_list, global_step, total_steps, optimizer, hold_every=None):
    """Builds the cluster train op; call under `tf.compat.v1.device(device_function(task))`.

    Args:
      task: the ClusterTask.
      loss: the scalar loss.
      var_list: the variables to train.
      global_step: the global step variable.
      total_steps: the global step at which the run ends.
      optimizer: the tf.compat.v1 optimizer of the run (no ops made yet).
      hold_every: in asynchronous mode, the steps of an epoch, for a run whose chief
        evaluates at each epoch's end: the workers wait there until it has (TrainStep).

    Returns:
      A TrainStep.
    """
    tf = _tf()
    v1 = tf.compat.v1
    var_list = list(var_list)
    if task.sync:
        optimizer = v1.train.SyncReplicasOptimizer(
            optimizer,
            replicas_to_aggregate=task.num_replicas,
            total_num_replicas=task.num_replicas,
        )
        grads = optimizer.compute_gradients(loss, var_list=var_list)
        op = optimizer.apply_gradients(grads, global_step=global_step)
        with tf.control_dependencies([op]):
            fetches = [tf.identity(global_step.read_value()), tf.constant(True)]
        return TrainStep(task, op, fetches, global_step, total_steps, sync_optimizer=optimizer)
    dtype = global_step.dtype.base_dtype
    limit = None
    if hold_every:
        first_end = tf.minimum((global_step.read_value() // hold_every + 1) * hold_every, total_steps)
        limit = v1.Variable(first_end, trainable=False, collections=[], name="cluster/epoch_limit", dtype=dtype)
    grads = tf.gradients(loss, var_list)
    with tf.control_dependencies([g for g in grads if g is not None]):
        ticket = global_step.assign_add(1)  # the ticket is taken once the gradients are ready
    counted = ticket <= (total_steps if limit is None else limit.read_value())

    def apply():
        with tf.control_dependencies([optimizer.apply_gradients(zip(grads, var_list))]):
            return tf.constant(0, dtype)

    # A ticket that does not count changes nothing, Adam's moments and the BatchNorm
    # statistics included (a zero learning rate would still move those), and is given back.
    give_back = tf.cond(counted, apply, lambda: tf.constant(1, dtype))
    step_after = global_step.assign_sub(give_back)
    return TrainStep(
        task, step_after.op, [step_after, counted], global_step, total_steps, limit=limit, hold_every=hold_every
    )


def create_session(task, step, config, init_fn):
    """The session of a training task, once the model is ready.

    The chief creates it with SessionManager.prepare_session, running init_fn (restore or
    initialise); the other tasks wait until the chief has done so, checking every
    RECOVERY_WAIT_SECS, for at most task.timeout seconds.

    Args:
      task: the ClusterTask.
      step: the TrainStep from `train_op`.
      config: the ConfigProto of the run (runtime.session.session_config); device filters are added.
      init_fn: init_fn(sess) initialises or restores the variables (the chief only).

    Returns:
      A tf.compat.v1.Session on the task's server.

    Raises:
      UserError: a ps unreachable, or the chief not ready in time, named.
    """
    tf = _tf()
    v1 = tf.compat.v1
    step.server = start_server(task, config)  # kept on the TrainStep: the server lives as long as the run
    wait_for_ps(task)
    config = task_config(task, config)
    manager = v1.train.SessionManager(
        local_init_op=step.local_init_op,
        ready_op=step.ready_op,
        ready_for_local_init_op=step.ready_for_local_init_op,
        recovery_wait_secs=RECOVERY_WAIT_SECS,
    )
    try:
        if task.is_chief:
            sess = manager.prepare_session(step.server.target, init_fn=init_fn, config=config)
        else:
            sess = manager.wait_for_session(step.server.target, config=config, max_wait_secs=task.timeout)
    except tf.errors.DeadlineExceededError:
        chief = ("chief", 0) if "chief" in task.spec else ("worker", 0)
        raise UserError(
            f"{task.name}: the chief ({chief[0]} {chief[1]} at {task.spec[chief[0]][chief[1]]}) has not initialised "
            f"the model after {task.timeout:g} s; start it or raise --cluster-timeout"
        ) from None
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
        raise step.lost_error(error) from None
    step.after_session(sess)
    return sess


def replica_seed(seed, task):
    """The data-order seed of a training task: the run's seed on the chief, distinct ones elsewhere."""
    return seed if task is None else seed + task.replica_index * 2**32


# --- the local launcher -------------------------------------------------------------------------


def free_ports(count, host="127.0.0.1"):
    """`count` distinct ports free on host right now (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def local_cluster(num_ps, num_workers, host="127.0.0.1"):
    """A cluster spec of num_ps ps and num_workers worker tasks on free ports of host."""
    ports = free_ports(num_ps + num_workers, host)
    return {
        "ps": [f"{host}:{port}" for port in ports[:num_ps]],
        "worker": [f"{host}:{port}" for port in ports[num_ps:]],
    }


def tf_config(spec, job, index):
    """The TF_CONFIG text of one task."""
    return json.dumps({"cluster": spec, "task": {"type": job, "index": index}})


def _say(out, text):
    """Writes to the launcher's output; a terminal that is gone (SIGHUP) or a closed pipe is no error."""
    try:
        out.write(text)
        out.flush()
    except (OSError, ValueError):
        pass


class _Task:
    def __init__(self, job, index, command, env, out, lease):
        self.job, self.index = job, index
        self.label = f"[{job} {index}] "
        self.process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our own signals reach it, once: the launcher forwards them
            pass_fds=(lease,),  # the read end of the lease: it ends when the launcher does (launch)
        )
        self.reader = threading.Thread(target=self._copy, args=(out,), daemon=True)
        self.reader.start()

    def _copy(self, out):
        # Read to the end even when `out` is gone, so that the task never blocks on a full pipe.
        for raw in iter(self.process.stdout.readline, b""):
            _say(out, self.label + raw.decode("utf-8", "backslashreplace"))

    @property
    def name(self):
        return f"{self.job} {self.index}"

    def signal(self, signum):
        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, signum)
            except ProcessLookupError:
                pass


def launch(script_argv, num_ps=1, num_workers=2, host="127.0.0.1", grace=30.0, out=None, python=None):
    """Runs one cluster on this machine: every task a subprocess of script_argv with its TF_CONFIG.

    Each task's output is prefixed with its name ("[worker 0] "). SIGINT is forwarded to every
    task, SIGTERM and SIGHUP (the terminal closed) as SIGTERM, with one line; a second signal
    kills them. When a task fails, every other one is stopped. A stop reaches the ps tasks once
    the training tasks have ended (the chief saves as it stops). When the chief ends or the
    tasks were told to stop, they get `grace` seconds to end on their own, then are killed.

    No task outlives the launcher, however it ends: each holds the read end of a pipe whose
    write end only the launcher holds, and a task's `runtime.quiet.watch_launcher` stops it
    at that pipe's end of file, which the kernel brings when the launcher exits, by SIGKILL too.

    Returns:
      128 + the signal's number after a signal; else the chief's exit status (128 + n for a
      signal, as a shell reports it), or, when another task failed first and the launcher
      stopped the chief, that task's status.
    """
    out = sys.stdout if out is None else out
    spec = local_cluster(num_ps, num_workers, host)
    python = python or sys.executable
    tasks = []
    received = []
    # The handler only notes the signal; the loop below passes it on, so that a task started
    # while it arrived is not missed.
    previous = {signum: signal.signal(signum, lambda n, f: received.append(n)) for signum in _LAUNCHER_SIGNALS}
    lease, lease_end = os.pipe()  # neither is inherited, but the read end by the tasks it is passed to
    try:
        for job, index, env in _task_environments(spec, lease):
            if received:
                break
            tasks.append(_Task(job, index, [python, *script_argv], env, out, lease))
        os.close(lease)
        lease = None
        chief = next((task for task in tasks if task.job == "worker" and task.index == 0), None)
        forwarded = 0  # how many of the received signals were passed on
        stop_at, since = None, None  # when the tasks' grace began, and after what
        ps_stop = None  # the signal the ps tasks get once no training task runs
        first_failure = None
        while True:
            if forwarded < len(received):
                if forwarded == 0:
                    stop_at, since = time.monotonic(), signal.Signals(received[0]).name
                ps_stop = _forward(received, forwarded, tasks, out) or ps_stop
                forwarded += 1
            if ps_stop is not None and not any(t.process.poll() is None for t in tasks if t.job != "ps"):
                for task in tasks:
                    task.signal(ps_stop)
                ps_stop = None
            if not any(task.process.poll() is None for task in tasks):
                break
            time.sleep(0.1)
            failed = [t for t in tasks if t.process.poll() not in (None, 0)]
            if failed and stop_at is None and not received:
                if chief.process.poll() is None:  # the chief is stopped by us: the failure is the status
                    first_failure = _status(failed[0].process.returncode)
                names = ", ".join(f"{t.name} (exit {_status(t.process.returncode)})" for t in failed)
                _say(out, f"[cluster] {names} failed: stopping every task\n")
                ps_stop = _stop_training(tasks, signal.SIGTERM)
                stop_at, since = time.monotonic(), "the failure"
            if stop_at is None and chief.process.poll() is not None:  # (no chief: a signal came first)
                stop_at, since = time.monotonic(), "the chief"
            if stop_at is not None and time.monotonic() - stop_at > grace:
                for task in tasks:
                    if task.process.poll() is None:
                        _say(out, f"[cluster] {task.name} still runs {grace:g} s after {since}: killing it\n")
                        task.signal(signal.SIGKILL)
        for task in tasks:
            task.reader.join(timeout=5)
        if received:
            return 128 + received[0]
        return first_failure if first_failure is not None else _status(chief.process.returncode)
    finally:
        for task in tasks:
            task.signal(signal.SIGKILL)
        for fd in (lease, lease_end):
            if fd is not None:
                os.close(fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_training(tasks, signum):
    """Sends signum to the training tasks; returns it for the ps tasks, which are to get it once
    those have ended: a chief that saves as it stops still has its ps to save from."""
    for task in tasks:
        if task.job != "ps":
            task.signal(signum)
    return signum


def _forward(received, forwarded, tasks, out):
    """Passes the launcher's signal number `forwarded` on: the first one with a line, to the
    training tasks (SIGINT as SIGINT, SIGTERM and SIGHUP as SIGTERM), returning it for the ps
    tasks (`_stop_training`); any later one to every task as SIGKILL, with a line the first time.
    """
    name = signal.Signals(received[forwarded]).name
    if forwarded == 0:
        _say(out, f"[cluster] {name}: stopping every task\n")
        return _stop_training(tasks, signal.SIGINT if received[0] == signal.SIGINT else signal.SIGTERM)
    if forwarded == 1:
        _say(out, f"[cluster] {name} again: killing every task\n")
    for task in tasks:
        task.signal(signal.SIGKILL)
    return None


def _task_environments(spec, lease):
    """(job, index, environment) of every task of `spec`, ps first: this process's environment,
    its TF_CONFIG and the number of the lease's file descriptor."""
    for job in ("ps", "worker"):
        for index in range(len(spec[job])):
            extra = {ENV: tf_config(spec, job, index), "PYTHONUNBUFFERED": "1", LAUNCHER_FD_ENV: str(lease)}
            yield job, index, dict(os.environ, **extra)


def _status(returncode):
    return 128 - returncode if returncode < 0 else returncode


LAUNCHER = Flags(
    (
        Option("--ps", type=int, default=1, help="parameter-server tasks (default: %(default)s)"),
        Option("--workers", type=int, default=2, help="worker tasks; worker 0 is the chief (default: %(default)s)"),
        Option(
            "--grace",
            type=float,
            default=30.0,
            help="seconds the other tasks may run on after the chief ended, a task failed or the launcher was "
            "signalled, before they are killed (default: %(default)s)",
        ),
        Option("script", nargs=argparse.REMAINDER, help="-- then the script and its flags"),
    )
)


def main(argv=None):
    parser = LAUNCHER.parser(
        prog="python -m runtime.cluster",
        description="Run a training script as a TensorFlow cluster on this machine (loopback ports): "
        "python -m runtime.cluster --ps 1 --workers 2 -- train_autoencoder.py ARGS...",
    )
    args = parser.parse_args(argv)
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        parser.error("give the script to run after --, e.g. -- train_autoencoder.py --sample")
    if not 1 <= args.ps <= 64 or not 1 <= args.workers <= 64:
        parser.error(f"--ps and --workers must be from 1 to 64, got {args.ps} and {args.workers}")
    return launch(script, args.ps, args.workers, grace=args.grace)


def _exit(status):
    """Exits with `status`; when the terminal is gone (SIGHUP), without the interpreter's failing last flush."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    _exit(main())
