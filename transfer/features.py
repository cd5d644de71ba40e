"""Feature caching: run the frozen encoder once, then train the head on its outputs."""

import tensorflow as tf

from data import pipeline

CACHE_BATCH = 500


class FeatureBatchInput(pipeline.IndexedBatches):
    """Serves batches of cached features [N, units] by an index stream.

    The same index stream gives the same examples in the same order as the image
    pipeline, so a head trained on cached features sees exactly what it would see
    through the frozen encoder.

    Attributes:
      features: float32 [None, units], the next batch.
      labels: int32 [None], the next batch's labels.
    """

    def __init__(self, batch_size, units, name="feature_input"):
        super().__init__(batch_size, tf.float32, [units], name)
        self.features = self.data
