"""An autoencoder run from start to end: the library behind train_autoencoder.py.

The phases, in order (docs/ARCHITECTURE.md): validate the flags; load the data; check a
resume; build the graph (autoencoder.graph); restore the newest checkpoint or initialise;
train, evaluating the held-out images after every epoch; evaluate them once more and
write the projector; write metrics.

In a cluster (TF_CONFIG or the cluster flags; docs/CLUSTER.md) a ps task serves the
variables and returns; every worker builds the graph under the replica device setter and
trains its share; only the chief restores or initialises, evaluates and writes the run's files.
"""

import dataclasses
import os
import time

import tensorflow as tf

from autoencoder import data as ae_data
from autoencoder import graph as ae_graph
from autoencoder.flags import AUTOENCODER
from data import pipeline
from runtime import cli, cluster, lifecycle, onednn, rundir
from runtime.paths import shown
from runtime.summaries import SummaryWriter, scalars, write_projector
from runtime.training import LoopHooks, finite_or_none

v1 = tf.compat.v1

PIXELS = 28 * 28
EVAL_BATCH = 500
PROJECTOR_POINTS = 2000
# A run with different values here cannot continue another run's checkpoints.
RESUME_KEYS = AUTOENCODER.resume_keys


@dataclasses.dataclass(frozen=True)
class AutoencoderRun(lifecycle.RunState):
    """What the phases before the graph settled: the runtime.lifecycle.RunState and the autoencoder's own.

    Attributes:
      dataset: the transfer.labelled.LabelledData of autoencoder.data.load_for_autoencoder.
      test_images: the held-out images as floats in [0, 1], [N, 28, 28, 1].
    """

    dataset: object
    test_images: object


def settings(args):
    """The parse/validate boundary: the flags of train_autoencoder.py checked and made into the
    run's runtime.lifecycle.RunSettings (its data flags an autoencoder.data.DataFlags).

    Raises:
      UserError: naming the offending value.
    """
    return lifecycle.settings(AUTOENCODER, args, ae_graph.Hyperparameters, ae_data.DataFlags)


def load_data(data_flags, batch_size):
    """The run's images and the steps an epoch takes.

    Returns:
      (the transfer.labelled.LabelledData, steps per epoch).

    Raises:
      UserError: unreadable data, or a batch larger than the training images.
    """
    dataset = ae_data.load_for_autoencoder(data_flags)
    return dataset, cli.steps_per_epoch(len(dataset.train), batch_size, "training images")


def run_config(flag_values, dataset, total_steps, task):
    """What config.json holds: the flags' values (AUTOENCODER.config_values: the cluster's aside),
    the data's identity, the step count."""
    config = dict(
        flag_values,
        model="autoencoder",
        data_source=dataset.source_kind,
        data_identity=dataset.identity,
        data_sha256=dataset.file_digests,
        onednn=onednn.state(),
        data=dataset.description,
        total_steps=total_steps,
    )
    if task is not None:
        config["cluster"] = task.describe()
    return config


def check_resume(model_dir, config, chief):
    """Whether the chief continues a run in model_dir (the other workers never do).

    Raises:
      UserError: when model_dir holds a run made with other RESUME_KEYS values.
    """
    return chief and rundir.check_resume(model_dir, config, RESUME_KEYS) is not None


def build(hyper, dataset, task=None, total_steps=None):
    """The run's graph, seeded by --seed, into the default graph (autoencoder.graph.build).

    Returns:
      An autoencoder.graph.AutoencoderGraph.
    """
    v1.set_random_seed(hyper.seed)
    return ae_graph.build(hyper, dataset.train.files is not None, task, total_steps)


def begin(sess, state, graph, resumed, span):
    """Says where the run starts, writes a new run's config.json and starts the input.

    Returns:
      The runtime.lifecycle.Began: the loop's hooks, and on the chief the epoch's and the
      final evaluation.
    """
    runtime, task = state.runtime, state.task
    start_step, total_steps = span.start_step, span.total_steps
    if not state.chief:
        print(f"{task.name}: joined the cluster at global step {start_step}")
    else:
        print(
            f"resumed from {shown(resumed)} at step {start_step}"
            if resumed
            else "starting from freshly initialised variables"
        )
    if state.chief and not state.resuming:  # a resumed run's config.json is rewritten only once it has trained
        rundir.write_config(runtime.model_dir, state.config)
    writer = SummaryWriter(runtime.model_dir, graph=sess.graph if start_step == 0 else None) if state.chief else None
    # In a cluster each worker reads its own order, long enough for any share of the steps.
    stream_end = total_steps if task is None else total_steps + (total_steps - start_step + 1) * task.num_replicas
    train = state.dataset.train
    graph.batch_input.initialize(
        sess,
        train.files if train.files is not None else train.images,
        train.labels,
        pipeline.index_stream(
            len(train),
            state.hyper.batch_size,
            cluster.replica_seed(runtime.seed, task),
            start_step,
            stream_end,
        ),
    )
    if not state.chief:
        return lifecycle.Began(LoopHooks(None, graph.train_summary))
    hooks = LoopHooks(writer, graph.train_summary, _on_epoch_end(sess, state, graph, writer))

    def evaluate_at_end(result):
        evaluation = final_evaluation(sess, state, graph)
        writer.close()
        return evaluation

    return lifecycle.Began(hooks, evaluate_at_end)


