"""The autoencoder's images: IDX arrays (--data-dir, --dataset, --sample) or an image folder's
files, read through the labelled data's core (transfer.labelled: `LabelledData`, `of_dataset`,
`load_folder`) into the same LabelledData a transfer run has, with no validation split.
"""

import dataclasses

import numpy as np

from data import image_folder, sources
from transfer.labelled import DataFlags as FolderFlags
from transfer.labelled import Examples, load_folder, of_dataset


@dataclasses.dataclass(frozen=True)
class DataFlags:
    """The autoencoder's data flags (of the same names): --dataset, --data-dir, --sample, and
    for an image folder --test-percent and the --seed of its split."""

    dataset: str = "mnist"
    data_dir: str | None = None
    sample: bool = False
    test_percent: float = 10.0
    seed: int = 0


def load_for_autoencoder(flags, log=print):
    """The autoencoder's images from --data-dir (IDX or an image folder), --dataset or --sample.

    Args:
      flags: the run's DataFlags.
      log: where the data's report lines go.

    An image folder is decoded to 28x28 grey (data.image_folder.MNIST_INPUT); its test split
    (--test-percent, or its test/ subfolder) is the evaluation set and its labels are kept
    for the projector only.

    Returns:
      A transfer.labelled.LabelledData: every training example (labels carried, never used),
      no validation, the test images decoded once as uint8 [N, 28, 28] (the projector's
      thumbnails and, scaled, the evaluation input).
    """
    if not (flags.data_dir and image_folder.is_image_folder(flags.data_dir)):
        return of_dataset(sources.load_requested(flags.dataset, flags.data_dir, flags.sample, log=log))
    # No validation split, every label: the autoencoder selects no epoch and uses no label.
    folder = FolderFlags(
        data_dir=flags.data_dir,
        sample=flags.sample,
        validation_percent=0.0,
        test_percent=flags.test_percent,
        seed=flags.seed,
    )
    data = load_folder(folder, image_folder.MNIST_INPUT, log)
    test = image_folder.read_images(data.test.files, image_folder.MNIST_INPUT)
    test_images = np.round(test[..., 0] * 255.0).astype(np.uint8)
    return dataclasses.replace(data, test=Examples(data.test.labels, images=test_images))
