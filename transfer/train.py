"""A transfer run from start to end: the library behind train_transfer.py.

The phases, in order (docs/ARCHITECTURE.md): validate the flags; load and split the data;
read the transfer source; make the restore plan (from a graph built and thrown away);
check a resume; build the graph (transfer.graph); restore and prove the restore; train;
prove the frozen variables did not move; evaluate the best epoch on test; write metrics.
"""

import collections
import dataclasses
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from models import user_network
from runtime import cli, cluster, lifecycle, onednn, rundir
from runtime.errors import CheckpointError, UserError, disk_full_reason, one_line
from runtime.paths import DirAlias, needs_alias, shown
from runtime.summaries import SummaryWriter, confusion_image, scalars
from runtime.training import LoopHooks, finite_or_none
from transfer import class_heads, labelled
from transfer import graph as transfer_graph
from transfer import source as ckpt
from transfer.feature_store import FeatureStore
from transfer.features import CACHE_BATCH
from transfer.flags import TRAIN_TRANSFER
from transfer.plan import make_plan

v1 = tf.compat.v1

EVAL_BATCH = 1000
# Decoded validation and test images are kept in memory up to this size (bytes of
# float32 pixels), so that an image folder is not decoded again every epoch.
DECODED_EVAL_BYTES = 256 * 2**20
# A resumed run must have been started with the same values of these (the flags marked `resume`).
RESUME_KEYS = TRAIN_TRANSFER.resume_keys


@dataclasses.dataclass(frozen=True)
class SourceFlags:
    """The transfer run's own flags (of the same names) besides the restore selection: its source,
    --dry-run, the feature caches, and --restore as given (for metrics.json)."""

    checkpoint: str
    restore: str = "conv"
    dry_run: bool = False
    cache_features: str = "auto"
    feature_cache: str | None = None
    feature_cache_max_mb: int = 2048
    min_steps: int = 600


def settings(args):
    """The parse/validate boundary: train_transfer.py's flags checked (transfer.flags.validate) and
    made into the run's runtime.lifecycle.RunSettings: `checked` holds ((network, InputSpec,
    RestoreSelection),), `data` a transfer.labelled.DataFlags, `extra` the SourceFlags.

    Raises:
      UserError: naming the first offending value.
    """
    return lifecycle.settings(TRAIN_TRANSFER, args, transfer_graph.Hyperparameters, labelled.DataFlags, SourceFlags)


@dataclasses.dataclass(frozen=True)
class TransferRun(lifecycle.RunState):
    """What the phases before the graph settled: the runtime.lifecycle.RunState and the transfer's own.

    Attributes:
      network, spec: the network and the InputSpec it is fed.
      plan: the RestorePlan.
      data: the transfer.labelled.LabelledData.
      use_cache: whether the head trains on cached features.
      store: the chief's feature store, or None.
    """

    network: object
    spec: object
    plan: object
    data: object
    use_cache: bool
    store: object

    @property
    def say(self):
        """print on the chief; the other workers compute what the chief shows."""
        return print if self.chief else _silent


def make_run_plan(network, data, spec, selection, checkpoint, model_dir):
    """Reads the transfer source (unless the selection restores nothing) and decides what happens to every variable.

    Args:
      network, spec: the network and the InputSpec it is fed.
      data: the run's transfer.labelled.LabelledData.
      selection: the transfer.flags.RestoreSelection.
      checkpoint: the --checkpoint flag.
      model_dir: the run's directory, which the source must not be inside.
    """
    source_prefix, source_variables = None, []
    if not selection.restores_nothing:
        source_prefix = ckpt.resolve_checkpoint(checkpoint)
        ckpt.refuse_writing_into(source_prefix, model_dir)
        source_variables = ckpt.read_variables(source_prefix)
    plan = plan_against(network, data.num_classes, data.spec, spec, selection, source_prefix, source_variables)
    if selection.classes is not None:
        plan = class_heads.keep_classes(plan, data.class_names, selection, source_variables)
    return plan


def plan_against(network, num_classes, data_spec, spec, selection, source_prefix, source_variables):
    """The plan for this network's classifier of num_classes against a checkpoint's variables.

    What train_transfer.py and `transfer.inspect --plan` both print.
    """
    graph_variables = transfer_graph.variables_of(network, num_classes, data_spec, spec)
    return make_plan(graph_variables, source_variables, selection, source_prefix)


