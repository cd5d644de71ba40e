"""tf.data input for tf.compat.v1 graphs, with an exactly reproducible order.

The order of examples is a pure function of (seed, epoch), computed in numpy
and handed to the graph once as an index stream. Global step ``s`` therefore
reads the same examples whether the run started at step 0 or resumed at step
``k``, and the per-step hot path needs no feed_dict.
"""

import numpy as np
import tensorflow as tf

from data import idx


def steps_per_epoch(num_examples, batch_size):
    """Returns the number of whole batches in one epoch.

    Args:
      num_examples: Size of the data set.
      batch_size: Examples per batch.

    Returns:
      ``num_examples // batch_size``; the last partial batch is dropped.

    Raises:
      ValueError: batch_size is not positive or exceeds num_examples.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    steps = num_examples // batch_size
    if steps == 0:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {num_examples} examples available")
    return steps


def epoch_order(num_examples, batch_size, epoch, seed):
    """Returns the example order of one epoch, truncated to whole batches.

    Args:
      num_examples: Size of the data set.
      batch_size: Examples per batch.
      epoch: Zero-based epoch number.
      seed: Non-negative integer seed.

    Returns:
      int64 array [steps_per_epoch * batch_size]: a prefix of a permutation
      of ``range(num_examples)`` that depends only on (seed, epoch).

    Raises:
      ValueError: Not even one whole batch fits, or a negative seed or epoch.
    """
    steps = steps_per_epoch(num_examples, batch_size)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[:steps * batch_size].astype(np.int64)


def index_stream(num_examples, batch_size, seed, start_step, total_steps):
    """Returns the example indices for global steps ``start_step..total_steps-1``.

    Args:
      num_examples: Size of the data set.
      batch_size: Examples per batch.
      seed: Non-negative integer seed.
      start_step: First global step to produce (the resumed step).
      total_steps: One past the last global step.

    Returns:
      int64 array [(total_steps - start_step) * batch_size]; batch ``i`` of it
      (``batch_size`` consecutive entries) is the batch of global step
      ``start_step + i``, identical to the stream started from step 0.

    Raises:
      ValueError: Bad step range or not even one whole batch.
    """
    steps = steps_per_epoch(num_examples, batch_size)
    if not 0 <= start_step <= total_steps:
        raise ValueError(
            f"need 0 <= start_step <= total_steps, got {start_step} and {total_steps}")
    if start_step == total_steps:
        return np.zeros([0], np.int64)
    first_epoch = start_step // steps
    last_epoch = (total_steps - 1) // steps
    orders = [epoch_order(num_examples, batch_size, e, seed)
              for e in range(first_epoch, last_epoch + 1)]
    stream = np.concatenate(orders)
    offset = (start_step - first_epoch * steps) * batch_size
    return stream[offset:offset + (total_steps - start_step) * batch_size]


def _check_images(images):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (idx.ROWS, idx.COLS):
        raise ValueError(f"expected uint8 images [N, 28, 28], got {images.dtype} {images.shape}")
    return images


def to_float_images(images):
    """Converts uint8 images to the network's float input.

    Args:
      images: uint8 array [N, 28, 28].

    Returns:
      float32 array [N, 28, 28, 1] in [0, 1], bit-identical to what
      :class:`BatchInput` produces for the same images.

    Raises:
      ValueError: Wrong dtype or shape.
    """
    images = _check_images(images)
    return (images.astype(np.float32) / np.float32(255.0))[..., np.newaxis]


class IndexedBatches:
    """A tf.data pipeline that serves batches of in-memory arrays by an index stream.

    The arrays enter the graph through placeholders fed once, when the iterator is
    initialised: nothing is fed per step, and the GraphDef holds no copy of the data
    (a constant would put 47 MB into every events file). Subclasses shape what a batch
    looks like through `_prepare`.

    Attributes:
      data: the next batch of the data array, after `_prepare`.
      labels: int32 [None], the next batch's labels.
      initializer: The iterator's initializer op.
    """

    def __init__(self, batch_size, dtype, example_shape, name="input"):
        """Builds the pipeline in the current default graph.

        Args:
          batch_size: Examples per batch; index streams are whole batches.
          dtype: dtype of the data array.
          example_shape: shape of one example in the data array.
          name: Name scope of the pipeline's ops.

        Raises:
          ValueError: batch_size is not positive.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        with tf.compat.v1.name_scope(name):
            self._data_ph = tf.compat.v1.placeholder(dtype, [None, *example_shape], name="all_data")
            self._labels_ph = tf.compat.v1.placeholder(tf.int32, [None], name="all_labels")
            self._index_ph = tf.compat.v1.placeholder(tf.int64, [None], name="index_stream")

            def gather(indices):
                return self._prepare(tf.gather(self._data_ph, indices)), tf.gather(self._labels_ph, indices)

            dataset = (tf.data.Dataset.from_tensor_slices(self._index_ph)
                       .batch(batch_size)
                       .map(gather)
                       .prefetch(2))
            iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
            self.initializer = iterator.initializer
            self.data, self.labels = iterator.get_next(name="next_batch")

    def _prepare(self, batch):
        return batch

    def initialize(self, sess, data, labels, index_stream):
        """(Re)starts the pipeline on the given arrays and index stream.

        Args:
          sess: A tf.compat.v1.Session on the pipeline's graph.
          data: array [N, ...] of the dtype and example shape given at construction.
          labels: Integer array [N] with values in 0..9.
          index_stream: int64 array from :func:`index_stream`; its length
            must be a multiple of batch_size.

        Raises:
          ValueError: Arrays of the wrong shape, or indices outside the data.
        """
        labels = np.asarray(labels)
        if labels.shape != (len(data),):
            raise ValueError(f"expected labels [{len(data)}], got {labels.shape}")
        stream = np.asarray(index_stream, dtype=np.int64)
        if stream.ndim != 1 or len(stream) % self.batch_size:
            raise ValueError(
                f"index_stream must be 1-D whole batches of {self.batch_size}, "
                f"got shape {stream.shape}")
        if stream.size and (stream.min() < 0 or stream.max() >= len(data)):
            raise ValueError(f"index_stream has indices outside 0..{len(data) - 1}")
        sess.run(self.initializer, feed_dict={
            self._data_ph: data,
            self._labels_ph: labels.astype(np.int32),
            self._index_ph: stream,
        })


class BatchInput(IndexedBatches):
    """Batches of uint8 images [N, 28, 28], served as float32 [batch, 28, 28, 1] in [0, 1].

    Attributes:
      images: float32 [None, 28, 28, 1] in [0, 1], the next batch.
      labels: int32 [None], the next batch's labels.
    """

    def __init__(self, batch_size, name="input"):
        super().__init__(batch_size, tf.uint8, [idx.ROWS, idx.COLS], name)
        self.images = self.data

    def _prepare(self, batch):
        return tf.expand_dims(tf.cast(batch, tf.float32) / 255.0, -1)

    def initialize(self, sess, images, labels, index_stream):
        """(Re)starts the pipeline on uint8 images [N, 28, 28]; see IndexedBatches.initialize."""
        super().initialize(sess, _check_images(images), labels, index_stream)
