"""What the layers learned: first-layer filters, and how well each end point separates the classes.

The run's own images (its image folder's splits or its IDX data set; see common.load_data)
are the data. The features of its test images at each end point (conv1, conv2 and fc1 for
the digit classifier, flattened) go to TensorBoard's Embedding Projector, one run per end
point, with the images as sprites and their labels; the projector's t-SNE and PCA views
then show the clusters. Pictures persuade easily, so each end point also gets two numbers:
the accuracy of a k-nearest-neighbour vote and of a linear probe (ridge regression on
one-hot targets, its penalty picked on a held-out part of the training split), both fit
on features of training images and scored on the test images. The raw pixels are the
reference row.
"""

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from runtime import cli, paths
from runtime.errors import UserError
from runtime.options import Option
from runtime.summaries import scalars, write_projector
from transfer.look import common

# The command as `python -m transfer.look` lists it; its flags are OPTIONS below.
NAME = "features"
HELP = "first-layer filters, end-point features in the Embedding Projector, kNN and linear-probe accuracies"
DESCRIPTION = (
    "Draw the first layer's filters; export the test images' features at each end point to "
    "TensorBoard's Embedding Projector; score a kNN vote and a linear probe per end point (fit on training "
    "features, scored on the test set)."
)

v1 = tf.compat.v1

RESULT_FILES = ("features.json", "filters.png")
INPUT_END_POINT = "input"
# Ridge penalties tried, relative to the mean diagonal of the standardised Gram matrix.
RIDGE_PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
_BATCH = 500


def knn_accuracy(train, train_labels, test, test_labels, k=5, num_classes=None):
    """Accuracy of a k-nearest-neighbour majority vote (Euclidean), nearer neighbours breaking ties.

    Args:
      train: float [N, d] features; train_labels: int [N].
      test: float [M, d]; test_labels: int [M].
      k: neighbours per vote.
      num_classes: number of classes (default: from the labels).

    Returns:
      The fraction of test rows whose vote equals their label.
    """
    if not 1 <= k <= len(train):
        raise UserError(f"--knn {k} must be between 1 and the {len(train)} training features")
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    train = np.asarray(train, np.float64)
    squared = (train**2).sum(axis=1)
    correct = 0
    # A vote is worth 1, plus a tie-breaking bonus far below 1 for nearer neighbours.
    weights = 1.0 + 1e-3 * (k - np.arange(k)) / k
    for start in range(0, len(test), _BATCH):
        block = np.asarray(test[start : start + _BATCH], np.float64)
        distances = squared[np.newaxis] - 2.0 * block @ train.T
        nearest = (
            np.argpartition(distances, k - 1, axis=1)[:, :k]
            if k < len(train)
            else np.tile(np.arange(len(train)), (len(block), 1))
        )
        order = np.take_along_axis(distances, nearest, axis=1).argsort(axis=1, kind="stable")
        nearest = np.take_along_axis(nearest, order, axis=1)
        votes = np.zeros((len(block), num_classes))
        np.add.at(votes, (np.arange(len(block))[:, np.newaxis], train_labels[nearest]), weights)
        correct += int((votes.argmax(axis=1) == test_labels[start : start + _BATCH]).sum())
    return correct / len(test)


class RidgeProbe:
    """A linear classifier: ridge regression on one-hot targets over standardised features.

    Solved through one eigendecomposition of the Gram matrix (primal or dual, whichever
    is smaller), so every penalty costs one matrix product.
    """

    def __init__(self, features, labels, num_classes):
        features = np.asarray(features, np.float64)
        self.mean = features.mean(axis=0)
        self.scale = features.std(axis=0)
        self.scale[self.scale == 0] = 1.0  # a constant feature (a dead relu) carries nothing
        x = (features - self.mean) / self.scale
        targets = np.eye(num_classes)[labels]
        self.target_mean = targets.mean(axis=0)
        y = targets - self.target_mean
        self.primal = x.shape[1] <= x.shape[0]
        gram = x.T @ x if self.primal else x @ x.T
        # The penalty's unit: the mean squared norm of a feature column, the same in both forms.
        self.unit = float(np.trace(gram)) / x.shape[1] or 1.0
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(gram)
        self.x, self.y = x, y
        self.projected = self.eigenvectors.T @ (x.T @ y if self.primal else y)

    def weights(self, penalty):
        shrunk = self.projected / (self.eigenvalues + penalty * self.unit)[:, np.newaxis]
        coefficients = self.eigenvectors @ shrunk
        return coefficients if self.primal else self.x.T @ coefficients

    def predict(self, features, weights):
        x = (np.asarray(features, np.float64) - self.mean) / self.scale
        return (x @ weights + self.target_mean).argmax(axis=1)


