"""bench/experiments.py's XLA experiment: it compiles the step it claims to, and the step stays the same."""

import numpy as np
import pytest
import tensorflow as tf

from bench import experiments
from models.cae import build_autoencoder, reconstruction_loss

v1 = tf.compat.v1
BATCH = 4


def test_cpu_auto_clustering_flag_is_added_once_and_keeps_the_users_flags():
    environ = {}
    experiments.enable_cpu_auto_clustering(environ)
    assert environ["TF_XLA_FLAGS"] == "--tf_xla_cpu_global_jit"
    experiments.enable_cpu_auto_clustering(environ)
    assert environ["TF_XLA_FLAGS"] == "--tf_xla_cpu_global_jit"
    environ = {"TF_XLA_FLAGS": "--tf_xla_auto_jit=2"}
    experiments.enable_cpu_auto_clustering(environ)
    assert environ["TF_XLA_FLAGS"] == "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"


def _one_step(images, xla):
    """Loss of one seeded Adam step on `images` and every model variable after it; with the XLA count."""
    with tf.Graph().as_default() as graph:
        v1.set_random_seed(0)
        inputs = v1.placeholder(tf.float32, [BATCH, 28, 28, 1], name="images")
        loss = reconstruction_loss(inputs, build_autoencoder(inputs), "bce")
        train_op = v1.train.AdamOptimizer(1e-3).minimize(loss, var_list=v1.get_collection(v1.GraphKeys.MODEL_VARIABLES))
        variables = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        init = v1.global_variables_initializer()
        marked = experiments.mark_for_xla(graph) if xla else 0
    with v1.Session(graph=graph) as sess:
        sess.run(init)
        before = sess.run(variables)
        compiled = experiments.xla_run_nodes(sess, [train_op, loss], {inputs: images})
        # The step above trained; its loss is that of the weights before it.
        after = sess.run(variables)
        next_loss = sess.run(loss, {inputs: images})
    names = [var.op.name for var in variables]
    return dict(zip(names, before)), dict(zip(names, after)), next_loss, marked, compiled


@pytest.mark.slow
def test_marked_step_runs_compiled_and_trains_as_the_plain_step():
    images = np.random.default_rng(0).random((BATCH, 28, 28, 1), dtype=np.float32)
    plain_before, plain_after, plain_loss, _, plain_compiled = _one_step(images, xla=False)
    xla_before, xla_after, xla_loss, marked, xla_compiled = _one_step(images, xla=True)

    assert plain_compiled == 0
    assert marked > 0 and xla_compiled > 0
    assert sorted(xla_after) == sorted(plain_after)
    for name in plain_after:
        # Same initial weights (the initialisers are left out of the scope) ...
        np.testing.assert_array_equal(xla_before[name], plain_before[name])
        # ... and the same step, up to the round-off of XLA's kernels against TensorFlow's.
        assert not np.array_equal(plain_after[name], plain_before[name]), name
        np.testing.assert_allclose(xla_after[name], plain_after[name], rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(xla_loss, plain_loss, rtol=1e-4)
