"""The one run lifecycle both training runs go through (autoencoder.train, transfer.train).

The phases, in order: the model dir (claimed, locked and released by runtime.cli.main
before `run` is called) and the flags (checked and made into the run's typed settings by
its own boundary function, before `run`); cluster dispatch (a ps task serves and returns); the run's flag
checks, data, config and resume check (its `prepare`); the graph (its `build`); the
session, opened by the restore strategy (local, or a cluster's chief initialising inside
SessionManager); the loop (runtime.training.train_graph); the chief's evaluation; metrics.

The run supplies the parts that differ as a `RunHooks` object. The layering keeps this
module below the runs: it never imports them, they hand it their hooks.
"""

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Protocol

import tensorflow as tf

from runtime import cluster
from runtime.checkpoints import Checkpointer
from runtime.cli import RuntimeSettings, check_steps
from runtime.session import set_process_threads
from runtime.training import LoopHooks, LoopSettings, Span, train_graph

v1 = tf.compat.v1


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """A run's flags as typed records, made once by `settings`; the phases read these, never the Namespace.

    Attributes:
      runtime: the runtime.cli.RuntimeSettings.
      hyper: the graph's Hyperparameters.
      loop: the runtime.training.LoopSettings.
      cluster: the runtime.cluster.ClusterFlags.
      data: the run's data flags record (which data, and how it is split).
      flag_values: the flag values config.json records (Flags.config_values).
      checked: what the run config's validators returned, in order.
      extra: the record of the flags only this run has, or None.
    """

    runtime: RuntimeSettings
    hyper: object
    loop: LoopSettings
    cluster: cluster.ClusterFlags
    data: object
    flag_values: dict
    checked: tuple = ()
    extra: object = None


def settings(flags, args, hyper_type, data_type, extra_type=None):
    """The parse/validate boundary of a run: its flags checked, then made into its RunSettings.

    Args:
      flags: the script's runtime.options.Flags.
      args: the argparse Namespace it parsed.
      hyper_type, data_type: the record types of the graph's hyperparameters and of the data flags.
      extra_type: the record type of the flags only this run has, or None.

    Raises:
      UserError: naming the first offending value (Flags.validate).
    """
    checked = flags.validate(args)
    return RunSettings(
        flags.record(RuntimeSettings, args),
        flags.record(hyper_type, args),
        flags.record(LoopSettings, args),
        flags.record(cluster.ClusterFlags, args),
        flags.record(data_type, args),
        flags.config_values(args),
        checked,
        None if extra_type is None else flags.record(extra_type, args),
    )


def _run_init(sess, init):
    sess.run(init)


def _nothing(sess, resumed):
    pass


@dataclasses.dataclass(frozen=True)
class Restore:
    """What a run does around the init op when nothing is resumed, and once the session is open.

    Attributes:
      initialise: initialise(sess, init) runs the init op (and any restore of a source) when
        no checkpoint of the run's own was restored; in a cluster the chief calls it inside
        SessionManager.prepare_session.
      check: check(sess, resumed) runs on every task once its session is open (resumed: the
        checkpoint the run continues, or None).
    """

    initialise: Callable = _run_init
    check: Callable = _nothing


@dataclasses.dataclass(frozen=True)
class Built:
    """What a run's `build` made: the graph (its global_step, loss, train_op and cluster_step are
    what the lifecycle runs) and whatever the run made beside it, for its own hooks."""

    graph: object
    extra: object = None


@dataclasses.dataclass(frozen=True)
class Began:
    """What a run's `begin` hands the lifecycle: the loop's hooks and the chief's evaluation.

    Attributes:
      loop_hooks: the runtime.training.LoopHooks of this task.
      evaluate: on the chief, evaluate(result) -> the evaluation once the loop ended (result:
        the LoopResult); None on the other workers.
    """

    loop_hooks: LoopHooks
    evaluate: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the chief's session ends with: the LoopResult, the time.monotonic() training began at,
    the run's evaluation and the checkpoint resumed from (or None)."""

    result: object
    began: float
    evaluation: object
    resumed: str | None


@dataclasses.dataclass(frozen=True)
class RunState:
    """What a run's phases before the graph settled, as the lifecycle reads it; each run's state
    (autoencoder.train.AutoencoderRun, transfer.train.TransferRun) adds its own fields.

    Attributes:
      settings: the run's RunSettings.
      task: the runtime.cluster.ClusterTask, or None for a local run.
      config: what config.json holds; its total_steps is the run's length.
      resuming: whether the chief continues a run in the model dir.
    """

    settings: RunSettings
    task: object
    config: dict
    resuming: bool

    @property
    def runtime(self):
        return self.settings.runtime

    @property
    def hyper(self):
        return self.settings.hyper

    @property
    def loop(self):
        return self.settings.loop

    @property
    def chief(self):
        return self.task is None or self.task.is_chief

    @property
    def total_steps(self):
        return self.config["total_steps"]

    @property
    def steps_per_epoch(self):
        return self.total_steps // self.hyper.epochs