def linear_probe_accuracy(train, train_labels, test, test_labels, num_classes, seed=0, held_out=0.2):
    """Accuracy of the ridge probe on the test rows, its penalty chosen on held-out training rows.

    Returns:
      (test accuracy, the chosen relative penalty).
    """
    order = np.random.default_rng(seed).permutation(len(train))
    cut = max(1, round(len(train) * held_out))
    fit, check = order[cut:], order[:cut]
    probe = RidgeProbe(train[fit], train_labels[fit], num_classes)
    scores = [np.mean(probe.predict(train[check], probe.weights(p)) == train_labels[check]) for p in RIDGE_PENALTIES]
    best = RIDGE_PENALTIES[int(np.argmax(scores))]
    probe = RidgeProbe(train, train_labels, num_classes)
    return float(np.mean(probe.predict(test, probe.weights(best)) == test_labels)), best


def filter_grid(kernel):
    """First-layer kernels [k, k, in, out] as [out, k, k] images in [0, 1], each scaled to its own +-max (0.5 is zero).

    Multi-channel inputs are averaged over channels: a picture of where each filter looks.
    """
    kernel = np.asarray(kernel, np.float64).mean(axis=2)
    tiles = np.moveaxis(kernel, -1, 0)
    peak = np.abs(tiles).reshape(len(tiles), -1).max(axis=1)
    peak[peak == 0] = 1.0
    return 0.5 + tiles / (2.0 * peak[:, np.newaxis, np.newaxis])


def compute(sess, images_ph, tensors, batches):
    """{name: float32 [N, features]} of the named tensors over an iterable of float image batches."""
    names = list(tensors)
    parts = {name: [] for name in names}
    for batch in batches:
        values = sess.run([tensors[name] for name in names], {images_ph: batch})
        for name, value in zip(names, values):
            parts[name].append(value.reshape(len(value), -1))
    return {name: np.concatenate(parts[name]).astype(np.float32) for name in names}


def _in_batches(images):
    return (images[start : start + _BATCH] for start in range(0, len(images), _BATCH))


