"""Forward-pass speed of the ImageNet backbones: our mobilenet_v1 against Keras 3's
`keras.applications.MobileNet(weights=None)` on the same input size and batch, and our
efficientnet_lite0's images/s and share of the machine's matmul peak.

    python -m bench.nets                 # 5 rounds of ~2 s per contender
    python -m bench.nets --quick         # 2 rounds of ~0.5 s
    python -m bench.nets --photos DIR    # also: top-5 of scikit-image's bundled photos
                                         # with a converted efficientnet_lite0 (transfer.convert)

The contenders take turns (A, B, C, A, B, C, ...) so that both sides of a ratio are
measured seconds apart on a shared machine; ratios are per round, reported as the median
with their range. "cores busy" is the process's CPU time over wall time while our
forward pass runs (2.0 = both cores of a 2-core machine). Nothing is asserted or written;
the last line is `BENCH_JSON {...}`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import json
import platform
import statistics
import time

import numpy as np
import tensorflow as tf

from models import networks

v1 = tf.compat.v1

FULL = {"rounds": 5, "seconds": 2.0}
QUICK = {"rounds": 2, "seconds": 0.5}
MATMUL_SIZE = 1024
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "motorcycle", "horse", "hubble_deep_field")


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class Ours:
    """One of our networks in inference mode, in a graph and session of its own."""

    def __init__(self, name, batch, size, seed=0):
        network = networks.get(name)
        self.graph = tf.Graph()
        with self.graph.as_default():
            v1.set_random_seed(seed)
            self.images = v1.placeholder(tf.float32, [batch, size, size, 3], name="images")
            self.logits, _ = network.build(network.preprocess(self.images), num_classes=network.num_classes)
            self.sess = v1.Session(graph=self.graph)
            self.sess.run(v1.global_variables_initializer())
            builder = v1.profiler.ProfileOptionBuilder
            options = builder(builder.float_operation()).with_empty_output().build()
            flops = v1.profiler.profile(self.graph, options=options, cmd="op").total_float_ops
        self.flops_per_image = flops / batch
        self.batch = np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)

    def __call__(self):
        self.sess.run(self.logits, {self.images: self.batch})


class KerasMobileNet:
    """Keras 3's MobileNet (alpha 1.0, random weights) on the same batch, its predict path."""

    def __init__(self, batch, size, seed=0):
        import keras

        keras.utils.set_random_seed(seed)
        self.model = keras.applications.MobileNet(weights=None, input_shape=(size, size, 3), classes=1000)
        self.batch = np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)

    def __call__(self):
        self.model.predict_on_batch(self.batch)


class Matmul:
    """A float32 [n, n] x [n, n] matmul in a v1 session: the machine's practical peak."""

    def __init__(self, n=MATMUL_SIZE):
        self.graph = tf.Graph()
        with self.graph.as_default():
            a = tf.Variable(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32))
            self.op = tf.reduce_sum(tf.matmul(a, a))
            self.sess = v1.Session(graph=self.graph)
            self.sess.run(v1.global_variables_initializer())
        self.flops = 2.0 * n**3

    def __call__(self):
        self.sess.run(self.op)


def timed(call, seconds):
    """Runs call for about `seconds`; returns (calls per second, process CPU seconds per wall second)."""
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed, (time.process_time() - cpu) / elapsed


def bench(args):
    batch, size = args.batch, args.size
    contenders = {
        "ours mobilenet_v1": Ours("mobilenet_v1", batch, size),
        "keras MobileNet": KerasMobileNet(batch, size),
        "ours efficientnet_lite0": Ours("efficientnet_lite0", batch, size),
        "matmul": Matmul(),
    }
    for call in contenders.values():  # warm-up: graph optimisation, oneDNN primitives, tracing
        for _ in range(3):
            call()
    rates = {name: [] for name in contenders}
    busy = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, call in contenders.items():
            rate, cores = timed(call, args.seconds)
            rates[name].append(rate)
            busy[name].append(cores)
    ratios = [ours / keras for ours, keras in zip(rates["ours mobilenet_v1"], rates["keras MobileNet"])]
    peak = statistics.median(rates["matmul"]) * contenders["matmul"].flops
    lite = contenders["ours efficientnet_lite0"]
    lite_images = statistics.median(rates["ours efficientnet_lite0"]) * batch
    result = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "batch": batch,
        "size": size,
        "rounds": args.rounds,
        "images_per_s": {name: statistics.median(values) * batch for name, values in rates.items() if name != "matmul"},
        "mobilenet_ours_over_keras": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "matmul_gflops": peak / 1e9,
        "efficientnet_lite0_gflops_per_image": lite.flops_per_image / 1e9,
        "efficientnet_lite0_share_of_matmul_peak": lite_images * lite.flops_per_image / peak,
        "cores_busy": {name: statistics.median(values) for name, values in busy.items()},
    }
    print(f"CPU: {result['cpu']} ({result['cores']} cores), TensorFlow {result['tensorflow']}")
    print(f"batch {batch} at {size}x{size}, {args.rounds} rounds of ~{args.seconds} s each, medians:")
    for name, value in result["images_per_s"].items():
        print(f"  {name:26s} {value:8.1f} images/s   cores busy {result['cores_busy'][name]:.2f}")
    r = result["mobilenet_ours_over_keras"]
    print(f"  mobilenet_v1 ours / Keras 3 MobileNet: {r['median']:.2f}x (rounds {r['min']:.2f}..{r['max']:.2f})")
    print(
        f"  efficientnet_lite0: {result['efficientnet_lite0_gflops_per_image']:.3f} GFLOP/image, "
        f"{100 * result['efficientnet_lite0_share_of_matmul_peak']:.1f}% of the {result['matmul_gflops']:.1f} "
        f"GFLOP/s matmul peak ({MATMUL_SIZE}x{MATMUL_SIZE} float32)"
    )
    return result


def photos(checkpoint_dir):
    """Top-5 of scikit-image's bundled photos with a converted efficientnet_lite0."""
    import skimage.data

    network = networks.get("efficientnet_lite0")
    names = network.class_names()
    table = {}
    with tf.Graph().as_default():
        pixels = v1.placeholder(tf.uint8, [None, None, 3])
        resized = tf.image.resize(
            tf.cast(pixels, tf.float32)[None], network.image_size, method="bicubic", antialias=True
        )
        logits, _ = network.build(network.preprocess(tf.clip_by_value(resized, 0, 255)))
        probabilities = tf.nn.softmax(logits)[0]
        saver = v1.train.Saver()
        with v1.Session() as sess:
            saver.restore(sess, tf.train.latest_checkpoint(checkpoint_dir))
            for name in PHOTOS:
                image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
                image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
                side = min(image.shape[:2])
                top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
                p = sess.run(probabilities, {pixels: image[top : top + side, left : left + side]})
                top5 = np.argsort(-p)[:5]
                table[name] = [(int(i), names[i], float(p[i])) for i in top5]
                print(f"  {name:18s} " + "; ".join(f"{i} {names[i].split(',')[0]} {p[i]:.3f}" for i in top5))
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--photos", metavar="DIR", help="a model dir written by python -m transfer.convert")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.rounds = args.rounds or preset["rounds"]
    args.seconds = args.seconds or preset["seconds"]
    result = bench(args)
    if args.photos:
        print("efficientnet_lite0 top-5 (central square crop, bicubic resize to 224):")
        result["photos"] = photos(args.photos)
    print("BENCH_JSON " + json.dumps(result))


if __name__ == "__main__":
    main()
