"""tf.data input for tf.compat.v1 graphs, with an exactly reproducible order.

The order of examples is a pure function of (seed, epoch), computed in numpy
one epoch at a time and handed to the graph as an index stream. Global step ``s`` therefore
reads the same examples whether the run started at step 0 or resumed at step
``k``, and the per-step hot path needs no feed_dict.
"""

import numpy as np
import tensorflow as tf

from data import idx


def as_written(function):
    """`function` for Dataset.map as it is written, not converted by AutoGraph.

    Our map functions are plain graph code. AutoGraph would convert each into a module it
    writes to the temporary folder and deletes only at a normal interpreter exit, so every
    run stopped by a signal or an error (which end without one) would leave files behind
    outside the folders the user named.
    """
    return tf.autograph.experimental.do_not_convert(function)


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
        raise ValueError(f"batch_size {batch_size} is larger than the {num_examples} examples available")
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
    return order[: steps * batch_size].astype(np.int64)


class IndexStream:
    """The example indices of global steps ``start_step..total_steps-1``, made one epoch at a time.

    Nothing of the whole run is held in memory: an epoch's order is computed from (seed, epoch)
    when it is needed, so a long run on a large data set costs one epoch of indices (8 bytes an
    example), not 8 bytes an image-step. The order is exactly that of :func:`epoch_order`
    concatenated over epochs, so a stream started at step ``k`` yields what the stream from
    step 0 yields from batch ``k`` on: the exact-resume guarantee.

    It behaves as a read-only 1-D int64 array where one is expected (``len``, ``shape``,
    slicing, ``np.asarray``); only ``np.asarray`` of the whole stream materialises it.

    Attributes:
      num_examples, batch_size, seed, start_step, total_steps: as given.
      steps_per_epoch: whole batches in one epoch.
    """

    dtype = np.dtype(np.int64)
    ndim = 1

    def __init__(self, num_examples, batch_size, seed, start_step, total_steps):
        """Checks the range; computes nothing yet.

        Raises:
          ValueError: Bad step range or not even one whole batch.
        """
        self.steps_per_epoch = steps_per_epoch(num_examples, batch_size)
        if not 0 <= start_step <= total_steps:
            raise ValueError(f"need 0 <= start_step <= total_steps, got {start_step} and {total_steps}")
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps

    def __len__(self):
        return (self.total_steps - self.start_step) * self.batch_size

    @property
    def shape(self):
        return (len(self),)

    @property
    def size(self):
        return len(self)

    def _epoch_range(self, first, stop):
        """Yields (epoch, lo, hi): the slices ``[lo, hi)`` of epoch orders that make ``stream[first:stop]``."""
        if stop <= first:
            return
        epoch_len = self.steps_per_epoch * self.batch_size
        begin, end = (self.start_step * self.batch_size + first, self.start_step * self.batch_size + stop)
        for epoch in range(begin // epoch_len, (end - 1) // epoch_len + 1):
            yield epoch, max(begin - epoch * epoch_len, 0), min(end - epoch * epoch_len, epoch_len)

    @property
    def num_chunks(self):
        """How many epochs the stream touches; :meth:`chunk` serves one of them at a time."""
        if self.total_steps == self.start_step:
            return 0
        return (self.total_steps - 1) // self.steps_per_epoch - self.start_step // self.steps_per_epoch + 1

    def chunk(self, i):
        """Returns the stream's part of the ``i``-th epoch it touches: int64 [whole batches]."""
        epoch = self.start_step // self.steps_per_epoch + i
        epoch_len = self.steps_per_epoch * self.batch_size
        first = max(epoch * epoch_len - self.start_step * self.batch_size, 0)
        stop = min((epoch + 1) * epoch_len - self.start_step * self.batch_size, len(self))
        return self[first:stop]

    def __getitem__(self, key):
        if isinstance(key, slice):
            first, stop, stride = key.indices(len(self))
            if stride != 1:
                return np.asarray(self)[key]
            if stop <= first:
                return np.zeros([0], np.int64)
            parts = [
                epoch_order(self.num_examples, self.batch_size, e, self.seed)[lo:hi]
                for e, lo, hi in self._epoch_range(first, stop)
            ]
            return np.concatenate(parts)
        position = int(key)
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"index {key} is out of range for a stream of {len(self)}")
        return self[position : position + 1][0]

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def __repr__(self):
        return (
            f"IndexStream(num_examples={self.num_examples}, batch_size={self.batch_size}, seed={self.seed}, "
            f"start_step={self.start_step}, total_steps={self.total_steps})"
        )


