"""A transfer run from start to end: the library behind train_transfer.py.

The phases, in order (docs/ARCHITECTURE.md): validate the flags; load and split the data;
read the transfer source; make the restore plan (from a graph built and thrown away);
check a resume; build the graph (transfer.graph); restore and prove the restore; train;
prove the frozen variables did not move; evaluate the best epoch on test; write metrics.
"""

import contextlib
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from models import networks
from runtime import cli, cluster, onednn, rundir
from runtime.checkpoints import Checkpointer
from runtime.errors import CheckpointError, UserError, disk_full_reason, one_line
from runtime.paths import DirAlias, needs_alias, shown
from runtime.session import session_config, set_process_threads
from runtime.summaries import SummaryWriter, confusion_image, scalars
from runtime.training import LoopHooks, LoopSettings, Span, finite_or_none, train_graph
from transfer import graph as transfer_graph
from transfer import labelled
from transfer import source as ckpt
from transfer.feature_store import make_feature_store
from transfer.features import CACHE_BATCH
from transfer.flags import TRAIN_TRANSFER, validate
from transfer.plan import MOVING_STATISTICS, make_plan

v1 = tf.compat.v1

EVAL_BATCH = 1000
# Decoded validation and test images are kept in memory up to this size (bytes of
# float32 pixels), so that an image folder is not decoded again every epoch.
DECODED_EVAL_BYTES = 256 * 2**20
# A resumed run must have been started with the same values of these (the flags marked `resume`).
RESUME_KEYS = TRAIN_TRANSFER.resume_keys


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
    return plan_against(network, data.num_classes, data.spec, spec, selection, source_prefix, source_variables)


def plan_against(network, num_classes, data_spec, spec, selection, source_prefix, source_variables):
    """The plan for this network's classifier of num_classes against a checkpoint's variables.

    What train_transfer.py and `transfer.inspect --plan` both print.
    """
    return make_plan(
        transfer_graph.variables_of(network, num_classes, data_spec, spec),
        source_variables,
        selection.restore,
        source_prefix,
        exclude=selection.exclude,
        maps=selection.maps,
        skip_mismatched=selection.skip_mismatched,
        fine_tune=selection.fine_tune,
        lr_mults=selection.lr_mults,
        train_batch_norm=selection.train_batch_norm,
    )


