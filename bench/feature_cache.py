"""How fast the on-disk feature cache reads and writes: entries/s for a 20,000-image run.

    python -m bench.feature_cache                          # 20,000 entries of 1,024 floats, 3 rounds
    python -m bench.feature_cache --entries 5000 --units 1568 --rounds 5 --dir /some/disk

Each round makes a fresh cache directory (under --dir, default the system's temporary
directory) and times, for the same entries:

- `array_keys` of N uint8 28x28 images and `file_keys` of N files of 784 bytes;
- a lookup in the empty cache (every entry missing), then the store of all N;
- a warm lookup (every entry a verified hit) and a warm `get_or_compute`;
- an eviction: the limit set to half the cache, one more entry stored, so about half of
  the entries are scanned and deleted.

With `--networks cae,mobilenet_v1`, also the frozen part each network would skip on a
hit: conv1+conv2 of the CAE on 28x28 digits (1,568 floats) and MobileNet v1 up to its
average pool on 224x224 RGB (1,024 floats, random weights: the speed does not depend on
them), in images/s, against a warm lookup of entries of the same width, so the ratio
says how much of that part's time a full hit saves.

For scale, in the same rounds: reading all N feature vectors back from one `.npy`
array (the floor for features on disk, with no per-image entries and no checks) and
reading `--text-entries` of them from one text file of comma-separated floats per
image, the bottleneck format of TensorFlow's retrain.py. Files stay in the page cache,
so these are warm-cache figures: a cold disk adds its seek time per entry. Rates are
medians over the rounds; nothing is asserted. The last line is `BENCH_JSON {...}`.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

from transfer import feature_cache as fc


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _round(root, entries, units, text_entries, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, [entries, 28, 28], dtype=np.uint8)
    features = rng.standard_normal([entries, units]).astype(np.float32)
    times = {}

    times["array_keys"], keys = _timed(lambda: fc.array_keys(images))
    image_dir = os.path.join(root, "images")
    os.mkdir(image_dir)
    paths = [os.path.join(image_dir, f"{index}.raw") for index in range(entries)]
    for path, image in zip(paths, images):
        with open(path, "wb") as stream:
            stream.write(image.tobytes())
    times["file_keys"], _ = _timed(lambda: fc.file_keys(paths))

    key = fc.model_key({"conv1/kernel": features[:1]}, "bench", [28, 28, 1], "bench", f"round {seed}")
    cache = fc.FeatureCache(os.path.join(root, "cache"), key, units, log=print)
    times["lookup_cold"], (_, missing) = _timed(lambda: cache.lookup(keys))
    assert missing.all()
    times["store"], written = _timed(lambda: cache.store(keys, features))
    assert written == entries
    times["lookup_warm"], (got, missing) = _timed(lambda: cache.lookup(keys))
    assert not missing.any() and np.array_equal(got, features)
    times["get_or_compute_warm"], (_, hits, _) = _timed(lambda: cache.get_or_compute(keys, None))
    assert hits == entries

    array_path = os.path.join(root, "features.npy")
    np.save(array_path, features)
    times["npy_load"], loaded = _timed(lambda: np.load(array_path, allow_pickle=False))
    assert np.array_equal(loaded, features)

    text_dir = os.path.join(root, "text")
    os.mkdir(text_dir)
    text_paths = [os.path.join(text_dir, f"{index}.txt") for index in range(text_entries)]
    for path, vector in zip(text_paths, features):
        with open(path, "w") as stream:
            stream.write(",".join(str(float(value)) for value in vector))

    def read_text():
        rows = []
        for path in text_paths:
            with open(path) as stream:
                rows.append([float(value) for value in stream.read().split(",")])
        return np.array(rows, np.float32)

    times["text_read"], parsed = _timed(read_text)
    assert np.array_equal(parsed, features[:text_entries])

    entry_bytes = fc.HEADER_BYTES + 4 * units
    evicting = fc.FeatureCache(cache.directory, key, units, max_bytes=entries * entry_bytes // 2, log=print)
    extra = fc.array_keys(images[:1] ^ 1)
    times["evict"], _ = _timed(lambda: evicting.store(extra, features[:1]))
    evicted = evicting.stats().evicted
    return times, evicted


def _median_seconds(fn, repeats=3):
    fn()  # warm-up: graph optimisation, oneDNN primitives, page cache
    return statistics.median(_timed(fn)[0] for _ in range(repeats))


def _network_rates(names, root):
    """{name: (images/s through the frozen part, warm-lookup entries/s at its width)}."""
    from runtime import quiet

    quiet.import_tensorflow(log=print)  # the oneDNN choice, set before TensorFlow loads, in one line
    import tensorflow as tf

    from models import networks

    v1 = tf.compat.v1
    rates = {}
    for name in names:
        network = networks.get(name)
        shape = network.input_shape()[1:]
        # The sample's 4,500 images for a digit-sized input, a few batches of a photo-sized one.
        count, batch = (4500, 500) if shape[0] * shape[1] <= 32 * 32 else (32, 8)
        rng = np.random.default_rng(0)
        images = rng.random([count, *shape], np.float32)
        with tf.Graph().as_default():
            v1.set_random_seed(0)
            inputs = v1.placeholder(tf.float32, [None, *shape])
            features = network.build(inputs, num_classes=None)[0]
            units = int(features.shape[-1])
            with v1.Session() as sess:
                sess.run(v1.global_variables_initializer())

                def compute():
                    return [sess.run(features, {inputs: images[i : i + batch]}) for i in range(0, count, batch)]

                compute_seconds = _median_seconds(compute)
        cache_dir = tempfile.mkdtemp(prefix=f"{name}-", dir=root)
        key = fc.model_key({}, name, list(shape), "bench", "features")
        cache = fc.FeatureCache(os.path.join(cache_dir, "cache"), key, units, log=print)
        keys = fc.array_keys((images * 255).astype(np.uint8))
        cache.store(keys, rng.standard_normal([count, units]).astype(np.float32))
        lookup_seconds = _median_seconds(lambda: cache.lookup(keys))
        rates[name] = (count / compute_seconds, count / lookup_seconds)
        print(
            f"{name}: frozen part {count / compute_seconds:,.0f} images/s, warm lookup of {units} floats "
            f"{count / lookup_seconds:,.0f} entries/s: a hit takes {lookup_seconds / compute_seconds:.1%} of "
            "the computation's time"
        )
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=20000, help="images per round")
    parser.add_argument("--units", type=int, default=1024, help="floats per feature vector")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--text-entries", type=int, default=2000, help="entries read back from text files")
    parser.add_argument("--networks", default="", help="comma list of cae, mobilenet_v1 (imports TensorFlow)")
    parser.add_argument("--dir", help="where the rounds' files go (default: the system's temporary directory)")
    args = parser.parse_args(argv)
    text_entries = min(args.text_entries, args.entries)
    entry_bytes = fc.HEADER_BYTES + 4 * args.units
    print(f"{args.entries} entries of {args.units} floats ({entry_bytes} bytes each), {args.rounds} rounds")
    rounds, evictions = [], []
    for seed in range(args.rounds):
        root = tempfile.mkdtemp(prefix="bench-feature-cache-", dir=args.dir)
        try:
            times, evicted = _round(root, args.entries, args.units, text_entries, seed)
        finally:
            shutil.rmtree(root)
        rounds.append(times)
        evictions.append(evicted)
        print(f"round {seed + 1}: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in times.items()))
    counts = {name: args.entries for name in rounds[0]}
    counts["text_read"] = text_entries
    counts["evict"] = int(statistics.median(evictions))
    rates = {name: counts[name] / statistics.median(r[name] for r in rounds) for name in rounds[0]}
    for name, rate in rates.items():
        print(f"{name:>20}: {rate:12,.0f} entries/s")
    print(f"warm lookup vs one .npy load: {rates['lookup_warm'] / rates['npy_load']:.2f}x the rate")
    print(f"warm lookup vs text bottleneck files: {rates['lookup_warm'] / rates['text_read']:.1f}x the rate")
    networks = {}
    if args.networks:
        root = tempfile.mkdtemp(prefix="bench-feature-cache-", dir=args.dir)
        try:
            networks = _network_rates([name for name in args.networks.split(",") if name], root)
        finally:
            shutil.rmtree(root)
    result = {"entries": args.entries, "units": args.units, "rounds": rounds, "entries_per_s": rates}
    result["networks"] = {
        name: {"compute_images_per_s": c, "lookup_entries_per_s": r} for name, (c, r) in networks.items()
    }
    print("BENCH_JSON " + json.dumps(result))


if __name__ == "__main__":
    main()
