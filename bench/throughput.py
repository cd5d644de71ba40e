"""Training throughput of our steps against the textbook loop, Keras 3 fit and the matmul peak.

    python -m bench.throughput                # 5 rounds of ~3 s per contender, about 6 minutes
    python -m bench.throughput --quick        # 2 rounds of ~0.8 s, about 2 minutes (the workers start first)
    python -m bench.throughput --profile      # adds a by-op-type trace of our autoencoder step
    python -m bench.throughput --quick --only ae --onednn-sweep --experiment transpose

Every contender is built and warmed up once, then the contenders take turns
(A, B, C, A, B, C, ...) for --rounds rounds of about --seconds each. The machine may be
shared, so only numbers from one run compare: ratios are taken round by round (both
sides measured seconds apart) and reported as the median over rounds, with their range.
The last line is `BENCH_JSON {...}` for machines. See bench/README.md.

Our steps run in this process, with the oneDNN setting the entry points choose
(runtime/onednn.py). The peers (textbook loop, Keras fit) and a matmul probe also run in
two worker processes (bench/workers.py), one with TensorFlow's default oneDNN setting for
this CPU and one with the opposite, so that each peer is measured at its default and at
its best; `--onednn-sweep` adds our autoencoder step to both workers.
"""

import os

# The environment as the user gave it, before anything below changes it: the workers
# start from it, each with its own TF_ENABLE_ONEDNN_OPTS.
USER_ENVIRON = dict(os.environ)
# Before TensorFlow first loads (bench/contenders.py says why): one intra-op pool per
# session instead of one per process, so each contender gets the threads it asks for.
os.environ["TF_OVERRIDE_GLOBAL_THREADPOOL"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from runtime import onednn as onednn_choice  # noqa: E402
from runtime.options import Flags, Option  # noqa: E402
from runtime.quiet import import_tensorflow  # noqa: E402

# As the entry points do: oneDNN chosen for the CPU (and said in one line), then TensorFlow.
import_tensorflow()

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

FULL = {"rounds": 5, "seconds": 3.0}
QUICK = {"rounds": 2, "seconds": 0.8}
DEFAULT_THREADS = "0/0,1/2"
GROUPS = ("ae", "transfer")
EXPERIMENTS = ("transpose", "xla")
TEXTBOOK_BATCH = 10
PROFILE_STEPS = 15
PROFILE_TOP = 10
# Shorter windows are dominated by timer and scheduling noise; calibration aims above this.
MIN_CALIBRATION_SECONDS = 0.25

Entry = collections.namedtuple("Entry", "key group role threads contender flops_per_unit onednn")
Entry.__doc__ = """A contender and how it is compared.

group: "ae", "transfer" or "peak"; role: "ours", "ours-cached", "keras", ...;
threads: "INTER/INTRA" for our session variants, else None; flops_per_unit: FLOPs
per image (1 for the matmul probes, whose units are FLOPs); onednn: None for a
contender of this process, True/False for one in the worker with oneDNN on/off.
"""

# (label, group, our role, their role, target, floor): their role at its fastest oneDNN setting.
TARGETS = (
    ("autoencoder step / Keras fit (fastest)", "ae", "ours", "keras", 1.3, 1.1),
    ("autoencoder step / textbook loop (fastest, batch 10)", "ae", "ours", "textbook", 3.0, None),
    ("cached transfer step / Keras frozen fit (fastest)", "transfer", "ours-cached", "keras", 2.5, None),
)
# Our autoencoder step's share of the matmul peak measured in the same run.
PEAK_TARGET = ("autoencoder step, % of the matmul peak", "ae", "ours", 45.0)
# Pairs whose per-round ratio is printed; "*" stands for each thread variant of ours,
# and a peer stands for each of its oneDNN settings.
RATIOS = (
    (("ae", "ours", "*"), ("ae", "keras", None)),
    (("ae", "ours", "*"), ("ae", "textbook", None)),
    (("ae", "ours+transpose", "0/0"), ("ae", "ours", "0/0")),
    (("ae", "ours+xla-auto", "0/0"), ("ae", "ours", "0/0")),
    (("ae", "ours+xla-scope", "0/0"), ("ae", "ours", "0/0")),
    (("ae", "ours+xla-auto", "0/0"), ("ae", "keras", None)),
    (("ae", "ours+xla-scope", "0/0"), ("ae", "keras", None)),
    (("ae", "keras", None), ("ae", "textbook", None)),
    (("transfer", "ours-uncached", "*"), ("transfer", "keras", None)),
    (("transfer", "ours-cached", "*"), ("transfer", "keras", None)),
    (("transfer", "ours-uncached", "*"), ("transfer", "textbook", None)),
    (("transfer", "ours-cached", "*"), ("transfer", "ours-uncached", "*")),
    (("peak", "session", None), ("peak", "eager", None)),
)
ONEDNN_LABEL = {True: "onednn-on", False: "onednn-off"}


def threads_spec(text):
    """argparse type: "INTER/INTRA[,INTER/INTRA...]", 0 meaning TensorFlow's default; 0/0 always included."""
    pairs = []
    for item in text.split(","):
        try:
            inter, intra = (int(part) for part in item.strip().split("/"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected INTER/INTRA pairs such as 0/0,1/2, got {item.strip()!r}"
            ) from None
        if inter < 0 or intra < 0:
            raise argparse.ArgumentTypeError(f"thread counts must be 0 (default) or more, got {item.strip()!r}")
        pairs.append(f"{inter}/{intra}")
    # The project's default is always measured: the targets are about it.
    return list(dict.fromkeys(["0/0"] + pairs))


def groups_spec(text):
    """argparse type: a comma list drawn from GROUPS."""
    groups = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not groups or any(group not in GROUPS for group in groups):
        raise argparse.ArgumentTypeError(f"groups are {', '.join(GROUPS)}; got {text!r}")
    return groups


def positive(kind):
    """argparse type factory: a finite number of `kind` above 0."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


OPTIONS = (
    Option(
        "--batch-size",
        type=positive(int),
        default=256,
        help="batch of our steps and of Keras fit (default: %(default)s)",
    ),
    Option(
        "--rounds",
        type=positive(int),
        help=f"rounds of interleaved windows (default: {FULL['rounds']}, --quick {QUICK['rounds']})",
    ),
    Option(
        "--seconds",
        type=positive(float),
        help=f"seconds per contender per round (default: {FULL['seconds']:g}, --quick {QUICK['seconds']:g})",
    ),
    Option("--quick", action="store_true", help="fewer, shorter rounds: about 2 minutes"),
    Option(
        "--threads",
        type=threads_spec,
        default=DEFAULT_THREADS,
        help="session thread variants of our steps, INTER/INTRA pairs, 0 = TensorFlow's default (default: %(default)s)",
    ),
    Option(
        "--matmul-size",
        type=positive(int),
        default=2048,
        help="side of the float32 matmul probing the peak (default: %(default)s)",
    ),
    Option(
        "--only",
        type=groups_spec,
        default=",".join(GROUPS),
        help="comma list of the groups to time, from ae, transfer; the matmul peak is always timed (default: "
        "%(default)s)",
    ),
    Option(
        "--experiment",
        action="append",
        choices=EXPERIMENTS,
        help="also time an alternative form of our autoencoder step, with the default threads (bench/experiments.py)",
    ),
    Option(
        "--onednn-sweep",
        action="store_true",
        help="also time our autoencoder step in both oneDNN workers (the measurement behind runtime/onednn.py)",
    ),
    Option(
        "--profile",
        action="store_true",
        help=f"trace {PROFILE_STEPS} steps of our autoencoder step(s) and print the top op types",
    ),
)


def parse_args(argv=None):
    """The benchmark's flags (OPTIONS), --rounds and --seconds filled from the --quick or full preset."""
    parser = Flags(OPTIONS).parser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.rounds = args.rounds or preset["rounds"]
    args.seconds = args.seconds or preset["seconds"]
    return args


def make_entries(dataset, args, flops, workers):
    """All contenders of the run, in the order they take turns.

    Args:
      workers: {oneDNN on (bool): bench.workers.Worker}, the processes of the peers.
    """
    make = _Entries(dataset, args, flops, workers)
    entries = []
    if "ae" in args.only:
        entries += make.autoencoder()
    if "transfer" in args.only:
        entries += make.transfer()
    return entries + make.peak()


class _Entries:
    """Makes the Entry records of one group of contenders: ours in this process, the peers in the workers."""

    def __init__(self, dataset, args, flops, workers):
        self.dataset, self.args, self.flops, self.workers = dataset, args, flops, workers

    def ours(self, group, role, make, threads, per_image):
        """Our contender `make(key, inter, intra)` at the session threads "INTER/INTRA"."""
        inter, intra = (int(part) for part in threads.split("/"))
        key = f"{group}/{role}@{threads}"
        return Entry(key, group, role, threads, make(key, inter, intra), per_image, None)

    def remote(self, name, group, role, kind, per_image, threads=None, **options):
        """The contender `kind` in each worker, oneDNN on first."""
        from bench.workers import RemoteContender

        entries = []
        for enabled, worker in sorted(self.workers.items(), reverse=True):
            key = f"{name}[{ONEDNN_LABEL[enabled]}]"
            entries.append(
                Entry(key, group, role, threads, RemoteContender(worker, key, kind, **options), per_image, enabled)
            )
        return entries

    def autoencoder(self):
        from bench import contenders as c

        args, dataset, per_image = self.args, self.dataset, self.flops["autoencoder"]
        entries = [
            self.ours(
                "ae",
                "ours",
                lambda key, a, b: c.OursAutoencoder(key, dataset, args.batch_size, a, b),
                threads,
                per_image,
            )
            for threads in args.threads
        ]
        entries += self._experiments(per_image)
        if args.onednn_sweep:
            options = dict(batch_size=args.batch_size, inter=0, intra=0)
            entries += self.remote("ae/ours@0/0", "ae", "ours", "ae/ours", per_image, "0/0", **options)
        entries += self.remote("ae/textbook@b10", "ae", "textbook", "ae/textbook", per_image, batch_size=TEXTBOOK_BATCH)
        entries += self.remote("ae/keras-fit", "ae", "keras", "ae/keras", per_image, batch_size=args.batch_size)
        if "xla" in args.experiment:
            # The same role as Keras fit: the targets take the fastest Keras configuration, jit or not.
            entries += self.remote(
                "ae/keras-fit-jit", "ae", "keras", "ae/keras-jit", per_image, batch_size=args.batch_size
            )
        return entries

    def _experiments(self, per_image):
        """Our autoencoder step in the alternative forms --experiment asks for (bench/experiments.py)."""
        args, dataset = self.args, self.dataset
        kinds = []
        if "transpose" in args.experiment:
            from bench.experiments import TransposeAutoencoder

            kinds.append(("ours+transpose", TransposeAutoencoder))
        if "xla" in args.experiment:
            from bench import experiments

            # Before any session of this process runs: TensorFlow reads the flags once.
            experiments.enable_cpu_auto_clustering()
            kinds += [
                ("ours+xla-auto", experiments.XlaAutoencoder),
                ("ours+xla-scope", experiments.XlaScopeAutoencoder),
            ]
        return [
            self.ours(
                "ae", role, lambda key, a, b, kind=kind: kind(key, dataset, args.batch_size, a, b), "0/0", per_image
            )
            for role, kind in kinds
        ]

    def transfer(self):
        from bench import contenders as c

        args, dataset, flops = self.args, self.dataset, self.flops
        entries = []
        for cached, role, per_image in (
            (False, "ours-uncached", flops["transfer_uncached"]),
            (True, "ours-cached", flops["transfer_cached"]),
        ):
            for threads in args.threads:

                def make(key, a, b, cached=cached):
                    return c.OursTransfer(key, dataset, args.batch_size, a, b, cached)

                entries.append(self.ours("transfer", role, make, threads, per_image))
        per_image = flops["transfer_uncached"]
        entries += self.remote(
            "transfer/textbook@b10", "transfer", "textbook", "transfer/textbook", per_image, batch_size=TEXTBOOK_BATCH
        )
        entries += self.remote(
            "transfer/keras-fit-frozen", "transfer", "keras", "transfer/keras", per_image, batch_size=args.batch_size
        )
        return entries

    def peak(self):
        from bench import contenders as c

        size = self.args.matmul_size
        return [
            Entry(
                "peak/matmul-session", "peak", "session", None, c.MatmulSession("peak/matmul-session", size), 1, None
            ),
            Entry("peak/matmul-eager", "peak", "eager", None, c.MatmulEager("peak/matmul-eager", size), 1, None),
        ] + self.remote("peak/matmul-session", "peak", "session", "peak/session", 1, size=size)


def calibrate(contender, seconds):
    """Steps that take about `seconds`, from a few growing trial windows."""
    steps = 1
    while True:
        sample = contender.run(steps)
        if sample.wall >= MIN_CALIBRATION_SECONDS:
            break
        steps = min(
            steps * 8, max(steps + 1, math.ceil(steps * 1.3 * MIN_CALIBRATION_SECONDS / max(sample.wall, 1e-4)))
        )
    return max(2, round(steps * seconds / sample.wall))


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class Results:
    """Rates per contender and round, and the lookups the report needs."""

    def __init__(self, entries):
        self.entries = entries
        self.rates = {entry.key: [] for entry in entries}  # units per second, one per round
        self.cores = {entry.key: [] for entry in entries}  # process CPU seconds per wall second
        self.steps = {entry.key: [] for entry in entries}  # steps (or matmuls) per window

    def add(self, entry, sample, steps):
        self.rates[entry.key].append(sample.units / sample.wall)
        self.cores[entry.key].append(sample.cpu / sample.wall)
        self.steps[entry.key].append(steps)

    def median(self, key):
        return statistics.median(self.rates[key])

    def key(self, group, role, threads=None, onednn=None):
        """The key of a contender, or None when the run left it out (--only, --experiment).

        onednn None is this process's contender; True/False the worker's.
        """
        for entry in self.entries:
            if (entry.group, entry.role, entry.threads, entry.onednn) == (group, role, threads, onednn):
                return entry.key
        return None

    def keys(self, group, role, threads=None):
        """Keys of a role at every oneDNN setting (this process's first)."""
        return [
            entry.key for entry in self.entries if (entry.group, entry.role, entry.threads) == (group, role, threads)
        ]

    def fastest(self, group, role, threads=None):
        """The key of a role's fastest configuration (highest median), or None."""
        return max(self.keys(group, role, threads), key=self.median, default=None)

    def ratio(self, ours, theirs):
        """Median, min and max over rounds of ours / theirs, each round's pair measured seconds apart."""
        return spread([a / b for a, b in zip(self.rates[ours], self.rates[theirs])])

    def peak_gflops(self):
        return max(self.median(entry.key) for entry in self.entries if entry.group == "peak") / 1e9


def table(results, rounds):
    """The per-contender table; returns (lines, json)."""
    peak = results.peak_gflops()
    width = max(len(entry.key) for entry in results.entries)
    lines = [
        "images/s per round and their median; 'cores' = process CPU time / wall time (2.00 = both CPUs ours);",
        f"GFLOP/s = median x FLOPs per image; % of the matmul peak ({peak:.0f} GFLOP/s, the best median of the probes)",
        f"  {'contender':<{width}}  "
        + "  ".join(f"{'r' + str(i + 1):>8}" for i in range(rounds))
        + f"  {'median':>8}  {'cores':>5}  {'GFLOP/s':>7}  {'% peak':>6}",
    ]
    report = {}
    for entry in results.entries:
        scale = 1e9 if entry.group == "peak" else 1.0
        median = results.median(entry.key)
        gflops = median * entry.flops_per_unit / 1e9
        cores = statistics.median(results.cores[entry.key])
        per_round = "  ".join(f"{rate / scale:>8,.0f}" for rate in results.rates[entry.key])
        note = "  (GFLOP/s)" if entry.group == "peak" else ""
        lines.append(
            f"  {entry.key:<{width}}  {per_round}  {median / scale:>8,.0f}  {cores:>5.2f}  {gflops:>7.1f}  "
            f"{100 * gflops / peak:>5.1f}%{note}"
        )
        report[entry.key] = {
            "unit": "GFLOP/s" if entry.group == "peak" else "images/s",
            "per_round": [round(rate / scale, 1) for rate in results.rates[entry.key]],
            "median": round(median / scale, 1),
            "cores": round(cores, 2),
            "gflops": round(gflops, 2),
            "percent_of_peak": round(100 * gflops / peak, 1),
            "batch_size": getattr(entry.contender, "batch_size", None),
            "steps_per_round": results.steps[entry.key],
        }
    return lines, report


def ratio_lines(results, threads):
    """Every pair of RATIOS present in the run; returns (lines, json)."""
    pairs = []
    for (group_a, role_a, threads_a), (group_b, role_b, threads_b) in RATIOS:
        for variant in threads if "*" in (threads_a, threads_b) else [None]:
            for ours in results.keys(group_a, role_a, variant if threads_a == "*" else threads_a):
                for theirs in results.keys(group_b, role_b, variant if threads_b == "*" else threads_b):
                    if ours != theirs:
                        pairs.append((ours, theirs))
    width = max((len(f"{a} / {b}") for a, b in pairs), default=0)
    lines = ["ratios of images/s: median over rounds of the per-round ratio [min..max]"]
    report = {}
    for ours, theirs in pairs:
        ratio = results.ratio(ours, theirs)
        lines.append(
            f"  {ours + ' / ' + theirs:<{width}}  {ratio['median']:5.2f}x  [{ratio['min']:.2f}..{ratio['max']:.2f}]"
        )
        report[f"{ours} / {theirs}"] = {name: round(value, 3) for name, value in ratio.items()}
    return lines, report


def thread_lines(results, threads):
    """Each thread variant of our steps against the project default; returns (lines, json, fastest by role)."""
    lines = ["thread variants of our steps against the project default (0/0: session_config() as the scripts call it)"]
    report, fastest = {}, {}
    for group, role in (("ae", "ours"), ("transfer", "ours-uncached"), ("transfer", "ours-cached")):
        default = results.key(group, role, "0/0")
        if default is None:
            continue
        best, best_ratio = default, 1.0
        for variant in threads[1:]:
            key = results.key(group, role, variant)
            ratio = results.ratio(key, default)
            report[f"{key} / {default}"] = {name: round(value, 3) for name, value in ratio.items()}
            lines.append(f"  {key:<30} {ratio['median']:5.2f}x the default  [{ratio['min']:.2f}..{ratio['max']:.2f}]")
            if ratio["median"] > best_ratio:
                best, best_ratio = key, ratio["median"]
        fastest[(group, role)] = best
        report[f"fastest {group}/{role}"] = best
        lines.append(f"  fastest {group}/{role}: {best}")
    return lines, report, fastest


def peer_lines(results, default_onednn):
    """Each peer and probe at both oneDNN settings, and which is fastest; returns (lines, json)."""
    lines = [
        f"oneDNN settings (worker processes; TensorFlow's default on this CPU is {'on' if default_onednn else 'off'})"
    ]
    report = {}
    # By contender name: one role can have several configurations (Keras fit with and without jit).
    names = dict.fromkeys(
        (entry.key.rsplit("[", 1)[0], entry.group, entry.role, entry.threads)
        for entry in results.entries
        if entry.onednn is not None
    )
    for name, group, role, threads in names:
        on, off = (f"{name}[{ONEDNN_LABEL[enabled]}]" for enabled in (True, False))
        if on not in results.rates or off not in results.rates:
            continue
        ratio = results.ratio(on, off)
        best = results.fastest(group, role, threads)
        lines.append(
            f"  {name:<30} on / off {ratio['median']:5.2f}x  [{ratio['min']:.2f}..{ratio['max']:.2f}]  fastest: {best}"
        )
        report[name] = {
            "on_over_off": {k: round(v, 3) for k, v in ratio.items()},
            "fastest": best,
            "default": on if default_onednn else off,
        }
    return lines, report


def xla_lines(results):
    """--experiment xla: each XLA form against its plain form and the best peer; returns (lines, json)."""
    lines = ["XLA (bench/experiments.py): compiled / not, per-round ratio [min..max]"]
    report = {}
    pairs = [(f"ae/keras-fit-jit[{label}]", f"ae/keras-fit[{label}]") for label in ONEDNN_LABEL.values()]
    best_keras = results.fastest("ae", "keras")
    for role in ("ours+xla-auto", "ours+xla-scope"):
        xla = results.key("ae", role, "0/0")
        pairs += [(xla, results.key("ae", "ours", "0/0")), (xla, best_keras)]
    pairs = [(ours, theirs) for ours, theirs in pairs if ours in results.rates and theirs in results.rates]
    width = max((len(f"{ours} / {theirs}") for ours, theirs in pairs), default=0)
    for ours, theirs in pairs:
        ratio = results.ratio(ours, theirs)
        lines.append(
            f"  {ours + ' / ' + theirs:<{width}}  {ratio['median']:5.2f}x  [{ratio['min']:.2f}..{ratio['max']:.2f}]"
        )
        report[f"{ours} / {theirs}"] = {name: round(value, 3) for name, value in ratio.items()}
    lines.append(f"  fastest Keras configuration: {best_keras}")
    report["fastest_keras"] = best_keras
    return lines, report


def target_lines(results, fastest):
    """The issue's targets for our default threads and, when it differs, our fastest variant.

    Their side is the peer at its fastest oneDNN setting in this run; the ratio against
    its default setting is printed beside it.
    """
    lines = [
        "targets: ours (default threads, then our fastest variant if another) / the peer at its fastest oneDNN setting"
    ]
    report = []
    for label, group, ours_role, their_role, target, floor in TARGETS:
        theirs = results.fastest(group, their_role)
        default = results.key(group, ours_role, "0/0")
        if theirs is None or default is None:
            continue
        for ours in dict.fromkeys([default, fastest.get((group, ours_role), default)]):
            ratio = results.ratio(ours, theirs)["median"]
            verdict = "MET" if ratio >= target else "MISSED"
            if floor is not None:
                verdict += f"; floor {floor:g}x {'met' if ratio >= floor else 'MISSED'}"
            others = [key for key in results.keys(group, their_role) if key != theirs]
            beside = "".join(f"; {results.ratio(ours, other)['median']:.2f}x {other}" for other in others)
            lines.append(
                f"  {label:<52} {ours:<14} / {theirs:<32} {ratio:5.2f}x  (target >= {target:g}x: {verdict}{beside})"
            )
            report.append(
                {
                    "target": label,
                    "ours": ours,
                    "theirs": theirs,
                    "ratio": round(ratio, 3),
                    "min": target,
                    "floor": floor,
                    "met": ratio >= target,
                    "floor_met": None if floor is None else ratio >= floor,
                    "against_other_settings": {
                        other: round(results.ratio(ours, other)["median"], 3) for other in others
                    },
                }
            )
    label, group, role, target = PEAK_TARGET
    ours = results.key(group, role, "0/0")
    if ours is not None:
        entry = next(entry for entry in results.entries if entry.key == ours)
        share = 100 * results.median(ours) * entry.flops_per_unit / 1e9 / results.peak_gflops()
        lines.append(
            f"  {label:<52} {ours:<14} {share:5.1f}%  (target >= {target:g}%: {'MET' if share >= target else 'MISSED'})"
        )
        report.append(
            {"target": label, "ours": ours, "percent": round(share, 1), "min": target, "met": share >= target}
        )
    return lines, report


def profile_lines(results):
    """The op-type profile of each of our autoencoder contenders; returns (lines, json)."""
    from bench.profile import profile_steps

    lines, report = [], {}
    for entry in results.entries:
        if entry.group != "ae" or not entry.role.startswith("ours") or entry.onednn is not None:
            continue
        rows, wall_ms = profile_steps(entry.contender, PROFILE_STEPS)
        total_ms = sum(ms for _, _, ms in rows)
        lines += [
            f"profile of {entry.key}: {PROFILE_STEPS} traced steps (FULL_TRACE, which slows small ops); "
            f"step wall {wall_ms:.1f} ms; "
            f"node time {total_ms:.1f} ms/step over {sum(nodes for _, nodes, _ in rows):.0f} nodes",
            f"  {'op type (kernel that ran)':<34} {'nodes':>5} {'ms/step':>8} {'share':>6}",
        ]
        for kind, nodes, ms in rows[:PROFILE_TOP]:
            lines.append(f"  {kind:<34} {nodes:>5.0f} {ms:>8.2f} {100 * ms / total_ms:>5.1f}%")
        rest = rows[PROFILE_TOP:]
        if rest:
            rest_ms = sum(ms for _, _, ms in rest)
            lines.append(
                f"  {f'({len(rest)} other op types)':<34} {sum(nodes for _, nodes, _ in rest):>5.0f} {rest_ms:>8.2f} "
                f"{100 * rest_ms / total_ms:>5.1f}%"
            )
        report[entry.key] = {
            "step_wall_ms": round(wall_ms, 2),
            "node_ms_per_step": round(total_ms, 2),
            "top": [{"op": kind, "nodes": nodes, "ms": round(ms, 3)} for kind, nodes, ms in rows[:PROFILE_TOP]],
        }
    return lines, report


def load_average():
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def say(lines=("",)):
    print("\n".join(lines) if isinstance(lines, (list, tuple)) else lines, flush=True)


def run(args):
    """Runs the benchmark and prints its report.

    Returns:
      (report, entries): the BENCH_JSON payload and the contenders, whose sessions are
      still open; dropping the last reference to them closes the sessions, which can
      take seconds each (see the end of this module).
    """
    began = time.monotonic()
    workers, default_onednn = _start_workers()
    import tensorflow as tf

    from bench.flops import step_flops
    from data.sources import load_sample

    tf.get_logger().setLevel("ERROR")
    onednn = onednn_choice.state()
    now = datetime.datetime.now().astimezone()
    flops = step_flops()
    say(_header(args, now, onednn, default_onednn, flops))
    dataset = load_sample()
    say(f"data: {dataset.num_train} training digits from {dataset.source}")

    entries = make_entries(dataset, args, flops, workers)
    steps = _prepare(entries, args)
    setup_seconds = time.monotonic() - began
    say(f"built, warmed up and calibrated {len(entries)} contenders in {setup_seconds:.0f} s; timing...")
    results = _time_rounds(entries, steps, args, began)
    report = _report_sections(results, args, default_onednn)

    total_seconds = time.monotonic() - began
    say()
    say(f"total {total_seconds:.0f} s (set-up {setup_seconds:.0f} s); load average at end {load_average()}")
    report.update(_run_facts(args, now, onednn, default_onednn, flops, results, dataset))
    report.update(load_average_end=load_average(), wall_seconds=round(total_seconds, 1))
    say("BENCH_JSON " + json.dumps(report, sort_keys=True, separators=(",", ":")))
    for worker in workers.values():
        worker.close()
    return report, entries


def _start_workers():
    """The two peer processes, {oneDNN on (bool): Worker}, and TensorFlow's default setting on this CPU.

    The workers start first, so that their TensorFlow imports overlap ours. One runs
    TensorFlow's default for this CPU (variable removed), the other the opposite
    setting, once the first has said which that is.
    """
    from bench.workers import Worker

    default_worker = Worker("tensorflow-default", None, USER_ENVIRON)
    import keras  # noqa: F401  (seconds of import, made while the first worker starts; _header uses it)

    default_onednn = default_worker.start()["onednn"]
    other_worker = Worker("opposite", "0" if default_onednn else "1", USER_ENVIRON)
    workers = {default_onednn: default_worker, other_worker.start()["onednn"]: other_worker}
    if len(workers) != 2:
        raise RuntimeError("the two workers ended up with the same oneDNN setting")
    return workers, default_onednn


def _header(args, now, onednn, default_onednn, flops):
    """The lines that say what runs where: versions, CPU, oneDNN settings, batch, rounds, FLOPs."""
    import keras
    import tensorflow as tf

    from bench.flops import REFERENCE_AUTOENCODER_MFLOP

    ae_mflop = flops["autoencoder"] / 1e6
    agrees = "agrees" if abs(ae_mflop - REFERENCE_AUTOENCODER_MFLOP) < 0.01 else "DIFFERS"
    return [
        f"cae-transfer throughput benchmark, {now:%Y-%m-%d %H:%M %Z}",
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {platform.python_version()}",
        f"CPU: {os.cpu_count()} x {onednn['cpu_model']} ({' '.join(onednn['vector_extensions'])}); load average at "
        f"start {load_average()}",
        f"our steps (this process): oneDNN {'on' if onednn['onednn_enabled'] else 'OFF'}; "
        f"{onednn_choice.describe(onednn)}",
        f"peers: in two worker processes, oneDNN {'on' if default_onednn else 'off'} (TensorFlow's default here) "
        f"and {'off' if default_onednn else 'on'}",
        f"batch {args.batch_size} (textbook loop: {TEXTBOOK_BATCH}); "
        f"{args.rounds} rounds of ~{args.seconds:g} s per contender; "
        f"our session thread variants INTER/INTRA (0 = TensorFlow's default): {', '.join(args.threads)}",
        f"FLOPs per image, forward + backward, 2 per multiply-add (bench/flops.py): autoencoder {ae_mflop:.3f} M "
        f"({agrees} with the reference {REFERENCE_AUTOENCODER_MFLOP} M); "
        f"transfer with conv frozen {flops['transfer_uncached'] / 1e6:.3f} M; head on cached features "
        f"{flops['transfer_cached'] / 1e6:.3f} M",
    ]


def _prepare(entries, args):
    """Builds, warms up and calibrates every contender; returns {key: steps per window}.

    Also says how many weights ours and the Keras peers train, which must agree.
    """
    for entry in entries:
        if entry.onednn is not None:
            entry.contender.prepare()  # the workers build while this process does
    steps = {}
    for entry in entries:
        entry.contender.warm_up()
        steps[entry.key] = calibrate(entry.contender, args.seconds)
        entry.contender.reserve(steps[entry.key] * args.rounds + 1)
    by_key = {entry.key: entry.contender for entry in entries}
    if "ae" in args.only:
        for key in (key for key in by_key if key.startswith("ae/keras-fit")):
            ours_weights, keras_weights = by_key["ae/ours@0/0"].num_weights, by_key[key].num_weights
            say(
                f"autoencoder weights: ours {ours_weights:,}, {key} "
                f"{keras_weights:,}{'' if ours_weights == keras_weights else ' (DIFFERENT ARCHITECTURES)'}"
            )
    if "transfer" in args.only:
        for key in (key for key in by_key if key.startswith("transfer/keras-fit-frozen")):
            say(f"{key}: {by_key[key].num_trainable:,} trainable weights (fc1 and logits)")
    return steps


def _time_rounds(entries, steps, args, began):
    """The timed rounds: each contender in turn, one window each, `args.rounds` times; returns the Results."""
    results = Results(entries)
    for round_index in range(args.rounds):
        for entry in entries:
            entry.contender.reserve(steps[entry.key])  # untimed
            sample = entry.contender.run(steps[entry.key])
            results.add(entry, sample, steps[entry.key])
            # The load of a shared machine changes: size the next window from this one.
            steps[entry.key] = max(2, round(steps[entry.key] * args.seconds / sample.wall))
        say(
            f"  round {round_index + 1}/{args.rounds} done at {time.monotonic() - began:.0f} s, load average "
            f"{load_average()}"
        )
    return results


def _report_sections(results, args, default_onednn):
    """Prints the tables (contenders, ratios, threads, oneDNN, XLA, targets, profile); returns their JSON parts."""
    report = {}
    for section, (lines, part) in (
        ("contenders", table(results, args.rounds)),
        ("ratios", ratio_lines(results, args.threads)),
    ):
        say()
        say(lines)
        report[section] = part
    lines, report["threads"], fastest = thread_lines(results, args.threads)
    say()
    say(lines)
    sections = [("onednn_settings", lambda: peer_lines(results, default_onednn))]
    if "xla" in args.experiment:
        sections.append(("xla", lambda: xla_lines(results)))
    sections.append(("targets", lambda: target_lines(results, fastest)))
    if args.profile:
        sections.append(("profile", lambda: profile_lines(results)))
    for section, make in sections:
        lines, report[section] = make()
        say()
        say(lines)
    return report


def _run_facts(args, now, onednn, default_onednn, flops, results, dataset):
    """What the JSON line records about the run beside its results: when, versions, CPU, settings, data."""
    import keras
    import tensorflow as tf

    return dict(
        date=now.isoformat(timespec="seconds"),
        tensorflow=tf.__version__,
        keras=keras.__version__,
        onednn=onednn,
        onednn_tensorflow_default=default_onednn,
        cpus=os.cpu_count(),
        cpu_model=onednn["cpu_model"],
        vector_extensions=onednn["vector_extensions"],
        batch_size=args.batch_size,
        textbook_batch_size=TEXTBOOK_BATCH,
        rounds=args.rounds,
        seconds=args.seconds,
        matmul={"size": args.matmul_size, "peak_gflops": round(results.peak_gflops(), 1)},
        flops_per_image=flops,
        data=dataset.describe(),
        experiments=args.experiment,
    )


def main(argv=None):
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    _report, _entries = run(parse_args())
    sys.stdout.flush()
    sys.stderr.flush()
    # End here, with the contenders still referenced: closing a dozen sessions whose
    # tf.data iterators hold prefetched batches took 10 to 30 s on this machine, and it
    # measures nothing.
    os._exit(0)