def run_config(flag_values, network, spec, plan, data, use_cache):
    """What config.json holds: the flags' values (TRAIN_TRANSFER.config_values), the network, the
    source, the data's identity and sizes, and whether the head trains on cached features."""
    return dict(
        flag_values,
        model="transfer",
        network=network.name,
        network_source=user_network.record(network),
        image_size=spec.height if network.resizable else None,
        checkpoint=plan.checkpoint,
        data_source=data.source_kind,
        data_identity=data.identity,
        data_sha256=data.file_digests,
        onednn=onednn.state(),
        data=data.description,
        class_names=list(data.class_names),
        num_train=len(data.train),
        num_validation=len(data.validation),
        cache_features_used=use_cache,
        # --keep-classes: per class, the checkpoint rows its head columns took ([] fresh); a resumed run
        # must match them alike, whatever the labels or map files hold now.
        class_columns=[list(rows) for rows in plan.class_rows[0].columns] if plan.class_rows else None,
    )


def scores(logits, labels):
    """Accuracy, mean softmax cross-entropy (in float64) and predictions of logits [N, K]."""
    outputs = np.asarray(logits, np.float64)
    if not len(outputs):
        return float("nan"), float("nan"), np.zeros([0], np.int64)
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    predictions = outputs.argmax(axis=1)
    return (
        float(np.mean(predictions == labels)),
        float(-np.mean(log_probs[np.arange(len(labels)), labels])),
        predictions,
    )


class Evaluator:
    """Accuracy and loss of a split: over cached features when the run has them, else the full pass."""

    def __init__(self, sess, graph, data, spec, feature_store=None):
        self.sess, self.graph, self.data, self.spec = sess, graph, data, spec
        self.feature_store = feature_store
        self._features = {}
        self._decoded = {}

    def features(self, name, examples):
        """The network's features [N, units] of a split, computed once (or read from the disk cache)."""
        if name not in self._features:

            def compute(subset):
                return transfer_graph.run_in_batches(
                    self.sess,
                    self.graph.features,
                    self.graph.images,
                    subset.batches(self.data.spec, CACHE_BATCH),
                    {self.graph.is_training: False},
                )

            if self.feature_store is None:
                self._features[name] = compute(examples).astype(np.float32, copy=False)
            else:
                self._features[name] = self.feature_store.features(self.sess, self.graph, name, examples, compute)
        return self._features[name]

    def __call__(self, name, examples):
        feed = {self.graph.is_training: False}
        if self.graph.use_cache:
            batches = _chunks(self.features(name, examples), EVAL_BATCH)
            logits = transfer_graph.run_in_batches(
                self.sess, self.graph.head_logits, self.graph.head_features, batches, feed
            )
        else:
            batches = self._batches(name, examples)
            logits = transfer_graph.run_in_batches(self.sess, self.graph.logits, self.graph.images, batches, feed)
        return scores(logits, examples.labels)

    def _batches(self, name, examples):
        spec = self.data.spec
        if examples.images is not None or len(examples) * spec.height * spec.width * spec.channels * 4 > (
            DECODED_EVAL_BYTES
        ):
            return examples.batches(spec, EVAL_BATCH)
        if name not in self._decoded:
            self._decoded[name] = list(examples.batches(spec, EVAL_BATCH))
        return self._decoded[name]


def _chunks(array, size):
    return (array[start : start + size] for start in range(0, len(array), size))


def restore_source(sess, plan, restore_saver, model_variables, source_values):
    """Restores the plan's variables and proves each equals the checkpoint exactly."""
    ckpt.restore_and_prove(sess, plan, restore_saver, model_variables, source_values)


