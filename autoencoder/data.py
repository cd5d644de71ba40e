"""The autoencoder's images: IDX arrays (--data-dir, --dataset, --sample) or an image folder's
files, read through the labelled data's core (transfer.labelled: `Examples`, `load_folder`).
"""

import dataclasses

import numpy as np

from data import image_folder, sources
from transfer.labelled import Examples, load_folder


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


def load_for_autoencoder(args, log=print):
    """The autoencoder's images from --data-dir (IDX or an image folder), --dataset or --sample.

    An image folder is decoded to 28x28 grey (data.image_folder.MNIST_INPUT); its test split
    (--test-percent, or its test/ subfolder) is the evaluation set and its labels are kept
    for the projector only.
    """
    if not (args.data_dir and image_folder.is_image_folder(args.data_dir)):
        dataset = sources.load_requested(args.dataset, args.data_dir, args.sample, log=log)
        return AutoencoderData(
            name=dataset.name,
            source_kind=dataset.source_kind,
            identity=dataset.identity(),
            description=dataset.describe(),
            train=Examples(dataset.train_labels.astype(np.int64), images=dataset.train_images),
            test_images=dataset.test_images,
            test_labels=dataset.test_labels.astype(np.int64),
        )
    folder_args = _FolderFlags(
        data_dir=args.data_dir, sample=args.sample, test_percent=args.test_percent, seed=args.seed
    )
    data = load_folder(folder_args, image_folder.MNIST_INPUT, log)
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


@dataclasses.dataclass(frozen=True)
class _FolderFlags:
    """The flags of an image folder the autoencoder does not have: no validation, every label."""

    data_dir: str = None
    sample: bool = False
    validation_percent: float = 0.0
    test_percent: float = 10.0
    min_per_class: int = 1
    labels_per_class: int = None
    seed: int = 0
