"""Export a trained classifier as a SavedModel that takes images as users have them.

    python -m transfer.export --model-dir checkpoints/transfer --output exported
    python -m transfer.export --model-dir checkpoints/transfer --output exported --tflite --force

The SavedModel carries the preprocessing, so nobody needs to know tensor names, the input
size or the pixel scale. Its signatures:

  serving_default   images: uint8 [N, H, W, C], any H and W, C of 1 to 4 (grey, grey+alpha,
                    RGB, RGBA); brought to the network's input inside (see
                    data/image_folder.py: channels, aspect-preserving resize and pad).
  predict_encoded   encoded: string [N], the bytes of JPEG, PNG, GIF, BMP or WebP files.
  fixed_size        images: uint8 [N, H, W, C] at the network's input size (28x28x1 for the
                    digit classifier): no resizing.

Both return ``probabilities`` float32 [N, classes], ``class_ids`` int64 [N] (the most
probable class) and ``class_names`` string [N] (its name). Beside the model: labels.txt
(one class name a line, in class-id order), model_card.json (network, source checkpoint,
classes, data, test accuracy, preprocessing, signatures), predict.py (the toolkit's
classifier script with the toolkit code it imports inlined: transfer/standalone.py, so it
runs beside the export alone) and, with ``--tflite``,
model.tflite converted from the SavedModel's fixed_size signature: TFLite's builtin ops
have no antialiased resize, so a TFLite user resizes to the network's input first.

The export is written into a staging sibling of --output and swapped into place
(runtime.outputs): a reader never sees half an export. --output must be new or empty;
--force replaces an earlier export (its .cae-transfer-output.json lists every file, and
nothing else is there), never any other folder.

The flags, --model-dir and --output are checked before TensorFlow is imported: a mistake
costs no start-up and prints one line.
"""

import datetime
import hashlib
import json
import os
import sys
from dataclasses import dataclass

from data.names import BY_DATASET, DIGITS
from models import user_network
from runtime import outputs
from runtime.errors import CheckpointError, UserError, one_line
from runtime.paths import DirAlias, shown
from runtime.quiet import OUTPUT_KEPT, Parser, exit_on_failure, guard_startup, import_tensorflow, native_stderr_silenced
from transfer import standalone

KIND = "export"
CONVERSION_FILE = "conversion.json"  # what transfer.convert writes beside its checkpoint
SERVING_KEY = "serving_default"
ENCODED_KEY = "predict_encoded"
FIXED_KEY = "fixed_size"
CARD_FORMAT = "cae-transfer-export/1"
_CHECKPOINT_CHOICES = ("best", "latest")


def _read_json(path, required):
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        if required:
            raise UserError(
                f"{path} does not exist: --model-dir must be a run dir written by train_transfer.py"
            ) from None
        return None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {path}: {one_line(error)}") from None


def class_names_of(model_dir, config, num_classes):
    """The class names of a run: labels.txt, else config.json, else the data set's own.

    Raises:
      UserError: names that do not match the checkpoint's number of classes.
    """
    labels_path = os.path.join(model_dir, "labels.txt")
    if os.path.exists(labels_path):
        try:
            with open(labels_path, encoding="utf-8") as stream:
                names = [line.rstrip("\n") for line in stream if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"cannot read {labels_path}: {one_line(error)}") from None
        where = labels_path
    elif config.get("class_names") or (config.get("data") or {}).get("class_names"):
        names = list(config.get("class_names") or config["data"]["class_names"])
        where = os.path.join(model_dir, "config.json")
    else:
        dataset = config.get("dataset") or (config.get("data") or {}).get("name") or "mnist"
        names = list(BY_DATASET.get(dataset, DIGITS))
        where = f"the {dataset} data set"
    if len(names) != num_classes:
        raise UserError(f"{where} names {len(names)} classes but the checkpoint's logits have {num_classes}")
    if len(set(names)) != len(names):
        raise UserError(f"{where} names a class twice")
    return names


