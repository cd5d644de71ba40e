"""TF1 name-based checkpoints to Keras 3 models and TF2 object-based checkpoints, and Keras 3 back.

    python -m transfer.convert SRC --output OUT --to keras     (OUT/model.keras, OUT/model.weights.h5)
    python -m transfer.convert SRC --output OUT --to tf2       (OUT/model.index, a tf.train.Checkpoint)
    python -m transfer.convert MODEL.keras --output OUT        (OUT/model.ckpt, a TF1 checkpoint)

A network has a Keras twin when Keras 3 builds the same arithmetic from the same weights:
the registry record names it (models.networks.Network.keras), and TWINS holds how to
build it and a name map, which is data: one rule per kind of tensor, a TF1 name template,
the Keras weight path template and a layout transform. "none" copies the tensor;
"reshape" lays it out in the Keras weight's shape (VGG's fc6 [7, 7, 512, 4096] is Keras's
fc1 [25088, 4096]: TF-Slim convolves where Keras flattens height, width, channels in that
order, so the element order is the same; fc7, fc8 and MobileNet's conv_preds lose or gain
their 1x1); "background" drops TF-Slim's logit 0 ("background") for a Keras head of the
ImageNet classes, and gives it back, with zero weights and a bias of BACKGROUND_LOGIT, on
the way to TF1. Every twin outputs what the TF1 graph's last layer does before a softmax
(logits; the autoencoder its reconstruction) and takes the network's own preprocessed
input (models.networks: VGG16 takes RGB minus the means, not Keras's BGR preprocess_input).

A checkpoint's network is found by its variable names (the twin whose sizing variable it
holds, then every name and shape compared with the TF1 graph built at that size), so a
transfer run's own head of 5 classes converts as well as the model zoo's. Every model
variable becomes exactly one Keras weight, every Keras weight is set, and the written file
is loaded back and compared bit for bit; anything else is one error line.

The TF2 checkpoint needs no twin: a tree of tf.Module objects, one per scope, holds each
variable under its TF1 name (`vgg_16/conv1/conv1_1/weights` is
`root.vgg_16.conv1.conv1_1.weights`); `tf.train.Checkpoint(root=module).read(prefix)`
restores it into any module tree with the same names.

Keras is imported only here, and only when a conversion asks for it.
"""

import collections
import dataclasses
import functools
import json
import os
import re
import string
import sys
import zipfile

import numpy as np

from runtime import outputs
from runtime.errors import CheckpointError, UserError, one_line
from runtime.paths import DirAlias, shown
from transfer import moving_average
from transfer.export import CONVERSION_FILE
from transfer.selection import capped, model_variable_names
from transfer.tensor_report import report_lines

FORMATS = ("keras", "tf2")
KIND = "conversion"  # the same kind of output as every transfer.convert
KERAS_NAME, WEIGHTS_NAME, TF2_NAME, TF1_NAME = "model.keras", "model.weights.h5", "model", "model.ckpt"
# The bias TF-Slim's background logit gets back when a 1000-class Keras head becomes a 1001-class
# TF1 one: its probability is 0 in float32, so the other 1000 keep Keras's probabilities.
BACKGROUND_LOGIT = -1e4


@dataclasses.dataclass(frozen=True)
class Twin:
    """A Keras 3 model with a TF1 network's arithmetic, and the name map between them.

    Attributes:
      key: what models.networks.Network.keras names ("" there: no twin).
      sizing: (TF1 variable, axis) whose size is free: the classes, or the autoencoder's code.
      rules: (TF1 name template, Keras path template, transform) rows; `{x}` is one name part.
      keras_model: (keras, size, image_size) -> the Keras model.
      tf1_graph: (size, image_size) -> builds the TF1 network into the current graph (None: the registry's).
    """

    key: str
    sizing: tuple[str, int]
    rules: tuple[tuple[str, str, str], ...]
    keras_model: object
    tf1_graph: object = None


def _same_names(*names):
    return tuple((f"{name}/{{var}}", f"{name}/{{var}}", "none") for name in names)