OPTIONS = (
    Option(
        "--probe-train",
        type=cli.positive_int,
        default=5000,
        help="training images whose features fit the probes (a seeded subset; default: %(default)s)",
    ),
    Option("--knn", type=cli.positive_int, default=5, help="neighbours in the kNN vote (default: %(default)s)"),
    Option(
        "--projector-images",
        type=cli.positive_int,
        default=1000,
        help="test images exported to the projector (default: %(default)s)",
    ),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The features command's own flags.

    Attributes:
      probe_train: training images whose features fit the probes (a seeded subset).
      knn: neighbours in the kNN vote.
      projector_images: test images exported to the projector.
      limit: use only the first N test images, or None for all.
    """

    probe_train: int
    knn: int
    projector_images: int
    limit: int | None


# What run takes, each made once from the parsed flags (runtime.options.Flags.record).
RECORDS = (common.Shared, Settings, common.DataRequest)


@dataclasses.dataclass(frozen=True)
class _ProbeData:
    """The images the probes fit on and are scored on, with their labels.

    Attributes:
      data: the common.Data they come from (the run's own).
      train: the seeded subset of training examples the probes fit on (transfer.labelled.Examples).
      train_labels: their labels.
      test_images: the test images (the first --limit), float32 [N, *image_shape] in [0, 1].
      test_labels: their labels.
      num_classes: the number of classes the labels are of.
      class_names: their names, index = label.
    """

    data: object
    train: object
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    class_names: tuple = ()


def _probe_data(settings, seed, request, run):
    """The run's test images and a seeded subset of --probe-train of its training images.

    Raises:
      UserError: when --knn asks for more neighbours than there are training images.
      DataError: see common.load_data.
    """
    data = common.load_data(request, run)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(data.train))[: settings.probe_train])
    if settings.knn > len(chosen):
        raise UserError(f"--knn {settings.knn} is more than the {len(chosen)} training images the probes fit on")
    train = data.train.subset(chosen)
    test = data.test.subset(np.arange(min(settings.limit or len(data.test), len(data.test))))
    return _ProbeData(
        data=data,
        train=train,
        train_labels=train.labels,
        test_images=data.images(test),
        test_labels=test.labels,
        num_classes=run.num_classes,
        class_names=tuple(run.class_names),
    )


def _end_points(run):
    """Builds the network into the current graph over an input placeholder.

    Returns:
      (the placeholder, {name: tensor} of the input and then the network's end points).
    """
    images_ph = v1.placeholder(tf.float32, [None, *run.image_shape], name="look/images")
    end_points = common.build(run, images_ph)
    probed = run.network.probe_end_points
    return images_ph, {INPUT_END_POINT: images_ph, **{name: end_points[name] for name in probed}}


def _write_summary(directory, summary):
    """Writes one summary at step 0 into a new events file in the directory."""
    with tf.Graph().as_default():  # FileWriter refuses to work outside a graph
        writer = v1.summary.FileWriter(directory)
        writer.add_summary(summary, 0)
        writer.close()


def _draw_filters(out_dir, layer, kernel):
    """Draws the first layer's filters into filters.png and as a TensorBoard image; returns the PNG's path."""
    tiles = filter_grid(kernel)
    columns = min(8, len(tiles))
    rows = [list(tiles[start : start + columns]) for start in range(0, len(tiles), columns)]
    titles = [[f"{start + i}" for i in range(len(row))] for start, row in zip(range(0, len(tiles), columns), rows)]
    path = os.path.join(out_dir, "filters.png")
    common.save_figure(path, rows, titles, cell=0.9)
    enlarged = np.kron(common.tile(tiles, columns), np.ones((8, 8)))
    _write_summary(out_dir, common.image_summary(f"filters/{layer}", enlarged))
    return path


def _export_to_projector(out_dir, name, features, data, count, scores):
    """Writes one end point's projector run: the first count test images' features, and the probes' scores.

    Returns:
      What runtime.summaries.write_projector returns.
    """
    shown = min(count, len(data.test_labels))
    run_dir = os.path.join(out_dir, name)
    os.makedirs(run_dir, exist_ok=True)
    # Sprites are grey thumbnails: colour images are shown by their mean over channels.
    thumbnails = np.round(data.test_images[:shown].mean(axis=-1) * common.PIXEL_MAX).astype(np.uint8)
    projector = write_projector(
        run_dir, features[:shown], data.test_labels[:shown], thumbnails, name=name, label_names=data.class_names
    )
    # An events file makes the folder a run, which is where TensorBoard looks for a projector config.
    _write_summary(run_dir, scalars(scores))
    return projector


def _score(settings, seed, out_dir, name, train, test, data):
    """Scores one end point's features with the kNN vote and the linear probe; exports them; prints its row.

    Returns:
      The end point's entry in features.json.
    """
    started = time.monotonic()
    knn = knn_accuracy(train, data.train_labels, test, data.test_labels, settings.knn, data.num_classes)
    linear, penalty = linear_probe_accuracy(train, data.train_labels, test, data.test_labels, data.num_classes, seed)
    entry = {
        "end_point": name,
        "dims": int(train.shape[1]),
        "knn_accuracy": round(knn, 6),
        "linear_probe_accuracy": round(linear, 6),
        "ridge_penalty": penalty,
        "seconds": round(time.monotonic() - started, 2),
    }
    if name != INPUT_END_POINT:
        scores = {"probe/knn_accuracy": knn, "probe/linear_accuracy": linear}
        entry["projector"] = _export_to_projector(out_dir, name, test, data, settings.projector_images, scores)
    print(
        f"{name:>8}  {entry['dims']:>5} dims  kNN (k={settings.knn}) {knn:.4f}  linear probe {linear:.4f}  (ridge "
        f"{penalty:g})"
    )
    return entry


def _results(knn, data, table, seconds):
    """The fields of features.json beside the checkpoint, the network and its classes."""
    return {
        "data": data.data.description,
        "probe_train_images": len(data.train_labels),
        "test_images": len(data.test_labels),
        "knn_k": knn,
        "probe": "ridge regression on one-hot targets over standardised features; penalty picked on 20% of the "
        "training features",
        "seconds": round(seconds, 2),
        "end_points": table,
    }


def run(shared, settings, request):
    """The features command: open the model, read the data, compute the features, draw, probe, write and report.

    Args:
      shared: the common.Shared flags.
      settings: the Settings.
      request: the common.DataRequest, the data when it is not the run's own.

    Raises:
      UserError: for a bad flag, model or data set, or a network without a labelled test set.
    """
    model, values = common.open_model(shared.model, shared.network)
    run = model.run
    if run.data_source is None:
        raise UserError(f"features needs a labelled test set, and the {run.title} has none here")
    data = _probe_data(settings, shared.seed, request, run)
    out_dir = common.command_out_dir(shared, model, "features", RESULT_FILES, request.data_dir)
    common.report_network(model)
    with tf.Graph().as_default():
        images_ph, tensors = _end_points(run)
        with common.restored_session(shared, model, values) as sess:
            began = time.monotonic()
            train_features = compute(sess, images_ph, tensors, data.train.batches(data.data.spec, _BATCH))
            test_features = compute(sess, images_ph, tensors, _in_batches(data.test_images))
    layer = run.network.first_conv
    filters_path = _draw_filters(out_dir, layer, values[layer])
    table = [
        _score(settings, shared.seed, out_dir, name, train_features[name], test_features[name], data)
        for name in tensors
    ]
    fields = _results(settings.knn, data, table, time.monotonic() - began)
    path = common.write_results(out_dir, "features.json", model, fields)
    print(f"wrote {paths.shown(filters_path)}, {paths.shown(path)} and projector runs under {paths.shown(out_dir)}")
