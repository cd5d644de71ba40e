"""The benchmark times the graph users train: bench's autoencoder contender against train_autoencoder.py's."""

import collections

import pytest
import tensorflow as tf

import train_autoencoder
from autoencoder import graph as ae_graph
from autoencoder import train
from autoencoder.flags import AUTOENCODER
from bench.contenders import OursAutoencoder, build_autoencoder_graph
from bench.experiments import TransposeAutoencoder
from data import sources

v1 = tf.compat.v1


def _signature(graph):
    variables = [(var.op.name, var.shape.as_list()) for var in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)]
    ops = collections.Counter(op.type for op in graph.get_operations())
    return variables, ops


@pytest.fixture(scope="module")
def sample():
    """The data phase of `train_autoencoder.py --sample`, run once for the module."""
    settings = train.settings(train_autoencoder.parse_args(["--sample"]))
    dataset, _ = train.load_data(settings.data, settings.hyper.batch_size)
    return dataset


def _script_graph(dataset, *flags):
    """The graph autoencoder.train.run builds for `--sample` and these flags (a local run)."""
    settings = train.settings(train_autoencoder.parse_args(["--sample", *flags]))
    with tf.Graph().as_default() as graph:
        train.build(settings.hyper, dataset)
    return graph


def _bench_graph(transpose_implementation="subpixel"):
    with tf.Graph().as_default() as graph:
        build_autoencoder_graph(64, transpose_implementation)
    return graph


@pytest.fixture(scope="module")
def script(sample):
    return _signature(_script_graph(sample))


def test_bench_builds_the_scripts_graph(script):
    ours = _signature(_bench_graph())
    assert len(ours[0]) == 39  # 12 model variables, 24 Adam slots, beta1_power, beta2_power, global_step
    assert ours[0] == script[0]  # every variable, Adam slots included, with its shape
    assert ours[1] == script[1]  # the same ops, kind by kind


def test_the_transpose_experiment_differs_only_in_the_decoder_ops(script):
    transpose = _signature(_bench_graph("transpose"))
    assert transpose[0] == script[0]
    # dconv1 and dconv2 forward as tf.nn.conv2d_transpose: two more Conv2DBackpropInput ops.
    assert transpose[1]["Conv2DBackpropInput"] == script[1]["Conv2DBackpropInput"] + 2
    # The experiment's contender builds through the same function, with only that changed.
    assert TransposeAutoencoder.transpose_implementation == "transpose"
    assert OursAutoencoder.transpose_implementation == "subpixel"


def test_the_graphs_hyperparameters_are_the_scripts_flags():
    argv = ["--batch-size", "8", "--learning-rate", "0.5", "--noise", "0.25", "--seed", "3", "--latent-size", "4"]
    args = train_autoencoder.parse_args([*argv, "--loss", "l2", "--epochs", "6"])
    hyper = AUTOENCODER.record(ae_graph.Hyperparameters, args)
    assert hyper == ae_graph.Hyperparameters(8, 0.5, noise=0.25, seed=3, latent_size=4, loss="l2", epochs=6)


def test_other_flags_make_another_graph(sample, script):
    # The comparison above can fail: a flag that shapes the graph changes the signature.
    assert _signature(_script_graph(sample, "--latent-size", "8"))[0] != script[0]
    assert _signature(_script_graph(sample, "--noise", "0.1"))[1] != script[1]


def test_the_contender_trains_through_the_pipeline():
    contender = OursAutoencoder("ae/ours", sources.load_sample(), 16, 1, 1)
    try:
        contender.warm_up()  # builds, initialises and runs 5 steps
        sample = contender.run(3)
        assert contender.step == 8
        assert sample.units == 3 * 16
        # The ARCHITECTURE.md table: conv1 416, conv2 12,832, latent_var 31,380, z_matrix 32,928,
        # dconv1 12,816, dconv2 401 weights and biases.
        assert contender.num_weights == 90_773
    finally:
        contender.close()