def index_stream(num_examples, batch_size, seed, start_step, total_steps):
    """Returns the example indices for global steps ``start_step..total_steps-1``.

    Args:
      num_examples: Size of the data set.
      batch_size: Examples per batch.
      seed: Non-negative integer seed.
      start_step: First global step to produce (the resumed step).
      total_steps: One past the last global step.

    Returns:
      An :class:`IndexStream`, a lazy int64 array [(total_steps - start_step) * batch_size];
      batch ``i`` of it (``batch_size`` consecutive entries) is the batch of global step
      ``start_step + i``, identical to the stream started from step 0.

    Raises:
      ValueError: Bad step range or not even one whole batch.
    """
    return IndexStream(num_examples, batch_size, seed, start_step, total_steps)


class _ArrayChunks:
    """An explicit index array served as one chunk, for callers that build their own order."""

    num_chunks = 1

    def __init__(self, array):
        self.array = array

    def chunk(self, i):
        return self.array


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


class IndexBatches:
    """A tf.data source of index batches (int64 [batch_size]) taken from a Python-side stream.

    The stream reaches the graph one chunk (an epoch of an :class:`IndexStream`, or a whole
    explicit array) at a time through a ``numpy_function`` run when the pipeline needs it, so
    the graph never holds the run's whole order and nothing is fed per step.

    Attributes:
      dataset: ``tf.data.Dataset`` of int64 [batch_size] index vectors.
    """

    def __init__(self, batch_size):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self._stream = None
        self._num_chunks_ph = tf.compat.v1.placeholder(tf.int64, [], name="num_index_chunks")

        def load(i):
            return np.asarray(self._stream.chunk(int(i)), dtype=np.int64)

        # Fed through a defaulted placeholder rather than a constant so that the batch
        # dimension stays unknown (None) in the static shape, as callers expect.
        width = tf.compat.v1.placeholder_with_default(tf.constant(batch_size, tf.int64), [], name="index_batch_size")

        def to_batches(i):
            chunk = tf.numpy_function(load, [i], tf.int64, stateful=True, name="index_chunk")
            return tf.reshape(chunk, tf.stack([-1, width]))

        self.dataset = tf.data.Dataset.range(self._num_chunks_ph).map(as_written(to_batches)).unbatch()

    def feed(self, index_stream, num_examples):
        """Points the source at a new stream; returns the feed for the iterator's initializer.

        Args:
          index_stream: an :class:`IndexStream`, or an explicit int64 array of whole batches.
          num_examples: size of the data the indices address.

        Returns:
          A feed_dict fragment to pass with the iterator's initializer.

        Raises:
          ValueError: an array that is not whole batches, or indices outside the data.
        """
        if isinstance(index_stream, IndexStream):
            if index_stream.batch_size != self.batch_size:
                raise ValueError(
                    f"index_stream must be 1-D whole batches of {self.batch_size}, "
                    f"got batches of {index_stream.batch_size}"
                )
            if index_stream.num_examples > num_examples:
                raise ValueError(
                    f"index_stream has indices outside 0..{num_examples - 1}: "
                    f"it orders {index_stream.num_examples} examples"
                )
            self._stream = index_stream
        else:
            stream = np.asarray(index_stream, dtype=np.int64)
            if stream.ndim != 1 or len(stream) % self.batch_size:
                raise ValueError(
                    f"index_stream must be 1-D whole batches of {self.batch_size}, got shape {stream.shape}"
                )
            if stream.size and (stream.min() < 0 or stream.max() >= num_examples):
                raise ValueError(f"index_stream has indices outside 0..{num_examples - 1}")
            self._stream = _ArrayChunks(stream)
        return {self._num_chunks_ph: self._stream.num_chunks}


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
            self._indices = IndexBatches(batch_size)

            def gather(indices):
                return self._prepare(tf.gather(self._data_ph, indices)), tf.gather(self._labels_ph, indices)

            dataset = self._indices.dataset.map(as_written(gather)).prefetch(2)
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
          index_stream: an :class:`IndexStream` from :func:`index_stream`, or an int64
            array whose length is a multiple of batch_size.

        Raises:
          ValueError: Arrays of the wrong shape, or indices outside the data.
        """
        labels = np.asarray(labels)
        if labels.shape != (len(data),):
            raise ValueError(f"expected labels [{len(data)}], got {labels.shape}")
        sess.run(
            self.initializer,
            feed_dict={
                self._data_ph: data,
                self._labels_ph: labels.astype(np.int32),
                **self._indices.feed(index_stream, len(data)),
            },
        )


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
