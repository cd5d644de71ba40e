"""An image folder's files as tf.data input: a dataset in the files' order (`make_dataset`),
batches decoded for evaluation (`iterate_images`, `read_images`) and training batches in
the order of a resumable index stream (`FileBatches`).
"""

import numpy as np
import tensorflow as tf

from data import pipeline
from data.image_folder.decoding import _decode_file, _path_bytes
from runtime.errors import DataError, one_line
from runtime.quiet import native_stderr_silenced


def make_dataset(files, labels, spec, batch_size=None, num_parallel_calls=tf.data.AUTOTUNE):
    """A tf.data pipeline of decoded, preprocessed images from files, in the files' order.

    Decoding runs in a parallel map (deterministic order) with prefetching; nothing but the
    paths is held in memory. Works in graph mode (build it inside the graph that uses it)
    and eagerly.

    Args:
      files: sequence of image paths (e.g. a :class:`Split`'s files, already checked by scan).
      labels: int sequence [len(files)].
      spec: the network's :class:`InputSpec`.
      batch_size: batch the output (last batch may be short); None yields single images.
      num_parallel_calls: decoders running at once.

    Returns:
      ``tf.data.Dataset`` of (float32 [H, W, C] in [0, 1], int32 label), batched if asked.

    Raises:
      ValueError: files and labels of different lengths.
    """
    files, labels = _path_bytes(files), np.asarray(labels, np.int32)
    if labels.shape != (len(files),):
        raise ValueError(f"expected {len(files)} labels, got shape {labels.shape}")
    dataset = tf.data.Dataset.from_tensor_slices((tf.constant(files, tf.string), labels))
    dataset = dataset.map(
        pipeline.as_written(lambda p, y: (_decode_file(p, spec), y)),
        num_parallel_calls=num_parallel_calls,
        deterministic=True,
    )
    if batch_size is not None:
        dataset = dataset.batch(batch_size)
    return dataset.prefetch(2)


def iterate_images(files, spec, batch_size=256):
    """Yields the files decoded as float32 batches [n, H, W, C] in [0, 1], in order.

    Decoding runs in tf.data in a graph and session of its own, so it can be called from
    anywhere, graph context or not, and only a batch or two is in memory at a time.

    Raises:
      DataError: a file that no longer decodes (changed since the folder was scanned).
    """
    if not files:
        return
    with tf.Graph().as_default() as graph:
        batches = make_dataset(files, np.zeros(len(files), np.int32), spec, batch_size)
        images = tf.compat.v1.data.make_one_shot_iterator(batches).get_next()[0]
        with tf.compat.v1.Session(graph=graph) as sess:
            for _ in range(-(-len(files) // batch_size)):
                try:
                    with native_stderr_silenced():
                        batch = sess.run(images)
                except tf.errors.OpError as error:
                    raise DataError(f"an image file changed since the folder was checked: {one_line(error)}") from None
                yield batch


def read_images(files, spec, batch_size=256):
    """Decodes files into one float32 array [N, H, W, C] in [0, 1], for a small evaluation set."""
    chunks = list(iterate_images(files, spec, batch_size))
    if not chunks:
        return np.zeros([0, spec.height, spec.width, spec.channels], np.float32)
    return np.concatenate(chunks)


class FileBatches:
    """Training batches decoded from image files, in the order of an index stream.

    The counterpart of :class:`data.pipeline.BatchInput` for an image folder: the same
    :func:`data.pipeline.index_stream` gives the same files in the same order on a resumed
    run; only the paths are in memory, each batch is read and decoded (parallel map,
    prefetch) when the pipeline reaches it.

    Attributes:
      images: float32 [None, H, W, C] in [0, 1], the next batch.
      labels: int32 [None], the next batch's labels.
      initializer: the iterator's initializer op.
    """

    def __init__(self, batch_size, spec, name="file_input", num_parallel_calls=tf.data.AUTOTUNE):
        self.batch_size, self.spec = batch_size, spec
        with tf.compat.v1.name_scope(name):
            self._paths_ph = tf.compat.v1.placeholder(tf.string, [None], name="all_paths")
            self._labels_ph = tf.compat.v1.placeholder(tf.int32, [None], name="all_labels")
            self._indices = pipeline.IndexBatches(batch_size)
            dataset = (
                self._indices.dataset.unbatch()
                .map(
                    pipeline.as_written(
                        lambda i: (_decode_file(tf.gather(self._paths_ph, i), spec), tf.gather(self._labels_ph, i))
                    ),
                    num_parallel_calls=num_parallel_calls,
                    deterministic=True,
                )
                .batch(batch_size)
                .prefetch(2)
            )
            iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
            self.initializer = iterator.initializer
            self.images, self.labels = iterator.get_next(name="next_batch")

    def initialize(self, sess, files, labels, index_stream):
        """(Re)starts the pipeline on the given files and index stream.

        Args:
          sess: a session on the pipeline's graph.
          files: sequence of N image paths.
          labels: int array [N].
          index_stream: from :func:`data.pipeline.index_stream` over N examples.

        Raises:
          ValueError: labels of the wrong shape or a stream that does not fit.
        """
        labels = np.asarray(labels)
        if labels.shape != (len(files),):
            raise ValueError(f"expected labels [{len(files)}], got {labels.shape}")
        feed = self._indices.feed(index_stream, len(files))
        feed.update(
            {
                self._paths_ph: _path_bytes(files),
                self._labels_ph: labels.astype(np.int32),
            }
        )
        sess.run(self.initializer, feed_dict=feed)
