"""Train the convolutional autoencoder on MNIST without labels.

Writes step-numbered checkpoints, TensorBoard summaries, config.json and metrics.json
under --model-dir, and resumes from the newest checkpoint there when one exists.

    python train_autoencoder.py
    tensorboard --logdir checkpoints --host 127.0.0.1
"""

import os

from runtime.quiet import exit_now, guard_startup, import_tensorflow

if __name__ == "__main__":
    guard_startup()  # from here on Ctrl-C or SIGTERM ends the process with one line, even during the imports
import_tensorflow(log=print)  # before anything imports it: keeps TensorFlow's start-up lines off the terminal

import argparse  # noqa: E402
import contextlib  # noqa: E402
import time  # noqa: E402

import tensorflow as tf  # noqa: E402

from data import image_folder, pipeline  # noqa: E402
from data.augment import gaussian_noise  # noqa: E402
from models.cae import RECONSTRUCTION_LOSSES, build_autoencoder, reconstruction_loss  # noqa: E402
from runtime import cli, cluster, onednn, rundir  # noqa: E402
from runtime.checkpoints import Checkpointer  # noqa: E402
from runtime.errors import UserError  # noqa: E402
from runtime.paths import shown  # noqa: E402
from runtime.session import session_config, set_process_threads  # noqa: E402
from runtime.summaries import SummaryWriter, scalars, write_projector  # noqa: E402
from runtime.training import finite_or_none, train_loop  # noqa: E402
from transfer import labelled  # noqa: E402

v1 = tf.compat.v1
tf.get_logger().setLevel("ERROR")  # TF's Python deprecation notices are not the user's concern

PIXELS = 28 * 28
EVAL_BATCH = 500
PREVIEW_IMAGES = 8
PROJECTOR_POINTS = 2000
# A run with different values here cannot continue another run's checkpoints.
RESUME_KEYS = (
    "dataset",
    "latent_size",
    "loss",
    "batch_size",
    "seed",
    "data_source",
    "data_identity",
    "noise",
    "test_percent",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train the convolutional autoencoder (conv1, conv2, latent_var, z_matrix, dconv1, dconv2) "
        "on MNIST images, without labels.",
    )
    parser.add_argument(
        "--epochs", type=cli.positive_int, default=50, help="passes over the training images (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=cli.positive_int, default=64, help="images per step (default: %(default)s)"
    )
    parser.add_argument(
        "--learning-rate", type=cli.learning_rate, default=1e-3, help="Adam learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--latent-size", type=cli.positive_int, default=20, help="width of the code latent_var (default: %(default)s)"
    )
    parser.add_argument(
        "--loss",
        choices=RECONSTRUCTION_LOSSES,
        default="bce",
        help="bce: binary cross-entropy summed over pixels; l2: squared error (default: %(default)s)",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="standard deviation of Gaussian noise added to the training input (a denoising autoencoder); "
        "the loss compares with the clean image (default: %(default)s)",
    )
    cli.add_data_flags(parser)
    parser.add_argument(
        "--test-percent",
        type=cli.percent,
        default=10.0,
        help="image folder without train/ and test/ subfolders: share of each class held out to evaluate, by a "
        "hash of each file's path in its class folder; labels are never used (default: %(default)s)",
    )
    cli.add_runtime_flags(parser, os.path.join("checkpoints", "autoencoder"))
    cluster.add_cluster_flags(parser)
    return parser.parse_args(argv)


def evaluate(sess, images_ph, losses, images, extra_feed):
    """Per-pixel means of {name: per-image loss tensor} over a float image array, in batches."""
    totals = dict.fromkeys(losses, 0.0)
    for start in range(0, len(images), EVAL_BATCH):
        chunk = images[start : start + EVAL_BATCH]
        for name, value in sess.run(losses, {images_ph: chunk, **extra_feed}).items():
            totals[name] += value * len(chunk)
    return {name: total / len(images) / PIXELS for name, total in totals.items()}


