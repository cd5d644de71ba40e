"""Train the convolutional autoencoder on MNIST without labels.

Writes step-numbered checkpoints, TensorBoard summaries, config.json and metrics.json
under --model-dir, and resumes from the newest checkpoint there when one exists. The run
itself is autoencoder.train.run.

    python train_autoencoder.py
    tensorboard --logdir checkpoints --host 127.0.0.1
    python -m runtime.cluster --ps 1 --workers 2 -- train_autoencoder.py   # docs/CLUSTER.md
"""

import os

from runtime.quiet import exit_now, guard_startup, import_tensorflow

if __name__ == "__main__":
    guard_startup()  # from here on Ctrl-C or SIGTERM ends the process with one line, even during the imports
import_tensorflow(log=print)  # before anything imports it: keeps TensorFlow's start-up lines off the terminal

import argparse  # noqa: E402

import tensorflow as tf  # noqa: E402

from autoencoder.train import run  # noqa: E402
from models.cae import RECONSTRUCTION_LOSSES  # noqa: E402
from runtime import cli, cluster  # noqa: E402

tf.get_logger().setLevel("ERROR")  # TF's Python deprecation notices are not the user's concern


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


def main(argv=None):
    return cli.main(run, parse_args, argv, kind=lambda args: "autoencoder" if cluster.owns_model_dir(args) else None)


if __name__ == "__main__":
    code = main()
    if code:
        exit_now(code)  # an error or a signal: TensorFlow's threads may still run (runtime.quiet.exit_now)
