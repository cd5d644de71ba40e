"""The CAE and the classifier built with classic TF1 `tf.compat.v1.layers`.

Run by tests/models/test_models.py in a subprocess with TF_USE_LEGACY_KERAS=1, the only way
to get `tf.compat.v1.layers` on TensorFlow >= 2.16 (it then comes from tf-keras). It
deliberately does not import `models`: it is the independent reference that our
checkpoints must match, name for name and shape for shape.

  export: initialise both graphs from --seed, save each with a default Saver, write
          the outputs on --inputs and the variable table.
  import: restore both graphs from the given checkpoints with a default Saver (every
          variable must be found; no initialiser is run), write the outputs on
          --inputs, the restored values and the variable table.

Files written to --out-dir: cae_reconstruction.npy, cae_logits.npy (dconv2 before
its sigmoid), classifier_logits.npy,
variables.json ({"cae": [[name, shape, dtype], ...], "classifier": [...]}) and, for
import, cae_values.npz and classifier_values.npz. Exit status 3 means that
`tf.compat.v1.layers` is not usable in this environment.
"""

import argparse
import json
import os
import sys

import numpy as np

EXIT_NO_LEGACY_LAYERS = 3
ENCODER_UNITS = 7 * 7 * 32


def _legacy_layers():
    """Returns `tf.compat.v1.layers` after checking that conv2d is really there."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        sys.exit(
            f"TF_USE_LEGACY_KERAS must be 1 before TensorFlow is imported, "
            f"got {os.environ.get('TF_USE_LEGACY_KERAS')!r}"
        )
    import tensorflow as tf

    try:
        layers = tf.compat.v1.layers
        conv2d = layers.conv2d
    except (AttributeError, ImportError) as error:
        print(f"tf.compat.v1.layers.conv2d is not usable: {error}", file=sys.stderr)
        sys.exit(EXIT_NO_LEGACY_LAYERS)
    if not callable(conv2d):
        print(f"tf.compat.v1.layers.conv2d is not callable: {conv2d!r}", file=sys.stderr)
        sys.exit(EXIT_NO_LEGACY_LAYERS)
    return tf, layers


def build_encoder(tf, layers, images):
    """conv1 and conv2 in textbook tf.layers code; returns conv2 flattened."""
    conv1 = layers.conv2d(images, 16, 5, strides=2, padding="same", activation=tf.nn.relu, name="conv1")
    conv2 = layers.conv2d(conv1, 32, 5, strides=2, padding="same", activation=tf.nn.relu, name="conv2")
    return tf.reshape(conv2, [-1, ENCODER_UNITS])


def build_cae(tf, layers, images, latent_size=20):
    """The autoencoder of docs/ARCHITECTURE.md in textbook tf.layers code; returns the reconstruction."""
    features = build_encoder(tf, layers, images)
    latent = layers.dense(features, latent_size, name="latent_var")
    z_matrix = layers.dense(latent, ENCODER_UNITS, activation=tf.nn.relu, name="z_matrix")
    z_matrix = tf.reshape(z_matrix, [-1, 7, 7, 32])
    dconv1 = layers.conv2d_transpose(z_matrix, 16, 5, strides=2, padding="same", activation=tf.nn.relu, name="dconv1")
    return layers.conv2d_transpose(dconv1, 1, 5, strides=2, padding="same", activation=tf.nn.sigmoid, name="dconv2")


def build_classifier(tf, layers, images, num_classes=10):
    """The classifier of docs/ARCHITECTURE.md in textbook tf.layers code; returns the logits."""
    features = build_encoder(tf, layers, images)
    fc1 = layers.dense(features, 200, activation=tf.nn.relu, name="fc1")
    return layers.dense(fc1, num_classes, name="logits")


BUILDERS = {"cae": build_cae, "classifier": build_classifier}


def run(model, args, tf, layers, inputs):
    """Builds one model in a fresh graph, exports or imports it; returns its variable table."""
    build = BUILDERS[model]
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(args.seed)
        images = tf.compat.v1.placeholder(tf.float32, [None, 28, 28, 1], name="images")
        output = build(tf, layers, images)
        if model == "cae":
            # dconv2 before its sigmoid too: near 0.5 at initialisation the
            # reconstruction alone hides small differences.
            assert output.op.type == "Sigmoid", output.op.type
            outputs = {"reconstruction": output, "logits": output.op.inputs[0]}
        else:
            outputs = {"logits": output}
        variables = tf.compat.v1.global_variables()
        saver = tf.compat.v1.train.Saver()  # default var_list: every global variable
        with tf.compat.v1.Session() as sess:
            if args.mode == "export":
                sess.run(tf.compat.v1.global_variables_initializer())
                checkpoint = os.path.join(args.out_dir, model, "model.ckpt")
                os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
                saver.save(sess, checkpoint, write_meta_graph=False)
            else:
                saver.restore(sess, getattr(args, f"{model}_checkpoint"))
                values = sess.run({v.op.name: v for v in variables})
                np.savez(os.path.join(args.out_dir, f"{model}_values.npz"), **values)
            for name, value in sess.run(outputs, {images: inputs}).items():
                np.save(os.path.join(args.out_dir, f"{model}_{name}.npy"), value)
    return [[v.op.name, v.shape.as_list(), v.dtype.base_dtype.name] for v in variables]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("export", "import"))
    parser.add_argument("--inputs", required=True, help=".npy batch [n, 28, 28, 1] float32")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed", type=int, default=0, help="graph-level seed (export)")
    parser.add_argument("--cae-checkpoint", help="checkpoint prefix to import")
    parser.add_argument("--classifier-checkpoint", help="checkpoint prefix to import")
    args = parser.parse_args(argv)
    if args.mode == "import" and not (args.cae_checkpoint and args.classifier_checkpoint):
        parser.error("import needs --cae-checkpoint and --classifier-checkpoint")

    tf, layers = _legacy_layers()
    inputs = np.load(args.inputs)
    os.makedirs(args.out_dir, exist_ok=True)
    table = {model: run(model, args, tf, layers, inputs) for model in BUILDERS}
    with open(os.path.join(args.out_dir, "variables.json"), "w") as f:
        json.dump(table, f, indent=1)


if __name__ == "__main__":
    main()