def _encoder(keras, inputs):
    """conv1 and conv2 (5x5/2, SAME, relu) flattened: models.cae.encoder's layers."""
    net = inputs
    for scope, filters in (("conv1", 16), ("conv2", 32)):
        net = keras.layers.Conv2D(filters, 5, strides=2, padding="same", activation="relu", name=scope)(net)
    return keras.layers.Flatten(name="features")(net)


def _digit_classifier(keras, size, image_size):
    """conv1, conv2, flatten, fc1 (200, relu), logits: models.classifier's layers."""
    from models import classifier

    inputs = keras.Input((*image_size, 1), name="images")
    features = _encoder(keras, inputs)
    fc1 = keras.layers.Dense(classifier.FC1_UNITS, activation="relu", name="fc1")(features)
    return keras.Model(inputs, keras.layers.Dense(size, name="logits")(fc1), name="digit_classifier")


def _autoencoder(keras, size, image_size):
    """models.cae.build_autoencoder's layers; its output is the reconstruction (dconv2's sigmoid)."""
    from models import cae

    inputs = keras.Input((*image_size, 1), name="images")
    features = _encoder(keras, inputs)
    latent = keras.layers.Dense(size, name="latent_var")(features)
    net = keras.layers.Dense(cae.ENCODER_UNITS, activation="relu", name="z_matrix")(latent)
    net = keras.layers.Reshape(cae.ENCODER_SHAPE, name="z_matrix_reshape")(net)
    for scope, filters, activation in (("dconv1", 16, "relu"), ("dconv2", 1, "sigmoid")):
        net = keras.layers.Conv2DTranspose(filters, 5, strides=2, padding="same", activation=activation, name=scope)(
            net
        )
    return keras.Model(inputs, net, name="autoencoder")


def _autoencoder_graph(size, image_size):
    import tensorflow as tf

    from models import cae

    images = tf.compat.v1.placeholder(tf.float32, [None, *image_size, 1], name="images")
    return cae.build_autoencoder(images, latent_size=size)["reconstruction"]


def _vgg16(keras, size, image_size):
    return keras.applications.VGG16(
        weights=None, input_shape=(*image_size, 3), classes=size, classifier_activation=None
    )


def _mobilenet(keras, size, image_size):
    return keras.applications.MobileNet(
        weights=None, input_shape=(*image_size, 3), classes=size, dropout=1e-3, classifier_activation=None
    )


_SLIM_BN = "BatchNorm/{var}"
TWINS = {
    twin.key: twin
    for twin in (
        Twin(
            "digit_classifier", ("logits/kernel", 1), _same_names("conv1", "conv2", "fc1", "logits"), _digit_classifier
        ),
        Twin(
            "autoencoder",
            ("latent_var/kernel", 1),
            _same_names("conv1", "conv2", "latent_var", "z_matrix", "dconv1", "dconv2"),
            _autoencoder,
            _autoencoder_graph,
        ),
        Twin(
            "VGG16",
            ("vgg_16/fc8/weights", 3),
            (
                ("vgg_16/conv{b}/conv{b}_{i}/weights", "block{b}_conv{i}/kernel", "none"),
                ("vgg_16/conv{b}/conv{b}_{i}/biases", "block{b}_conv{i}/bias", "none"),
                ("vgg_16/fc6/weights", "fc1/kernel", "reshape"),
                ("vgg_16/fc6/biases", "fc1/bias", "none"),
                ("vgg_16/fc7/weights", "fc2/kernel", "reshape"),
                ("vgg_16/fc7/biases", "fc2/bias", "none"),
                ("vgg_16/fc8/weights", "predictions/kernel", "reshape"),
                ("vgg_16/fc8/biases", "predictions/bias", "none"),
            ),
            _vgg16,
        ),
        Twin(
            "MobileNet",
            ("MobilenetV1/Logits/Conv2d_1c_1x1/weights", 3),
            (
                ("MobilenetV1/Conv2d_0/weights", "conv1/kernel", "none"),
                (f"MobilenetV1/Conv2d_0/{_SLIM_BN}", "conv1_bn/{var}", "none"),
                ("MobilenetV1/Conv2d_{n}_depthwise/depthwise_weights", "conv_dw_{n}/kernel", "none"),
                (f"MobilenetV1/Conv2d_{{n}}_depthwise/{_SLIM_BN}", "conv_dw_{n}_bn/{var}", "none"),
                ("MobilenetV1/Conv2d_{n}_pointwise/weights", "conv_pw_{n}/kernel", "none"),
                (f"MobilenetV1/Conv2d_{{n}}_pointwise/{_SLIM_BN}", "conv_pw_{n}_bn/{var}", "none"),
                ("MobilenetV1/Logits/Conv2d_1c_1x1/weights", "conv_preds/kernel", "background"),
                ("MobilenetV1/Logits/Conv2d_1c_1x1/biases", "conv_preds/bias", "background"),
            ),
            _mobilenet,
        ),
    )
}


