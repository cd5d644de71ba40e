"""Show what a checkpoint holds, and what train_transfer.py would restore from it.

Without flags: the resolved checkpoint prefix, the model variables grouped by scope
(shape, dtype and number of values of each, a parameter count per scope and in
total), then apart from them the optimizer slots and the counters, and the bytes the
checkpoint takes on disk. With --plan: the restore plan that train_transfer.py would
print for the same transfer flags, built against the classifier graph.

    python -m transfer.inspect checkpoints/autoencoder
    python -m transfer.inspect checkpoints/autoencoder/model.ckpt-3500.index --json
    python -m transfer.inspect checkpoints/autoencoder --plan --restore conv --fine-tune
    python -m transfer.inspect checkpoints/other --plan --map encoder/conv1=conv1 --restore conv1

CKPT is a model dir (its newest checkpoint), a checkpoint prefix, or one of its files.
A missing or unreadable checkpoint, or flags that do not fit it, end with one line
`error: ...` on stderr and exit status 2.
"""

import os

from runtime.quiet import Parser, guard_startup, import_tensorflow

if __name__ == "__main__":
    guard_startup(kept="nothing was written")
# Silently, before the flags are parsed: the plan's flags come from transfer.flags and the
# network registry, whose modules import TensorFlow.
import_tensorflow()

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402

import tensorflow as tf  # noqa: E402

from models import user_network  # noqa: E402
from models.scopes import AUTOENCODER_SCOPES, HEAD_SCOPES  # noqa: E402
from runtime import cli, options, rundir  # noqa: E402
from runtime.errors import CheckpointError, UserError, one_line  # noqa: E402
from runtime.options import Flags, Group, Option  # noqa: E402
from runtime.paths import shown  # noqa: E402
from transfer import class_heads, train  # noqa: E402
from transfer import source as ckpt  # noqa: E402
from transfer.flags import TRANSFER_OPTIONS, network_and_flags, parse_transfer_flags  # noqa: E402
from transfer.plan import make_plan  # noqa: E402
from transfer.selection import NON_MODEL, model_variable_names  # noqa: E402

v1 = tf.compat.v1

# Known scopes are listed in the order the models build them (conv1 before dconv1),
# which reads better than the alphabetical order a checkpoint index keeps.
SCOPE_ORDER = AUTOENCODER_SCOPES + HEAD_SCOPES
LEAF_ORDER = ("kernel", "bias")
# The flags of the plan, as train_transfer.py has them (transfer.flags): given without
# --plan they would be silently ignored, so parse_args refuses them.
# --network defaults to the network of the run CKPT belongs to (its config.json), else cae.
PLAN_OPTIONS = (
    *(
        option.but(default=None, help=option.help.replace("(default: %(default)s)", "(default: the run's, or cae)"))
        if option.dest == "network"
        else option
        for option in TRANSFER_OPTIONS
    ),
    Option(
        "--num-classes",
        type=cli.positive_int,
        default=10,
        help="classes of the new head in the plan (train_transfer.py takes them from the data) (default: %(default)s)",
    ),
    Option(
        "--class-names",
        metavar="A,B,C",
        help="with --keep-classes: the new head's classes in output order, comma-separated (train_transfer.py "
        "takes them from the data's class folders); their count replaces --num-classes",
    ),
    Option(
        "--target-meta",
        metavar="MODEL.meta",
        help="plan against the graph saved in this MetaGraph file (tf.compat.v1.train.export_meta_graph, or "
        "the .meta beside a checkpoint) instead of a network's classifier; the graph is read as data, no "
        "Python runs; --network, --image-size and --num-classes do not apply",
    ),
)
# What a saved graph fixes by itself: given with --target-meta, they are refused.
FIXED_BY_META = ("network", "image_size", "num_classes")
INSPECT = Flags(
    (
        Option(
            "checkpoint",
            metavar="CKPT",
            help="a model dir (its newest checkpoint), a checkpoint prefix such as model.ckpt-3500, "
            "or one of its files",
        ),
        Option("--json", action="store_true", help="print the same facts as one JSON object instead of text"),
        Option(
            "--plan",
            action="store_true",
            help="print the restore plan against the classifier (conv1, conv2, fc1, logits) for the flags below, "
            "as train_transfer.py --dry-run would",
        ),
    ),
    Group("transfer (with --plan; as in train_transfer.py)", PLAN_OPTIONS),
)


