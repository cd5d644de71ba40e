"""The autoencoder's images: IDX arrays (--data-dir, --dataset, --sample) or an image folder's
files, read through the labelled data's core (transfer.labelled: `Examples`, `load_folder`).
"""

import dataclasses

import numpy as np

from data import image_folder, sources
from transfer.labelled import DataFlags as FolderFlags
from transfer.labelled import Examples, load_folder


@dataclasses.dataclass(frozen=True)
class DataFlags:
    """The autoencoder's data flags (of the same names): --dataset, --data-dir, --sample, and
    for an image folder --test-percent and the --seed of its split."""

    dataset: str = "mnist"
    data_dir: str | None = None
    sample: bool = False
    test_percent: float = 10.0
    seed: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class AutoencoderData:
    """What the autoencoder trains and evaluates on: IDX arrays or an image folder's files.

    Attributes:
      name, source_kind, identity, description, file_digests: as LabelledData's.
      train: Examples of the training images (labels are carried, never used).
      test_images: uint8 [N, 28, 28] of the evaluation images, decoded once (the
        projector's thumbnails and, scaled, the evaluation input).
      test_labels: int64 [N], for the projector's metadata only.
    """

    name: str
    source_kind: str
    identity: str
    description: dict
    train: Examples
    test_images: np.ndarray
    test_labels: np.ndarray
    file_digests: dict | None = None

    @property
    def num_train(self):
        return len(self.train)

    @property
    def num_test(self):
        return len(self.test_labels)


def load_for_autoencoder(flags, log=print):
    """The autoencoder's images from --data-dir (IDX or an image folder), --dataset or --sample.

    Args:
      flags: the run's DataFlags.
      log: where the data's report lines go.

    An image folder is decoded to 28x28 grey (data.image_folder.MNIST_INPUT); its test split
    (--test-percent, or its test/ subfolder) is the evaluation set and its labels are kept
    for the projector only.
    """
    if not (flags.data_dir and image_folder.is_image_folder(flags.data_dir)):
        dataset = sources.load_requested(flags.dataset, flags.data_dir, flags.sample, log=log)
        return AutoencoderData(
            name=dataset.name,
            source_kind=dataset.source_kind,
            identity=dataset.identity(),
            description=dataset.describe(),
            train=Examples(dataset.train_labels.astype(np.int64), images=dataset.train_images),
            test_images=dataset.test_images,
            test_labels=dataset.test_labels.astype(np.int64),
        )
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
    return AutoencoderData(
        name=data.name,
        source_kind=data.source_kind,
        identity=data.identity,
        description=data.description,
        train=data.train,
        test_images=np.round(test[..., 0] * 255.0).astype(np.uint8),
        test_labels=data.test.labels,
        file_digests=data.file_digests,
    )
