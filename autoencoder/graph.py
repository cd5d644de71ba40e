"""The autoencoder's training graph, built by one function for the script, the benchmark and tests.

The graph reads its training batches from a pipeline (data.pipeline.BatchInput for IDX
arrays, data.image_folder.FileBatches for an image folder, decoded to 28x28 grey),
optionally corrupts them with Gaussian noise (a denoising autoencoder; the loss still
compares with the clean batch), and trains every model variable with Adam: one optimizer
in a local run, the cluster's train step (runtime.cluster.train_op) in a cluster.
Variable names are the table in docs/ARCHITECTURE.md.
"""

import dataclasses

import tensorflow as tf

from data import image_folder, pipeline
from data.augment import gaussian_noise
from models.cae import IMAGE_SHAPE, RECONSTRUCTION_LOSSES, build_autoencoder, reconstruction_loss
from runtime import cluster
from runtime.training import GraphValues

v1 = tf.compat.v1

PREVIEW_IMAGES = 8


@dataclasses.dataclass(frozen=True)
class AutoencoderGraph:
    """Handles of a built autoencoder graph.

    Attributes:
      images: float32 [None, 28, 28, 1] in [0, 1], the clean images; defaults to the next
        training batch, feed it to evaluate.
      noise: float32 scalar, the noise's standard deviation, default --noise; feed 0.0 so
        that evaluation sees clean input.
      end_points: models.cae.build_autoencoder's endpoints ("latent", "reconstruction", ...).
      loss: the training loss (--loss) of the batch.
      eval_losses: {kind: loss} for every kind of models.cae.RECONSTRUCTION_LOSSES.
      global_step, model_variables: the step counter and every model variable, in graph order.
      train_op: one training step; in a cluster, cluster_step.op.
      train_summary: the per-step summaries (losses/train).
      epoch_summary: the per-epoch summaries (reconstruction images, code and weight histograms).
      batch_input: the training pipeline, to initialise in the session.
      cluster_step: in a cluster, the runtime.cluster.TrainStep whose op is train_op; else None.
    """

    images: tf.Tensor
    noise: tf.Tensor
    end_points: dict
    loss: tf.Tensor
    eval_losses: dict
    global_step: tf.Variable
    model_variables: list
    train_op: tf.Operation
    train_summary: tf.Tensor
    epoch_summary: tf.Tensor
    batch_input: object
    cluster_step: object = None


@dataclasses.dataclass(frozen=True)
class Hyperparameters(GraphValues):
    """The training values the autoencoder's graph is built with: runtime.training.GraphValues
    (batch_size, learning_rate, seed of the noise, epochs) and these (flags of the same names).

    Attributes:
      noise: standard deviation of the Gaussian noise on the training input (0: none).
      latent_size: width of the code latent_var.
      loss: the training loss, one of models.cae.RECONSTRUCTION_LOSSES.
    """

    noise: float = 0.0
    latent_size: int = 20
    loss: str = "bce"


def build(hyper, in_files, task=None, total_steps=None, transpose_implementation="subpixel"):
    """Builds the autoencoder's training graph into the default graph.

    Args:
      hyper: the Hyperparameters.
      in_files: whether the training images are files (an image folder) rather than arrays.
      task: a runtime.cluster.ClusterTask, or None for a local run; in a cluster, call
        this under `tf.compat.v1.device(cluster.device_function(task))`.
      total_steps: the global step a cluster run ends at (only with task).
      transpose_implementation: how dconv1 and dconv2 compute (models.cae.build_autoencoder);
        the benchmark times the alternative, the script keeps the default.

    Returns:
      An :class:`AutoencoderGraph`.
    """
    if in_files:
        batch_input = image_folder.FileBatches(hyper.batch_size, image_folder.MNIST_INPUT)
    else:
        batch_input = pipeline.BatchInput(hyper.batch_size)
    images = v1.placeholder_with_default(batch_input.images, [None, *IMAGE_SHAPE], name="images")
    noise = v1.placeholder_with_default(hyper.noise, [], name="noise_stddev")
    inputs = gaussian_noise(images, noise, seed=hyper.seed) if hyper.noise else images
    end_points = build_autoencoder(inputs, hyper.latent_size, transpose_implementation)
    loss = reconstruction_loss(images, end_points, hyper.loss)
    eval_losses = {kind: reconstruction_loss(images, end_points, kind) for kind in RECONSTRUCTION_LOSSES}
    global_step = v1.train.get_or_create_global_step()
    model_variables = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
    optimizer = v1.train.AdamOptimizer(hyper.learning_rate)
    if task is None:
        train_op = optimizer.minimize(loss, global_step=global_step, var_list=model_variables)
        cluster_step = None
    else:
        cluster_step = cluster.train_op(
            task, loss, model_variables, global_step, total_steps, optimizer, hold_every=total_steps // hyper.epochs
        )
        train_op = cluster_step.op
    train_summary, epoch_summary = _summaries(images, end_points, loss, model_variables)
    return AutoencoderGraph(
        images=images,
        noise=noise,
        end_points=end_points,
        loss=loss,
        eval_losses=eval_losses,
        global_step=global_step,
        model_variables=model_variables,
        train_op=train_op,
        train_summary=train_summary,
        epoch_summary=epoch_summary,
        batch_input=batch_input,
        cluster_step=cluster_step,
    )


def _summaries(images, end_points, loss, model_variables):
    train_summary = v1.summary.merge([v1.summary.scalar("losses/train", loss)])
    preview = tf.concat([images, end_points["reconstruction"]], axis=2)
    epoch_summary = v1.summary.merge(
        [
            v1.summary.image("reconstructions/input_vs_output", preview, max_outputs=PREVIEW_IMAGES),
            v1.summary.histogram("latent/code", end_points["latent"]),
        ]
        + [v1.summary.histogram(f"weights/{variable.op.name}", variable) for variable in model_variables]
    )
    return train_summary, epoch_summary