class RunHooks(Protocol):
    """The parts of a run that differ between the autoencoder and the transfer run."""

    def ps_serves(self, settings):
        """Whether a ps task serves the variables (a dry run trains nothing: no worker would finish)."""

    def prepare(self, settings, task):
        """Data, config and resume check: the run's RunState, or None when the run ends here."""

    def build(self, state):
        """The run's Built, into the default graph (under the cluster's device setter)."""

    def restore(self, state, built):
        """The run's Restore (made before the init op, which it may change)."""

    def begin(self, sess, state, built, resumed, span):
        """Writes the run's files and starts its input once the session is open; returns a Began."""

    def finish(self, state, outcome):
        """Writes metrics.json from the chief's Outcome; returns the metrics."""


def run(settings, hooks):
    """A whole run: cluster dispatch, the run's prepare, its graph, session, loop, evaluation and metrics.

    Args:
      settings: the run's settings record, made from its flags once (their checks passed);
        the lifecycle reads its `cluster` (runtime.cluster.ClusterFlags), the hooks the rest.
      hooks: the run's RunHooks.

    Returns:
      The metrics hooks.finish returned; None for a ps task, a non-chief worker, or a run
      whose prepare returned None (a dry run).
    """
    task = cluster.task_from(settings.cluster)
    if task is not None and task.is_ps:
        if hooks.ps_serves(settings):
            cluster.serve(task)
        return None
    state = hooks.prepare(settings, task)
    if state is None:
        return None
    set_process_threads(state.runtime.intra_op_threads, state.runtime.inter_op_threads)
    with tf.Graph().as_default(), v1.device(cluster.device_function(task)) if task else contextlib.nullcontext():
        outcome = train_and_evaluate(state, hooks.build(state), hooks)
    if outcome is None:
        return None
    return hooks.finish(state, outcome)


@contextlib.contextmanager
def open_session(state, graph, checkpointer, init, restore):
    """The run's session, its variables restored from the newest checkpoint or initialised.

    The restore strategy: a local run opens a session and restores or initialises in it; in
    a cluster the chief does so inside SessionManager.prepare_session, before any worker may
    read a variable, and the other workers wait for it.

    Yields:
      (the session, the checkpoint resumed from or None; always None on a non-chief worker).
    """
    resumed = {}

    def restore_or_initialise(sess):
        resumed["prefix"] = checkpointer.restore_latest(sess)
        if resumed["prefix"] is None:
            restore.initialise(sess, init)

    conf = state.runtime.session_config()
    if state.task is None:
        with v1.Session(config=conf) as sess:
            restore_or_initialise(sess)
            yield sess, resumed["prefix"]
    else:
        with cluster.create_session(state.task, graph.cluster_step, conf, restore_or_initialise) as sess:
            yield sess, resumed.get("prefix")


def train_and_evaluate(state, built, hooks):
    """The session's phases: restore or initialise, begin, train, and on the chief evaluate.

    Returns:
      The chief's Outcome; None on the other workers, once their share is done.
    """
    graph, restore = built.graph, hooks.restore(state, built)
    runtime = state.runtime
    checkpointer = Checkpointer(runtime.model_dir, max_to_keep=runtime.keep_checkpoints) if state.chief else None
    init = v1.global_variables_initializer()
    with (
        cluster.connection_errors(graph.cluster_step),
        open_session(state, graph, checkpointer, init, restore) as (sess, resumed),
    ):
        restore.check(sess, resumed)
        start_step = int(sess.run(graph.global_step))
        span = Span(start_step, check_steps(start_step, state.total_steps), state.steps_per_epoch)
        began_with = hooks.begin(sess, state, built, resumed, span)
        began = time.monotonic()
        result = train_graph(sess, graph, span, state.loop, checkpointer, began_with.loop_hooks)
        evaluation = began_with.evaluate(result) if state.chief else None
        if graph.cluster_step is not None:
            graph.cluster_step.finish(sess)  # the chief's last: the ps tasks stay up until it has read what it needs
    if not state.chief:
        print(
            f"{state.task.name}: done at global step {result.final_step}, {result.own_steps} steps of its own, "
            f"{result.images_per_sec:,.0f} images/s"
        )
        return None
    return Outcome(result, began, evaluation, resumed)
