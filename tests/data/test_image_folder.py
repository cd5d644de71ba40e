"""Image folders: layout, decoding of every format and colour mode, a stable split, bad files reported."""

import io
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import image_folder as imf
from data import make_image_folder, pipeline, sources
from runtime.errors import DataError, UserError

GREY = imf.MNIST_INPUT
RGB = imf.InputSpec(28, 28, 3)


def encode(array, fmt, mode=None, **options):
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def digits_folder(root, per_class=12, classes=("a", "b", "c"), seed=0, size=28):
    """A folder of random grey PNGs; returns {path: uint8 array} of what was written."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in classes:
        for i in range(per_class):
            array = rng.integers(0, 256, (size, size), dtype=np.uint8)
            written[write(os.path.join(root, name, f"img_{i:03d}.png"), encode(array, "PNG"))] = array
    return written


def decode_with(spec, data):
    """Decodes encoded bytes inside tf.data, as the training pipeline does.

    (In a plain session graph, grappler turns the division by 255 into a multiplication by
    its reciprocal, one ulp away; tf.data functions keep the division, as BatchInput does.)
    """
    many = isinstance(data, list)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        contents = tf.constant(data if many else [data])
        dataset = tf.data.Dataset.from_tensor_slices(contents).map(lambda c: imf.preprocess(imf.decode(c), spec))
        decoded = sess.run(tf.compat.v1.data.make_one_shot_iterator(dataset.batch(64)).get_next())
    return list(decoded) if many else decoded[0]


# --- layout ----------------------------------------------------------------------------


def test_classes_nested_and_hidden_files(tmp_path):
    digits_folder(tmp_path, per_class=10, classes=("zebra", "ant"))
    nested = write(tmp_path / "ant" / "deep" / "deeper" / "nested.png", encode(np.zeros((28, 28), np.uint8), "PNG"))
    write(tmp_path / "ant" / ".hidden.png", b"not even an image")
    write(tmp_path / "ant" / ".cache" / "x.png", b"not even an image")
    write(tmp_path / ".thumbnails" / "t.png", b"not an image")
    notes = write(tmp_path / "zebra" / "notes.txt", b"some words")
    loose = write(tmp_path / "unsorted.png", encode(np.zeros((28, 28), np.uint8), "PNG"))
    result = imf.scan(tmp_path, validation_percent=0, test_percent=0)
    assert result.class_names == ("ant", "zebra") and result.layout == "hash"
    train = result.splits["train"]
    assert len(train) == 21 and nested in train.files
    assert train.labels[list(train.files).index(nested)] == 0
    assert result.bad == () and result.ignored == (loose, notes)
    lines = result.report_lines()
    assert lines[0] == f"image folder {tmp_path}: 2 classes, train 21, validation 0, test 0 (hash split)"
    assert "ignored 2 files outside the class folders or without an image extension" in lines[1]
    assert lines[2] == "warning: fewer than 20 training images in class ant (11), zebra (10)"
    assert result.counts() == {
        "ant": {"train": 11, "validation": 0, "test": 0},
        "zebra": {"train": 10, "validation": 0, "test": 0},
    }
    assert imf.is_image_folder(tmp_path)


def test_idx_dir_and_empty_dirs_are_not_image_folders(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    assert not imf.is_image_folder(tmp_path / "empty")
    assert not imf.is_image_folder(tmp_path / "missing")
    digits_folder(tmp_path / "idx", per_class=1)
    write(tmp_path / "idx" / "train-images-idx3-ubyte.gz", b"")
    assert not imf.is_image_folder(tmp_path / "idx")


def test_a_folder_of_images_without_class_subfolders_says_so(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "img00.png").write_bytes(b"not read")
    (flat / ".hidden").mkdir()
    with pytest.raises(DataError) as caught:
        imf.check_not_flat(flat)
    assert str(caught.value) == (
        f"{flat} holds image files but no class subfolders: an image folder holds one subfolder of images per "
        "class (or train/ and test/ holding those), named after the class"
    )
    digits_folder(tmp_path / "classes", per_class=1)
    (tmp_path / "classes" / "stray.png").write_bytes(b"x")
    for fine in (tmp_path / "classes", tmp_path / "missing", tmp_path / "classes" / "0" / ".."):
        imf.check_not_flat(fine)  # an image folder, a missing path (the IDX reader says so)


# --- decoding and preprocessing ------------------------------------------------------


def test_grey_png_at_network_size_is_bit_identical_to_the_idx_pipeline():
    array = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    got = decode_with(GREY, encode(array, "PNG"))
    np.testing.assert_array_equal(got, pipeline.to_float_images(array[None])[0])


def test_every_format_and_colour_mode():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    expected_grey = (rgb.astype(np.float32) @ np.array([0.2989, 0.587, 0.114], np.float32))[..., None] / 255.0

    # Lossless containers: exact (up to the luma formula's rounding) in both channel counts.
    cases = [("PNG", None), ("PNG", "RGBA"), ("BMP", None), ("BMP", "RGBA"), ("WEBP", None)]
    data = [encode(rgb, fmt, mode, **({"lossless": True} if fmt == "WEBP" else {})) for fmt, mode in cases]
    for case, as_rgb, as_grey in zip(cases, decode_with(RGB, data), decode_with(GREY, data)):
        np.testing.assert_allclose(as_rgb, rgb / 255.0, atol=1e-6, err_msg=str(case))
        np.testing.assert_allclose(as_grey, expected_grey, atol=1e-5, err_msg=str(case))

    grey8 = np.asarray(Image.fromarray(rgb).convert("L"))
    cases = [("PNG", "L"), ("PNG", "LA"), ("BMP", "L")]
    data = [encode(rgb, fmt, mode) for fmt, mode in cases]
    for case, as_grey, as_rgb in zip(cases, decode_with(GREY, data), decode_with(RGB, data)):
        np.testing.assert_array_equal(as_grey[..., 0], grey8 / np.float32(255.0), err_msg=str(case))
        np.testing.assert_array_equal(as_rgb, np.repeat(grey8[..., None], 3, -1) / np.float32(255.0), err_msg=str(case))

    # A palette PNG decodes to its palette's colours; a 16-bit grey PNG to its high byte.
    palette = Image.fromarray(rgb).convert("P")
    out = io.BytesIO()
    palette.save(out, "PNG")
    deep = (grey8.astype(np.uint16) * 257).astype(np.uint16)
    got_palette, got_deep = decode_with(RGB, [out.getvalue()]) + decode_with(GREY, [encode(deep, "PNG")])
    np.testing.assert_allclose(got_palette, np.asarray(palette.convert("RGB")) / 255.0, atol=1e-6)
    np.testing.assert_allclose(got_deep[..., 0], grey8 / 255.0, atol=1e-6)

    # Lossy JPEG, RGB and CMYK, near the source (flat colour patches so JPEG keeps them).
    patches = np.zeros((28, 28, 3), np.uint8)
    patches[:, :14], patches[:, 14:] = (200, 30, 60), (10, 220, 90)
    for mode, got in zip(
        ("RGB", "CMYK"), decode_with(RGB, [encode(patches, "JPEG", m, quality=95) for m in (None, "CMYK")])
    ):
        assert np.abs(got[4:24, 2:10] - patches[4:24, 2:10] / 255.0).max() < 12 / 255.0, mode
        assert np.abs(got[4:24, 18:26] - patches[4:24, 18:26] / 255.0).max() < 12 / 255.0, mode
    # A grey JPEG decodes as Pillow decodes it, give or take the IDCT's rounding (TensorFlow's is the fast one).
    grey_jpeg = encode(rgb, "JPEG", "L", quality=90)
    pillow = np.asarray(Image.open(io.BytesIO(grey_jpeg)), np.float32) / 255.0
    diff = np.abs(decode_with(GREY, grey_jpeg)[..., 0] - pillow)
    assert diff.max() <= 4 / 255.0 + 1e-6 and diff.mean() < 1 / 255.0


def test_gif_first_frame():
    rng = np.random.default_rng(3)
    frames = [Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).convert("P") for _ in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    first = np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"))
    np.testing.assert_allclose(decode_with(RGB, out.getvalue()), first / 255.0, atol=1e-6)


def test_other_sizes_keep_their_aspect_and_are_padded_black():
    wide = np.full((14, 56), 255, np.uint8)  # 1:4, fits as 7 x 28
    got = decode_with(GREY, encode(wide, "PNG"))[..., 0]
    assert got.shape == (28, 28)
    rows = np.flatnonzero(got.max(axis=1) > 0.5)
    assert rows.tolist() == list(range(10, 17))
    np.testing.assert_allclose(got[10:17], 1.0, atol=1e-6)
    assert got[:10].max() == 0.0 and got[17:].max() == 0.0
    big = np.zeros((300, 300), np.uint8)
    big[100:200, 100:200] = 255  # a centred square keeps its place and its share
    small = decode_with(GREY, encode(big, "PNG"))[..., 0]
    assert abs(small.mean() - 1 / 9) < 0.01 and small[14, 14] == pytest.approx(1.0)


# --- split -------------------------------------------------------------------------------


def test_hash_split_is_stable_when_the_folder_moves(tmp_path):
    digits_folder(tmp_path / "one", per_class=60, classes=("x", "y"), size=8)
    first = imf.scan(tmp_path / "one", validation_percent=20, test_percent=30)
    shutil.copytree(tmp_path / "one", tmp_path / "elsewhere" / "two")
    shutil.move(str(tmp_path / "one"), str(tmp_path / "moved"))
    for other in (imf.scan(tmp_path / "elsewhere" / "two", 20, 30), imf.scan(tmp_path / "moved", 20, 30)):
        for split in imf.SPLITS:
            rel = [os.path.relpath(f, first.root) for f in first.splits[split].files]
            assert rel == [os.path.relpath(f, other.root) for f in other.splits[split].files]
            np.testing.assert_array_equal(first.splits[split].labels, other.splits[split].labels)
    # The split follows the documented hash of the path inside the class folder.
    for split in imf.SPLITS:
        for f in first.splits[split].files:
            assert imf.split_of(os.path.basename(f), 20, 30) == split
    sizes = [len(first.splits[s]) for s in imf.SPLITS]
    assert sum(sizes) == 120 and 45 <= sizes[0] <= 75 and 10 <= sizes[1] <= 40 and 20 <= sizes[2] <= 55


def test_train_and_test_subfolders_are_used_as_given(tmp_path):
    digits_folder(tmp_path / "train", per_class=30, classes=("a", "b"), size=8)
    test_files = digits_folder(tmp_path / "test", per_class=4, classes=("a", "b"), seed=1, size=8)
    result = imf.scan(tmp_path, validation_percent=20, test_percent=50)
    assert result.layout == "subfolders" and result.class_names == ("a", "b")
    assert sorted(result.splits["test"].files) == sorted(test_files)
    # No val/: validation is carved from train/ by the same hash (test_percent is not used).
    assert len(result.splits["train"]) + len(result.splits["validation"]) == 60
    for f in result.splits["validation"].files:
        assert imf.split_of(os.path.basename(f), 20, 0) == "validation"
    digits_folder(tmp_path / "val", per_class=2, classes=("a", "b"), seed=2, size=8)
    with_val = imf.scan(tmp_path, validation_percent=20)
    assert len(with_val.splits["validation"]) == 4 and len(with_val.splits["train"]) == 60
    assert all("/val/" in f for f in with_val.splits["validation"].files)


def test_split_subfolders_with_different_classes(tmp_path):
    digits_folder(tmp_path / "train", per_class=3, classes=("a", "b", "c"), size=8)
    digits_folder(tmp_path / "test", per_class=3, classes=("a", "b"), size=8)
    with pytest.raises(DataError, match=r"test/ lacks c; train/ has a, b, c"):
        imf.scan(tmp_path)


def test_a_class_left_without_validation_images_is_named_with_its_counts(tmp_path):
    digits_folder(tmp_path, per_class=200, classes=("big",), size=4)
    digits_folder(tmp_path, per_class=2, classes=("tiny",), size=4)
    with pytest.raises(DataError) as info:
        imf.scan(tmp_path, validation_percent=10, test_percent=10)
    message = str(info.value)
    assert "class 'tiny' has 0 usable images in" in message and "\n" not in message
    assert "--" in message and "percent" in message
    counts = imf.scan(tmp_path, 0, 0).counts()
    assert counts["tiny"]["train"] == 2
    with pytest.raises(
        DataError,
        match=r"class 'tiny' has 2 usable images in train \(train 2, validation 0, test 0\), needs at least 5",
    ):
        imf.scan(tmp_path, 0, 0, min_per_class=5)
    # The files the scan skipped are named, though it ends before its report.
    (tmp_path / "tiny" / "zz_broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError) as info:
        imf.scan(tmp_path, 0, 0, min_per_class=5)
    assert str(info.value).endswith(
        f"(skipped as unreadable: 1 of its files, first {tmp_path / 'tiny' / 'zz_broken.png'}: not an image: its "
        "content is none of JPEG, PNG, GIF, BMP or WebP)"
    )


@pytest.mark.parametrize(
    "make, expected",
    [
        (
            lambda p: digits_folder(p, per_class=3, classes=("only",), size=8),
            "needs at least 2 class subfolders, found only 'only'",
        ),
        (lambda p: (p / "a").mkdir() or (p / "b").mkdir(), "holds no image files"),
        (lambda p: write(p / "a" / "x.txt", b"words"), "needs at least 2 class subfolders, found only 'a'"),
    ],
)
def test_folders_that_cannot_train(tmp_path, make, expected):
    make(tmp_path)
    with pytest.raises(DataError, match=expected):
        imf.scan(tmp_path)


def test_percentages_and_paths_are_checked(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        imf.scan(tmp_path / "nope")
    write(tmp_path / "file", b"")
    with pytest.raises(DataError, match="is not a directory"):
        imf.scan(tmp_path / "file")
    with pytest.raises(DataError, match=r"--validation-percent must be in \[0, 100\), got 100"):
        imf.scan(tmp_path, validation_percent=100)
    with pytest.raises(DataError, match="leave nothing to train on"):
        imf.scan(tmp_path, validation_percent=50, test_percent=50)


# --- bad files ---------------------------------------------------------------------------


def test_exactly_the_four_bad_files_are_reported_and_the_rest_used(tmp_path):
    good = digits_folder(tmp_path, per_class=10, classes=("cat", "dog"), size=16)
    jpeg = encode(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8), "JPEG")
    bad = {
        write(tmp_path / "cat" / "truncated.jpg", jpeg[: len(jpeg) // 2]): "cannot decode",
        write(tmp_path / "cat" / "zero.png", b""): "empty file (0 bytes)",
        write(tmp_path / "dog" / "text.png", b"this is not a picture\n"): "not an image",
    }
    link = str(tmp_path / "dog" / "gone.jpg")
    os.symlink(str(tmp_path / "nowhere.jpg"), link)
    bad[link] = "broken symbolic link"
    result = imf.scan(tmp_path, validation_percent=0, test_percent=0)
    assert sorted(b.path for b in result.bad) == sorted(bad)
    for b in result.bad:
        assert b.reason.startswith(bad[b.path]) and "\n" not in b.reason
    assert sorted(result.splits["train"].files) == sorted(good)
    summary = result.describe()
    assert summary["num_bad_files"] == 4 and len(summary["bad_files"]) == 4
    lines = result.report_lines()
    assert lines[1] == "skipped 4 image files that cannot be decoded:"
    assert sum(any(path in line for line in lines) for path in bad) == 4
    # The survivors stream through tf.data without an error.
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        batch = tf.compat.v1.data.make_one_shot_iterator(
            imf.make_dataset(result.splits["train"].files, result.splits["train"].labels, GREY, 20)
        ).get_next()
        images, labels = sess.run(batch)
    assert images.shape == (20, 28, 28, 1) and sorted(labels.tolist()) == [0] * 10 + [1] * 10


def test_a_bmp_named_jpg_is_decoded_by_its_content_and_listed(tmp_path):
    digits_folder(tmp_path, per_class=3, classes=("a", "b"), size=8)
    array = np.random.default_rng(4).integers(0, 256, (28, 28), dtype=np.uint8)
    renamed = write(tmp_path / "a" / "really_a_bmp.jpg", encode(array, "BMP"))
    result = imf.scan(tmp_path, 0, 0)
    assert result.bad == () and renamed in result.splits["train"].files
    assert [(r.path, r.reason) for r in result.renamed] == [(renamed, "its content is BMP, its extension .jpg")]
    np.testing.assert_array_equal(imf.read_images([renamed], GREY)[0], pipeline.to_float_images(array[None])[0])


def test_a_class_whose_every_file_is_bad(tmp_path):
    digits_folder(tmp_path, per_class=3, classes=("good",), size=8)
    write(tmp_path / "broken" / "a.png", b"")
    write(tmp_path / "broken" / "b.jpg", b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(
        DataError, match=r"every one of the 2 image files of class 'broken' is bad \(first: .*a.png: empty file"
    ):
        imf.scan(tmp_path, 0, 0)


def test_a_folder_where_nothing_decodes(tmp_path):
    write(tmp_path / "a" / "x.png", b"nope")
    write(tmp_path / "b" / "y.gif", b"GIF89a but nothing else")
    with pytest.raises(DataError, match=r"none of its 2 image files can be decoded"):
        imf.scan(tmp_path, 0, 0)


# --- streaming in training order -------------------------------------------------------


def test_file_batches_serve_the_index_stream_like_batch_input(tmp_path):
    written = digits_folder(tmp_path, per_class=9, classes=("a", "b", "c"))
    result = imf.scan(tmp_path, 0, 0)
    files, labels = result.splits["train"].files, result.splits["train"].labels
    arrays = np.stack([written[f] for f in files])
    batch, seed, total = 5, 4, 13  # 5 steps an epoch: crosses two epoch boundaries
    with tf.Graph().as_default() as graph:
        from_files = imf.FileBatches(batch, GREY)
        from_arrays = pipeline.BatchInput(batch)
        assert from_files.images.shape.as_list() == [None, 28, 28, 1]
        with tf.compat.v1.Session(graph=graph) as sess:
            for start in (0, 7):
                stream = pipeline.index_stream(len(files), batch, seed, start, total)
                from_files.initialize(sess, files, labels, stream)
                from_arrays.initialize(sess, arrays, labels, stream)
                for _ in range(start, total):
                    a, la, b, lb = sess.run(
                        [from_files.images, from_files.labels, from_arrays.images, from_arrays.labels]
                    )
                    np.testing.assert_array_equal(a, b)
                    np.testing.assert_array_equal(la, lb)
                with pytest.raises(tf.errors.OutOfRangeError):
                    sess.run(from_files.images)


# --- writing the MNIST sample as a folder ----------------------------------------------


def small_dataset(seed=0, num_train=30, num_test=10):
    rng = np.random.default_rng(seed)
    return sources.Dataset(
        "mnist",
        "test",
        "test",
        rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        np.arange(num_train, dtype=np.uint8) % 10,
        rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        np.arange(num_test, dtype=np.uint8) % 10,
    )


def test_make_image_folder_without_split_subfolders(tmp_path):
    dataset = small_dataset()
    assert make_image_folder.write_folder(dataset, tmp_path / "flat", split_subfolders=False) == 40
    result = imf.scan(tmp_path / "flat", 0, 0)
    assert result.layout == "hash" and result.class_names == tuple(str(d) for d in range(10))
    assert len(result.splits["train"]) == 40
    images = imf.read_images(result.splits["train"].files, GREY)
    for f, image, label in zip(result.splits["train"].files, images, result.splits["train"].labels):
        split, index = os.path.basename(f)[:-4].split("_")
        source = dataset.train_images if split == "train" else dataset.test_images
        np.testing.assert_array_equal(image[..., 0], source[int(index)] / np.float32(255.0))
        assert label == int(index) % 10
    assert sorted(os.listdir(tmp_path)) == ["flat"]


def test_make_image_folder_refuses_an_existing_folder(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="already exists"):
        make_image_folder.write_folder(small_dataset(), tmp_path / "taken")
    assert make_image_folder.main([str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "already exists" in err
    assert os.listdir(tmp_path / "taken") == ["mine.txt"] and sorted(os.listdir(tmp_path)) == ["taken"]


def test_the_bundled_sample_as_a_folder_holds_its_own_split_bit_for_bit(tmp_path):
    sample = sources.load_sample()
    assert make_image_folder.main([str(tmp_path / "mnist")]) == 0
    result = imf.scan(tmp_path / "mnist", validation_percent=0)
    assert result.layout == "subfolders" and result.bad == ()
    for split, images, labels in (
        ("train", sample.train_images, sample.train_labels),
        ("test", sample.test_images, sample.test_labels),
    ):
        got = result.splits[split]
        order = np.array([int(os.path.basename(f)[len(split) + 1 : -4]) for f in got.files])
        np.testing.assert_array_equal(np.sort(order), np.arange(len(images)))
        np.testing.assert_array_equal(got.labels, labels[order])
        if split == "test":
            np.testing.assert_array_equal(imf.read_images(got.files, GREY), pipeline.to_float_images(images[order]))
