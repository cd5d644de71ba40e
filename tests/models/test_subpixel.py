"""Tests for the sub-pixel form of the stride-2 transposed convolutions (models/layers.py).

The sub-pixel form is a different computation of the same function of the same
variables: its outputs and gradients must equal tf.nn.conv2d_transpose's (the
"transpose" implementation) to float rounding, and checkpoints must move between the
two forms unchanged.
"""

import numpy as np
import pytest
import tensorflow as tf

from models import cae, layers

v1 = tf.compat.v1

SEED = 20261201
TOLERANCE = 1e-5


def _layer_outputs_and_gradients(in_shape, filters, kernel_size, seed, activation=tf.nn.relu):
    """Output, input gradient and kernel gradient of both implementations, on shared weights."""
    rng = np.random.default_rng(seed)
    results = {}
    with tf.Graph().as_default():
        inputs = tf.constant(rng.uniform(-1, 1, in_shape).astype(np.float32))
        outputs = {
            name: layers.conv2d_transpose(inputs, filters, kernel_size, 2, name, activation, implementation=name)
            for name in layers.TRANSPOSE_IMPLEMENTATIONS
        }
        variables = {var.op.name: var for var in v1.global_variables()}
        # A fixed random weighting of the outputs, so every output element's gradient counts.
        shape = outputs["subpixel"].shape.as_list()
        weights = tf.constant(rng.standard_normal(shape).astype(np.float32))
        fetches = {}
        for name, output in outputs.items():
            kernel, bias = variables[f"{name}/kernel"], variables[f"{name}/bias"]
            d_inputs, d_kernel, d_bias = tf.gradients(tf.reduce_sum(output * weights), [inputs, kernel, bias])
            fetches[name] = {"output": output, "d_inputs": d_inputs, "d_kernel": d_kernel, "d_bias": d_bias}
        with v1.Session() as sess:
            kernel_value = rng.uniform(-0.5, 0.5, variables["subpixel/kernel"].shape.as_list()).astype(np.float32)
            bias_value = rng.uniform(-0.1, 0.1, variables["subpixel/bias"].shape.as_list()).astype(np.float32)
            for name in layers.TRANSPOSE_IMPLEMENTATIONS:
                variables[f"{name}/kernel"].load(kernel_value, sess)
                variables[f"{name}/bias"].load(bias_value, sess)
            results = sess.run(fetches)
    return results


@pytest.mark.parametrize(
    "in_shape, filters, kernel_size",
    [
        ((3, 7, 7, 32), 16, 5),  # dconv1
        ((3, 14, 14, 16), 1, 5),  # dconv2
        ((2, 5, 6, 3), 4, 3),  # odd and unequal sides, a 3x3 kernel
        ((2, 4, 4, 2), 3, 4),  # an even kernel
        ((2, 3, 3, 2), 2, 2),
    ],
    ids=["dconv1", "dconv2", "k3-odd-sides", "k4", "k2"],
)
def test_outputs_and_gradients_equal_conv2d_transpose(in_shape, filters, kernel_size):
    results = _layer_outputs_and_gradients(in_shape, filters, kernel_size, SEED)
    subpixel, transpose = results["subpixel"], results["transpose"]
    assert subpixel["output"].shape == (in_shape[0], 2 * in_shape[1], 2 * in_shape[2], filters)
    assert np.abs(transpose["output"]).max() > 0.1  # the relu did not zero everything
    for key in ("output", "d_inputs", "d_kernel", "d_bias"):
        np.testing.assert_allclose(subpixel[key], transpose[key], rtol=TOLERANCE, atol=TOLERANCE, err_msg=key)


@pytest.mark.parametrize("activation", [None, tf.nn.sigmoid], ids=["none", "sigmoid"])
def test_without_the_fused_relu_outputs_and_gradients_equal_conv2d_transpose(activation):
    # The relu is fused before the interleaving; other activations come after it, and none
    # (dconv2, the logits) leaves the tiled bias alone.
    results = _layer_outputs_and_gradients((3, 14, 14, 16), 2, 5, SEED + 1, activation)
    for key in ("output", "d_inputs", "d_kernel", "d_bias"):
        np.testing.assert_allclose(
            results["subpixel"][key], results["transpose"][key], rtol=TOLERANCE, atol=TOLERANCE, err_msg=key
        )


