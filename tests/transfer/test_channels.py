"""Input-channel adaptation (issue 23, item 1): the first convolution of a checkpoint made for
RGB, adapted to data of other channels, as a row of the plan.

The rules (transfer.channels) are held over generated kernels and channel counts; the plan's
row over generated graphs and selections; the restore and the frozen check through the
library on a tiny graph; and the promise that makes `sum` worth having: a grey image
through EfficientNet-Lite0 with the summed one-channel kernel gives the logits of the same
grey copied into R, G and B with the RGB kernel.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from data import image_folder
from models import networks
from transfer import channels, library
from transfer import graph as transfer_graph
from transfer.plan import PlanError, RestoreSelection, VariableInfo, make_plan

v1 = tf.compat.v1
SEED = 23
F32 = "float32"


def _kernels():
    """(rule, checkpoint channels, data channels, kernel): every rule, 1..3 checkpoint and 1..6 data channels."""
    rng = np.random.default_rng(SEED)
    for rule, have, want in itertools.product(channels.RULES, (1, 2, 3), range(1, 7)):
        if have != want:
            yield rule, have, want, rng.normal(size=(3, 3, have, 5)).astype(np.float32)


def test_each_rule_makes_a_kernel_of_the_datas_channels_by_its_definition():
    tried = refused = 0
    for rule, have, want, kernel in _kernels():
        tried += 1
        if channels.refusal(rule, have, want):
            assert rule == "zeros" and want < have
            refused += 1
            continue
        adapted = channels.adapt_kernel(kernel, want, rule)
        assert adapted.shape == (3, 3, want, 5) and adapted.dtype == np.float32
        total = kernel.sum(axis=2)
        if rule == "zeros":
            assert np.array_equal(adapted[:, :, :have], kernel) and not adapted[:, :, have:].any()
            assert channels.fresh_channels(rule, have, want) == tuple(range(have, want))
        else:
            assert channels.fresh_channels(rule, have, want) == ()
        if rule == "sum" or want == 1:
            # Equal input channels (a grey image copied into each) meet the checkpoint's whole response.
            np.testing.assert_allclose(adapted.sum(axis=2), total, rtol=1e-5, atol=1e-5)
        elif rule == "repeat":
            for i in range(want):
                np.testing.assert_allclose(adapted[:, :, i], kernel[:, :, i % have] * have / want, rtol=1e-6)
            if want % have == 0:
                np.testing.assert_allclose(adapted.sum(axis=2), total, rtol=1e-5, atol=1e-5)
    assert (tried, refused) == (45, 3)


def test_to_channels_keeps_alpha_for_2_and_4_and_makes_it_opaque_when_missing():
    rng = np.random.default_rng(SEED)
    cases = 0
    with tf.Graph().as_default(), v1.Session() as sess:
        decoded = v1.placeholder(tf.uint8, [4, 5, None])  # as decode gives it: channels known only when run
        for have, want in itertools.product(range(1, 5), range(1, 5)):
            pixels = rng.integers(0, 256, (4, 5, have)).astype(np.uint8)
            out = sess.run(image_folder.to_channels(decoded, want), {decoded: pixels})
            assert out.shape == (4, 5, want)
            colour = sess.run(image_folder.to_channels(decoded, 3 if want == 4 else 1), {decoded: pixels})
            if want in (2, 4):
                alpha = pixels[..., -1] if have in (2, 4) else np.full((4, 5), 255)
                assert np.array_equal(out[..., -1], alpha) and np.array_equal(out[..., :-1], colour)
            if want == have:
                assert np.array_equal(out, pixels)  # a file of the network's channels passes unchanged
            cases += 1
    assert cases == 16


def _plan_situations():
    """(data channels, rule, fine_tune, first_conv named, skip_mismatched), every combination."""
    return list(itertools.product((1, 2, 3, 4, 5), ("", *channels.RULES), (False, True), (False, True), (False, True)))


def _graph_and_checkpoint(want):
    checkpoint = [VariableInfo("net/conv1/kernel", (3, 3, 3, 8), F32), VariableInfo("net/conv1/bias", (8,), F32)]
    checkpoint += [VariableInfo("net/conv2/kernel", (3, 3, 8, 8), F32), VariableInfo("net/logits/kernel", (8, 10), F32)]
    graph = [VariableInfo("net/conv1/kernel", (3, 3, want, 8), F32), *checkpoint[1:3]]
    return graph + [VariableInfo("net/logits/kernel", (8, 2), F32)], checkpoint


def test_the_plan_adapts_the_first_conv_exactly_when_asked_and_able():
    situations = _plan_situations()
    assert len(situations) == 160
    for want, rule, fine_tune, named, skip in situations:
        graph, checkpoint = _graph_and_checkpoint(want)
        selection = RestoreSelection(
            ("net/conv1", "net/conv2"),
            fine_tune=fine_tune,
            skip_mismatched=skip,
            adapt_channels=rule,
            first_conv="net/conv1/kernel" if named else "",
        )
        adapts = want != 3 and rule and named
        if adapts and channels.refusal(rule, 3, want):
            with pytest.raises(PlanError, match="zeros keeps the checkpoint's 3 channels"):
                make_plan(graph, checkpoint, selection, "ck")
            continue
        if want != 3 and not adapts and not skip:
            with pytest.raises(PlanError, match="shape mismatch"):
                make_plan(graph, checkpoint, selection, "ck")
            continue
        plan = make_plan(graph, checkpoint, selection, "ck")
        row = plan.rows[0]
        if want == 3:
            assert row.action == "restored" and not plan.adapted
        elif not adapts:
            assert row.action == "skipped" and plan.rows[1].action == "skipped"  # the layer goes whole
        else:
            assert (row.action, row.adapt, row.source) == ("adapted", rule, "net/conv1/kernel")
            assert row.reason == channels.describe(rule, 3, want) and f"adapted ({row.reason})" in plan.format()
            fresh = () if fine_tune or rule != "zeros" else tuple(range(3, want))
            assert row.fresh_channels == fresh and row.trainable == (fine_tune or bool(fresh))
            assert "net/conv1/kernel" in plan.sources() and "net/conv1/kernel" not in plan.restore_names()
            assert plan.rows[1].action == "restored"  # the bias is read as it is


def _tiny(want, seed):
    """A conv over `want` channels and a dense head, with its loss on random data."""
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.normal(size=(8, 6, 6, want)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 2, 8).astype(np.int32))
    with v1.variable_scope("net"):
        kernel = v1.get_variable("conv1/kernel", [3, 3, want, 4])
        bias = v1.get_variable("conv1/bias", [4], initializer=v1.random_normal_initializer())
        net = tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME") + bias)
        logits = tf.reduce_mean(net, [1, 2]) @ v1.get_variable("logits/kernel", [4, 2])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


@pytest.fixture(scope="module")
def rgb_checkpoint(tmp_path_factory):
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        _tiny(3, SEED)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            return v1.train.Saver().save(sess, str(tmp_path_factory.mktemp("rgb") / "model.ckpt"))


@pytest.mark.parametrize(("rule", "want", "fine_tune"), [("zeros", 4, False), ("sum", 1, False), ("repeat", 5, True)])
def test_the_library_restores_the_adapted_value_and_the_frozen_check_holds_it(rgb_checkpoint, rule, want, fine_tune):
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        loss = _tiny(want, SEED + 1)
        variables = library.model_variables()
        selection = RestoreSelection(
            ("net/conv1",), fine_tune=fine_tune, adapt_channels=rule, first_conv="net/conv1/kernel"
        )
        plan = library.make_plan(variables, rgb_checkpoint, selection)
        step = library.train_op(loss, plan, variables, lambda mult: v1.train.AdamOptimizer(0.1))
        kernel = next(var for var in variables if var.op.name == "net/conv1/kernel")
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            values = library.restore(sess, plan, variables)
            expected = channels.adapt_kernel(values["net/conv1/kernel"], want, rule)
            assert np.array_equal(sess.run(kernel), expected)
            for _ in range(5):
                sess.run(step)
            count, worst = library.frozen_check(sess, plan, variables, values)
            after = sess.run(kernel)
    assert worst == 0.0
    if rule == "zeros":
        assert count == 1 + 1  # the bias, frozen, and the kernel's kept channels
        assert np.array_equal(after[:, :, :3], expected[:, :, :3]) and np.abs(after[:, :, 3]).max() > 0
    elif fine_tune:
        assert count == 0 and not np.array_equal(after, expected)
    else:
        assert count == 2 and np.array_equal(after, expected)


def test_a_grey_image_on_efficientnet_lite0_sums_to_the_three_channel_copy():
    """Random weights at 64x64: logits of grey through the summed kernel equal grey copied into RGB."""
    network = networks.get("efficientnet_lite0")
    rng = np.random.default_rng(SEED)
    grey = rng.uniform(0, 1, (3, 64, 64, 1)).astype(np.float32)
    spec_rgb = transfer_graph.input_spec(network, 64)
    spec_grey = transfer_graph.input_spec(network, 64, channels=1)
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        images = v1.placeholder(tf.float32, [None, 64, 64, 1])
        logits = transfer_graph.inference_logits(network, images, spec_rgb, 5)  # grey copied to RGB inside
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            weights = {var.op.name: sess.run(var) for var in v1.global_variables()}
            rgb_logits = sess.run(logits, {images: grey})
    weights[network.first_conv] = channels.adapt_kernel(weights[network.first_conv], 1, "sum")
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, 64, 64, 1])
        logits = transfer_graph.inference_logits(network, images, spec_grey, 5)
        with v1.Session() as sess:
            for var in v1.global_variables():
                var.load(weights[var.op.name], sess)
            grey_logits = sess.run(logits, {images: grey})
    assert grey_logits.shape == (3, 5) and np.abs(rgb_logits).max() > 1e-3
    np.testing.assert_allclose(grey_logits, rgb_logits, rtol=1e-4, atol=1e-4 * np.abs(rgb_logits).max())


@pytest.mark.parametrize("name", networks.NAMES)
def test_preprocessing_of_other_channels_is_rgbs_channel_by_channel(name):
    """Channel i of a C-channel image gets what the network does to RGB channel min(i, 2), bit for bit,
    whether the record lets the preprocessing take the C channels at once (`preprocess_alike`) or not;
    and the record says `preprocess_alike` only of a preprocessing that treats R, G and B alike."""
    network = networks.get(name)
    rng = np.random.default_rng(SEED)
    pixels = rng.integers(0, 256, (2, 4, 4, 4)).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as sess:
        copies = sess.run(network.preprocess(tf.constant(np.repeat(pixels[..., None], 3, axis=-1))))  # [..., 4, RGB]
        for count in (1, 2, 4):
            got = sess.run(transfer_graph.preprocess_channels(network, tf.constant(pixels[..., :count])))
            want = np.stack([copies[..., i, min(i, 2)] for i in range(count)], axis=-1)
            assert got.shape == (2, 4, 4, count) and np.array_equal(got, want), (name, count)
    if network.preprocess_alike:  # a value copied into R, G and B comes out the same in each
        assert np.array_equal(copies[..., 0], copies[..., 1]) and np.array_equal(copies[..., 0], copies[..., 2])
    assert network.preprocess_alike == (name in ("cae", "mobilenet_v1", "efficientnet_lite0"))