def run_config(args, network, spec, plan, data, use_cache):
    return dict(
        TRAIN_TRANSFER.config_values(args),
        model="transfer",
        network=network.name,
        image_size=None if network.name == networks.DEFAULT else spec.height,
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
    ckpt.restore(sess, restore_saver, plan.checkpoint)
    count, worst = ckpt.max_abs_diff(sess, plan.restored, model_variables, source_values)
    if worst != 0.0:
        raise UserError(f"restore check failed: restored values differ from {plan.checkpoint} by up to {worst:g}")
    print(f"restored {count} variables from {plan.checkpoint}; each equals the checkpoint exactly")


def start_input(sess, graph, evaluator, data, args, start_step, total_steps, task=None):
    """Initialises the training pipeline that the graph trains on (images, or cached features).

    In a cluster each task reads its own order (cluster.replica_seed), long enough for any
    share of the remaining steps, and computes its own cached features.
    """
    end = total_steps if task is None else total_steps + (total_steps - start_step + 1) * task.num_replicas
    stream = _stream(len(data.train), args.batch_size, cluster.replica_seed(args.seed, task), start_step, end)
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
    """A whole transfer run (see the module docstring for the phases).

    In a cluster (TF_CONFIG or the cluster flags; docs/CLUSTER.md) a ps task serves the
    variables and returns; every worker makes the plan and builds the graph under the
    replica device setter, the restore happens inside the init op (so each worker's first
    read already sees it, which each one checks), and only the chief prints the plan,
    evaluates, keeps best/ and writes the run's files.

    Args:
      args: the parsed flags of train_transfer.py.

    Returns:
      The metrics written to metrics.json, or None for --dry-run, a ps task or a non-chief worker.
    """
    task = cluster.from_args(args)
    if task is not None and task.is_ps:
        if not args.dry_run:  # a dry run trains nothing: no worker would ever say it is done
            cluster.serve(task)
        return None
    chief = task is None or task.is_chief
    say = print if chief else _silent  # the other workers compute what the chief shows
    network, spec, selection = validate(args)
    store = make_feature_store(args, network, spec) if chief else None
    if store is None and args.feature_cache and not chief:
        print(f"{task.name}: --feature-cache is the chief's; this worker computes its features in memory")
    data = labelled.load(args, spec)
    say(
        f"classes: {data.num_classes}; labelled training examples: {len(data.train)}; "
        f"validation: {len(data.validation)}; test: {len(data.test)}"
    )
    plan = make_run_plan(network, data, spec, selection, args.checkpoint, args.model_dir)
    _say_plan(say, plan, selection)
    if args.dry_run:
        return None
    use_cache, why = transfer_graph.cache_decision(plan, network, args.shift, args.cache_features)
    say(f"feature cache: {'on' if use_cache else 'off'} ({why})")
    steps_per_epoch = cli.steps_per_epoch(len(data.train), args.batch_size, "labelled training examples")
    config = dict(run_config(args, network, spec, plan, data, use_cache), total_steps=args.epochs * steps_per_epoch)
    if task is not None:
        config["cluster"] = task.describe()
    resuming = chief and rundir.check_resume(args.model_dir, config, RESUME_KEYS) is not None

    set_process_threads(args.intra_op_threads, args.inter_op_threads)
    with tf.Graph().as_default(), v1.device(cluster.device_function(task)) if task else contextlib.nullcontext():
        v1.set_random_seed(args.seed)
        hyper = TRAIN_TRANSFER.record(transfer_graph.Hyperparameters, args)
        shape = transfer_graph.DataShape.of(data)
        graph = transfer_graph.build(network, plan, shape, spec, hyper, use_cache, task, config["total_steps"])
        say(
            f"training {len(graph.trainable)} variables "
            f"({sum(int(np.prod(v.shape)) for v in graph.trainable):,} weights); "
            f"{'head on cached features' if use_cache else 'full forward pass every step'}"
        )
        source_values = (
            ckpt.read_values(plan.checkpoint, [row.source for row in plan.restored]) if plan.restored else {}
        )
        result = _train_and_test(args, network, plan, data, spec, graph, config, resuming, source_values, store, task)
    if result is None:
        return None
    return _write_metrics(args, network, plan, data, use_cache, config, resuming, result, task)


def _say_plan(say, plan, selection):
    """Shows the restore plan's table, and a warning when a selection restores nothing."""
    say(plan.format())
    if not selection.restores_nothing and not plan.restored:
        say(
            f"warning: this plan restores nothing from {shown(plan.checkpoint)}: the run trains from scratch; "
            "pass --restore none to say so"
        )


def _write_metrics(args, network, plan, data, use_cache, config, resuming, result, task):
    """The chief's metrics.json (and a resumed run's config.json, now that it has trained)."""
    metrics = dict(
        result,
        restore=args.restore,
        network=network.name,
        checkpoint=plan.checkpoint,
        dataset=data.name,
        data_source=data.source_kind,
        labels_per_class=args.labels_per_class,
        num_train=len(data.train),
        num_validation=len(data.validation),
        num_test=len(data.test),
        num_bad_files=data.description.get("num_bad_files", 0),
        cache_features=use_cache,
    )
    if task is not None:
        metrics.update(cluster=task.describe(), own_steps=metrics.pop("own_steps"))
    if resuming:
        rundir.write_config(args.model_dir, config)
    rundir.write_json(os.path.join(args.model_dir, "metrics.json"), metrics)
    print(f"test accuracy: {metrics['test_accuracy']:.4f} ({len(data.test)} images)")
    if task is not None:
        print(f"{task.name}: done at global step {metrics['global_step']}, {metrics['own_steps']} steps of its own")
    print(f"metrics: {os.path.join(args.model_dir, 'metrics.json')}")
    return metrics


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


def _write_run_files(model_dir, config, plan, data, resuming):
    if not resuming:  # a resumed run's config.json is rewritten only once it has trained
        rundir.write_config(model_dir, config)
    rundir.write_json(os.path.join(model_dir, "restore_plan.json"), plan.to_json())
    path = os.path.join(model_dir, "labels.txt")
    with open(f"{path}.tmp", "w", encoding="utf-8") as stream:
        stream.write("".join(f"{name}\n" for name in data.class_names))
    os.replace(f"{path}.tmp", path)


@contextlib.contextmanager
def _session(args, plan, graph, source_values, task):
    """The run's session with the variables restored (resume), or initialised and the
    source restored; yields (sess, the checkpoint resumed from or None, the Checkpointer
    or None on a worker that is not the chief)."""
    chief = task is None or task.is_chief
    if task is None:
        restore_saver = ckpt.restore_saver(plan, graph.model_variables)
    elif plan.restored:
        init_from_source(plan, graph.model_variables)
        read_fetches = first_read(plan, graph)
    checkpointer = Checkpointer(args.model_dir, max_to_keep=args.keep_checkpoints) if chief else None
    init = v1.global_variables_initializer()
    conf = session_config(args.gpu_memory_fraction, args.allow_growth, args.intra_op_threads, args.inter_op_threads)
    state = {}

    def restore_or_initialise(sess):  # a cluster's chief, inside SessionManager.prepare_session
        state["resumed"] = checkpointer.restore_latest(sess)
        if state["resumed"] is None:
            initialise_from_source(sess, init, plan)  # the restore is part of init (init_from_source)

    with (
        cluster.connection_errors(graph.cluster_step),
        v1.Session(config=conf)
        if task is None
        else cluster.create_session(task, graph.cluster_step, conf, restore_or_initialise) as sess,
    ):
        if task is None:
            state["resumed"] = checkpointer.restore_latest(sess)
            if state["resumed"] is None:
                sess.run(init)
                if restore_saver is not None:
                    restore_source(sess, plan, restore_saver, graph.model_variables, source_values)
        resumed = state.get("resumed")
        if resumed:
            print(f"resumed from {resumed}: its weights win; the transfer source is not restored again")
        elif task is not None and chief and plan.restored:
            print(f"initialised; {len(plan.restored)} variables restored from {plan.checkpoint} inside the init op")
        if task is not None and plan.restored:
            check_first_read(sess, task, plan, read_fetches, source_values)
        yield sess, resumed, checkpointer


def _epoch_end(sess, evaluate, data, best, writer, histogram_summary, histogram_every, total_steps):
    """The chief's on_epoch_end: validation, best/, summaries."""

    def on_epoch_end(epoch, step):
        summary = {}
        if len(data.validation):
            val_accuracy, val_loss, _ = evaluate("validation", data.validation)
            summary = {"accuracy/val": val_accuracy, "losses/val": val_loss}
            best.offer(sess, epoch, step, val_accuracy)
            print(
                f"epoch {epoch}: val accuracy {val_accuracy:.4f}, val loss {val_loss:.4f} "
                f"(best: epoch {best.record['epoch']}, {best.record['val_accuracy']:.4f})"
            )
        writer.add_summary(scalars(summary), step)
        if epoch % histogram_every == 0 or step == total_steps:
            writer.add_summary(sess.run(histogram_summary), step)
        writer.flush()

    return on_epoch_end


def _test(sess, plan, graph, data, evaluate, best, writer, step, source_values):
    """The chief's last phase: the frozen check, the best epoch's weights, the test set."""
    # In a cluster the session reads the ps tasks' values: the check covers what every worker trained.
    count, worst = frozen_check(sess, plan, graph, source_values)
    best.restore(sess)
    test_accuracy, test_loss, predictions = evaluate("test", data.test)
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
        "frozen_check_moving_statistics": _statistics(plan.frozen_restored),
    }