def make_parser():
    parser = Parser(
        prog="python -m transfer.inspect",
        description="List a checkpoint's model variables by scope, its optimizer slots and counters apart, "
        "and its size on disk; or, with --plan, print the restore plan train_transfer.py would follow.",
    )
    return INSPECT.add_to(parser)


def parse_args(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    if not args.plan:
        given = options.given(PLAN_OPTIONS, args)
        if given:
            parser.error(f"{', '.join(option.flag for option in given)} only mean something with --plan")
    return args


def _count(shape):
    return math.prod(shape)


def _shape(shape):
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def _scope_key(scope):
    return (SCOPE_ORDER.index(scope), "") if scope in SCOPE_ORDER else (len(SCOPE_ORDER), scope)


def _leaf_key(leaf):
    return (LEAF_ORDER.index(leaf), "") if leaf in LEAF_ORDER else (len(LEAF_ORDER), leaf)


def _split(name):
    """("conv1", "kernel") for conv1/kernel; a name without a scope is its own group."""
    return tuple(name.rsplit("/", 1)) if "/" in name else (name, name)


def disk_usage(prefix):
    """Sizes of the files that make up the checkpoint at prefix.

    Returns:
      A dict: data_files (basenames of the .data shards), data_bytes (their total),
      index_bytes, and meta_bytes (None when there is no .meta graph beside it).
    """
    shards = sorted(glob.glob(glob.escape(prefix) + ".data-*-of-*"))
    for path in shards:
        if not os.path.isfile(path):
            raise CheckpointError(f"{shown(path)} is not a file: the checkpoint's data cannot be read")

    def size(path):
        try:
            return os.path.getsize(path)
        except OSError:
            return None

    return {
        "data_files": [os.path.basename(path) for path in shards],
        "data_bytes": sum(size(path) or 0 for path in shards),
        "index_bytes": size(prefix + ".index"),
        "meta_bytes": size(prefix + ".meta"),
    }


def summarize(prefix, variables):
    """The facts inspect reports about a checkpoint, as JSON-ready data.

    Args:
      prefix: the checkpoint prefix.
      variables: VariableInfo of everything it holds (transfer.source.read_variables).

    Returns:
      A dict: checkpoint, scopes (each with its variables and parameter count, in
      model order), model_variables, total_parameters, optimizer_slots, counters, disk.
    """
    names = [info.name for info in variables]
    model = set(model_variable_names(names))
    groups = {}
    for info in variables:
        if info.name in model:
            scope, leaf = _split(info.name)
            groups.setdefault(scope, []).append((leaf, info))
    scopes = []
    for scope in sorted(groups, key=_scope_key):
        members = sorted(groups[scope], key=lambda item: _leaf_key(item[0]))
        rows = [
            {
                "name": info.name,
                "leaf": leaf,
                "shape": list(info.shape),
                "dtype": info.dtype,
                "values": _count(info.shape),
            }
            for leaf, info in members
        ]
        scopes.append({"scope": scope, "parameters": sum(row["values"] for row in rows), "variables": rows})

    rest = [info for info in variables if info.name not in model]
    counters = [info for info in rest if NON_MODEL.search(info.name)]
    slots = [info for info in rest if not NON_MODEL.search(info.name)]
    return {
        "checkpoint": prefix,
        "scopes": scopes,
        "model_variables": sum(len(group["variables"]) for group in scopes),
        "total_parameters": sum(group["parameters"] for group in scopes),
        "optimizer_slots": {
            "count": len(slots),
            "slot_names": sorted({_split(info.name)[1] for info in slots}),
            "over_variables": sorted({_split(info.name)[0] for info in slots}),
            "names": [info.name for info in slots],
        },
        "counters": [{"name": info.name, "shape": list(info.shape), "dtype": info.dtype} for info in counters],
        "disk": disk_usage(prefix),
    }


def format_summary(summary):
    """The summary as plain aligned text."""
    lines = [f"checkpoint: {summary['checkpoint']}"]
    if summary["scopes"]:
        lines.append(f"model variables: {summary['model_variables']} in {len(summary['scopes'])} scopes")
        table = [("scope/variable", "shape", "dtype", "values")]
        for group in summary["scopes"]:
            table.append((group["scope"], "", "", f"{group['parameters']:,}"))
            table += [
                ("  " + row["leaf"], _shape(row["shape"]), row["dtype"], f"{row['values']:,}")
                for row in group["variables"]
            ]
        table.append(("total", "", "", f"{summary['total_parameters']:,}"))
        widths = [max(len(cells[column]) for cells in table) for column in range(4)]
        for cells in table:
            left = "  ".join(cell.ljust(width) for cell, width in zip(cells[:3], widths))
            lines.append(f"  {left}  {cells[3].rjust(widths[3])}")
    else:
        lines.append("model variables: none")

    slots = summary["optimizer_slots"]
    if slots["count"]:
        lines.append(
            f"optimizer slots: {slots['count']} ({', '.join(slots['slot_names'])}) over {len(slots['over_variables'])} "
            "variables"
        )
    else:
        lines.append("optimizer slots: none")
    lines.append("counters: " + (", ".join(counter["name"] for counter in summary["counters"]) or "none"))

    disk = summary["disk"]
    files = disk["data_files"]
    where = files[0] if len(files) == 1 else f"{len(files)} shard files"
    text = f"on disk: {disk['data_bytes']:,} bytes of data in {where}"
    if disk["index_bytes"] is not None:
        text += f", {disk['index_bytes']:,} bytes of index"
    if disk["meta_bytes"] is not None:
        text += f"; the .meta graph beside it: {disk['meta_bytes']:,} bytes"
    lines.append(text)
    return "\n".join(lines)


def _run_config(prefix):
    """The config.json of the transfer run a checkpoint prefix lies in (its dir, or above best/), or {}."""
    for folder in (os.path.dirname(prefix), os.path.dirname(os.path.dirname(prefix))):
        path = os.path.join(folder, rundir.CONFIG)
        if os.path.isfile(path):
            config = rundir.read_json(path)
            return config if config.get("model") == "transfer" else {}
    return {}


def new_classes(class_names, num_classes, selection):
    """The new head's classes: their names (a list) with --keep-classes, else --num-classes.

    Raises:
      UserError: --keep-classes without --class-names, or --class-names without --keep-classes.
    """
    names = [name.strip() for name in (class_names or "").split(",") if name.strip()]
    if selection.classes is None:
        if class_names is not None:
            raise UserError("--class-names goes with --keep-classes")
        return num_classes
    if not names:
        raise UserError("--keep-classes in inspect --plan needs the new classes: pass --class-names a,b,c")
    return names


def classifier_plan(prefix, checkpoint_variables, checked, num_classes):
    """The restore plan train_transfer.py would make for these flags and this checkpoint.

    Builds the classifier in a graph of its own, so nothing is left in the default graph.

    Args:
      prefix, checkpoint_variables: the checkpoint and its (name, shape) list.
      checked: (network, InputSpec, RestoreSelection), as transfer.flags.network_and_flags gives them.
      num_classes: the classifier's classes: a count, or with --keep-classes their names.

    Raises:
      UserError: for flags that do not fit the graph or the checkpoint.
    """
    network, spec, selection = checked
    if selection.restores_nothing:
        # As in train_transfer.py: restoring nothing reads no checkpoint.
        prefix, checkpoint_variables = None, []
    # The data as the network is fed it (a network of 28x28 grey takes IDX data as it is).
    if selection.classes is None:
        return train.plan_against(network, num_classes, spec, spec, selection, prefix, checkpoint_variables)
    plan = train.plan_against(network, len(num_classes), spec, spec, selection, prefix, checkpoint_variables)
    return class_heads.keep_classes(plan, num_classes, selection, checkpoint_variables)


def meta_graph_variables(path):
    """VariableInfo of the model variables of the graph a MetaGraph file holds, read as data.

    The graph is imported into a fresh graph (tf.compat.v1.train.import_meta_graph): no
    Python of the user's runs. Its model variables are found by structure
    (transfer.source.model_variables_of).

    Raises:
      UserError: a missing file, or one TensorFlow cannot read as a MetaGraph.
    """
    if not os.path.isfile(path):
        raise UserError(
            f"--target-meta {shown(path)} " + ("is not a file" if os.path.exists(path) else "does not exist")
        )
    with open(path, "rb") as f:
        data = f.read()
    with tf.Graph().as_default() as graph:
        try:
            meta_graph = v1.MetaGraphDef()
            meta_graph.ParseFromString(data)  # read here, so that any file name reaches TensorFlow intact
            v1.train.import_meta_graph(meta_graph, clear_devices=True)
        except Exception as error:  # a protobuf DecodeError, a ValueError or an OpError: the file is no MetaGraph
            raise UserError(f"--target-meta {shown(path)} is not a readable MetaGraph: {one_line(error)}") from None
        variables = ckpt.model_variables_of(graph)
        if not variables:
            raise UserError(f"--target-meta {shown(path)}: the graph holds no variables to plan")
        return ckpt.graph_variables(variables)


def meta_plan(prefix, checkpoint_variables, args):
    """The restore plan of the transfer flags against the graph of --target-meta.

    Raises:
      UserError: a flag the saved graph fixes, `--restore backbone` (a saved graph has no
        registry head), or what the plan raises.
    """
    given = [option.flag for option in options.given(PLAN_OPTIONS, args) if option.dest in FIXED_BY_META]
    if given:
        verb = "does" if len(given) == 1 else "do"
        raise UserError(f"{', '.join(given)} {verb} not go with --target-meta: the saved graph fixes them")
    if args.keep_classes:
        raise UserError("--keep-classes needs a network's head; it does not go with --target-meta")
    if args.restore.strip() == "backbone":
        raise UserError("--restore backbone needs a network's head; with --target-meta name the scopes to restore")
    selection = parse_transfer_flags(args)
    if selection.restores_nothing:
        prefix, checkpoint_variables = None, []
    return make_plan(meta_graph_variables(args.target_meta), checkpoint_variables, selection, prefix)


def run(args):
    """Prints the inventory (or with args.plan the restore plan), as text or JSON.

    The command's parse/validate boundary: the plan flags are checked (network_and_flags) here.
    """
    prefix = ckpt.resolve_checkpoint(args.checkpoint)
    variables = ckpt.read_variables(prefix)
    if args.plan:
        if args.target_meta:
            plan = meta_plan(prefix, variables, args)
        else:
            if args.network is None:  # the network the run holding the checkpoint recorded
                args = argparse.Namespace(**vars(args))
                args.network = user_network.resolve(None, _run_config(prefix), os.path.dirname(prefix)).name
            checked = network_and_flags(args)
            classes = new_classes(args.class_names, args.num_classes, checked[2])
            plan = classifier_plan(prefix, variables, checked, classes)
        print(json.dumps(plan.to_json(), indent=2) if args.json else plan.format())
        return
    summary = summarize(prefix, variables)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))


def main(argv=None):
    """Runs inspect; a user error becomes one line on stderr and exit status 2."""
    return cli.main(run, parse_args, argv)


if __name__ == "__main__":
    sys.exit(main())
