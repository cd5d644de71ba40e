"""TF-Slim's own vgg_16 and resnet_v1_50 (the `tf-slim` package), the reference our
models/vgg.py and models/resnet_v1.py must match name for name, shape for shape and
output for output.

Run by tests/models/test_nets.py in a subprocess with TF_USE_LEGACY_KERAS=1: tf_slim's layers
need TensorFlow's legacy layers. It deliberately does not import `models`. BatchNorm is
built with `updates_collections=None` (the fused path, same variable names), because
the default path imports a module tf-keras no longer ships, and `ops.Tensor` is put
back for tf_slim's constant_value (see _slim).

One run does both directions for each net, in one graph (one TensorFlow import):

  import: restore the net from --ours-dir/<net>/model.ckpt with a default Saver (every
          variable must be found; no initialiser runs) and write its outputs as
          imported_<net>_{logits,features}.npy;
  export: then initialise it from --seed, replace every bias and BatchNorm variable by
          seeded random values (so BatchNorm is not the identity), save it as
          --out-dir/<net>/model.ckpt and write its outputs as exported_<net>_*.npy.

Inputs: --inputs-dir holds <net>.npy. Features are the unpooled last block for resnet
and fc7 for vgg. Also written: variables.json ({net: [[name, shape], ...]}).
Exit status 3: tf_slim is not usable here.
"""

import argparse
import json
import os
import sys

import numpy as np

EXIT_NO_SLIM = 3
NETS = ("vgg_16", "resnet_v1_50")


def _slim():
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        sys.exit("TF_USE_LEGACY_KERAS must be 1 before TensorFlow is imported")
    import tensorflow as tf
    from tensorflow.python.framework import ops

    # tf_slim's utils.constant_value (called by its fused batch_norm) still looks for
    # ops.Tensor, which TensorFlow 2.21 no longer defines there; it is tf.Tensor.
    if not hasattr(ops, "Tensor"):
        ops.Tensor = tf.Tensor
    try:
        import tf_slim as slim
        from tf_slim.nets import resnet_utils, resnet_v1, vgg
    except ImportError as error:
        print(f"tf_slim is not usable: {error}", file=sys.stderr)
        sys.exit(EXIT_NO_SLIM)
    return tf, slim, vgg, resnet_v1, resnet_utils


def build(net, tf, slim, vgg, resnet_v1, resnet_utils, images):
    """Returns (logits, features) of TF-Slim's net in inference mode."""
    if net == "vgg_16":
        with slim.arg_scope(vgg.vgg_arg_scope()):
            logits, end_points = vgg.vgg_16(images, num_classes=1000, is_training=False)
        return logits, tf.squeeze(end_points["vgg_16/fc7"], [1, 2])
    # resnet_arg_scope hands its BatchNorm parameters to conv2d explicitly, so the
    # override goes there: the same values with updates_collections=None.
    batch_norm_params = {"decay": 0.997, "epsilon": 1e-5, "scale": True, "updates_collections": None}
    with (
        slim.arg_scope(resnet_utils.resnet_arg_scope()),
        slim.arg_scope([slim.conv2d], normalizer_params=batch_norm_params),
    ):
        logits, end_points = resnet_v1.resnet_v1_50(images, num_classes=1000, is_training=False)
    return tf.squeeze(logits, [1, 2]), end_points["resnet_v1_50/block4"]


def randomise(tf, sess, variables, seed):
    """Seeded values for biases and BatchNorm variables; weights keep their initial values.

    Variable.load's assignment for all of them in one session.run (one run each is slow in
    resnet_v1_50's graph).
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for variable in variables:
        name = variable.op.name
        shape = variable.shape.as_list()
        # Variances above and scales below 1 keep ResNet's activations of order 1, so
        # that an absolute 1e-5 on the outputs means something.
        if name.endswith("moving_variance"):
            value = rng.uniform(2.0, 4.0, shape)
        elif name.endswith("gamma"):
            value = rng.uniform(0.3, 0.6, shape)
        elif name.endswith(("beta", "moving_mean", "biases")):
            value = rng.normal(0.0, 0.1, shape)
        else:
            continue
        feeds[variable] = value.astype(np.float32)
    sess.run([variable.initializer for variable in feeds], {v.initializer.inputs[1]: x for v, x in feeds.items()})


def run(net, args, modules):
    tf = modules[0]
    v1 = tf.compat.v1
    inputs = np.load(os.path.join(args.inputs_dir, f"{net}.npy"))
    with tf.Graph().as_default():
        v1.set_random_seed(args.seed)
        images = v1.placeholder(tf.float32, inputs.shape, name="images")
        logits, features = build(net, *modules, images)
        variables = v1.global_variables()
        saver = v1.train.Saver()
        with v1.Session() as sess:
            saver.restore(sess, os.path.join(args.ours_dir, net, "model.ckpt"))
            outputs = {"imported": sess.run([logits, features], {images: inputs})}
            sess.run(v1.global_variables_initializer())
            randomise(tf, sess, variables, args.seed)
            prefix = os.path.join(args.out_dir, net, "model.ckpt")
            os.makedirs(os.path.dirname(prefix), exist_ok=True)
            saver.save(sess, prefix, write_meta_graph=False)
            outputs["exported"] = sess.run([logits, features], {images: inputs})
    for direction, (out_logits, out_features) in outputs.items():
        np.save(os.path.join(args.out_dir, f"{direction}_{net}_logits.npy"), out_logits)
        np.save(os.path.join(args.out_dir, f"{direction}_{net}_features.npy"), out_features)
    return [[v.op.name, v.shape.as_list()] for v in variables]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs-dir", required=True)
    parser.add_argument("--ours-dir", required=True, help="holds <net>/model.ckpt written by our builders")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    modules = _slim()
    os.makedirs(args.out_dir, exist_ok=True)
    table = {net: run(net, args, modules) for net in NETS}
    with open(os.path.join(args.out_dir, "variables.json"), "w") as f:
        json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