def start_input(sess, state, graph, evaluator, span):
    """Initialises the training pipeline that the graph trains on (images, or cached features).

    In a cluster each task reads its own order (cluster.replica_seed), long enough for any
    share of the remaining steps, and computes its own cached features.
    """
    task, data, start_step, total_steps = state.task, state.data, span.start_step, span.total_steps
    end = total_steps if task is None else total_steps + (total_steps - start_step + 1) * task.num_replicas
    seed = cluster.replica_seed(state.runtime.seed, task)
    stream = _stream(len(data.train), state.hyper.batch_size, seed, start_step, end)
    if graph.use_cache:
        began = time.monotonic()
        features = evaluator.features("train", data.train)
        who = "" if task is None else f"{task.name}: "
        print(f"{who}features of {len(features)} training images ready in {time.monotonic() - began:.1f} s")
        graph.feature_input.initialize(sess, features, data.train.labels, stream)
    elif data.in_files:
        graph.image_input.initialize(sess, data.train.files, data.train.labels, stream)
    else:
        graph.image_input.initialize(sess, data.train.images, data.train.labels, stream)


def _stream(num_examples, batch_size, seed, start_step, end_step):
    from data import pipeline

    return pipeline.index_stream(num_examples, batch_size, seed, start_step, end_step)


class BestEpoch:
    """The best epoch by validation accuracy, kept in <model_dir>/best (weights and best.json)."""

    def __init__(self, model_dir, variables, resumed):
        self.path = os.path.join(model_dir, "best")
        self.saver = v1.train.Saver(variables, max_to_keep=1, save_relative_paths=True, name="best_saver")
        if not resumed:  # a best epoch left by a run that never saved a checkpoint is not this run's
            shutil.rmtree(self.path, ignore_errors=True)
        self.record = rundir.read_json(os.path.join(self.path, "best.json")) or {
            "epoch": 0,
            "val_accuracy": -1.0,
            "step": 0,
        }
        self._alias = None

    def offer(self, sess, epoch, step, val_accuracy):
        if val_accuracy <= self.record["val_accuracy"]:
            return
        self.record.update(epoch=epoch, step=step, val_accuracy=val_accuracy)
        os.makedirs(self.path, exist_ok=True)
        self._alias = self._alias or DirAlias(self.path)
        try:
            self.saver.save(sess, self._alias.join("model.ckpt"))
        except (tf.errors.OpError, OSError, RuntimeError) as error:
            raise UserError(
                f"cannot save the best epoch in {shown(self.path)}: {disk_full_reason(error) or one_line(error)}"
            ) from None
        rundir.write_json(os.path.join(self.path, "best.json"), self.record)

    def restore(self, sess):
        """Loads the best epoch's weights, if there is one; returns whether it did."""
        if self.record["val_accuracy"] < 0:
            return False
        with DirAlias(self.path) as alias:
            self.saver.restore(sess, alias.join("model.ckpt"))
        print(f"evaluating the best epoch by validation accuracy: epoch {self.record['epoch']}")
        return True


def run(args):
    """A whole transfer run (see the module docstring for the phases): runtime.lifecycle.run.

    In a cluster (TF_CONFIG or the cluster flags; docs/CLUSTER.md) a ps task serves the
    variables and returns; every worker makes the plan and builds the graph under the
    replica device setter, the restore happens inside the init op (so each worker's first
    read already sees it, which each one checks), and only the chief prints the plan,
    evaluates, keeps best/ and writes the run's files.

    Args:
      args: the parsed flags of train_transfer.py (read by `settings` alone).

    Returns:
      The metrics written to metrics.json, or None for --dry-run, a ps task or a non-chief worker.
    """
    return lifecycle.run(settings(args), TransferHooks())


class TransferHooks:
    """The transfer run's parts of runtime.lifecycle.run."""

    def ps_serves(self, settings):
        return not settings.extra.dry_run  # a dry run trains nothing: no worker would ever say it is done

    def prepare(self, settings, task):
        return prepare(settings, task)

    def build(self, state):
        """The graph, with the restored variables' source values and the summaries beside it."""
        graph, source_values = _build(state)
        return lifecycle.Built(graph, _Extra(source_values, _summaries(graph, state.plan)))

    def restore(self, state, built):
        """The local restore (a Saver after the init op), or the cluster's (inside the init op)."""
        return _restore(state, built)

    def begin(self, sess, state, built, resumed, span):
        return _begin(sess, state, built, resumed, span)

    def finish(self, state, outcome):
        result = outcome.result
        metrics = dict(
            outcome.evaluation,
            global_step=result.final_step,
            train_images_per_sec=round(result.images_per_sec, 1),
            wall_seconds=round(time.monotonic() - outcome.began, 1),
        )
        if state.task is not None:
            metrics["own_steps"] = result.own_steps
        return _write_metrics(state, metrics)


