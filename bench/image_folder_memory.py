"""Peak memory of an image folder as it grows: it must stream from disk, not load whole.

    python -m bench.image_folder_memory                   # 1,000 and 20,000 images
    python -m bench.image_folder_memory --sizes 1000,5000,20000 --keep DIR

For each size, a folder of that many 28x28 grey PNGs (the MNIST sample's digits, reused
under new names) is written, then a fresh process (so that one size's peak cannot hide
another's) imports TensorFlow, builds a FileBatches pipeline, scans the folder (the
up-front decoding pass that finds bad files) and trains nothing: it pulls every batch of
two epochs through the pipeline. It reports the resident set size (RSS) after set-up,
the peak during the scan, and the peak during the epochs, read from the kernel's
high-water mark (VmHWM, reset between phases through /proc/self/clear_refs), and the
scan's wall time against one epoch's, measured in the same process. After the peaks are
taken, the same images go through the in-memory BatchInput, for the price of decoding
from disk (disk/memory: epoch time from files over epoch time from arrays, same order).

Peak memory that stays flat from 1,000 to 20,000 images means the folder is streamed:
what does grow is a few hundred bytes a file (its path, twice: the scan's list and the
pipeline's placeholder feed), about 5 MB at 20,000 files.

The last line is `BENCH_JSON {...}` for machines.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

BATCH = 64


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    """Resets VmHWM to the current RSS (Linux >= 4.0); returns False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(folder):
    """Runs in a fresh process: set-up, scan, two epochs; prints one JSON line."""
    from runtime.quiet import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    from data import image_folder, pipeline

    with tf.Graph().as_default() as graph:
        batches = image_folder.FileBatches(BATCH, image_folder.MNIST_INPUT)
        session = tf.compat.v1.Session(graph=graph)
    rss_setup = _status_kb("VmRSS")
    resettable = _reset_peak()

    began = time.perf_counter()
    result = image_folder.scan(folder, validation_percent=0, test_percent=0)
    scan_secs = time.perf_counter() - began
    peak_scan = _status_kb("VmHWM")
    train = result.splits["train"]
    _reset_peak()

    steps = pipeline.steps_per_epoch(len(train), BATCH)
    began = time.perf_counter()
    batches.initialize(session, train.files, train.labels, pipeline.index_stream(len(train), BATCH, 0, 0, 2 * steps))
    seen = 0
    while True:
        try:
            seen += len(session.run(batches.labels))
        except tf.errors.OutOfRangeError:
            break
    epoch_secs = (time.perf_counter() - began) / 2
    peak_epochs = _status_kb("VmHWM")
    session.close()

    # Only now, the peaks taken: the same images in memory through BatchInput, for the
    # price of decoding from disk (both served in the same order, in this process).
    arrays = (image_folder.read_images(train.files, image_folder.MNIST_INPUT)[..., 0] * 255.0).round().astype("uint8")
    with tf.Graph().as_default() as graph:
        in_memory = pipeline.BatchInput(BATCH)
        with tf.compat.v1.Session(graph=graph) as session:
            began = time.perf_counter()
            in_memory.initialize(
                session, arrays, train.labels, pipeline.index_stream(len(train), BATCH, 0, 0, 2 * steps)
            )
            while True:
                try:
                    session.run(in_memory.labels)
                except tf.errors.OutOfRangeError:
                    break
            memory_epoch_secs = (time.perf_counter() - began) / 2
    print(
        json.dumps(
            {
                "images": len(train),
                "images_served": seen,
                "rss_setup_mb": rss_setup / 1024,
                "peak_scan_mb": peak_scan / 1024,
                "peak_epochs_mb": peak_epochs / 1024,
                "peak_reset_worked": resettable,
                "scan_secs": scan_secs,
                "epoch_secs": epoch_secs,
                "in_memory_epoch_secs": memory_epoch_secs,
            }
        )
    )


def write_folder(directory, count):
    """Writes ``count`` PNG digits into ``directory``/<digit>/, reusing the sample's 5,000."""
    import numpy as np
    import tensorflow as tf

    from data import sources

    sample = sources.load_sample()
    images = np.concatenate([sample.train_images, sample.test_images])
    labels = np.concatenate([sample.train_labels, sample.test_labels])
    for i in range(count):
        j = i % len(images)
        class_dir = os.path.join(directory, str(int(labels[j])))
        os.makedirs(class_dir, exist_ok=True)
        with open(os.path.join(class_dir, f"img_{i:06d}.png"), "wb") as f:
            f.write(tf.io.encode_png(images[j][..., None]).numpy())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,20000", help="comma list of folder sizes")
    parser.add_argument("--keep", help="write the folders here and keep them (default: a temporary dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0

    from runtime.quiet import import_tensorflow

    import_tensorflow()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or tmp
        for size in sizes:
            folder = os.path.join(base, f"folder_{size}")
            if not os.path.isdir(folder):
                write_folder(folder, size)
            out = subprocess.run(
                [sys.executable, "-m", "bench.image_folder_memory", "--child", folder],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{'images':>8} {'RSS set-up':>11} {'peak scan':>10} {'peak epochs':>12} {'scan s':>7} {'epoch s':>8} "
        f"{'scan/epoch':>10} {'disk/memory':>11}"
    )
    for row in rows:
        print(
            f"{row['images']:>8} {row['rss_setup_mb']:>8.0f} MB {row['peak_scan_mb']:>7.0f} MB "
            f"{row['peak_epochs_mb']:>9.0f} MB "
            f"{row['scan_secs']:>7.2f} {row['epoch_secs']:>8.2f} {row['scan_secs'] / row['epoch_secs']:>10.2f} "
            f"{row['epoch_secs'] / row['in_memory_epoch_secs']:>11.1f}"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            f"from {first['images']} to {last['images']} images: peak during epochs "
            f"{last['peak_epochs_mb'] - first['peak_epochs_mb']:+.1f} MB, during the scan "
            f"{last['peak_scan_mb'] - first['peak_scan_mb']:+.1f} MB"
        )
    print("BENCH_JSON " + json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