def _train_and_test(args, network, plan, data, spec, graph, config, resuming, source_values, store, task=None):
    chief = task is None or task.is_chief
    train_summary, histogram_summary, plan_summary = _summaries(graph, plan)
    with _session(args, plan, graph, source_values, task) as (sess, resumed, checkpointer):
        start_step = int(sess.run(graph.global_step))
        total_steps = cli.check_steps(start_step, config["total_steps"])
        writer = on_epoch_end = None
        evaluate = Evaluator(sess, graph, data, spec, store)
        if chief:
            _write_run_files(args.model_dir, config, plan, data, resuming)
            writer = SummaryWriter(args.model_dir, graph=sess.graph if start_step == 0 else None)
            if start_step == 0:
                writer.add_summary(sess.run(plan_summary), 0)
            best = BestEpoch(args.model_dir, graph.model_variables, resumed)
            # Tiny labelled sets make epochs of one step: keep the histograms to about 100 per run.
            every = max(1, args.epochs // 100)
            on_epoch_end = _epoch_end(sess, evaluate, data, best, writer, histogram_summary, every, total_steps)
        else:
            print(f"{task.name}: joined the cluster at global step {start_step}")
        start_input(sess, graph, evaluate, data, args, start_step, total_steps, task)
        began = time.monotonic()
        span = Span(start_step, total_steps, config["total_steps"] // args.epochs)
        settings = TRAIN_TRANSFER.record(LoopSettings, args)
        result = train_graph(sess, graph, span, settings, checkpointer, LoopHooks(writer, train_summary, on_epoch_end))
        metrics = (
            _test(sess, plan, graph, data, evaluate, best, writer, result.final_step, source_values) if chief else None
        )
        if task is not None:
            graph.cluster_step.finish(sess)  # the chief's last: the ps tasks stay up until it has read what it needs
    if not chief:
        print(
            f"{task.name}: done at global step {result.final_step}, {result.own_steps} steps of its own, "
            f"{result.images_per_sec:,.0f} images/s"
        )
        return None
    metrics.update(
        global_step=result.final_step,
        train_images_per_sec=round(result.images_per_sec, 1),
        wall_seconds=round(time.monotonic() - began, 1),
    )
    if task is not None:
        metrics["own_steps"] = result.own_steps
    return metrics


def _statistics(rows):
    return sum(row.name.endswith(MOVING_STATISTICS) for row in rows)


def frozen_check(sess, plan, graph, source_values):
    """Proves every frozen restored variable (moving statistics included) still equals the checkpoint."""
    count, worst = ckpt.max_abs_diff(sess, plan.frozen_restored, graph.model_variables, source_values)
    if count:
        statistics = _statistics(plan.frozen_restored)
        of_which = f" ({statistics} of them BatchNorm moving statistics)" if statistics else ""
        print(f"frozen check: {count} variables{of_which}, max |diff| = {worst:g}")
        if worst != 0.0:
            raise UserError(f"frozen check failed: a frozen variable moved by up to {worst:g}")
    return count, worst
