"""The disk feature cache (--feature-cache DIR) as a transfer run uses it.

The run asks for the features of a split; this store answers from transfer.feature_cache
where it can and computes the rest. Its model key is made from the values in the session
of every variable below the head (restored or, for a frozen random baseline, initialised:
either way what the features depend on), the network, the input spec, the preprocessing
and the features tensor's name; images are keyed by their file's bytes (an image folder)
or their pixels (IDX data). The cache directory is checked when the run starts, before
anything is written into the model dir.
"""

import time

import numpy as np

from models import user_network
from transfer import feature_cache

# Bump when the pixels reaching the network change for the same file (data/image_folder/decoding.py).
PREPROCESSING = "cae-transfer image_folder.preprocess v1"


class FeatureStore:
    """Features of the run's splits, from and into one cache directory."""

    def __init__(self, directory, max_bytes, network, spec):
        self.directory, self.max_bytes, self.network, self.spec = directory, max_bytes, network, spec
        # Opens (or refuses) the directory now: a foreign directory ends the run before it writes anything.
        feature_cache.FeatureCache(directory, "0" * 64, 1, max_bytes=max_bytes, log=lambda line: None)
        self._cache = None

    def _open(self, sess, graph):
        below_head = [var for var in graph.model_variables if not self.network.is_head_variable(var.op.name)]
        values = dict(zip((var.op.name for var in below_head), sess.run(below_head)))
        spec = [self.spec.height, self.spec.width, self.spec.channels]
        preprocessing = f"{PREPROCESSING}; {self.network.preprocess.__name__}"
        # A user's network by its file's content too: the same name may be other code tomorrow.
        name = user_network.identity(self.network)
        key = feature_cache.model_key(values, name, spec, preprocessing, graph.features.name)
        units = int(graph.features.shape[-1])
        return feature_cache.FeatureCache(self.directory, key, units, max_bytes=self.max_bytes)

    def features(self, sess, graph, name, examples, compute):
        """Features [N, units] of `examples`; `compute(subset)` runs the network on the missing ones.

        Prints one line per split: hits, misses and the time taken.
        """
        self._cache = self._cache or self._open(sess, graph)
        began = time.monotonic()
        keys = (
            feature_cache.array_keys(examples.images)
            if examples.images is not None
            else feature_cache.file_keys(examples.files)
        )
        values, hits, misses = self._cache.get_or_compute(keys, lambda index: compute(examples.subset(index)))
        print(f"feature cache {self.directory}: {name}: {hits} hits, {misses} misses, {time.monotonic() - began:.1f} s")
        return values.astype(np.float32, copy=False)
