"""A task's server and session: device placement, the wait for the ps tasks, the chief's
initialisation, and a ps task's serving until every training task is done.

TensorFlow is imported late (`_tf`): parsing and the launcher do not need it.
"""

import os
import signal
import socket
import time

from runtime.errors import UserError

FAIL_FAST_ENV = "GRPC_FAIL_FAST"
# Seconds between a waiting worker's readiness checks (SessionManager's default is 30).
RECOVERY_WAIT_SECS = 0.5
_DONE_QUEUE = "cae_transfer_done_{}"
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0) as sock:
            # A connect to a free local port can pick that same port as its source and so
            # reach itself (TCP simultaneous open): nobody listens there.
            return sock.getsockname() != sock.getpeername()
    except OSError:
        return False


def _gone(address, checks=5, pause=0.2):
    """True once `address` refuses a connection in any of `checks` tries `pause` seconds apart.

    A ps task killed a moment ago may still hold its listening port while the process is torn
    down, after its peers already saw their connections reset; one try could miss that.
    """
    for attempt in range(checks):
        if not _reachable(address):
            return True
        if attempt + 1 < checks:
            time.sleep(pause)
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