def _pattern(template):
    """A name template as a regex: `{x}` is one name part, the same part wherever x recurs."""
    parts, seen = [], set()
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field:
            parts.append(f"(?P={field})" if field in seen else f"(?P<{field}>[^/]+)")
            seen.add(field)
    return re.compile("".join(parts) + r"\Z")


def _mapped(rules, name):
    """(Keras path, transform) of the first rule whose TF1 template matches name, or None."""
    for tf1, keras_path, transform in rules:
        match = _pattern(tf1).match(name)
        if match:
            return keras_path.format(**match.groupdict()), transform
    return None


@dataclasses.dataclass(frozen=True)
class Pairing:
    """A twin at one size: which network, how many classes each side has, and the TF1 shapes."""

    twin: Twin
    network: object  # the registry record, or None for the autoencoder
    size: int  # the TF1 sizing dimension
    background: int  # logits TF1 has and Keras has not (TF-Slim's background)
    image_size: tuple[int, int]
    shapes: dict  # {TF1 variable: shape}, from the TF1 graph built at this size

    @property
    def keras_size(self):
        return self.size - self.background


def _network_of(twin):
    from models import networks

    found = [network for network in networks.NETWORKS.values() if network.keras == twin.key]
    return found[0] if found else None


def tf1_shapes(twin, size, image_size):
    """{name: shape} of the model variables of twin's TF1 network built at size (its own graph)."""
    return collections.OrderedDict(_tf1_shapes(twin.key, size, tuple(image_size)))


@functools.lru_cache(maxsize=32)
def _tf1_shapes(key, size, image_size):
    import tensorflow as tf

    with tf.Graph().as_default():
        return tuple((v.op.name, tuple(v.shape.as_list())) for v in build_tf1(TWINS[key], size, image_size))


def build_tf1(twin, size, image_size):
    """Builds twin's TF1 network at size into the current graph; returns its model variables."""
    import tensorflow as tf

    v1 = tf.compat.v1
    if twin.tf1_graph is not None:
        twin.tf1_graph(size, image_size)
    else:
        network = _network_of(twin)
        network.build(v1.placeholder(tf.float32, [None, *image_size, network.channels]), num_classes=size)
    return v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)


def pairing(twin, size, image_size=None, keras_side=False):
    """The Pairing of twin for a TF1 size or, keras_side, a Keras class count.

    A Keras head of the ImageNet classes pairs with TF-Slim's head of those plus background
    (models.networks.Network.label_offset); any other size is the same on both sides.
    """
    from models import cae

    network = _network_of(twin)
    offset = network.label_offset if network is not None else 0
    if keras_side and offset and size == network.num_classes - offset:
        size += offset
    background = offset if offset and size == network.num_classes else 0
    if image_size is None:
        image_size = network.image_size if network is not None else cae.IMAGE_SHAPE[:2]
    return Pairing(twin, network, size, background, tuple(image_size), tf1_shapes(twin, size, image_size))


