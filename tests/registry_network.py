"""Runs commands of the toolkit with one more network in the registry, a test-only one.

    python tests/registry_network.py COMMAND ARGS... [+ COMMAND ARGS...]...

COMMAND is train_transfer, predict, inspect, export or look; ARGS are that command's
own; `+` separates commands, run in order in this one process (one TensorFlow start-up),
each through its entry point's `main(argv)`, with a line `=== COMMAND` before its output.
The first that fails ends the process with its status. The network, `tiny_test_net` (two
3x3 stride-2 convolutions, a spatial mean and a dense head over 16x16 RGB, 3 classes),
exists only as the registry record this file registers: the commands take it with no
other edit, which is what tests/models/test_registry.py proves with it.
"""

import importlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The entry point modules, by command: each has main(argv) -> exit status.
COMMANDS = {
    "train_transfer": "train_transfer",
    "predict": "predict",
    "inspect": "transfer.inspect",
    "export": "transfer.export",
    "look": "transfer.look.__main__",
}
SEPARATOR = "+"
SCOPE = "tiny"


def preprocess(images):
    """RGB in [0, 255] scaled to [0, 1]."""
    import tensorflow as tf

    return tf.cast(images, tf.float32) / 255.0


def head(features, num_classes, is_training=False, dropout_keep_prob=1.0):
    """The dense layer over the pooled conv2 features, in the network's scope."""
    import tensorflow as tf

    from models import layers

    del is_training, dropout_keep_prob
    with tf.compat.v1.variable_scope(SCOPE, reuse=tf.compat.v1.AUTO_REUSE):
        return layers.dense(features, num_classes, "logits")


def build(images, num_classes=3, is_training=False):
    """conv1 (3x3/2, 4, relu), conv2 (3x3/2, 8, relu), the spatial mean, and with num_classes the head."""
    import tensorflow as tf

    from models import layers

    del is_training
    with tf.compat.v1.variable_scope(SCOPE, reuse=tf.compat.v1.AUTO_REUSE):
        conv1 = layers.conv2d(images, 4, 3, 2, "conv1", activation=tf.nn.relu)
        conv2 = layers.conv2d(conv1, 8, 3, 2, "conv2", activation=tf.nn.relu)
        features = tf.reduce_mean(conv2, axis=[1, 2])
    end_points = {"conv1": conv1, "conv2": conv2, "features": features, "batch_norm_updates": {}}
    if num_classes is None:
        return features, end_points
    logits = head(features, num_classes)
    return logits, {**end_points, "logits": logits}


def register():
    from models import networks

    networks.register(
        networks.Network(
            name="tiny_test_net",
            build=build,
            head=head,
            image_size=(16, 16),
            channels=3,
            preprocess=preprocess,
            num_classes=3,
            feature_units=8,
            head_scopes=(f"{SCOPE}/logits",),
            block_scopes=(f"{SCOPE}/conv1", f"{SCOPE}/conv2"),
            scope=SCOPE,
            probe_end_points=("conv1", "conv2", "features"),
            first_conv=f"{SCOPE}/conv1/kernel",
            layers="conv1 (3x3/2, 4), conv2 (3x3/2, 8), mean, logits",
        )
    )


def _commands(argv):
    command, *rest = argv
    while SEPARATOR in rest:
        yield command, rest[: rest.index(SEPARATOR)]
        command, *rest = rest[rest.index(SEPARATOR) + 1 :]
    yield command, rest


def main():
    sys.path.insert(0, REPO)
    from runtime.quiet import import_tensorflow

    import_tensorflow()  # the oneDNN choice, before the registry's modules load TensorFlow
    register()
    for command, argv in _commands(sys.argv[1:]):
        print(f"=== {command}", flush=True)
        try:
            status = importlib.import_module(COMMANDS[command]).main(argv)
        except SystemExit as exit:
            status = exit.code
        sys.stdout.flush()
        if status:
            sys.exit(status)


if __name__ == "__main__":
    main()
