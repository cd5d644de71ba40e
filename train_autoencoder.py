"""Train the convolutional autoencoder on MNIST without labels.

Writes step-numbered checkpoints, TensorBoard summaries, config.json and metrics.json
under --model-dir, and resumes from the newest checkpoint there when one exists. The run
itself is autoencoder.train.run.

    python train_autoencoder.py
    tensorboard --logdir checkpoints --host 127.0.0.1
    python -m runtime.cluster --ps 1 --workers 2 -- train_autoencoder.py   # docs/CLUSTER.md
"""

from runtime.quiet import exit_on_failure, guard_startup, import_tensorflow

if __name__ == "__main__":
    guard_startup()  # from here on Ctrl-C or SIGTERM ends the process with one line, even during the imports
import_tensorflow(log=print)  # before anything imports it: keeps TensorFlow's start-up lines off the terminal

import tensorflow as tf  # noqa: E402

from autoencoder.flags import parse_args  # noqa: E402
from autoencoder.train import run  # noqa: E402
from runtime import cli  # noqa: E402

tf.get_logger().setLevel("ERROR")  # TF's Python deprecation notices are not the user's concern


def main(argv=None):
    return cli.script_main(run, parse_args, "autoencoder", argv)


if __name__ == "__main__":
    exit_on_failure(main())