def _no_twin(names):
    """The one line for a checkpoint whose network has no Keras twin, or holds no network's names."""
    from models import networks
    from models.scopes import in_any_scope

    for network in networks.NETWORKS.values():
        if network.scope and all(in_any_scope(name, (network.scope,)) for name in names):
            return CheckpointError(
                f"{network.name} has no Keras 3 twin: keras.applications builds no model with its layers "
                "and weights; convert it --to tf2 or --to safetensors instead"
            )
    return CheckpointError(
        f"no Keras 3 twin holds these variables ({capped(sorted(names))}): not a registry network "
        "with a twin (the digit classifier, the autoencoder, vgg_16, mobilenet_v1)"
    )


def find_pairing(shapes, image_size=None):
    """The Pairing whose TF1 graph holds exactly these {name: shape} model variables.

    Raises:
      CheckpointError: when no twin's sizing variable is there (naming the network without
        a twin), or when a name or shape differs from the twin's TF1 graph.
    """
    for twin in TWINS.values():
        sizing, axis = twin.sizing
        if sizing in shapes and len(shapes[sizing]) > axis:
            paired = pairing(twin, shapes[sizing][axis], image_size)
            _same_variables(paired.shapes, shapes, paired)
            return paired
    raise _no_twin(shapes)


def _same_variables(expected, found, paired):
    what = paired.network.name if paired.network is not None else paired.twin.key
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"not a {what} checkpoint: {len(missing)} of its variables missing ({capped(missing)}), "
            f"{len(extra)} others held ({capped(extra)})"
        )
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape):
            raise CheckpointError(f"not a {what} checkpoint: {name} is {list(found[name])}, {what} has {list(shape)}")


def to_keras_layout(value, transform, keras_shape, background):
    """A TF1 value in the Keras weight's layout (see the module docstring for the transforms)."""
    if transform == "background" and background:
        value = value[..., background:]
    return np.ascontiguousarray(np.reshape(value, keras_shape))


def to_tf1_layout(value, transform, tf1_shape, background):
    """A Keras value in the TF1 variable's layout: to_keras_layout undone (background given back)."""
    if transform == "background" and background:
        kept = np.reshape(value, (*tf1_shape[:-1], tf1_shape[-1] - background))
        fill = BACKGROUND_LOGIT if kept.ndim == 1 else 0.0
        value = np.concatenate([np.full((*tf1_shape[:-1], background), fill, kept.dtype), kept], axis=-1)
    return np.ascontiguousarray(np.reshape(value, tf1_shape))


def plan_rows(paired, keras_weights):
    """One row per TF1 variable: {source, target, shape, keras_shape, transform}, each Keras weight once.

    Raises:
      CheckpointError: for a variable no rule maps, or a Keras weight no variable fills.
    """
    rows, by_path = [], {weight.path: weight for weight in keras_weights}
    for name, shape in paired.shapes.items():
        found = _mapped(paired.twin.rules, name)
        if found is None or found[0] not in by_path:
            raise CheckpointError(f"{name} has no Keras weight in the {paired.twin.key} twin")
        rows.append(
            {
                "source": name,
                "target": found[0],
                "shape": list(shape),
                "dtype": by_path[found[0]].dtype,
                "keras_shape": list(by_path[found[0]].shape),
                "transform": found[1],
            }
        )
    targets = collections.Counter(row["target"] for row in rows)
    twice = sorted(target for target, count in targets.items() if count > 1)
    if twice:
        raise CheckpointError(f"the {paired.twin.key} twin's rules map several variables onto {capped(twice)}")
    unfilled = sorted(set(by_path) - set(targets))
    if unfilled:
        raise CheckpointError(f"the {paired.twin.key} twin's weights {capped(unfilled)} have no TF1 variable")
    return rows


def keras_model_of(values, paired):
    """The twin Keras model holding the TF1 values; (model, rows)."""
    import keras

    model = paired.twin.keras_model(keras, paired.keras_size, paired.image_size)
    rows = plan_rows(paired, model.weights)
    by_path = {weight.path: weight for weight in model.weights}
    for row in rows:
        value = to_keras_layout(values[row["source"]], row["transform"], row["keras_shape"], paired.background)
        by_path[row["target"]].assign(value)
    return model, rows