def prepare(settings, task):
    """The phases before the graph: data, plan, cache decision, config, resume check.

    Args:
      settings: the run's runtime.lifecycle.RunSettings (`settings`).
      task: the runtime.cluster.ClusterTask, or None for a local run.

    Returns:
      The TransferRun, or None for --dry-run (once the plan is shown).
    """
    chief = task is None or task.is_chief
    say = print if chief else _silent
    ((network, spec, selection),) = settings.checked
    runtime, hyper, source = settings.runtime, settings.hyper, settings.extra
    store = None
    if source.feature_cache and chief:
        store = FeatureStore(source.feature_cache, source.feature_cache_max_mb * 2**20, network, spec)
    elif source.feature_cache:
        print(f"{task.name}: --feature-cache is the chief's; this worker computes its features in memory")
    data = labelled.load(settings.data, spec)
    say(
        f"classes: {data.num_classes}; labelled training examples: {len(data.train)}; "
        f"validation: {len(data.validation)}; test: {len(data.test)}"
    )
    settings = with_run_length(settings, len(data.train), say)
    hyper = settings.hyper
    plan = make_run_plan(network, data, spec, selection, source.checkpoint, runtime.model_dir)
    _say_plan(say, plan, selection)
    if task is not None:
        _refuse_in_a_cluster(plan)
    if source.dry_run:
        return None
    use_cache, why = transfer_graph.cache_decision(plan, network, hyper.shift, source.cache_features)
    say(f"feature cache: {'on' if use_cache else 'off'} ({why})")
    steps_per_epoch = cli.steps_per_epoch(len(data.train), hyper.batch_size, "labelled training examples")
    config = run_config(settings.flag_values, network, spec, plan, data, use_cache)
    config["total_steps"] = hyper.epochs * steps_per_epoch
    if task is not None:
        config["cluster"] = task.describe()
    resuming = chief and rundir.check_resume(runtime.model_dir, config, RESUME_KEYS) is not None
    return TransferRun(settings, task, config, resuming, network, spec, plan, data, use_cache, store)


def with_run_length(settings, num_train, say):
    """The settings with --epochs resolved (runtime.cli.run_length), which `say` announces.

    A dry run whose batch is larger than the training set says nothing (the run itself refuses it).
    """
    hyper, dry_run = settings.hyper, settings.extra.dry_run
    if dry_run and hyper.batch_size > num_train:
        return settings
    steps_per_epoch = cli.steps_per_epoch(num_train, hyper.batch_size, "labelled training examples")
    epochs, why = cli.run_length(hyper.epochs, settings.extra.min_steps, steps_per_epoch)
    say(why)
    return dataclasses.replace(
        settings,
        hyper=dataclasses.replace(hyper, epochs=epochs),
        flag_values={**settings.flag_values, "epochs": epochs},
    )


def _build(state):
    """The run's graph, seeded by --seed, into the default graph, and the restored variables' source values."""
    v1.set_random_seed(state.runtime.seed)
    shape = transfer_graph.DataShape.of(state.data)
    graph = transfer_graph.build(
        state.network, state.plan, shape, state.spec, state.hyper, state.use_cache, state.task, state.total_steps
    )
    state.say(
        f"training {len(graph.trainable)} variables "
        f"({sum(int(np.prod(v.shape)) for v in graph.trainable):,} weights); "
        f"{'head on cached features' if state.use_cache else 'full forward pass every step'}"
    )
    plan = state.plan
    sources = class_heads.reads(plan)
    source_values = ckpt.read_values(plan.checkpoint, sources) if sources else {}
    return graph, source_values


def _say_plan(say, plan, selection):
    """Shows the restore plan's table, and a warning when a selection restores nothing."""
    say(plan.format())
    if not selection.restores_nothing and not plan.restored:
        say(
            f"warning: this plan restores nothing from {shown(plan.checkpoint)}: the run trains from scratch; "
            "pass --restore none to say so"
        )


