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

from runtime.quiet import exit_on_failure, guard_startup, import_tensorflow

if __name__ == "__main__":
    guard_startup()  # from here on Ctrl-C or SIGTERM ends the process with one line, even during the imports
import_tensorflow(log=print)  # before anything imports it: keeps TensorFlow's start-up lines off the terminal

import tensorflow as tf  # noqa: E402

from runtime import cli  # noqa: E402
from transfer import train  # noqa: E402
from transfer.flags import TRAIN_TRANSFER  # noqa: E402

tf.get_logger().setLevel("ERROR")  # TF's Python deprecation notices are not the user's concern

RESUME_KEYS = train.RESUME_KEYS
DESCRIPTION = (
    "Train a classifier (by default the digit classifier conv1, conv2, fc1, logits) "
    "with layers restored from a checkpoint (by default the autoencoder's)."
)


def parse_args(argv=None):
    """The flags of transfer.flags.TRAIN_TRANSFER, parsed."""
    return TRAIN_TRANSFER.parse(argv, description=DESCRIPTION)


def run(args):
    return train.run(args)


def main(argv=None):
    return cli.script_main(run, parse_args, "transfer", argv)


if __name__ == "__main__":
    exit_on_failure(main())
