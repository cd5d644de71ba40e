"""Feature caching: run the frozen encoder once, then train the head on its outputs."""

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1

CACHE_BATCH = 500


class FeatureBatchInput:
    """Serves batches of cached features by an index stream, like `data.pipeline.BatchInput`.

    The same index stream gives the same examples in the same order as the image
    pipeline, so a head trained on cached features sees exactly what it would see
    through the frozen encoder.

    Attributes:
      features: float32 [None, units], the next batch.
      labels: int32 [None], the next batch's labels.
    """

    def __init__(self, batch_size, units, name="feature_input"):
        self.batch_size = batch_size
        with v1.name_scope(name):
            self._features_ph = v1.placeholder(tf.float32, [None, units], name="all_features")
            self._labels_ph = v1.placeholder(tf.int32, [None], name="all_labels")
            self._index_ph = v1.placeholder(tf.int64, [None], name="index_stream")

            def gather(indices):
                return tf.gather(self._features_ph, indices), tf.gather(self._labels_ph, indices)

            dataset = tf.data.Dataset.from_tensor_slices(self._index_ph).batch(batch_size).map(gather).prefetch(2)
            iterator = v1.data.make_initializable_iterator(dataset)
            self.initializer = iterator.initializer
            self.features, self.labels = iterator.get_next(name="next_batch")

    def initialize(self, sess, features, labels, index_stream):
        """(Re)starts the pipeline on cached features [N, units] and labels [N]."""
        sess.run(
            self.initializer,
            {self._features_ph: features, self._labels_ph: np.asarray(labels, np.int32), self._index_ph: index_stream},
        )


def compute_features(sess, images_tensor, features_tensor, images, batch_size=CACHE_BATCH):
    """Runs the encoder over float images [N, 28, 28, 1] in batches; returns float32 [N, units]."""
    chunks = [sess.run(features_tensor, {images_tensor: images[start : start + batch_size]}) for start in range(0, len(images), batch_size)]
    return np.concatenate(chunks).astype(np.float32, copy=False)