def run(args):
    if not 0.0 <= args.noise < float("inf"):
        raise UserError(f"--noise must be 0 or a positive standard deviation, got {args.noise}")
    task = cluster.from_args(args)
    if task is not None and task.is_ps:
        cluster.serve(task)
        return
    chief = task is None or task.is_chief
    model_dir = args.model_dir
    dataset = labelled.load_for_autoencoder(args)
    steps_per_epoch = cli.steps_per_epoch(dataset.num_train, args.batch_size, "training images")
    total_steps = args.epochs * steps_per_epoch
    config = dict(
        {key: value for key, value in vars(args).items() if key not in cluster.FLAG_DESTS},
        model="autoencoder",
        data_source=dataset.source_kind,
        data_identity=dataset.identity,
        onednn=onednn.state(),
        data=dataset.description,
        total_steps=total_steps,
    )
    if task is not None:
        config["cluster"] = task.describe()
    resuming = chief and rundir.check_resume(model_dir, config, RESUME_KEYS) is not None

    test_images = pipeline.to_float_images(dataset.test_images)
    set_process_threads(args.intra_op_threads, args.inter_op_threads)
    with tf.Graph().as_default(), v1.device(cluster.device_function(task)) if task else contextlib.nullcontext():
        v1.set_random_seed(args.seed)
        files = dataset.train.files is not None
        batch = image_folder.FileBatches(args.batch_size, image_folder.MNIST_INPUT) if files else None
        batch = batch or pipeline.BatchInput(args.batch_size)
        images = v1.placeholder_with_default(batch.images, [None, 28, 28, 1], name="images")
        noise = v1.placeholder_with_default(args.noise, [], name="noise_stddev")
        end_points = build_autoencoder(
            gaussian_noise(images, noise, seed=args.seed) if args.noise else images, args.latent_size
        )
        loss = reconstruction_loss(images, end_points, args.loss)
        eval_losses = {kind: reconstruction_loss(images, end_points, kind) for kind in RECONSTRUCTION_LOSSES}
        global_step = v1.train.get_or_create_global_step()
        model_variables = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        if task is None:
            optimizer = v1.train.AdamOptimizer(args.learning_rate)
            train_op = optimizer.minimize(loss, global_step=global_step, var_list=model_variables)
            step = None
        else:
            step = cluster.train_op(
                task,
                loss,
                model_variables,
                global_step,
                total_steps,
                lambda: v1.train.AdamOptimizer(args.learning_rate),
                hold_every=steps_per_epoch,
            )
            train_op = step.op

        train_summary = v1.summary.merge([v1.summary.scalar("losses/train", loss)])
        preview = tf.concat([images, end_points["reconstruction"]], axis=2)
        epoch_summary = v1.summary.merge(
            [
                v1.summary.image("reconstructions/input_vs_output", preview, max_outputs=PREVIEW_IMAGES),
                v1.summary.histogram("latent/code", end_points["latent"]),
            ]
            + [v1.summary.histogram(f"weights/{variable.op.name}", variable) for variable in model_variables]
        )
        checkpointer = Checkpointer(model_dir, max_to_keep=args.keep_checkpoints) if chief else None
        init = v1.global_variables_initializer()
        clean = {noise: 0.0}  # evaluation always sees clean input

        settings = session_config(
            args.gpu_memory_fraction, args.allow_growth, args.intra_op_threads, args.inter_op_threads
        )
        initialised = {}

        def restore_or_initialise(sess):
            initialised["restored"] = checkpointer.restore_latest(sess)
            if initialised["restored"] is None:
                sess.run(init)

        with (
            v1.Session(config=settings)
            if task is None
            else cluster.create_session(task, step, settings, restore_or_initialise)
        ) as sess:
            if task is None:
                restore_or_initialise(sess)
            restored = initialised.get("restored")
            start_step = int(sess.run(global_step))
            total_steps = cli.check_steps(start_step, total_steps)
            if not chief:
                print(f"{task.name}: joined the cluster at global step {start_step}")
            else:
                print(
                    f"resumed from {shown(restored)} at step {start_step}"
                    if restored
                    else "starting from freshly initialised variables"
                )
            if chief and not resuming:  # a resumed run's config.json is rewritten only once it has trained
                rundir.write_config(model_dir, config)
            writer = SummaryWriter(model_dir, graph=sess.graph if start_step == 0 else None) if chief else None
            # In a cluster each worker reads its own order, long enough for any share of the steps.
            stream_end = (
                total_steps if task is None else total_steps + (total_steps - start_step + 1) * task.num_replicas
            )
            batch.initialize(
                sess,
                dataset.train.files if files else dataset.train.images,
                dataset.train.labels,
                pipeline.index_stream(
                    dataset.num_train, args.batch_size, cluster.replica_seed(args.seed, task), start_step, stream_end
                ),
            )

            def on_epoch_end(epoch, step):
                per_pixel = evaluate(sess, images, eval_losses, test_images, clean)
                writer.add_summary(
                    scalars({f"eval/{kind}_per_pixel": value for kind, value in per_pixel.items()}), step
                )
                writer.add_summary(sess.run(epoch_summary, {images: test_images[:EVAL_BATCH], **clean}), step)
                writer.flush()
                print(f"epoch {epoch}: eval bce per pixel {per_pixel['bce']:.5f}, l2 per pixel {per_pixel['l2']:.5f}")

            began = time.monotonic()
            result = train_loop(
                sess,
                train_op,
                loss,
                start_step,
                total_steps,
                steps_per_epoch,
                args.batch_size,
                checkpointer,
                save_every=args.save_every,
                writer=writer,
                summary_op=train_summary,
                summary_every=args.summary_every,
                on_epoch_end=on_epoch_end if chief else None,
                cluster_step=step,
            )
            if not chief:
                step.finish(sess)
                print(
                    f"{task.name}: done at global step {result.final_step}, {result.own_steps} steps of its own, "
                    f"{result.images_per_sec:,.0f} images/s"
                )
                return
            per_pixel = evaluate(sess, images, eval_losses, test_images, clean)
            count = min(PROJECTOR_POINTS, dataset.num_test)
            codes = sess.run(end_points["latent"], {images: test_images[:count], **clean})
            projector_config = write_projector(
                model_dir, codes, dataset.test_labels[:count], dataset.test_images[:count]
            )
            writer.close()
            if step is not None:
                step.finish(sess)  # last: the ps tasks stay up until the chief has read what it needs

    metrics = {
        "dataset": dataset.name,
        "data_source": dataset.source_kind,
        "num_train": dataset.num_train,
        "num_test": dataset.num_test,
        "global_step": result.final_step,
        "epochs": args.epochs,
        "loss": args.loss,
        "eval_bce_per_pixel": finite_or_none(per_pixel["bce"]),
        "eval_l2_per_pixel": finite_or_none(per_pixel["l2"]),
        "train_images_per_sec": round(result.images_per_sec, 1),
        "wall_seconds": round(time.monotonic() - began, 1),
        "checkpoint": result.last_checkpoint or restored,
    }
    if task is not None:
        metrics.update(cluster=task.describe(), own_steps=result.own_steps)
    if resuming:
        rundir.write_config(model_dir, config)
    rundir.write_json(os.path.join(model_dir, "metrics.json"), metrics)
    print(
        f"done: step {result.final_step}, eval bce per pixel {per_pixel['bce']:.5f}, "
        f"{result.images_per_sec:,.0f} images/s"
    )
    if task is not None:
        print(f"{task.name}: done at global step {result.final_step}, {result.own_steps} steps of its own")
    print(f"checkpoint: {metrics['checkpoint']}")
    print(f"projector:  {projector_config}")
    print(f"view with:  tensorboard --logdir {os.path.dirname(os.path.abspath(model_dir))} --host 127.0.0.1")


def main(argv=None):
    return cli.main(run, parse_args, argv, kind=lambda args: "autoencoder" if cluster.owns_model_dir(args) else None)


if __name__ == "__main__":
    code = main()
    if code:
        exit_now(code)  # an error or a signal: TensorFlow's threads may still run (runtime.quiet.exit_now)