def evaluate(sess, graph, images):
    """Per-pixel means of every eval loss over a float image array, in batches, on clean input.

    Returns:
      {kind: mean loss per pixel} for every kind of graph.eval_losses.
    """
    totals = dict.fromkeys(graph.eval_losses, 0.0)
    for start in range(0, len(images), EVAL_BATCH):
        chunk = images[start : start + EVAL_BATCH]
        for name, value in sess.run(graph.eval_losses, {graph.images: chunk, graph.noise: 0.0}).items():
            totals[name] += value * len(chunk)
    return {name: total / len(images) / PIXELS for name, total in totals.items()}


def _on_epoch_end(sess, state, graph, writer):
    """The chief's epoch end: the held-out images' losses and the epoch summaries."""
    test_images = state.test_images

    def on_epoch_end(epoch, step):
        per_pixel = evaluate(sess, graph, test_images)
        writer.add_summary(scalars({f"eval/{kind}_per_pixel": value for kind, value in per_pixel.items()}), step)
        clean = {graph.images: test_images[:EVAL_BATCH], graph.noise: 0.0}
        writer.add_summary(sess.run(graph.epoch_summary, clean), step)
        writer.flush()
        print(f"epoch {epoch}: eval bce per pixel {per_pixel['bce']:.5f}, l2 per pixel {per_pixel['l2']:.5f}")

    return on_epoch_end


def final_evaluation(sess, state, graph):
    """The held-out images' per-pixel losses, and the projector of their codes.

    Returns:
      (per-pixel losses, the path of projector_config.pbtxt).
    """
    dataset = state.dataset
    per_pixel = evaluate(sess, graph, state.test_images)
    count = min(PROJECTOR_POINTS, len(dataset.test))
    codes = sess.run(graph.end_points["latent"], {graph.images: state.test_images[:count], graph.noise: 0.0})
    projector_config = write_projector(
        state.runtime.model_dir, codes, dataset.test.labels[:count], dataset.test.images[:count]
    )
    return per_pixel, projector_config


def write_metrics(state, outcome):
    """Writes metrics.json (and a resumed run's config.json, now that it has trained); returns the metrics."""
    dataset, result = state.dataset, outcome.result
    per_pixel, _ = outcome.evaluation
    metrics = {
        "dataset": dataset.name,
        "data_source": dataset.source_kind,
        "num_train": len(dataset.train),
        "num_test": len(dataset.test),
        "global_step": result.final_step,
        "epochs": state.hyper.epochs,
        "loss": state.hyper.loss,
        "eval_bce_per_pixel": finite_or_none(per_pixel["bce"]),
        "eval_l2_per_pixel": finite_or_none(per_pixel["l2"]),
        "train_images_per_sec": round(result.images_per_sec, 1),
        "wall_seconds": round(time.monotonic() - outcome.began, 1),
        "checkpoint": result.last_checkpoint or outcome.resumed,
    }
    if state.task is not None:
        metrics.update(cluster=state.task.describe(), own_steps=result.own_steps)
    model_dir = state.runtime.model_dir
    if state.resuming:
        rundir.write_config(model_dir, state.config)
    rundir.write_json(os.path.join(model_dir, "metrics.json"), metrics)
    return metrics


def report(state, metrics, outcome):
    """The run's last lines: where it ended, its checkpoint and projector, how to view it."""
    result, task = outcome.result, state.task
    per_pixel, projector_config = outcome.evaluation
    print(
        f"done: step {result.final_step}, eval bce per pixel {per_pixel['bce']:.5f}, "
        f"{result.images_per_sec:,.0f} images/s"
    )
    if task is not None:
        print(f"{task.name}: done at global step {result.final_step}, {result.own_steps} steps of its own")
    print(f"checkpoint: {metrics['checkpoint']}")
    print(f"projector:  {projector_config}")
    model_dir = state.runtime.model_dir
    print(f"view with:  tensorboard --logdir {os.path.dirname(os.path.abspath(model_dir))} --host 127.0.0.1")


class AutoencoderHooks:
    """The autoencoder run's parts of runtime.lifecycle.run."""

    def ps_serves(self, settings):
        return True

    def prepare(self, settings, task):
        """The data, config.json's contents and the resume check: the AutoencoderRun."""
        runtime, hyper = settings.runtime, settings.hyper
        dataset, steps_per_epoch = load_data(settings.data, hyper.batch_size)
        config = run_config(settings.flag_values, dataset, hyper.epochs * steps_per_epoch, task)
        resuming = check_resume(runtime.model_dir, config, task is None or task.is_chief)
        test_images = pipeline.to_float_images(dataset.test.images)
        return AutoencoderRun(settings, task, config, resuming, dataset, test_images)

    def build(self, state):
        return lifecycle.Built(build(state.hyper, state.dataset, state.task, state.total_steps))

    def restore(self, state, built):
        """Nothing but the init op: the run restores only its own checkpoints."""
        return lifecycle.Restore()

    def begin(self, sess, state, built, resumed, span):
        return begin(sess, state, built.graph, resumed, span)

    def finish(self, state, outcome):
        metrics = write_metrics(state, outcome)
        report(state, metrics, outcome)
        return metrics


def run(args):
    """A whole autoencoder run (see the module docstring for the phases): runtime.lifecycle.run
    over the run's settings.

    Args:
      args: the parsed flags of train_autoencoder.py (read by `settings` alone).

    Returns:
      The metrics written to metrics.json, or None for a ps task or a non-chief worker.

    Raises:
      UserError: a bad flag value, unreadable data, a run in --model-dir made with other settings.
    """
    return lifecycle.run(settings(args), AutoencoderHooks())