def _write_metrics(state, result):
    """The chief's metrics.json (and a resumed run's config.json, now that it has trained)."""
    data, task, model_dir = state.data, state.task, state.runtime.model_dir
    metrics = dict(
        result,
        restore=state.settings.extra.restore,
        network=state.network.name,
        checkpoint=state.plan.checkpoint,
        dataset=data.name,
        data_source=data.source_kind,
        labels_per_class=state.settings.data.labels_per_class,
        num_train=len(data.train),
        num_validation=len(data.validation),
        num_test=len(data.test),
        num_bad_files=data.description.get("num_bad_files", 0),
        cache_features=state.use_cache,
    )
    if task is not None:
        metrics.update(cluster=task.describe(), own_steps=metrics.pop("own_steps"))
    if state.resuming:
        rundir.write_config(model_dir, state.config)
    rundir.write_json(os.path.join(model_dir, "metrics.json"), metrics)
    print(f"test accuracy: {metrics['test_accuracy']:.4f} ({len(data.test)} images)")
    if task is not None:
        print(f"{task.name}: done at global step {metrics['global_step']}, {metrics['own_steps']} steps of its own")
    print(f"metrics: {os.path.join(model_dir, 'metrics.json')}")
    return metrics


def _refuse_in_a_cluster(plan):
    """Refuses the rows a cluster's restore (init_from_source: checkpoint reads in the init op) cannot write:
    values computed from the checkpoint after the restore, which only a local run does."""
    if plan.adapted:
        raise UserError(
            f"{plan.adapted[0].name} is adapted to other input channels (--adapt-channels), which only a local run "
            "computes; in a cluster pass --adapt-channels none and --skip-mismatched, or train locally"
        )
    if plan.class_rows:
        raise UserError("--keep-classes writes the head's rows after the restore, which a cluster run does not do")


def _silent(*args, **kwargs):
    pass


def init_from_source(plan, variables):
    """Makes the plan's restore part of the variables' initialisers (a cluster's restore).

    `tf.compat.v1.train.init_from_checkpoint` rewrites each restored variable's initialiser
    into a read of the checkpoint, so the restore runs inside the init op on the ps task
    that holds the variable: every worker waits for that op, so none can train on random
    weights (a restore after the init op, as the local run does, races with them). The
    ps task opens the checkpoint itself, so the path must be the same for it.

    Call before `global_variables_initializer()`.

    Raises:
      UserError: when the checkpoint path is one TensorFlow would misread; only the
        local run can go through an alias of it.
    """
    prefix = os.path.abspath(plan.checkpoint)
    if needs_alias(prefix):
        raise UserError(
            f"{shown(prefix)}: in a cluster the ps task reads the transfer source itself and TensorFlow cannot "
            "read a path with [ ] * ? or non-UTF-8 bytes; rename or copy it"
        )
    by_name = {var.op.name: var for var in variables}
    v1.train.init_from_checkpoint(prefix, {source: by_name[name] for source, name in plan.restore_names().items()})


def initialise_from_source(sess, init, plan):
    """Runs a cluster run's init op, in which the ps tasks read the transfer source.

    Raises:
      CheckpointError: when the ps tasks cannot read it (a path they do not share), named.
    """
    try:
        sess.run(init)
    except (tf.errors.NotFoundError, tf.errors.DataLossError, tf.errors.PermissionDeniedError) as error:
        raise CheckpointError(
            f"the ps tasks cannot read the transfer source {shown(plan.checkpoint)} ({one_line(error)[:200]}); "
            "in a cluster they open it themselves: give a path that names the same files on their hosts"
        ) from None


def first_read(plan, graph):
    """Ops that read the restored variables, then the global step (a worker's check of its first read).

    Returns:
      (restored variables' values, global step read after them), as fetches.
    """
    by_name = {var.op.name: var for var in graph.model_variables}
    reads = [tf.identity(by_name[row.name]) for row in plan.restored]
    with tf.control_dependencies(reads):
        step = tf.identity(graph.global_step.read_value())
    return reads, step