def _checkpoint_of(model_dir, which):
    from transfer import source as ckpt

    best = os.path.join(model_dir, "best", "model.ckpt")
    # A run without a validation split keeps no best/: its newest checkpoint is its result.
    if which == "best" and os.path.exists(best + ".index"):
        return best, True
    return ckpt.resolve_checkpoint(model_dir), False


def _sha256_of_checkpoint(prefix):
    digest = hashlib.sha256()
    directory, base = os.path.split(prefix)
    for name in sorted(n for n in os.listdir(directory or ".") if n.startswith(os.path.basename(base) + ".")):
        with open(os.path.join(directory, name), "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _check_output(output, model_dir, force):
    """The absolute --output, once it is apart from the run and this command may write it (runtime.outputs)."""
    output = os.path.abspath(os.path.expanduser(output))
    model_dir = os.path.abspath(model_dir)
    best = os.path.join(model_dir, "best")  # replaced by the run's next best epoch
    if os.path.commonpath([output, model_dir]) == output or os.path.commonpath([output, best]) == best:
        raise UserError(f"--output {shown(output)} would overlap the run in {shown(model_dir)}: export somewhere else")
    return outputs.check(output, KIND, force)


def _build_and_save(export_dir, prefix, names, network, spec):
    """Builds the serving graph, restores the checkpoint into it and writes the SavedModel."""
    import tensorflow as tf

    from data import image_folder
    from transfer import source as ckpt
    from transfer.graph import inference_logits

    v1 = tf.compat.v1
    saved_model = v1.saved_model
    with tf.Graph().as_default() as graph:
        images = v1.placeholder(tf.uint8, [None, None, None, None], name="images")
        encoded = v1.placeholder(tf.string, [None], name="encoded")
        from_pixels = image_folder.preprocess(images, spec)
        from_files = tf.map_fn(
            lambda contents: image_folder.preprocess(image_folder.decode(contents), spec),
            encoded,
            fn_output_signature=tf.TensorSpec([spec.height, spec.width, spec.channels], tf.float32),
        )
        names_tensor = tf.constant(names, tf.string)

        def outputs(logits):
            probabilities = tf.nn.softmax(logits)
            class_ids = tf.argmax(probabilities, axis=1, output_type=tf.int64)
            return {
                "probabilities": probabilities,
                "class_ids": class_ids,
                "class_names": tf.gather(names_tensor, class_ids),
            }

        # The network's own input size and channels: no resizing, no control flow, so it
        # converts to TFLite with builtin ops only (antialiased resizing is not one of them).
        fixed = v1.placeholder(tf.uint8, [None, spec.height, spec.width, spec.channels], name="fixed_size_images")
        from_fixed = tf.cast(fixed, tf.float32) / 255.0

        def logits(images):
            return inference_logits(network, images, spec, len(names))

        pixel_outputs = outputs(logits(from_pixels))
        with v1.variable_scope(v1.get_variable_scope(), reuse=True):
            file_outputs = outputs(logits(from_files))
            fixed_outputs = outputs(logits(from_fixed))
        variables = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        saver = v1.train.Saver(variables)
        signature = saved_model.signature_def_utils.predict_signature_def
        signatures = {
            SERVING_KEY: signature({"images": images}, pixel_outputs),
            ENCODED_KEY: signature({"encoded": encoded}, file_outputs),
            FIXED_KEY: signature({"images": fixed}, fixed_outputs),
        }
        with v1.Session(graph=graph) as sess:
            ckpt.restore(sess, saver, prefix)
            builder = saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                sess, [saved_model.tag_constants.SERVING], signature_def_map=signatures, strip_default_attrs=True
            )
            builder.save()
        return [(var.op.name, var.shape.as_list()) for var in variables]