def tf1_values_of(model, image_size=None):
    """The TF1 values of a Keras twin model: ({TF1 name: array}, pairing, rows).

    Raises:
      CheckpointError: when the model is no twin of a registry network (or the autoencoder).
    """
    weights = {weight.path: weight for weight in model.weights}
    for twin in TWINS.values():
        sizing, axis = twin.sizing
        found = _mapped(twin.rules, sizing)
        if found is not None and found[0] in weights:
            classes = weights[found[0]].shape[-1 if axis else 0]
            size_image = image_size or tuple(model.inputs[0].shape[1:3])
            paired = pairing(twin, int(classes), size_image, keras_side=True)
            rows = plan_rows(paired, model.weights)
            values = collections.OrderedDict(
                (
                    row["source"],
                    to_tf1_layout(
                        np.asarray(weights[row["target"]].numpy()), row["transform"], row["shape"], paired.background
                    ),
                )
                for row in rows
            )
            return values, paired, rows
    raise CheckpointError(
        f"{model.name} is not a Keras twin of a registry network: its weights "
        f"({capped(sorted(weights))}) match no twin's (the digit classifier, the autoencoder, VGG16, MobileNet)"
    )


# --- files --------------------------------------------------------------------------------


_KERAS_MEMBERS = {"config.json", "model.weights.h5"}
_CONFIG_LIMIT = 16 << 20  # bytes of config.json read: a model's is tens of kilobytes