def check_first_read(sess, task, plan, fetches, source_values):
    """Proves the worker's first read of the restored variables equals the transfer source.

    The variables are read before the global step: a step of 0 then means no update had
    begun, so every restored variable must equal the checkpoint; a worker that joins later
    compares the frozen ones (the fine-tuned ones have been trained since).

    Raises:
      UserError: naming the worker and the largest difference when a value differs.
    """
    reads, step_op = fetches
    values, step = sess.run([reads, step_op])
    rows = plan.restored if step == 0 else plan.frozen_restored
    worst = 0.0
    by_row = dict(zip([row.name for row in plan.restored], values))
    for row in rows:
        if not np.array_equal(by_row[row.name], source_values[row.source]):
            difference = np.abs(by_row[row.name].astype(np.float64) - source_values[row.source])
            worst = max(worst, float(np.nan_to_num(difference, nan=np.inf).max()))
    if worst != 0.0:
        raise UserError(
            f"{task.name}: its first read of the restored variables differs from {shown(plan.checkpoint)} "
            f"by up to {worst:g}: the restore did not reach it"
        )
    which = "restored" if len(rows) == len(plan.restored) else "frozen restored"
    print(f"{task.name}: first read of {len(rows)} {which} variables equals the checkpoint (global step {step})")


def _summaries(graph, plan):
    train_summary = v1.summary.merge(
        [v1.summary.scalar("losses/train", graph.loss), v1.summary.scalar("accuracy/train_batch", graph.batch_accuracy)]
    )
    histogram_summary = v1.summary.merge(
        [v1.summary.histogram(f"weights/{var.op.name}", var) for var in graph.model_variables]
    )
    plan_summary = v1.summary.text("restore_plan", tf.constant(plan.markdown()))
    return train_summary, histogram_summary, plan_summary


def _write_run_files(state):
    model_dir = state.runtime.model_dir
    if not state.resuming:  # a resumed run's config.json is rewritten only once it has trained
        rundir.write_config(model_dir, state.config)
    rundir.write_json(os.path.join(model_dir, "restore_plan.json"), state.plan.to_json())
    path = os.path.join(model_dir, "labels.txt")
    with open(f"{path}.tmp", "w", encoding="utf-8") as stream:
        stream.write("".join(f"{name}\n" for name in state.data.class_names))
    os.replace(f"{path}.tmp", path)


_Extra = collections.namedtuple("_Extra", "source_values summaries")
_Extra.__doc__ = "What the run builds beside the graph: the restored variables' source values and its summaries."


def _restore(state, built):
    """The run's runtime.lifecycle.Restore: local, a Saver after the init op proved equal to the source;
    in a cluster, the restore inside the init op (init_from_source), each worker's first read proved equal."""
    plan, graph, source_values = state.plan, built.graph, built.extra.source_values

    def say_resumed(resumed):
        if resumed:
            print(f"resumed from {resumed}: its weights win; the transfer source is not restored again")

    if state.task is None:
        saver = ckpt.restore_saver(plan, graph.model_variables)

        def initialise(sess, init):
            sess.run(init)
            if saver is not None:
                restore_source(sess, plan, saver, graph.model_variables, source_values)
            if plan.class_rows:
                class_heads.write(sess, plan.class_rows, graph.model_variables, source_values)

        return lifecycle.Restore(initialise, lambda sess, resumed: say_resumed(resumed))
    task = state.task
    read_fetches = None
    if plan.restored:
        init_from_source(plan, graph.model_variables)
        read_fetches = first_read(plan, graph)

    def check(sess, resumed):
        """The chief says what init restored; every worker checks its first read."""
        say_resumed(resumed)
        if not resumed and task.is_chief and plan.restored:
            print(f"initialised; {len(plan.restored)} variables restored from {plan.checkpoint} inside the init op")
        if plan.restored:
            check_first_read(sess, task, plan, read_fetches, source_values)

    return lifecycle.Restore(lambda sess, init: initialise_from_source(sess, init, plan), check)


_Chief = collections.namedtuple("_Chief", "evaluate best writer on_epoch_end")
_Chief.__doc__ = "What only the chief keeps: the Evaluator, the BestEpoch, the SummaryWriter and on_epoch_end."


