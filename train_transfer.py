"""Train a classifier on top of layers restored from a checkpoint.

Restores the chosen scopes through a partial Saver, freezes them by leaving them out of
the optimizer's var_list, prints the restore plan, trains, and proves at the end that
every frozen variable (BatchNorm's moving statistics included) still equals the
checkpoint bit for bit. The run itself is transfer.train.run.

    python train_transfer.py --restore conv
    python train_transfer.py --restore none          # the from-scratch baseline
    python train_transfer.py --restore conv --dry-run
    python train_transfer.py --network efficientnet_lite0 --checkpoint checkpoints/efficientnet_lite0 \
        --restore backbone --data-dir my_photos --image-size 128
    python -m runtime.cluster --ps 1 --workers 2 -- train_transfer.py --restore conv   # docs/CLUSTER.md
"""

import os

from runtime.quiet import exit_now, guard_startup, import_tensorflow

if __name__ == "__main__":
    guard_startup()  # from here on Ctrl-C or SIGTERM ends the process with one line, even during the imports
import_tensorflow(log=print)  # before anything imports it: keeps TensorFlow's start-up lines off the terminal

import argparse  # noqa: E402

import tensorflow as tf  # noqa: E402

from runtime import cli, cluster  # noqa: E402
from transfer import train  # noqa: E402
from transfer.flags import add_transfer_flags  # noqa: E402

tf.get_logger().setLevel("ERROR")  # TF's Python deprecation notices are not the user's concern

RESUME_KEYS = train.RESUME_KEYS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a classifier (by default the digit classifier conv1, conv2, fc1, logits) "
        "with layers restored from a checkpoint (by default the autoencoder's).",
    )
    group = parser.add_argument_group("transfer")
    group.add_argument(
        "--checkpoint",
        default=os.path.join("checkpoints", "autoencoder"),
        help="the transfer source: a model dir (its newest checkpoint) or a checkpoint prefix (default: %(default)s)",
    )
    add_transfer_flags(group)
    group.add_argument("--dry-run", action="store_true", help="print the restore plan and exit without training")
    group.add_argument(
        "--cache-features",
        choices=("auto", "on", "off"),
        default="auto",
        help="train the head on features computed once; "
        "auto: whenever everything below the head is frozen (default: %(default)s)",
    )
    group.add_argument(
        "--feature-cache",
        metavar="DIR",
        default=None,
        help="keep the frozen layers' features on disk in DIR, keyed by the checkpoint's content, the network, "
        "its preprocessing and each image's content, so a later run skips the frozen layers (default: off)",
    )
    group.add_argument(
        "--feature-cache-max-mb",
        type=cli.positive_int,
        default=2048,
        help="size bound of --feature-cache; the least recently used entries go first (default: %(default)s)",
    )

    group = parser.add_argument_group("training")
    group.add_argument(
        "--labels-per-class",
        type=cli.positive_int,
        default=None,
        help="labelled training examples per class, a balanced seeded subset (default: all)",
    )
    group.add_argument(
        "--validation-size",
        type=cli.non_negative_int,
        default=500,
        help="IDX data: training examples held out to pick the best epoch; "
        "the test set is never used for that (default: %(default)s)",
    )
    group.add_argument(
        "--validation-percent",
        type=cli.percent,
        default=10.0,
        help="image folder: share of each class held out to pick the best epoch, by a hash of each file's path "
        "in its class folder (default: %(default)s)",
    )
    group.add_argument(
        "--test-percent",
        type=cli.percent,
        default=10.0,
        help="image folder without train/ and test/ subfolders: share of each class kept for test "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--min-per-class",
        type=cli.positive_int,
        default=1,
        help="image folder: fewest usable training images a class may have (default: %(default)s)",
    )
    group.add_argument(
        "--epochs", type=cli.positive_int, default=30, help="passes over the labelled examples (default: %(default)s)"
    )
    group.add_argument(
        "--batch-size", type=cli.positive_int, default=64, help="examples per step (default: %(default)s)"
    )
    group.add_argument(
        "--learning-rate", type=cli.learning_rate, default=1e-3, help="Adam learning rate (default: %(default)s)"
    )
    group.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="dropout rate on fc1 while training, in [0, 1) (default: %(default)s)",
    )
    group.add_argument(
        "--shift",
        type=cli.non_negative_int,
        default=0,
        help="shift each training image by up to this many pixels at random; "
        "turns the feature cache off (default: %(default)s)",
    )
    cli.add_data_flags(parser)
    cli.add_runtime_flags(parser, os.path.join("checkpoints", "transfer"))
    cluster.add_cluster_flags(parser)
    return parser.parse_args(argv)


def run(args):
    return train.run(args)


def main(argv=None):
    return cli.main(run, parse_args, argv, kind=lambda args: "transfer" if cluster.owns_model_dir(args) else None)


if __name__ == "__main__":
    code = main()
    if code:
        exit_now(code)  # an error or a signal: TensorFlow's threads may still run (runtime.quiet.exit_now)