def test_the_subpixel_graph_has_no_backward_data_convolution():
    # The point of the form: neither the forward pass nor the gradients of dconv1/dconv2
    # run the stride-2 backward-data convolution that conv2d_transpose is.
    with tf.Graph().as_default() as graph:
        images = v1.placeholder(tf.float32, [None, 28, 28, 1])
        end_points = cae.build_autoencoder(images)
        decoder = [var for var in v1.trainable_variables() if var.op.name.startswith(("dconv1/", "dconv2/"))]
        tf.gradients(cae.reconstruction_loss(images, end_points), decoder + [end_points["dconv1"]])
        kinds = {
            op.type for op in graph.get_operations() if op.name.startswith(("dconv1/", "dconv2/", "gradients/dconv"))
        }
    assert "Conv2DBackpropInput" not in kinds
    assert {"Conv2D", "DepthToSpace", "Conv2DBackpropFilter"} <= kinds


def test_subpixel_kernel_indices_place_each_kernel_element_once_per_phase():
    kernel_size, filters, in_channels = 5, 2, 3
    indices = layers.subpixel_kernel_indices(kernel_size, filters, in_channels)
    zero = kernel_size * kernel_size * filters * in_channels
    assert indices.shape == (3, 3, in_channels, 4 * filters)
    # Every element of the kernel appears exactly once over the four phases, and the
    # remaining taps (9 * 4 - 25 per channel pair) are the appended zero.
    used = indices[indices != zero]
    assert sorted(used.tolist()) == list(range(zero))
    assert (indices == zero).sum() == (9 * 4 - 25) * filters * in_channels


@pytest.mark.parametrize("implementation", layers.TRANSPOSE_IMPLEMENTATIONS)
def test_both_forms_create_the_same_variables(implementation):
    with tf.Graph().as_default():
        cae.build_autoencoder(v1.placeholder(tf.float32, [None, 28, 28, 1]), transpose_implementation="subpixel")
        expected = [(var.op.name, var.shape.as_list()) for var in v1.global_variables()]
    with tf.Graph().as_default():
        cae.build_autoencoder(v1.placeholder(tf.float32, [None, 28, 28, 1]), transpose_implementation=implementation)
        assert [(var.op.name, var.shape.as_list()) for var in v1.global_variables()] == expected
        assert [var.op.name for var in v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)] == [
            name for name, _ in expected
        ]


def _save(implementation, directory, images):
    """Builds the CAE in one form with random weights and non-zero biases; saves; returns values and outputs."""
    rng = np.random.default_rng(SEED + 1)
    with tf.Graph().as_default():
        v1.set_random_seed(SEED + 2)
        placeholder = v1.placeholder(tf.float32, [None, 28, 28, 1])
        end_points = cae.build_autoencoder(placeholder, transpose_implementation=implementation)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for var in v1.global_variables():
                if var.op.name.endswith("/bias"):
                    var.load(rng.uniform(-0.1, 0.1, var.shape.as_list()).astype(np.float32), sess)
            path = v1.train.Saver().save(sess, str(directory / "model.ckpt"), write_meta_graph=False)
            values = sess.run({var.op.name: var for var in v1.global_variables()})
            outputs = sess.run(end_points["reconstruction"], {placeholder: images})
    return path, values, outputs


def _restore(implementation, path, images):
    with tf.Graph().as_default():
        placeholder = v1.placeholder(tf.float32, [None, 28, 28, 1])
        end_points = cae.build_autoencoder(placeholder, transpose_implementation=implementation)
        with v1.Session() as sess:
            v1.train.Saver().restore(sess, path)
            values = sess.run({var.op.name: var for var in v1.global_variables()})
            outputs = sess.run(end_points["reconstruction"], {placeholder: images})
    return values, outputs


@pytest.mark.parametrize("written, read", [("subpixel", "transpose"), ("transpose", "subpixel")])
def test_a_checkpoint_of_either_form_restores_into_the_other(tmp_path, written, read):
    images = np.random.default_rng(SEED + 3).random((4, 28, 28, 1), dtype=np.float32)
    path, saved_values, saved_outputs = _save(written, tmp_path, images)
    values, outputs = _restore(read, path, images)
    assert values.keys() == saved_values.keys()
    for name, value in values.items():
        np.testing.assert_array_equal(value, saved_values[name], err_msg=name)
    np.testing.assert_allclose(outputs, saved_outputs, rtol=TOLERANCE, atol=TOLERANCE)


def test_unknown_implementation_raises_before_building():
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="'fast'.*choose one of"):
            cae.build_autoencoder(v1.placeholder(tf.float32, [None, 28, 28, 1]), transpose_implementation="fast")
        assert v1.global_variables() == []
        with pytest.raises(ValueError, match="'fast'"):
            layers.conv2d_transpose(tf.zeros([1, 2, 2, 1]), 1, 3, 2, "t", implementation="fast")
