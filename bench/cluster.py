"""Global steps per second of the autoencoder: one local process against clusters on 127.0.0.1.

    python -m bench.cluster                 # 2 rounds of: local, 1 ps + 1 worker, 1 ps + 2 workers async, sync
    python -m bench.cluster --rounds 1 --epochs 1

Each configuration runs train_autoencoder.py on the MNIST sample in a temporary model dir
(removed afterwards), through runtime.cluster's launcher for the clusters. The rate is
global steps over the chief's time inside its training steps (start-up, evaluation and
saves excluded), taken from the chief's metrics.json: the chief's loop spans the whole
shared run. Configurations take turns round by round and every ratio is against the
local run of the same round, reported as the median over rounds with its [min..max]:
on a shared 2-core machine only ratios measured minutes apart mean anything.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = (
    ("local", None, []),
    ("1 ps + 1 worker", 1, []),
    ("1 ps + 2 workers async", 2, []),
    ("1 ps + 2 workers sync", 2, ["--sync-replicas"]),
)


def run_once(workers, extra, epochs, batch_size):
    """One run; returns (global steps, global steps per second of training)."""
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = os.path.join(scratch, "ae")
        script = [
            "train_autoencoder.py",
            "--sample",
            "--epochs",
            str(epochs),
            "--batch-size",
            str(batch_size),
            "--save-every",
            "0",
            "--summary-every",
            "0",
            "--model-dir",
            model_dir,
            *extra,
        ]
        if workers is None:
            command = [sys.executable, *script]
        else:
            command = [sys.executable, "-m", "runtime.cluster", "--ps", "1", "--workers", str(workers), "--", *script]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command[:6])} failed ({done.returncode}):\n{done.stdout[-2000:]}")
        with open(os.path.join(model_dir, "metrics.json"), encoding="utf-8") as stream:
            metrics = json.load(stream)
    own = metrics.get("own_steps") or metrics["global_step"]
    train_seconds = own * batch_size / metrics["train_images_per_sec"]
    return metrics["global_step"], metrics["global_step"] / train_seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    rates = {name: [] for name, _, _ in CONFIGS}
    steps = {}
    for round_ in range(args.rounds):
        for name, workers, extra in CONFIGS:
            steps[name], rate = run_once(workers, extra, args.epochs, args.batch_size)
            rates[name].append(rate)
            print(f"round {round_ + 1}: {name}: {steps[name]} global steps, {rate:.1f} steps/s", flush=True)
    print()
    print(f"{'configuration':<24} {'global steps':>12} {'steps/s':>8}  ratio to local [min..max]")
    for name, _, _ in CONFIGS:
        ratios = [rate / local for rate, local in zip(rates[name], rates["local"])]
        print(
            f"{name:<24} {steps[name]:>12} {statistics.median(rates[name]):>8.1f}  "
            f"{statistics.median(ratios):.2f} [{min(ratios):.2f}..{max(ratios):.2f}]"
        )
    print("BENCH_JSON " + json.dumps({"batch_size": args.batch_size, "rates": rates, "steps": steps}))


if __name__ == "__main__":
    main()
