"""The autoencoder run's config: train_autoencoder.py's flags as runtime.options records.

AUTOENCODER gives the script's parser, the flag values in config.json, the resume keys
(autoencoder.train.RESUME_KEYS), the argv experiments build, and `validate`, the one check
of the flag values made before data or graphs are touched.
"""

import os

from models.cae import RECONSTRUCTION_LOSSES
from runtime import cli, cluster
from runtime.options import Flags, Option

DESCRIPTION = (
    "Train the convolutional autoencoder (conv1, conv2, latent_var, z_matrix, dconv1, dconv2) on MNIST images, "
    "without labels."
)


def _noise_check(value):
    return None if 0.0 <= value < float("inf") else f"must be 0 or a positive standard deviation, got {value}"


AUTOENCODER = Flags(
    (
        *cli.training_options(50, "the training images", "images"),
        Option(
            "--latent-size",
            type=cli.positive_int,
            default=20,
            resume=True,
            help="width of the code latent_var (default: %(default)s)",
        ),
        Option(
            "--loss",
            choices=RECONSTRUCTION_LOSSES,
            default="bce",
            resume=True,
            help="bce: binary cross-entropy summed over pixels; l2: squared error (default: %(default)s)",
        ),
        Option(
            "--noise",
            type=float,
            default=0.0,
            resume=True,
            check=_noise_check,
            help="standard deviation of Gaussian noise added to the training input (a denoising autoencoder); "
            "the loss compares with the clean image (default: %(default)s)",
        ),
        *cli.DATA_OPTIONS,
        Option(
            "--test-percent",
            type=cli.percent,
            default=10.0,
            resume=True,
            help="image folder without train/ and test/ subfolders: share of each class held out to evaluate, by a "
            "hash of each file's path in its class folder; labels are never used (default: %(default)s)",
        ),
        *cli.runtime_options(os.path.join("checkpoints", "autoencoder")),
    ),
    cluster.CLUSTER_FLAGS,
    resume_extra=("data_source", "data_identity", "data_sha256"),
)


def parse_args(argv=None):
    """train_autoencoder.py's flags, parsed (argparse exits with its message on a bad one)."""
    return AUTOENCODER.parse(argv, description=DESCRIPTION)
