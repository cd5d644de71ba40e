"""Look inside a trained classifier: ideal class images, adversarial examples, what the layers learned.

    python -m transfer.look ideal checkpoints/transfer --baseline
    python -m transfer.look adversarial checkpoints/transfer --target all --epsilon 8,16,32,64
    python -m transfer.look features checkpoints/transfer

    python -m transfer.convert WHEEL.pth --output checkpoints/lite0
    python -m transfer.look adversarial checkpoints/lite0 --images skimage:chelsea --target 207 --epsilon 4
    python -m transfer.look ideal checkpoints/lite0 --classes tabby --tv-weight 0.0005 --steps 60

MODEL is a train_transfer.py model dir (its best/ checkpoint, else its newest), a dir that
transfer.convert wrote (its conversion.json names the network), or a checkpoint prefix
(`--network` names an ImageNet network for a bare one). Each command takes the run's
network, input size, channels and class names (labels.txt) from it, and its data: the test
split of the image folder it trained on, or its IDX data set. Results go to MODEL/look/<command>/
unless --out-dir says otherwise; earlier results there are kept unless --overwrite. A user mistake (an unknown class, an
epsilon out of range, an image of the wrong size, a missing or damaged checkpoint, a dir
that is not a transfer run, a run whose data is no longer where it was) ends with one line
`error: ...` on stderr and exit status 2.
"""

import os

from runtime.quiet import exit_on_failure, guard_startup, import_tensorflow

if __name__ == "__main__":  # from here on Ctrl-C or SIGTERM ends the process with one line
    guard_startup(kept="what it wrote so far stays in its output dir, which a next run there takes with --overwrite")
import_tensorflow()

import argparse

import tensorflow as tf

from models import user_network
from runtime import cli
from runtime.options import Flags, Option
from runtime.session import set_process_threads
from transfer.look import adversarial, features, ideal

tf.get_logger().setLevel("ERROR")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `error: ...`, and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}\n")


COMMON = (
    Option(
        "model",
        metavar="MODEL",
        nargs="?",
        default=os.path.join("checkpoints", "transfer"),
        help="a train_transfer.py model dir or a checkpoint prefix (default: %(default)s)",
    ),
    Option(
        "--network",
        type=user_network.flag_type,
        help="the network the checkpoint holds (default: the digit classifier, or what conversion.json names): "
        + user_network.HELP,
    ),
    Option("--out-dir", help="where results go (default: MODEL/look/<command>)"),
    Option("--overwrite", action="store_true", help="replace the results of an earlier run in the output dir"),
    Option("--seed", type=cli.non_negative_int, default=0, help="seed for noise and splits (default: %(default)s)"),
    Option(
        "--intra-op-threads", type=cli.non_negative_int, default=0, help="threads inside one op (0: TensorFlow chooses)"
    ),
    Option(
        "--inter-op-threads", type=cli.non_negative_int, default=0, help="ops run concurrently (0: TensorFlow chooses)"
    ),
)
# The test images: by default the data set the run trained on, read from its config.json; --limit cuts them.
DATA = (
    cli.DATA_OPTIONS[0].but(default=None, help="data set of the test images (default: the one the run trained on)"),
    cli.DATA_OPTIONS[1].but(
        help="the test images' data instead of the run's record of it: its image folder at a new place, or "
        "IDX files (default: where the run recorded its data)"
    ),
    *cli.DATA_OPTIONS[2:],
    Option(
        "--limit",
        type=cli.positive_int,
        default=None,
        help="use only the first N images (of the test set, or of adversarial's --images)",
    ),
)


# Each command is a module with NAME, HELP, DESCRIPTION, OPTIONS, RECORDS and run(*records); beside it, the
# shared flags it takes. The parse step makes each of its RECORDS (frozen dataclasses) once from the flags.
COMMANDS = ((ideal, COMMON), (adversarial, COMMON + DATA), (features, COMMON + DATA))


def parse_args(argv=None):
    parser = OneLineParser(prog="python -m transfer.look", description=__doc__.split("\n", 1)[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, shared in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
        flags = Flags(shared, command.OPTIONS)
        flags.add_to(sub)
        sub.set_defaults(run=command.run, flags=flags, records=command.RECORDS)
    return parser.parse_args(argv)


def run(args):
    set_process_threads(args.intra_op_threads, args.inter_op_threads)
    args.run(*(args.flags.record(record, args) for record in args.records))


def main(argv=None):
    """Runs one look command; a user error becomes one line on stderr and exit status 2."""
    return cli.main(run, parse_args, argv)


if __name__ == "__main__":
    exit_on_failure(main())
