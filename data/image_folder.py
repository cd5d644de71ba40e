"""A folder of the user's own images as a data source: one subfolder per class.

Layout: ``DIR/<class>/**/<image>``. Class names are the sorted names of DIR's subfolders;
every image below a class folder belongs to that class, however deeply nested. Names
starting with "." (files and folders) are skipped. Files are JPEG, PNG, BMP, GIF (first
frame) or WebP, recognised by their extension; other files are listed as ignored.

The split is stable: each file goes to train, validation or test by the SHA-1 of its path
relative to its class folder, so the folder can be moved or copied without reshuffling it.
A folder holding ``train/`` and ``test/`` (and optionally ``val/`` or ``validation/``)
subfolders, each with the same class subfolders, is used as split by the user; its
validation set, when there is no ``val/``, is carved out of ``train/`` by the same hash.

Links. Below the image folder, a link to a file is followed (the file is used under the
link's name; a link to nothing is a bad file), and a link to a folder never is: it is listed
in a warning and skipped, class folders included, so no listing can loop or wander out of
the folder. The image folder itself may be a link. A file reached under several names (links,
hard links) is used once, under its first name in listing order; one file in two classes
stops the scan with one line naming both. predict.py walks a folder by the same rule.

Names. Any file name is used as it is, whatever bytes it holds (tf.data is given the bytes of
the path); messages show names through runtime.paths.shown, on one printable line. A class
name must read back from labels.txt (one UTF-8 name per line) exactly, so a class folder
whose name is not UTF-8, holds a line break or another control character, or is blank, stops
the scan with one line naming it.

Identity. The scan reads every usable file's bytes once and keeps their sha256: a run
records them (:meth:`FolderScan.file_digests`), so a resume notices a file rewritten in place.

Bad files never stop a run: :func:`scan` decodes every image once up front (in tf.data,
in parallel) and returns the files that fail with the reason, to report and skip. Files
are decoded by their content, not their extension: a BMP named ``.jpg`` is read as the BMP
it is, and listed among the renamed files so the user knows.

Preprocessing is the network's (:class:`InputSpec`). Any colour mode becomes the network's
channels: grey is copied to RGB, RGB becomes grey by the ITU-R 601 luma weights, an alpha
channel is dropped (transparent pixels keep their stored colour; they are not blended on a
background), 16-bit PNGs are scaled to 8 bits, palette images are expanded, CMYK JPEGs are
converted to RGB by the decoder. An image already at the network's size is used as it is,
bit for bit. Any other size is resized preserving its aspect ratio (bilinear, antialiased)
until it fits, and padded with black to the network's size, centred.

For the MNIST classifier (:data:`MNIST_INPUT`, grey 28x28) this is not how MNIST itself was
made: there each digit was size-normalised to fit a 20x20 box (aspect kept, antialiased) and
then placed in the 28x28 frame so that its centre of mass sits at the centre. This module
does neither the 20x20 box nor the centre-of-mass shift: a photo of a digit is scaled to
fill 28 pixels on its longer side and centred by its bounding box. Digits that should
look like MNIST need to be white on black, cropped with a margin of about a fifth on each
side; the module inverts nothing and crops nothing.
"""

import dataclasses
import hashlib
import os
import unicodedata

import numpy as np
import tensorflow as tf

from data import idx, image_header, pipeline
from runtime.errors import DataError, one_line
from runtime.paths import shown
from runtime.quiet import native_stderr_silenced

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "validation", "test")
VALIDATION_DIR_NAMES = ("val", "validation")
# As in TensorFlow's retrain.py: hash values modulo 2^27 spread over 0..100%.
_MAX_HASH = 2**27 - 1
_VALIDATION_BATCH = 512
# Below this many training images a class gets a warning (TensorFlow's retrain.py warns below 20 too).
FEW_IMAGES = 20

# Magic bytes of the formats the decoder accepts: how a file's content is told from its name.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)
_FORMAT_OF_EXTENSION = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP"}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a network takes: images of height x width with 1 (grey) or 3 (RGB) channels."""

    height: int
    width: int
    channels: int

    def __post_init__(self):
        if self.height <= 0 or self.width <= 0 or self.channels not in (1, 3):
            raise ValueError(f"an input spec needs a positive size and 1 or 3 channels, got {self}")


MNIST_INPUT = InputSpec(idx.ROWS, idx.COLS, 1)


