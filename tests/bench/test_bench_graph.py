"""The benchmark times the graph users train: bench's transfer contender against train_transfer.py's."""

import collections

import pytest
import tensorflow as tf

import train_transfer
from bench.contenders import build_transfer_graph
from data import sources
from transfer import graph as transfer_graph
from transfer import labelled, train

v1 = tf.compat.v1


def _signature(graph):
    variables = [(var.op.name, var.shape.as_list()) for var in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)]
    ops = collections.Counter(op.type for op in graph.get_operations())
    return variables, ops


def _script_graph(argv):
    settings = train.settings(train_transfer.parse_args(argv))
    ((network, spec, selection),), source = settings.checked, settings.extra
    data = labelled.load(settings.data, spec, log=lambda line: None)
    plan = train.make_run_plan(network, data, spec, selection, source.checkpoint, settings.runtime.model_dir)
    use_cache, _ = transfer_graph.cache_decision(plan, network, settings.hyper.shift, source.cache_features)
    with tf.Graph().as_default() as graph:
        v1.set_random_seed(0)
        data_shape = transfer_graph.DataShape.of(data)
        transfer_graph.build(network, plan, data_shape, spec, settings.hyper, use_cache)
    return graph, use_cache


@pytest.mark.parametrize("cached", [True, False])
def test_bench_builds_the_scripts_graph(ae_run, cached):
    argv = ["--sample", "--restore", "conv", "--checkpoint", ae_run.model_dir, "--validation-size", "0"]
    script, use_cache = _script_graph([*argv, "--cache-features", "auto" if cached else "off"])
    assert use_cache == cached
    with tf.Graph().as_default() as bench:
        built = build_transfer_graph(sources.load_sample(), 64, cached)
    assert built.use_cache == cached
    ours, theirs = _signature(bench), _signature(script)
    assert ours[0] == theirs[0]  # every variable, Adam slots included, with its shape
    assert ours[1] == theirs[1]  # the same ops, kind by kind
