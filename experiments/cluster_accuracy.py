"""Test accuracy of a transfer run in a cluster against one process with the same flags.

    python -m experiments.cluster_accuracy                   # 2 seeds x (frozen, fine-tuned), about 15 minutes
    python -m experiments.cluster_accuracy --seeds 0 --plans frozen

Trains an autoencoder source on the MNIST sample once (locally), then runs
train_transfer.py --restore conv on the sample with --labels-per-class labels, once as
one process and once on 1 ps + N asynchronous workers through runtime.cluster's launcher,
for each seed and plan. Prints a Markdown table of the test accuracies (docs/CLUSTER.md
quotes it) and writes every run's metrics to --out. Everything runs in a temporary
directory unless --work-dir is given.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLANS = {
    "frozen": ("conv frozen (head on cached features)", []),
    "fine-tuned": (
        "conv fine-tuned at 0.1x (full forward pass)",
        ["--fine-tune", "--lr-mult", "conv1=0.1", "--lr-mult", "conv2=0.1"],
    ),
}


def _run(command, what):
    done = subprocess.run(
        [sys.executable, *command], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"error: {what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return done.stdout


def _metrics(model_dir):
    with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as stream:
        return json.load(stream)


def transfer_pair(work, source, plan, seed, args):
    """(local metrics, cluster metrics, cluster output) of one plan and seed."""
    flags = ["--sample", "--checkpoint", source, "--restore", "conv", "--seed", str(seed)]
    flags += ["--labels-per-class", str(args.labels_per_class), "--epochs", str(args.epochs), *PLANS[plan][1]]
    local_dir, cluster_dir = (os.path.join(work, f"{plan}-{seed}-{kind}") for kind in ("local", "cluster"))
    _run(["train_transfer.py", *flags, "--model-dir", local_dir], f"the local {plan} run, seed {seed}")
    launcher = ["-m", "runtime.cluster", "--ps", "1", "--workers", str(args.workers), "--"]
    out = _run([*launcher, "train_transfer.py", *flags, "--model-dir", cluster_dir], f"the cluster {plan} run")
    return _metrics(local_dir), _metrics(cluster_dir), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="transfer seeds (default: 0 1)")
    parser.add_argument("--plans", nargs="+", choices=PLANS, default=list(PLANS), help="plans to run (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the cluster (default: %(default)s)")
    parser.add_argument("--ae-epochs", type=int, default=10, help="epochs of the source autoencoder (default: 10)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each transfer run (default: 30)")
    parser.add_argument("--labels-per-class", type=int, default=50, help="labels per class (default: 50)")
    parser.add_argument("--work-dir", default=None, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--out", default=None, help="write every run's metrics here as JSON (default: none)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work_dir or scratch
        source = os.path.join(work, "autoencoder")
        _run(["train_autoencoder.py", "--sample", "--epochs", str(args.ae_epochs), "--model-dir", source], "the source")
        rows, records = [], []
        for plan in args.plans:
            for seed in args.seeds:
                local, remote, out = transfer_pair(work, source, plan, seed, args)
                evaluated = len(re.findall(r"^\[worker 0\] epoch \d+: val accuracy", out, re.M))
                diff = 100 * (remote["test_accuracy"] - local["test_accuracy"])
                rows.append(
                    f"| {PLANS[plan][0]} | {seed} | {100 * local['test_accuracy']:.2f} | "
                    f"{100 * remote['test_accuracy']:.2f} | {diff:+.2f} | {evaluated}/{args.epochs} |"
                )
                records.append({"plan": plan, "seed": seed, "local": local, "cluster": remote})
                print(rows[-1], flush=True)
    print("\n| plan | seed | local | cluster | cluster - local | epochs the chief evaluated |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as stream:
            json.dump(records, stream, indent=1)


if __name__ == "__main__":
    main()
