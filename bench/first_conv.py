"""The first layer's time on grey images: summed one-channel kernel against the grey copied into RGB.

EfficientNet-Lite0's stem (3x3/2 convolution to 32 channels, after the network's
preprocessing) at 224x224 on a batch of grey images, built twice: the way an RGB network
takes grey (copied into R, G and B, then the [3, 3, 3, 32] kernel) and the way an adapted
plan takes it (`--channels 1`: the [3, 3, 1, 32] kernel, transfer.channels' sum rule). Both
compute the same output (tests/transfer/test_channels.py proves it for the whole network).

As bench/README.md says, only ratios from one run count: the two take turns for
--rounds rounds of about --seconds each, and the ratio is the median over rounds of the
copy's time per batch over the adapted one's, with its [min..max]. The CPU is printed.

    .venv/bin/python -m bench.first_conv [--batch 32] [--rounds 7] [--seconds 1.0]
"""

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf

from bench.nets import cpu_name
from models import networks
from transfer import channels
from transfer import graph as transfer_graph

v1 = tf.compat.v1
NETWORK = networks.get("efficientnet_lite0")


def _stem(channels_in, kernel, grey, preprocessed):
    """A session and its output op: the network's input preprocessing at `channels_in` (unless `preprocessed`:
    the convolution alone, over the input it would get), then the stem convolution."""
    graph = tf.Graph()
    with graph.as_default():
        spec = transfer_graph.input_spec(NETWORK, channels=channels_in)
        # Variables, not constants: the optimizer would fold a graph of constants away.
        images = v1.Variable(grey if not preprocessed else np.repeat(grey, channels_in, axis=-1), name="images")
        weights = v1.Variable(kernel, name="kernel")
        net = images if preprocessed else transfer_graph.to_network_input(NETWORK, images, spec)
        out = tf.reduce_sum(tf.nn.conv2d(net, weights, strides=2, padding="SAME"))  # a scalar fetch: nothing pruned
        sess = v1.Session(graph=graph)
        sess.run(v1.global_variables_initializer())
    return sess, out


def _time(sess, op, seconds):
    """Seconds per batch of `op`, run for about `seconds`."""
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(op)
        count += 1
    return (time.perf_counter() - start) / count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    grey = rng.uniform(0, 1, (args.batch, *NETWORK.image_size, 1)).astype(np.float32)
    rgb_kernel = rng.normal(size=(3, 3, 3, 32)).astype(np.float32)
    print(f"CPU: {cpu_name()}; batch {args.batch} of {NETWORK.image_size[0]}x{NETWORK.image_size[1]} grey")
    for preprocessed in (False, True):
        copy = _stem(3, rgb_kernel, grey, preprocessed)
        adapted = _stem(1, channels.adapt_kernel(rgb_kernel, 1, "sum"), grey, preprocessed)
        _compare("convolution alone" if preprocessed else "preprocessing and convolution", copy, adapted, args)


def _compare(what, copy, adapted, args):
    """Times the two in turns and prints their times and the ratio of one run."""
    for sess, op in (copy, adapted):
        _time(sess, op, 0.2)  # warm-up: graph optimisation and oneDNN primitives, not timed
    ratios, times = [], []
    for _ in range(args.rounds):
        pair = (_time(*copy, args.seconds), _time(*adapted, args.seconds))
        times.append(pair)
        ratios.append(pair[0] / pair[1])
    copy_ms, adapted_ms = (1000 * statistics.median(side) for side in zip(*times))
    print(
        f"{what}: grey copied into RGB {copy_ms:.2f} ms per batch, summed 1-channel kernel {adapted_ms:.2f} ms; "
        f"ratio (copy / adapted), median over {args.rounds} rounds: {statistics.median(ratios):.2f} "
        f"[{min(ratios):.2f}..{max(ratios):.2f}]"
    )


if __name__ == "__main__":
    main()