def _to_tflite(export_dir, path, shown_as):
    """Writes the SavedModel at export_dir (a path TensorFlow reads) as TFLite to path; shown_as names it."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(export_dir, signature_keys=[FIXED_KEY])
    try:
        with native_stderr_silenced():  # the converter's C++ side reports every pass on stderr
            flatbuffer = converter.convert()
    except Exception as error:  # noqa: BLE001 (its ConverterError is not public API; every kind means "cannot convert")
        raise UserError(f"TFLite conversion of {shown(shown_as)} failed: {one_line(error)}") from None
    with open(path, "wb") as stream:
        stream.write(flatbuffer)


def _run_of(model_dir, network_name):
    """(config, network name) of a run dir, or of a transfer.convert output (conversion.json, no config.json).

    Reads JSON only: the network is looked up in the registry once TensorFlow is imported.
    """
    config_path = os.path.join(model_dir, "config.json")
    conversion = os.path.join(model_dir, CONVERSION_FILE)
    if not os.path.exists(config_path) and os.path.exists(conversion):
        report = _read_json(conversion, required=True)
        config = {"model": "converted", "network": report.get("network") if isinstance(report, dict) else None}
    elif not os.path.exists(config_path) and network_name:
        config = {"model": "converted", "network": None}  # a bare checkpoint of the network's own classes
    else:
        config = _read_json(config_path, required=True)
        if not isinstance(config, dict) or config.get("model") != "transfer":
            kind = config.get("model") if isinstance(config, dict) else None
            raise UserError(
                f"{model_dir} holds a {kind or 'non-classifier'} run, not a train_transfer.py run: nothing to export"
            )
    if network_name and not user_network.is_spec(network_name) and config.get("network") not in (None, network_name):
        raise UserError(f"--network {network_name}: {model_dir} was trained as {config['network']}")
    return config, network_name or config.get("network")


def _num_classes(prefix, network, stored):
    head = [name for name in stored if network.is_head_variable(name) and name.rsplit("/", 1)[-1] in ("bias", "biases")]
    if not head:
        raise CheckpointError(f"checkpoint {prefix} has no {network.name} head ({', '.join(network.head_scopes)})")
    return int(stored[head[-1]][-1])


@dataclass(frozen=True)
class _Origin:
    """What an export is made from: the run, its checkpoint and what the card says of them."""

    model_dir: str
    config: dict
    network: object
    prefix: str
    is_best: bool
    names: list
    metrics: dict
    spec: object


def export(model_dir, output, tflite=False, force=False, checkpoint="best", network_name=None, log=print):
    """Exports a train_transfer.py run, or an ImageNet checkpoint converted by transfer.convert.

    Args:
      model_dir: the run dir (config.json, best/model.ckpt, model.ckpt-N), or a
        transfer.convert output dir (model.ckpt and conversion.json: its 1000 ImageNet classes).
      output: directory to create (must not exist unless force).
      tflite: also write model.tflite.
      force: replace an earlier export at output.
      checkpoint: "best" (the best validation epoch, the default, as evaluated on test)
        or "latest" (the newest step checkpoint).
      network_name: the registry network; by default the run's (config.json) or the
        conversion's.
      log: where the line about folders left by killed exports goes.

    Returns:
      The model card (a dict), as written to model_card.json.

    Raises:
      UserError: a run dir that is not a classifier run, a missing or damaged
        checkpoint, class names that do not fit, an output that exists or overlaps the run.
    """
    model_dir, config, name, output = check_arguments(model_dir, output, force, checkpoint, network_name)
    origin = _origin_of(model_dir, config, name, checkpoint)  # TensorFlow starts only here
    with outputs.Staged(output, KIND, force, log=log) as folder:
        return _write_export(folder, origin, tflite)


def check_arguments(model_dir, output, force=False, checkpoint="best", network_name=None):
    """Everything export checks before TensorFlow: (model_dir, config, network name, output).

    Raises:
      UserError: as `export` does for its arguments.
    """
    model_dir = _check_model_dir(model_dir, checkpoint)
    output = _check_output(output, model_dir, force)
    user_network.check(network_name)
    config, name = _run_of(model_dir, network_name)
    return model_dir, config, name, output


def _check_model_dir(model_dir, checkpoint):
    """The absolute --model-dir, once it and --checkpoint are valid."""
    if checkpoint not in _CHECKPOINT_CHOICES:
        raise UserError(f"--checkpoint must be one of {', '.join(_CHECKPOINT_CHOICES)}, got {checkpoint!r}")
    model_dir = os.path.abspath(os.path.expanduser(model_dir))
    if not os.path.isdir(model_dir):
        raise UserError(
            f"--model-dir {model_dir} " + ("is not a directory" if os.path.exists(model_dir) else "does not exist")
        )
    return model_dir


def _origin_of(model_dir, config, network_name, checkpoint):
    """Starts TensorFlow, picks the checkpoint and reads its classes, the run's metrics and the network's input."""
    # TensorFlow only now: the mistakes checked before are reported without its seconds of start-up.
    import_tensorflow()
    import tensorflow as tf

    from transfer import source as ckpt
    from transfer.graph import input_spec

    tf.get_logger().setLevel("ERROR")
    network = user_network.resolve(network_name, config, model_dir)
    prefix, is_best = _checkpoint_of(model_dir, checkpoint)
    stored = {info.name: info.shape for info in ckpt.read_variables(prefix)}
    num_classes = _num_classes(prefix, network, stored)
    if config["model"] == "converted":
        names = [line.split(",")[0].strip() for line in network.class_names()]
        if len(names) != num_classes:
            raise CheckpointError(f"checkpoint {prefix} has {num_classes} classes, {network.name} {len(names)}")
    else:
        names = class_names_of(model_dir, config, num_classes)
    metrics = _read_json(os.path.join(model_dir, "metrics.json"), required=False) or {}
    spec = input_spec(network, config.get("image_size"), config.get("channels"))
    return _Origin(model_dir, config, network, prefix, is_best, names, metrics, spec)


def _write_export(export_dir, origin, tflite):
    """Writes the SavedModel, labels.txt, predict.py, model.tflite (with tflite), model_card.json; returns the card."""
    names = origin.names
    with DirAlias(export_dir) as alias:  # TensorFlow's writer and converter take UTF-8 names without [ ] * ?
        variables = _build_and_save(alias.tf, origin.prefix, names, origin.network, origin.spec)
        if tflite:
            _to_tflite(alias.tf, os.path.join(export_dir, "model.tflite"), export_dir)
    with open(os.path.join(export_dir, "labels.txt"), "w", encoding="utf-8") as stream:
        stream.write("".join(name + "\n" for name in names))
    with open(os.path.join(export_dir, "predict.py"), "w", encoding="utf-8") as stream:
        stream.write(standalone.script())
    card = _model_card(origin, variables, tflite)
    with open(os.path.join(export_dir, "model_card.json"), "w", encoding="utf-8") as stream:
        json.dump(card, stream, indent=2)
        stream.write("\n")
    return card


def _model_card(origin, variables, tflite):
    """The model card of an export whose SavedModel holds `variables` [(name, shape)]."""
    import tensorflow as tf

    network, names, spec, metrics, config = origin.network, origin.names, origin.spec, origin.metrics, origin.config
    return {
        "format": CARD_FORMAT,
        "network": {
            "name": network.name,
            "layers": network.layers or f"{network.name} (models/networks.py), head of {len(names)}",
            "variables": {name: shape for name, shape in variables},
        },
        "source_checkpoint": {
            "path": origin.prefix,
            "kind": "best validation epoch" if origin.is_best else "newest step checkpoint",
            "sha256": _sha256_of_checkpoint(origin.prefix),
            "run": origin.model_dir,
            "transfer_source": config.get("checkpoint"),
            "restore": config.get("restore"),
        },
        "classes": names,
        "data": config.get("data"),
        "metrics": {
            "test_accuracy": metrics.get("test_accuracy")
            if origin.is_best or metrics.get("best_epoch") is None
            else None,
            "val_accuracy": metrics.get("val_accuracy"),
            "num_test": metrics.get("num_test"),
            # The examples the run trained and selected on (data's num_train is the pool they came from).
            "num_train": config.get("num_train"),
            "num_validation": config.get("num_validation"),
            "best_epoch": metrics.get("best_epoch"),
        },
        "preprocessing": _preprocessing(network, spec),
        "signatures": _signatures(spec),
        "tflite": f"model.tflite, from {FIXED_KEY}: uint8 [N, {spec.height}, {spec.width}, {spec.channels}]"
        if tflite
        else None,
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tensorflow": tf.__version__,
    }


def _signatures(spec):
    """The model card's description of the three signatures' inputs and outputs."""
    return {
        SERVING_KEY: {"inputs": {"images": "uint8 [N, H, W, C], C in 1..4"}, "outputs": _OUTPUTS},
        ENCODED_KEY: {
            "inputs": {"encoded": "string [N], JPEG/PNG/GIF/BMP/WebP file bytes"},
            "outputs": _OUTPUTS,
        },
        FIXED_KEY: {
            "inputs": {"images": f"uint8 [N, {spec.height}, {spec.width}, {spec.channels}]"},
            "outputs": _OUTPUTS,
        },
    }


def _preprocessing(network, spec):
    size = f"{spec.height}x{spec.width}"
    if spec.channels == 1:
        channels = "grey kept; RGB to grey by ITU-R 601 luma; alpha dropped (not blended)"
    elif spec.channels in (2, 4):
        colour = "grey (RGB by ITU-R 601 luma)" if spec.channels == 2 else "RGB (grey copied)"
        channels = f"{colour}, then alpha: the image's own, or opaque (255) when it has none"
    else:
        channels = "RGB kept; grey copied to RGB; alpha dropped (not blended)"
    return {
        "network_input": [spec.height, spec.width, spec.channels],
        "channels": channels,
        "resize": f"an image of {size} is used as it is; any other size is resized keeping its aspect ratio "
        "(bilinear, antialiased) to fit and padded with black, centred",
        "scale": _scale(network),
        "note": network.photo_note,
    }


def _scale(network):
    """What the graph does to pixel values (transfer.graph.to_network_input), in words."""
    from models import networks

    if network.preprocess is networks.unit_preprocess:
        return "pixel / 255, float32 in [0, 1]"
    what = " ".join((network.preprocess.__doc__ or "").split()) or f"the network's {network.preprocess.__name__}"
    return f"pixels in [0, 255], then {what}"


_OUTPUTS = {
    "probabilities": "float32 [N, classes]",
    "class_ids": "int64 [N], the most probable class",
    "class_names": "string [N], its name (labels.txt)",
}


def parse_args(argv=None):
    parser = Parser(prog="python -m transfer.export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-dir",
        required=True,
        help="a train_transfer.py run dir, or a transfer.convert output dir (an ImageNet checkpoint)",
    )
    parser.add_argument(
        "--network",
        default=None,
        help="the network (default: the run's, or the conversion's); needed for a bare checkpoint dir: "
        + user_network.HELP,
    )
    parser.add_argument("--output", required=True, help="folder to create for the SavedModel (new or empty)")
    parser.add_argument("--tflite", action="store_true", help="also write model.tflite")
    parser.add_argument("--force", action="store_true", help="replace an earlier export at --output")
    parser.add_argument(
        "--checkpoint",
        default="best",
        choices=_CHECKPOINT_CHOICES,
        help="the best validation epoch or the newest step (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Runs the exporter; a user error becomes one line on stderr and exit status 2."""
    args = parse_args(argv)
    try:
        card = export(args.model_dir, args.output, args.tflite, args.force, args.checkpoint, args.network)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output = os.path.abspath(args.output)
    print(f"exported {shown(card['source_checkpoint']['path'])} ({len(card['classes'])} classes) to {shown(output)}")
    print(
        f"  signatures: {SERVING_KEY} (uint8 images [N, H, W, C]), {ENCODED_KEY} (encoded image bytes [N]), "
        f"{FIXED_KEY} (uint8 [N, {', '.join(map(str, card['preprocessing']['network_input']))}])"
    )
    print(
        "  files: saved_model.pb, variables/, labels.txt, model_card.json, predict.py"
        + (", model.tflite" if args.tflite else "")
    )
    return 0


if __name__ == "__main__":
    guard_startup(kept=OUTPUT_KEPT)
    exit_on_failure(main())