@dataclasses.dataclass(frozen=True)
class BadFile:
    """A file that cannot be used, and why."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """The files of one split in a fixed order, with their class ids.

    Attributes:
      files: tuple of absolute paths, sorted by (class, relative path).
      labels: int64 array [len(files)] of class ids into the scan's class_names.
      sha256: tuple of the files' sha256 (64 hex digits) as the scan read them.
    """

    files: tuple
    labels: np.ndarray
    sha256: tuple = ()

    def __len__(self):
        return len(self.files)


@dataclasses.dataclass(frozen=True, eq=False)
class FolderScan:
    """What :func:`scan` found in an image folder.

    Attributes:
      root: the folder, absolute.
      layout: "hash" (split by the hash of relative paths) or "subfolders" (train/ and test/ given).
      class_names: tuple of the sorted class folder names; a label is an index into it.
      splits: dict from "train", "validation", "test" to a :class:`Split` of the decodable files.
      bad: tuple of :class:`BadFile`, the image files that cannot be decoded, each listed once.
      renamed: tuple of :class:`BadFile` whose content is an image of another format than the
        extension says; they are decoded by content and used.
      ignored: tuple of paths of files not used: without an image extension, or beside the
        class folders rather than in one.
      folder_links: tuple of paths of links to folders, never followed (see the module docstring).
      duplicates: tuple of :class:`BadFile` naming files already used under another name.
      validation_percent, test_percent: the split shares asked for (test_percent is unused
        with the "subfolders" layout).
    """

    root: str
    layout: str
    class_names: tuple
    splits: dict
    bad: tuple
    renamed: tuple
    ignored: tuple
    validation_percent: float
    test_percent: float
    folder_links: tuple = ()
    duplicates: tuple = ()

    @property
    def num_classes(self):
        return len(self.class_names)

    def counts(self):
        """Returns {class name: {split: number of usable images}}."""
        table = {name: dict.fromkeys(SPLITS, 0) for name in self.class_names}
        for split_name, split in self.splits.items():
            for label, count in zip(*np.unique(split.labels, return_counts=True)):
                table[self.class_names[label]][split_name] = int(count)
        return table

    def describe(self):
        """Returns the JSON-ready summary to record with a run (config.json, metrics.json)."""
        return {
            "source": f"image-folder:{self.root}",
            "layout": self.layout,
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            **{f"num_{name}": len(self.splits[name]) for name in SPLITS},
            "validation_percent": self.validation_percent,
            "test_percent": self.test_percent if self.layout == "hash" else None,
            "num_bad_files": len(self.bad),
            "bad_files": [dataclasses.asdict(bad) for bad in self.bad],
            "num_renamed_files": len(self.renamed),
            "num_ignored_files": len(self.ignored),
            "num_folder_links_skipped": len(self.folder_links),
            "num_duplicate_names": len(self.duplicates),
        }

    def _relative(self, path):
        return path[len(self.root) :].lstrip(os.sep).replace(os.sep, "/")

    def identity(self):
        """`image-folder:<class names>#<hash>` of the class names and each used file's split, label and path.

        Paths are relative to the folder, so a moved folder keeps its identity. The files'
        contents are not in it: :meth:`file_digests` covers them.
        """
        digest = hashlib.sha256()
        for split in SPLITS:
            for path, label in zip(self.splits[split].files, self.splits[split].labels):
                digest.update(f"{split}\0{label}\0".encode() + os.fsencode(self._relative(path)) + b"\n")
        return f"image-folder:{'|'.join(self.class_names)}#{digest.hexdigest()[:16]}"

    def file_digests(self):
        """{path relative to the folder ('/' separators): sha256} of every used file, sorted by path.

        JSON keeps any name exactly (bytes that are not UTF-8 are written as \\udcXX escapes
        and read back as the same surrogates), so config.json can hold it.
        """
        pairs = [
            (self._relative(path), sha)
            for split in SPLITS
            for path, sha in zip(self.splits[split].files, self.splits[split].sha256)
        ]
        return dict(sorted(pairs))

    def report_lines(self):
        """Returns the lines that tell the user what was found and what was skipped, each file once."""
        sizes = ", ".join(f"{name} {len(self.splits[name])}" for name in SPLITS)
        lines = [f"image folder {shown(self.root)}: {self.num_classes} classes, {sizes} ({self.layout} split)"]
        if self.bad:
            lines.append(f"skipped {len(self.bad)} image files that cannot be decoded:")
            lines += [f"  {shown(bad.path)}: {bad.reason}" for bad in self.bad]
        if self.renamed:
            lines.append(f"decoded {len(self.renamed)} files by their content, not their extension:")
            lines += [f"  {shown(renamed.path)}: {renamed.reason}" for renamed in self.renamed]
        if self.duplicates:
            lines.append(f"used once {len(self.duplicates)} files that are another name of a file already used:")
            lines += [f"  {shown(dup.path)}: {dup.reason}" for dup in self.duplicates]
        if self.ignored:
            listed = ", ".join(map(shown, self.ignored[:3])) + (", ..." if len(self.ignored) > 3 else "")
            lines.append(
                f"ignored {len(self.ignored)} files outside the class folders or without an image extension ({listed})"
            )
        if self.folder_links:
            listed = ", ".join(_link_shown(link) for link in self.folder_links[:3])
            more = ", ..." if len(self.folder_links) > 3 else ""
            lines.append(
                f"warning: skipped {len(self.folder_links)} links to folders, which are never followed: {listed}{more}"
            )
        few = [f"{name} ({count['train']})" for name, count in self.counts().items() if count["train"] < FEW_IMAGES]
        if few:
            lines.append(f"warning: fewer than {FEW_IMAGES} training images in class {', '.join(few)}")
        return lines


def split_of(relative_path, validation_percent, test_percent):
    """Returns the split of a file from its path relative to its class folder.

    The path is hashed with '/' separators whatever the platform, so a folder copied
    between systems keeps its split too.

    Args:
      relative_path: path below the class folder, e.g. "2019/img_001.jpg".
      validation_percent: share of files that go to validation, in [0, 100).
      test_percent: share of files that go to test; the two add up to less than 100.

    Returns:
      "train", "validation" or "test".
    """
    key = os.fsencode(relative_path.replace(os.sep, "/"))
    percentage = (int(hashlib.sha1(key).hexdigest(), 16) % (_MAX_HASH + 1)) * (100.0 / _MAX_HASH)
    if percentage < validation_percent:
        return "validation"
    if percentage < validation_percent + test_percent:
        return "test"
    return "train"


def _visible(name):
    return not name.startswith(".")


def _is_image_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _link_shown(path):
    try:
        return f"{shown(path)} (-> {shown(os.readlink(path))})"
    except OSError:
        return shown(path)


def _entries_of(directory):
    """Returns (visible folders, other visible entries, links to folders) of a directory, each sorted by name.

    The link rule lives here: a folder is entered only when it is not a link; a link to a
    folder is returned apart, to be reported and skipped; anything else (files, links to
    files, links to nothing) is a file.
    """
    try:
        entries = sorted((e for e in os.scandir(directory) if _visible(e.name)), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"image folder {shown(directory)}: cannot list it: {one_line(e)}") from e
    folders, files, links = [], [], []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            folders.append(entry.name)
        elif entry.is_symlink() and entry.is_dir():
            links.append(entry.path)
        else:
            files.append(entry.path)
    return folders, files, links


def _class_dirs(directory):
    return _entries_of(directory)[0]


def _walk(top):
    """Yields (folder, its files' paths, its links to folders) below top, depth first in name order.

    Never enters a link to a folder (see :func:`_entries_of`), so it ends on any tree. A
    folder that cannot be listed (no permission) is skipped, as os.walk skips it.
    """
    stack = [top]
    while stack:
        here = stack.pop()
        try:
            folders, files, links = _entries_of(here)
        except DataError:
            if here == top:
                raise
            continue
        yield here, files, links
        stack += [os.path.join(here, name) for name in reversed(folders)]


def _list_class(class_dir):
    """Returns (image files as (relative path, path), ignored paths, links to folders) below one class folder."""
    images, ignored, folder_links = [], [], []
    for _, files, links in _walk(class_dir):
        folder_links += links
        for path in files:
            if _is_image_name(path):
                images.append((os.path.relpath(path, class_dir).replace(os.sep, "/"), path))
            else:
                ignored.append(path)
    return images, ignored, folder_links


def class_names(root):
    """The class names of an image folder, from its listing alone (nothing is decoded)."""
    root = os.path.expanduser(os.fspath(root))
    top = _class_dirs(root)
    if "train" in top and "test" in top:
        return tuple(_class_dirs(os.path.join(root, "train")))
    return tuple(top)


def is_image_folder(path):
    """Tells an image folder from a folder of IDX files.

    Args:
      path: a directory path.

    Returns:
      True when ``path`` is a directory without the MNIST IDX files that has a visible
      subfolder with at least one image file below it (directly or in train/ or test/).
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isdir(path) or idx.find_idx_files(path)[0]:
        return False
    for name in _class_dirs(path):
        for _, files, _ in _walk(os.path.join(path, name)):
            if any(map(_is_image_name, files)):
                return True
    return False


def _content_format(path):
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _precheck(path):
    """Returns (reason it is bad or None, content format or None) without decoding."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"broken symbolic link (to {shown(os.readlink(path))})", None
    if not os.path.isfile(path):
        return "not a regular file", None
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)", None
        content = _content_format(path)
    except OSError as e:
        return f"cannot read: {one_line(e)}", None
    if content is None:
        return "not an image: its content is none of JPEG, PNG, GIF, BMP or WebP", None
    return None, content


def decode(contents):
    """Decodes an encoded image (JPEG, PNG, BMP, GIF's first frame, WebP) by its content.

    Args:
      contents: scalar string tensor of the file's bytes.

    Nothing here bounds the size: the files of a folder reach it only after :func:`scan`
    refused those over data.image_header's pixel bound, and predict.py and look apply the
    same rule before their decoders.

    Returns:
      uint8 tensor [height, width, channels] with the file's own channels (1 to 4).
    """
    image = tf.io.decode_image(contents, channels=0, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, None])
    return image


def to_channels(image, channels):
    """Brings a uint8 or float image [..., C] with C in 1..4 to ``channels`` (1 or 3), as float32.

    Grey and RGB pass through unchanged; see the module docstring for the rest.
    """
    x = tf.cast(image, tf.float32)
    have = tf.shape(x)[-1]
    if channels == 3:
        rank = len(x.shape)
        tiles = [1] * (rank - 1) + [3]
        out = tf.cond(have >= 3, lambda: x[..., :3], lambda: tf.tile(x[..., :1], tiles))
    else:
        out = tf.cond(have >= 3, lambda: tf.image.rgb_to_grayscale(x[..., :3]), lambda: x[..., :1])
    out.set_shape(x.shape[:-1].concatenate([channels]))
    return out


def fit_and_pad(image, height, width):
    """Resizes float images [..., h, w, C] to [..., height, width, C], keeping their aspect ratio.

    An image already of that size is returned unchanged, bit for bit. Others are resized
    (bilinear, antialiased) until they fit and padded with zeros, centred.
    """
    shape = tf.shape(image)
    h, w = shape[-3], shape[-2]

    def resize():
        scale = tf.minimum(height / tf.cast(h, tf.float64), width / tf.cast(w, tf.float64))
        new_h = tf.clip_by_value(tf.cast(tf.round(tf.cast(h, tf.float64) * scale), tf.int32), 1, height)
        new_w = tf.clip_by_value(tf.cast(tf.round(tf.cast(w, tf.float64) * scale), tf.int32), 1, width)
        resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        return tf.image.pad_to_bounding_box(resized, top, left, height, width)

    same = tf.logical_and(tf.equal(h, height), tf.equal(w, width))
    out = tf.cond(same, lambda: tf.identity(image), resize)
    out.set_shape(image.shape[:-3].concatenate([height, width, image.shape[-1]]))
    return out


def preprocess(image, spec):
    """The network's input from decoded uint8 images [H, W, C] or [N, H, W, C] of any size and C.

    Args:
      image: uint8 tensor, 3-D or 4-D, with 1 to 4 channels.
      spec: the network's :class:`InputSpec`.

    Returns:
      float32 tensor [..., spec.height, spec.width, spec.channels] in [0, 1]; for a grey
      image already of the network's size it equals ``uint8 / 255`` exactly, as the IDX
      pipeline computes it.
    """
    fitted = fit_and_pad(to_channels(image, spec.channels), spec.height, spec.width)
    return tf.clip_by_value(fitted, 0.0, 255.0) / 255.0


def _decode_file(path, spec):
    return preprocess(decode(tf.io.read_file(path)), spec)


def _path_bytes(paths):
    """Paths as an object array of bytes: TensorFlow reads any name given as bytes, while a str
    with bytes that are not UTF-8 (surrogate escapes) cannot become a string tensor."""
    array = np.empty(len(paths), dtype=object)
    array[:] = [os.fsencode(path) for path in paths]
    return array


def make_dataset(files, labels, spec, batch_size=None, num_parallel_calls=tf.data.AUTOTUNE):
    """A tf.data pipeline of decoded, preprocessed images from files, in the files' order.

    Decoding runs in a parallel map (deterministic order) with prefetching; nothing but the
    paths is held in memory. Works in graph mode (build it inside the graph that uses it)
    and eagerly.

    Args:
      files: sequence of image paths (e.g. a :class:`Split`'s files, already checked by scan).
      labels: int sequence [len(files)].
      spec: the network's :class:`InputSpec`.
      batch_size: batch the output (last batch may be short); None yields single images.
      num_parallel_calls: decoders running at once.

    Returns:
      ``tf.data.Dataset`` of (float32 [H, W, C] in [0, 1], int32 label), batched if asked.

    Raises:
      ValueError: files and labels of different lengths.
    """
    files, labels = _path_bytes(files), np.asarray(labels, np.int32)
    if labels.shape != (len(files),):
        raise ValueError(f"expected {len(files)} labels, got shape {labels.shape}")
    dataset = tf.data.Dataset.from_tensor_slices((tf.constant(files, tf.string), labels))
    dataset = dataset.map(
        lambda p, y: (_decode_file(p, spec), y), num_parallel_calls=num_parallel_calls, deterministic=True
    )
    if batch_size is not None:
        dataset = dataset.batch(batch_size)
    return dataset.prefetch(2)


def iterate_images(files, spec, batch_size=256):
    """Yields the files decoded as float32 batches [n, H, W, C] in [0, 1], in order.

    Decoding runs in tf.data in a graph and session of its own, so it can be called from
    anywhere, graph context or not, and only a batch or two is in memory at a time.

    Raises:
      DataError: a file that no longer decodes (changed since the folder was scanned).
    """
    if not files:
        return
    with tf.Graph().as_default() as graph:
        batches = make_dataset(files, np.zeros(len(files), np.int32), spec, batch_size)
        images = tf.compat.v1.data.make_one_shot_iterator(batches).get_next()[0]
        with tf.compat.v1.Session(graph=graph) as sess:
            for _ in range(-(-len(files) // batch_size)):
                try:
                    with native_stderr_silenced():
                        batch = sess.run(images)
                except tf.errors.OpError as error:
                    raise DataError(f"an image file changed since the folder was checked: {one_line(error)}") from None
                yield batch


def read_images(files, spec, batch_size=256):
    """Decodes files into one float32 array [N, H, W, C] in [0, 1], for a small evaluation set."""
    chunks = list(iterate_images(files, spec, batch_size))
    if not chunks:
        return np.zeros([0, spec.height, spec.width, spec.channels], np.float32)
    return np.concatenate(chunks)


class FileBatches:
    """Training batches decoded from image files, in the order of an index stream.

    The counterpart of :class:`data.pipeline.BatchInput` for an image folder: the same
    :func:`data.pipeline.index_stream` gives the same files in the same order on a resumed
    run; only the paths are in memory, each batch is read and decoded (parallel map,
    prefetch) when the pipeline reaches it.

    Attributes:
      images: float32 [None, H, W, C] in [0, 1], the next batch.
      labels: int32 [None], the next batch's labels.
      initializer: the iterator's initializer op.
    """

    def __init__(self, batch_size, spec, name="file_input", num_parallel_calls=tf.data.AUTOTUNE):
        self.batch_size, self.spec = batch_size, spec
        with tf.compat.v1.name_scope(name):
            self._paths_ph = tf.compat.v1.placeholder(tf.string, [None], name="all_paths")
            self._labels_ph = tf.compat.v1.placeholder(tf.int32, [None], name="all_labels")
            self._indices = pipeline.IndexBatches(batch_size)
            dataset = (
                self._indices.dataset.unbatch()
                .map(
                    lambda i: (_decode_file(tf.gather(self._paths_ph, i), spec), tf.gather(self._labels_ph, i)),
                    num_parallel_calls=num_parallel_calls,
                    deterministic=True,
                )
                .batch(batch_size)
                .prefetch(2)
            )
            iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
            self.initializer = iterator.initializer
            self.images, self.labels = iterator.get_next(name="next_batch")

    def initialize(self, sess, files, labels, index_stream):
        """(Re)starts the pipeline on the given files and index stream.

        Args:
          sess: a session on the pipeline's graph.
          files: sequence of N image paths.
          labels: int array [N].
          index_stream: from :func:`data.pipeline.index_stream` over N examples.

        Raises:
          ValueError: labels of the wrong shape or a stream that does not fit.
        """
        labels = np.asarray(labels)
        if labels.shape != (len(files),):
            raise ValueError(f"expected labels [{len(files)}], got {labels.shape}")
        feed = self._indices.feed(index_stream, len(files))
        feed.update(
            {
                self._paths_ph: _path_bytes(files),
                self._labels_ph: labels.astype(np.int32),
            }
        )
        sess.run(self.initializer, feed_dict=feed)


def _over_the_bound(paths):
    """Returns {index: reason} of the files that must not be decoded (data.image_header's rule).

    Their headers are read, nothing is decoded: an image of more pixels than
    image_header.MAX_PIXELS, or whose header does not tell its size, is refused with its
    size in the reason; a file that is no longer a regular file is refused too.
    """
    refused = {}
    for i, path in enumerate(paths):
        try:
            reason = image_header.file_refusal(path)
        except OSError as e:
            reason = str(e) if isinstance(e, image_header.NotARegularFile) else f"cannot read: {one_line(e)}"
        if reason is not None:
            refused[i] = reason
    return refused


def _find_bad(paths):
    """Decodes every path once; returns {index: reason} for the ones that fail.

    No file is decoded before its header passed the pixel bound (:func:`_over_the_bound`):
    the files over it are failures without being decoded. The others are decoded in a
    parallel tf.data map whose errors are dropped (ignore_errors), which leaves the
    survivors; only the few failures are decoded again one by one, to learn each one's
    reason.
    """
    failures = _over_the_bound(paths)
    kept = [i for i in range(len(paths)) if i not in failures]
    failures.update({kept[j]: reason for j, reason in _decode_failures([paths[i] for i in kept]).items()})
    return dict(sorted(failures.items()))


def _decode_failures(paths):
    """Decodes every path once in tf.data; returns {index: reason} for the ones that fail."""
    if not paths:
        return {}
    with tf.Graph().as_default() as graph:
        paths_ph = tf.compat.v1.placeholder(tf.string, [None])
        dataset = (
            tf.data.Dataset.from_tensor_slices(
                (tf.range(tf.size(paths_ph, out_type=tf.int64), dtype=tf.int64), paths_ph)
            )
            .map(lambda i, p: (i, tf.shape(decode(tf.io.read_file(p)))), num_parallel_calls=tf.data.AUTOTUNE)
            .ignore_errors()
            .batch(_VALIDATION_BATCH)
        )
        iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
        next_ids = iterator.get_next()[0]
        one_path = tf.compat.v1.placeholder(tf.string, [])
        decode_one = tf.shape(decode(tf.io.read_file(one_path)))
        good = np.zeros(len(paths), bool)
        failures = {}
        # The JPEG library prints its complaints straight to the process's stderr; the
        # reasons are reported below, once per file, in our words.
        with tf.compat.v1.Session(graph=graph) as sess, native_stderr_silenced():
            sess.run(iterator.initializer, {paths_ph: _path_bytes(paths)})
            while True:
                try:
                    good[sess.run(next_ids)] = True
                except tf.errors.OutOfRangeError:
                    break
            for i in np.flatnonzero(~good):
                try:
                    # A file that decodes on its own (a read that failed once) is good: keep it.
                    sess.run(decode_one, {one_path: os.fsencode(paths[i])})
                except tf.errors.OpError as e:
                    failures[int(i)] = f"cannot decode: {one_line(e)}"
    return failures


def _gather(root, layout_dirs):
    """Lists each split folder: ({split dir key: {class: [(rel, path)]}}, ignored paths, links to folders)."""
    listing, ignored, folder_links = {}, [], []
    # Files lying beside the class folders belong to no class: listed, so a folder whose
    # images were never sorted into class folders does not look empty for no reason.
    for directory in sorted({root, *layout_dirs.values()}):
        _, files, links = _entries_of(directory)
        ignored += files
        folder_links += links
    for key, directory in layout_dirs.items():
        per_class = {}
        for name in _class_dirs(directory):
            files, skipped, links = _list_class(os.path.join(directory, name))
            per_class[name] = files
            ignored += skipped
            folder_links += links
        listing[key] = per_class
    return listing, ignored, folder_links


def scan(root, validation_percent=10.0, test_percent=10.0, min_per_class=1):
    """Lists, checks and splits an image folder, before anything trains.

    Args:
      root: the image folder (see the module docstring for its layout).
      validation_percent: share of each class's files for validation, by hash; also how
        validation is carved from ``train/`` when the folder has no ``val/``. 0 leaves the
        validation split empty (for a caller that carves its own).
      test_percent: share for test, by hash; unused when the folder has ``train/``/``test/``.
      min_per_class: fewest usable training images a class may have (at least 1).

    Returns:
      A :class:`FolderScan`.

    Raises:
      DataError: not a folder; fewer than 2 classes; percentages out of range; a class
        whose every image is bad; nothing decodable; a class with no image in a split
        that should have some, or with fewer than ``min_per_class`` training images; a
        ``train/``/``test/`` layout whose splits have different classes.
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    _check_arguments(root, validation_percent, test_percent, min_per_class)
    layout, dirs = _layout(root, validation_percent, test_percent)
    listing, ignored, folder_links = _gather(root, dirs)
    class_names = _class_names_of(root, layout, dirs, listing, folder_links)
    entries = _entries(root, listing, class_names, dirs, validation_percent, test_percent)
    entries, duplicates = _one_name_per_file(root, entries, class_names)
    bad_of, renamed, digests = _check_files(entries)
    usable = _usable(root, entries, bad_of, class_names)
    result = FolderScan(
        root=root,
        layout=layout,
        class_names=class_names,
        splits=_splits(usable, digests),
        bad=tuple(bad_of.values()),
        renamed=renamed,
        ignored=tuple(ignored),
        validation_percent=float(validation_percent),
        test_percent=float(test_percent),
        folder_links=tuple(folder_links),
        duplicates=duplicates,
    )
    _check_counts(result, min_per_class, has_validation_dir="validation" in dirs)
    return result


def _check_arguments(root, validation_percent, test_percent, min_per_class):
    if not os.path.isdir(root):
        raise DataError(
            f"image folder {shown(root)} " + ("is not a directory" if os.path.exists(root) else "does not exist")
        )
    for flag, value in (("--validation-percent", validation_percent), ("--test-percent", test_percent)):
        if not 0 <= value < 100:
            raise DataError(f"{flag} must be in [0, 100), got {value}")
    if min_per_class < 1:
        raise DataError(f"the minimum number of images per class must be at least 1, got {min_per_class}")


def _layout(root, validation_percent, test_percent):
    """Returns the layout ("subfolders" or "hash") and {split dir key: folder} to list."""
    top = _class_dirs(root)
    if "train" not in top or "test" not in top:
        if test_percent + validation_percent >= 100:
            raise DataError(
                f"--validation-percent {validation_percent} and --test-percent {test_percent} leave nothing to train on"
            )
        return "hash", {"all": root}
    val_dirs = [d for d in VALIDATION_DIR_NAMES if d in top]
    if len(val_dirs) > 1:
        raise DataError(f"image folder {shown(root)} has both val/ and validation/: keep one")
    extra = sorted(set(top) - {"train", "test", *val_dirs})
    if extra:
        raise DataError(
            f"image folder {shown(root)} has train/ and test/, and also {', '.join(shown(d) + '/' for d in extra)}: "
            "with train/ and test/, only val/ or validation/ may sit beside them"
        )
    dirs = {"train": os.path.join(root, "train"), "test": os.path.join(root, "test")}
    if val_dirs:
        dirs["validation"] = os.path.join(root, val_dirs[0])
    return "subfolders", dirs


def class_name_problem(name):
    """Why a folder name cannot be a class name, or None when it can.

    A class name is written to labels.txt, one per line in UTF-8, and must read back the
    same: bytes that are not UTF-8, a line break or another control character, or a name
    that is only blanks (a reader skips blank lines) cannot.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8"
    odd = next((c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if odd is not None:
        return f"its name holds the control character {odd.encode('unicode_escape').decode('ascii')}"
    if not name.strip():
        return "its name is blank"
    return None


def _class_names_of(root, layout, dirs, listing, folder_links):
    """Returns the sorted class names; with train/ and test/, every split folder must hold the same."""
    for key, per_class in listing.items():
        for name in per_class:
            problem = class_name_problem(name)
            if problem is not None:
                raise DataError(
                    f"image folder {shown(root)}: the class folder {shown(os.path.join(dirs[key], name))} "
                    f"cannot name a class ({problem}; labels.txt holds one UTF-8 name per line): rename it"
                )
    class_names = tuple(sorted(listing["train" if layout == "subfolders" else "all"]))
    if layout == "subfolders":
        for key, per_class in listing.items():
            if set(per_class) != set(class_names):
                missing = sorted(set(class_names) - set(per_class))
                unknown = sorted(set(per_class) - set(class_names))
                detail = "; ".join(
                    filter(
                        None,
                        [
                            missing and f"lacks {', '.join(missing)}",
                            unknown and f"has classes train/ lacks: {', '.join(unknown)}",
                        ],
                    )
                )
                raise DataError(
                    f"image folder {shown(root)}: {os.path.basename(dirs[key])}/ {detail}; "
                    f"train/ has {', '.join(class_names)}"
                )
    if len(class_names) < 2:
        found = f"only {class_names[0]!r}" if class_names else "none"
        # Class folders that are links were skipped: say so, or "found none" would be a riddle.
        top = [link for link in folder_links if os.path.dirname(link) in {root, *dirs.values()}]
        skipped = f" ({len(top)} links to folders not followed: {', '.join(map(_link_shown, top[:3]))})" if top else ""
        raise DataError(f"image folder {shown(root)} needs at least 2 class subfolders, found {found}{skipped}")
    return class_names


def _entries(root, listing, class_names, dirs, validation_percent, test_percent):
    """Returns every image file as (split, label, path), in a fixed order (split folder, class, relative path)."""
    entries = []
    for key, per_class in listing.items():
        for label, name in enumerate(class_names):
            for rel, path in per_class[name]:
                if key == "all":
                    split = split_of(rel, validation_percent, test_percent)
                elif key == "train" and "validation" not in dirs:
                    split = split_of(rel, validation_percent, 0.0)
                else:
                    split = key
                entries.append((split, label, path))
    if not entries:
        raise DataError(
            f"image folder {shown(root)} holds no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class folders"
        )
    return entries


def _one_name_per_file(root, entries, class_names):
    """Keeps each file once: its first name in listing order; a later name in the same class is a duplicate.

    A file is known by its device and inode, so links and hard links to it are other names.
    Names that lead to nothing (broken links) are kept, to be reported as bad files.

    Returns:
      (entries kept, tuple of :class:`BadFile` of the names dropped).

    Raises:
      DataError: one file under two classes, naming both.
    """
    first_of, kept, duplicates = {}, [], []
    for entry in entries:
        _, label, path = entry
        try:
            info = os.stat(path)
        except OSError:
            kept.append(entry)
            continue
        key = (info.st_dev, info.st_ino)
        if key not in first_of:
            first_of[key] = entry
            kept.append(entry)
            continue
        _, first_label, first_path = first_of[key]
        if first_label != label:
            raise DataError(
                f"image folder {shown(root)}: {shown(_below(first_path, root))} (class {class_names[first_label]!r}) "
                f"and {shown(_below(path, root))} (class {class_names[label]!r}) are the same file (a link or a hard "
                "link): an image cannot belong to two classes; remove one of them"
            )
        duplicates.append(BadFile(path, f"the same file as {shown(_below(first_path, root))}, used once"))
    return kept, tuple(duplicates)


def _below(path, root):
    return path[len(root) :].lstrip(os.sep)


def _sha256_of(path):
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _check_files(entries):
    """Prechecks, reads and decodes every file once.

    Files are prechecked by their first bytes; the ones that pass are read whole for their
    sha256, then decoded by :func:`_find_bad`.

    Returns:
      ({entry index: BadFile} of the files that cannot be used, in index order; the renamed
      files; {path: sha256} of the files read).
    """
    reasons, renamed, digests = {}, [], {}
    for i, (_, _, path) in enumerate(entries):
        reason, content = _precheck(path)
        if reason is None:
            try:
                digests[path] = _sha256_of(path)
            except OSError as e:
                reason = f"cannot read: {one_line(e)}"
        if reason is not None:
            reasons[i] = reason
        elif content != _FORMAT_OF_EXTENSION[os.path.splitext(path)[1].lower()]:
            renamed.append(BadFile(path, f"its content is {content}, its extension {os.path.splitext(path)[1]}"))
    candidates = [i for i in range(len(entries)) if i not in reasons]
    for j, reason in _find_bad([entries[i][2] for i in candidates]).items():
        reasons[candidates[j]] = reason
    bad_of = {i: BadFile(entries[i][2], reasons[i]) for i in sorted(reasons)}
    bad_paths = {b.path for b in bad_of.values()}
    return bad_of, tuple(r for r in renamed if r.path not in bad_paths), digests


def _usable(root, entries, bad_of, class_names):
    """Returns the entries that decode.

    Raises:
      DataError: no file decodes, or every file of a class is bad.
    """
    if len(bad_of) == len(entries):
        first = next(iter(bad_of.values()))
        raise DataError(
            f"image folder {shown(root)}: none of its {len(entries)} image files can be decoded "
            f"(first: {shown(first.path)}: {first.reason})"
        )
    usable = [e for i, e in enumerate(entries) if i not in bad_of]
    for label, name in enumerate(class_names):
        total = sum(1 for e in entries if e[1] == label)
        if total and not any(e[1] == label for e in usable):
            first = next(b for i, b in bad_of.items() if entries[i][1] == label)
            raise DataError(
                f"image folder {shown(root)}: every one of the {total} image files of class {name!r} "
                f"is bad (first: {shown(first.path)}: {first.reason})"
            )
    return usable


def _splits(usable, digests):
    splits = {}
    for split in SPLITS:
        chosen = [(label, path) for s, label, path in usable if s == split]
        splits[split] = Split(
            tuple(p for _, p in chosen),
            np.array([label for label, _ in chosen], np.int64),
            tuple(digests[p] for _, p in chosen),
        )
    return splits


def _check_counts(result, min_per_class, has_validation_dir):
    """Every class has at least min_per_class training images and one image in each split that should have some."""
    expected = {
        "train": min_per_class,
        "validation": 1 if (result.validation_percent > 0 or has_validation_dir) else 0,
        "test": 1 if (result.layout == "subfolders" or result.test_percent > 0) else 0,
    }
    for name, per_split in result.counts().items():
        for split, need in expected.items():
            if per_split[split] < need:
                counts = ", ".join(f"{s} {per_split[s]}" for s in SPLITS)
                hint = "add images to it" + (
                    "" if result.layout == "subfolders" or split == "train" else f" or lower --{split}-percent"
                )
                raise DataError(
                    f"image folder {shown(result.root)}: class {name!r} has {per_split[split]} usable images in "
                    f"{split} ({counts}), needs at least {need}: {hint}"
                )