def check_keras_file(path):
    """Refuses a `.keras` file that is not one, or whose config.json names a class from outside Keras.

    Read as data before TensorFlow loads: the zip's member list and its config.json. A
    config naming a module outside `keras` (what a loader would import) or a Lambda layer
    (code in the file) is refused, so Keras's own loader only ever builds its own layers.

    Raises:
      UserError: naming the file and the first offending module or class.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if not _KERAS_MEMBERS <= set(archive.namelist()):
                raise zipfile.BadZipFile("no config.json and model.weights.h5 in it")
            if archive.getinfo("config.json").file_size > _CONFIG_LIMIT:
                raise zipfile.BadZipFile(f"its config.json is over {_CONFIG_LIMIT >> 20} MiB")
            config = json.loads(archive.read("config.json").decode("utf-8"))
    except (OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError, RecursionError) as error:
        raise UserError(f"{shown(path)} is not a Keras 3 .keras file: {one_line(error)}") from None
    for module, class_name in _classes(config):
        if module is not None and module != "keras" and not str(module).startswith("keras."):
            raise UserError(f"{shown(path)} names module {module!r} in its config.json: only Keras's own are loaded")
        if class_name in ("Lambda", "__lambda__"):
            raise UserError(f"{shown(path)} holds a Lambda layer (code): not loaded")


def _classes(config):
    """(module, class_name) of every object a Keras config describes."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node:
                yield node.get("module"), node["class_name"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def load_keras(path):
    """A `.keras` model, loaded with Keras's safe mode (no lambda, no code of the file is run)."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a file it cannot take
        raise CheckpointError(f"cannot load {shown(path)} as a Keras model: {one_line(error)}") from None


def read_tf1_model_values(prefix, use_shadows=False):
    """The model variables of a TF1 checkpoint (slots and counters left out): (values, dropped, chosen).

    values: {variable: array}, each its moving-average shadow where use_shadows takes one
    (chosen: transfer.moving_average.sources); dropped: the names left out.
    """
    from transfer import source

    infos = source.read_variables(prefix)
    held, dtypes = {info.name: info.shape for info in infos}, {info.name: info.dtype for info in infos}
    kept = model_variable_names(held)
    chosen = moving_average.sources(kept, held, use_shadows, prefix)
    read = source.read_values(prefix, [tensor for tensor, _ in chosen.values()])
    values = collections.OrderedDict((name, read[chosen[name][0]]) for name in kept)
    dropped = [
        {
            "source": name,
            "shape": list(held[name]),
            "dtype": dtypes[name],
            "reason": "optimizer slot or counter (default)",
        }
        for name in sorted(set(held) - set(kept) - moving_average.taken(chosen))
    ]
    return values, dropped, chosen


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def write_keras(model, folder):
    """model.keras and model.weights.h5 in folder, each read back and compared bit for bit."""
    keras_path, weights_path = os.path.join(folder, KERAS_NAME), os.path.join(folder, WEIGHTS_NAME)
    model.save(keras_path)
    model.save_weights(weights_path)
    loaded = load_keras(keras_path)
    for written, name in ((keras_path, KERAS_NAME), (weights_path, WEIGHTS_NAME)):
        if written == weights_path:
            loaded.load_weights(weights_path)
        for original, back in zip(model.weights, loaded.weights, strict=True):
            if original.path != back.path or not _same_bits(original.numpy(), back.numpy()):
                raise CheckpointError(f"{name}: {original.path} differs from the converted value after saving")


def module_tree(values):
    """A tf.Module tree holding each value as a tf.Variable at the attribute path of its name."""
    import tensorflow as tf

    root = tf.Module(name="root")
    for name, value in values.items():
        node, parts = root, name.split("/")
        clash = next((part for part in parts if not part or hasattr(tf.Module, part)), None)
        if clash is not None:
            raise CheckpointError(
                f"{shown(name)}: {clash!r} is {'an empty name part' if not clash else 'an attribute of tf.Module'}, "
                "which a TF2 checkpoint's module tree cannot name a scope or variable by; write tf1 or safetensors"
            )
        for part in parts[:-1]:
            child = getattr(node, part, None) if part in vars(node) else None
            if child is None:
                child = tf.Module(name=None)
                setattr(node, part, child)
            elif not isinstance(child, tf.Module):
                raise CheckpointError(f"{name} lies below the variable {part}: a tf.Module cannot hold both")
            node = child
        if parts[-1] in vars(node):
            raise CheckpointError(f"{name} is both a variable and a scope: a tf.Module cannot hold both")
        setattr(node, parts[-1], tf.Variable(value, name=parts[-1], trainable=False))
    return root


def write_tf2(values, folder):
    """A tf.train.Checkpoint of module_tree(values) at folder/model, restored into a new tree and compared."""
    import tensorflow as tf

    with DirAlias(folder) as alias:
        prefix = tf.train.Checkpoint(root=module_tree(values)).write(alias.join(TF2_NAME))
        zeros = {name: np.zeros_like(value) for name, value in values.items()}
        back = module_tree(zeros)
        tf.train.Checkpoint(root=back).read(prefix).assert_existing_objects_matched()
    for name, value in values.items():
        node = back
        for part in name.split("/"):
            node = getattr(node, part)
        if not _same_bits(node.numpy(), value):
            raise CheckpointError(f"{shown(folder)}: {name} differs after restoring the TF2 checkpoint")
    return os.path.basename(prefix)


def write_tf1(values, paired, folder):
    """values saved as paired's TF1 network's variables at folder/model.ckpt, read back and compared.

    The network is built and each variable takes its value, so the checkpoint restores into
    the network by construction; a value of another shape fails here.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default():
        variables = build_tf1(paired.twin, paired.size, paired.image_size)
        saver = v1.train.Saver(var_list=variables, save_relative_paths=True)
        with v1.Session() as sess, DirAlias(folder) as alias:
            sess.run([v.initializer for v in variables], {v.initial_value: values[v.op.name] for v in variables})
            prefix = saver.save(sess, alias.join(TF1_NAME), write_meta_graph=False)
            reader = tf.train.load_checkpoint(prefix)
            for name, value in values.items():
                if not _same_bits(reader.get_tensor(name), value):
                    raise CheckpointError(f"{TF1_NAME}: {name} differs from the converted value after saving")
    return TF1_NAME


def convert(source, output, target="keras", force=False, log=print, use_shadows=False):
    """Converts a TF1 checkpoint (to "keras" or "tf2") or a `.keras` model (to "tf1") into output.

    Args:
      source: a TF1 checkpoint prefix or run dir (transfer.source.resolve_checkpoint), or a `.keras` file.
      output: the folder to write, already checked (runtime.outputs.check).
      target: "keras", "tf2", or "tf1" for a `.keras` source.
      force: replace an earlier conversion at output.
      log: where the report goes.
      use_shadows: --moving-average (transfer.moving_average), for a TF1 source.

    Returns:
      The path of what was written (the .keras file, the TF2 prefix or the TF1 prefix).
    """
    from transfer import source as sources

    dropped, paired = [], None
    if target == "tf1":
        values, paired, rows = tf1_values_of(load_keras(source))
    else:
        source = sources.resolve_checkpoint(source)
        values, dropped, chosen = read_tf1_model_values(source, use_shadows)
        if target == "keras":
            paired = find_pairing({name: value.shape for name, value in values.items()})
            model, rows = keras_model_of(values, paired)
        else:
            rows = [
                {"source": n, "target": n, "shape": list(v.shape), "dtype": str(v.dtype), "transform": "none"}
                for n, v in values.items()
            ]
        rows = moving_average.mark(rows, chosen)
    notes = [moving_average.summary(rows)] if use_shadows else []
    for line in report_lines(rows, dropped) + notes + _background_note(paired, target):
        log(line)
    with outputs.Staged(output, KIND, force, log=log) as folder:
        if target == "keras":
            write_keras(model, folder)
            written = KERAS_NAME
        elif target == "tf2":
            written = write_tf2(values, folder)
        else:
            written = write_tf1(values, paired, folder)
        _write_report(folder, source, target, written, rows, dropped, paired)
    log(f"converted {len(rows)} tensors ({len(dropped)} dropped) from {shown(source)} into {shown(output)}")
    return os.path.join(output, written)


def _background_note(paired, target):
    """The line that says what became of TF-Slim's background logit, where it was dropped or given back."""
    if paired is None or not paired.background:
        return []
    if target == "keras":
        return [
            f"background: TF-Slim's logit 0 dropped; the Keras model's {paired.keras_size} classes are its "
            f"logits 1..{paired.size - 1}"
        ]
    return [f"background: TF-Slim's logit 0 given back with zero weights and bias {BACKGROUND_LOGIT:g}"]


def _write_report(folder, source, target, written, rows, dropped, paired):
    report = {
        "toolkit": outputs.TOOLKIT,
        "source": os.path.abspath(source),
        "target_format": target,
        "written": written,
        "network": None if paired is None or paired.network is None else paired.network.name,
        "keras_twin": None if paired is None else paired.twin.key,
        "background_logits_dropped": 0 if paired is None else paired.background,
        "tensors": rows,
        "dropped": dropped,
    }
    with open(os.path.join(folder, CONVERSION_FILE), "w") as stream:
        json.dump(report, stream, indent=1)


def handles(args):
    """Whether `python -m transfer.convert` args are this module's: --to keras or tf2, or a .keras source."""
    return args.to in FORMATS or os.path.expanduser(args.source).endswith(".keras")


def main(args):
    """transfer.convert's main for handles(args): the output and flags checked before TensorFlow loads."""
    from runtime.quiet import import_tensorflow

    source = os.path.expanduser(args.source)
    try:
        output = outputs.check(args.output, KIND, args.force, reads=(source,))
        if args.drop:
            raise UserError(
                "--drop applies to safetensors and PyTorch conversions; a Keras or TF2 conversion takes every model "
                "variable"
            )
        if args.network or args.map_file:
            raise UserError(
                "--network and --map-file name a PyTorch name map; a Keras or TF2 conversion finds its twin by the "
                "checkpoint's names (Network.keras)"
            )
        if not os.path.exists(source) and not os.path.exists(source + ".index"):  # a folder, a file or a prefix
            raise UserError(f"{shown(source)} does not exist")
        if source.endswith(".keras"):
            check_keras_file(source)
            if args.moving_average:
                raise UserError(f"{shown(source)} is a Keras model: it holds no moving averages (--moving-average)")
            if args.to not in (None, "tf1"):
                raise UserError(f"{shown(source)} is a Keras model: it converts into a TF1 checkpoint only (--to tf1)")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import_tensorflow()
    from runtime import cli

    target = "tf1" if source.endswith(".keras") else args.to
    return cli.main(
        lambda _: convert(source, output, target, args.force, use_shadows=args.moving_average), lambda _: args
    )
