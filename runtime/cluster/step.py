"""The step-ticket protocol of a cluster's training step: the train op (`train_op`), the
TrainStep that runs it, holds workers at an epoch boundary and beats the heartbeat, and
the one-line error of a lost connection (`connection_errors`).
"""

import contextlib
import threading
import time

from runtime.cluster.session import _done_queue, _gone, _tf
from runtime.cluster.spec import HEARTBEAT_SECS
from runtime.errors import UserError

HOLD_POLL_SECS = 0.02  # how often a worker held at an epoch boundary reads the limit
HOLD_NOTICE_SECS = 10.0  # a worker held longer than this says what it waits for


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

        gone = [f"ps {i} at {address}" for i, address in enumerate(self.task.spec["ps"]) if _gone(address)]
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