def _chief_begins(sess, state, graph, evaluate, resumed, span, summaries):
    """The chief's start: the run's files, the summary writer, best/ and its on_epoch_end."""
    _, histogram_summary, plan_summary = summaries
    _write_run_files(state)
    writer = SummaryWriter(state.runtime.model_dir, graph=sess.graph if span.start_step == 0 else None)
    if span.start_step == 0:
        writer.add_summary(sess.run(plan_summary), 0)
    best = BestEpoch(state.runtime.model_dir, graph.model_variables, resumed)
    # Tiny labelled sets make epochs of one step: keep the histograms to about 100 per run.
    every = max(1, state.hyper.epochs // 100)

    def on_epoch_end(epoch, step):
        summary = {}
        if len(state.data.validation):
            val_accuracy, val_loss, _ = evaluate("validation", state.data.validation)
            summary = {"accuracy/val": val_accuracy, "losses/val": val_loss}
            best.offer(sess, epoch, step, val_accuracy)
            print(
                f"epoch {epoch}: val accuracy {val_accuracy:.4f}, val loss {val_loss:.4f} "
                f"(best: epoch {best.record['epoch']}, {best.record['val_accuracy']:.4f})"
            )
        writer.add_summary(scalars(summary), step)
        if epoch % every == 0 or step == span.total_steps:
            writer.add_summary(sess.run(histogram_summary), step)
        writer.flush()

    return _Chief(evaluate, best, writer, on_epoch_end)


def _test(sess, state, graph, chief, step, source_values):
    """The chief's last phase: the frozen check, the best epoch's weights, the test set."""
    # In a cluster the session reads the ps tasks' values: the check covers what every worker trained.
    plan, data, best, writer = state.plan, state.data, chief.best, chief.writer
    count, worst = frozen_check(sess, plan, graph, source_values)
    best.restore(sess)
    test_accuracy, test_loss, predictions = chief.evaluate("test", data.test)
    writer.add_summary(scalars({"accuracy/test": test_accuracy, "losses/test": test_loss}), step)
    writer.add_summary(confusion_image("confusion_matrix/test", data.test.labels, predictions, data.num_classes), step)
    writer.close()
    return {
        "val_accuracy": best.record["val_accuracy"] if best.record["val_accuracy"] >= 0 else None,
        "best_epoch": best.record["epoch"] or None,
        "test_accuracy": test_accuracy,
        "test_loss": finite_or_none(test_loss),
        "frozen_check_variables": count,
        "frozen_check_max_abs_diff": worst if count else None,
        "frozen_check_moving_statistics": ckpt.statistics_among(plan.frozen_restored),
    }


def _begin(sess, state, built, resumed, span):
    """Once the session is open: the chief's files, best/ and writer; every task's input.

    Returns:
      The runtime.lifecycle.Began: the loop's hooks, and on the chief the test phase.
    """
    graph, (source_values, summaries) = built.graph, built.extra
    evaluate = Evaluator(sess, graph, state.data, state.spec, state.store)
    chief = _chief_begins(sess, state, graph, evaluate, resumed, span, summaries) if state.chief else None
    if chief is None:
        print(f"{state.task.name}: joined the cluster at global step {span.start_step}")
    start_input(sess, state, graph, evaluate, span)
    if chief is None:
        return lifecycle.Began(LoopHooks(summary_op=summaries[0]))

    before = _accuracy_before_training(state, evaluate, resumed)

    def test(result):
        return _test(sess, state, graph, chief, result.final_step, source_values) | before

    return lifecycle.Began(LoopHooks(chief.writer, summaries[0], chief.on_epoch_end), test)


def _accuracy_before_training(state, evaluate, resumed):
    """--keep-classes: the test accuracy of the kept class rows before any step (zero-shot), for metrics.json."""
    if not state.plan.class_rows or resumed:
        return {}
    accuracy, _, _ = evaluate("test", state.data.test)
    print(f"test accuracy before training (the kept class rows): {accuracy:.4f} ({len(state.data.test)} images)")
    return {"test_accuracy_before_training": accuracy}


def frozen_check(sess, plan, graph, source_values):
    """Proves every frozen restored variable (moving statistics included), and a frozen head's kept
    class columns, still equals the checkpoint."""
    class_heads.check_frozen(sess, plan, graph.model_variables, source_values)
    return ckpt.frozen_check(sess, plan, graph.model_variables, source_values)
