"""Class-aware heads (--keep-classes): the rows of the classes both share come from the checkpoint.

One rule matches names (transfer.class_heads.match_classes) and one gathers the rows
(class_heads.gather); tested over generated situations, on the ImageNet names of
mobilenet_v1 (background logit 0) and efficientnet_lite0, and end to end on a test-only
registry network whose saved head columns must be bit-equal to the source's rows.
"""

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import networks
from runtime.errors import UserError
from tests.models.test_registry import _image_folder as image_folder
from transfer import class_heads
from transfer.plan import RestoreSelection, VariableInfo, make_plan

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "tests" / "registry_network.py"
SITUATIONS = 400


def _situation(rng):
    """(source lines, label_offset, new class names, class map, expected rows per class)."""
    offset = rng.choice((0, 1))
    rows = rng.randint(3, 12)
    lines = [", ".join(f"s{row}n{k}" for k in range(rng.randint(1, 3))) for row in range(rows)]
    if rng.random() < 0.5:  # two rows that share a name: never matched by that name
        lines[1] += ", shared"
        lines[2] += ", shared"
    names, mapping, expected = [], {}, []
    for number in range(rng.randint(1, 6)):
        kind = rng.choice(("same", "map", "fresh", "shared"))
        row = rng.randrange(rows)
        if kind == "same":
            synonym = rng.choice(lines[row].split(", "))
            if synonym == "shared":
                synonym = lines[row].split(", ")[0]
            spelled = rng.choice((synonym, synonym.upper(), " " + synonym.replace("n", "N") + " "))
            names.append(spelled)
            seen = map(class_heads.match_form, names[:-1])
            expected.append((row + offset,) if class_heads.match_form(spelled) not in seen else None)
        elif kind == "map":
            group = sorted(set(rng.sample(range(rows), rng.randint(1, min(3, rows)))))
            names.append(f"Mapped_{number}")
            mapping[f"mapped {number}"] = [lines[r].split(", ")[0].upper() for r in group]
            expected.append(tuple(r + offset for r in group))
        elif kind == "shared" and "shared" in lines[1]:
            names.append("Shared")
            expected.append(() if "shared" not in map(class_heads.match_form, names[:-1]) else None)
        else:
            names.append(f"unknown_{number}")
            expected.append(())
    keep = [i for i, rows_ in enumerate(expected) if rows_ is not None]  # drop repeated names (refused)
    return lines, offset, [names[i] for i in keep], mapping, [expected[i] for i in keep]


def _situations():
    rng = random.Random(23)
    return [_situation(rng) for _ in range(SITUATIONS)]


def test_each_class_takes_its_rows_or_their_mean_bit_for_bit():
    """Over generated sources, names and maps: the matched rows, and the gathered columns equal them exactly."""
    situations = _situations()
    assert len(situations) == SITUATIONS
    rng = np.random.default_rng(23)
    columns_checked = 0
    for lines, offset, names, mapping, expected in situations:
        class_map = class_heads.parse_class_map(json.dumps(mapping), "map.json") if mapping else ()
        sources = class_heads.sources_of(lines, offset, class_map)
        matches = class_heads.match_classes(names, sources)
        assert [rows for rows, _ in matches] == expected, (names, lines, mapping)
        assert all(why.startswith("fresh") == (not rows) for rows, why in matches)
        source = rng.standard_normal((2, 5, len(sources.rows))).astype(np.float32)
        kept = class_heads.gather(source, [rows for rows, _ in matches])
        for column, rows in enumerate(expected):
            if not rows:
                assert column not in kept
                continue
            mean = np.mean(np.stack([source[..., row] for row in rows]).astype(np.float64), axis=0)
            assert kept[column].dtype == np.float32
            assert np.array_equal(kept[column], mean.astype(np.float32))
            columns_checked += 1
    assert columns_checked > SITUATIONS


@pytest.mark.parametrize(
    "network_name, head, offset",
    [
        ("mobilenet_v1", ("MobilenetV1/Logits/Conv2d_1c_1x1/weights", (1, 1, 1024)), 1),
        ("efficientnet_lite0", ("efficientnet-lite0/head/dense/kernel", (1280,)), 0),
    ],
)
def test_imagenet_names_find_their_rows(network_name, head, offset):
    """tabby and Egyptian_cat by name, "cat" as the mean of five by a map, crane (two rows) and zebra_x fresh."""
    network = networks.get(network_name)
    assert network.label_offset == offset
    class_map = class_heads.parse_class_map(
        json.dumps({"cat": ["tabby cat", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"]}), "map.json"
    )
    lines = network.class_names()[offset:]
    sources = class_heads.sources_of(lines, offset, class_map, "ImageNet")
    names = ["Tabby", "egyptian_cat", "cat", "crane", "zebra_x"]
    kernel, base = head
    bias = kernel.rsplit("/", 1)[0] + ("/biases" if offset else "/bias")
    graph = [VariableInfo("backbone/w", (3,), "float32"), VariableInfo(kernel, (*base, 5), "float32")]
    graph.append(VariableInfo(bias, (5,), "float32"))
    checkpoint = [VariableInfo("backbone/w", (3,), "float32"), VariableInfo(kernel, (*base, 1000 + offset), "float32")]
    checkpoint.append(VariableInfo(bias, (1000 + offset,), "float32"))
    plan = make_plan(graph, checkpoint, RestoreSelection(("backbone",)), "ckpt")
    plan = class_heads.keep_classes(plan, names, RestoreSelection(("backbone",), classes=sources), checkpoint)
    assert [row.action for row in plan.rows] == ["restored", "classes", "classes"]
    assert [head.name for head in plan.class_rows] == [kernel, bias]
    tabby, egyptian = 281 + offset, 285 + offset
    assert plan.class_rows[0].columns == (
        (tabby,),
        (egyptian,),
        (tabby, 282 + offset, 283 + offset, 284 + offset, egyptian),
        (),
        (),
    )
    text = plan.format()
    assert f"Tabby         {tabby}" in text and "(same name)" in text
    assert "crane         fresh" in text and f"(fresh: rows {134 + offset}, {517 + offset} share the name" in text
    assert "3 of 5 classes start from the checkpoint's rows" in text
    assert plan.to_json()["class_rows"][0].startswith("class rows")
    source = np.random.default_rng(0).standard_normal((*base, 1000 + offset)).astype(np.float32)
    kept = class_heads.gather(source, plan.class_rows[0].columns)
    assert np.array_equal(kept[0], source[..., tabby]) and 0 not in [
        row for rows in plan.class_rows[0].columns for row in rows
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "--class-map map.json is not JSON"),
        ("[]", '--class-map map.json: a class map is a JSON object {"new class": ["source class", ...]}'),
        ('{"cat": "tabby"}', "--class-map map.json: 'cat' must map to a non-empty list of class names"),
        ('{"cat": []}', "--class-map map.json: 'cat' must map to a non-empty list of class names"),
        ('{"cat": [1]}', "--class-map map.json: 'cat' must map to a non-empty list of class names"),
        ('{"cat": ["a"], "Cat": ["b"]}', "--class-map map.json: 'Cat' is blank or named twice"),
        ('{"cat": ["a"], "cat": ["b"]}', "--class-map map.json is not JSON: it names 'cat' twice"),
    ],
)
def test_a_bad_class_map_is_one_line(text, message):
    with pytest.raises(UserError) as caught:
        class_heads.parse_class_map(text, "map.json")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_map_naming_what_is_not_there_is_one_line():
    sources = class_heads.sources_of(["ant", "bee", "crane", "crane"], 0, (("insect", ("wasp",)),), "labels.txt")
    with pytest.raises(UserError, match=r"^--class-map 'insect': 'wasp' names no row of labels.txt$"):
        class_heads.match_classes(["insect"], sources)
    sources = class_heads.sources_of(["ant", "crane", "crane"], 0, (("bird", ("crane",)),), "labels.txt")
    with pytest.raises(UserError, match=r"^--class-map 'bird': 'crane' is the name of rows 1, 2 of labels.txt$"):
        class_heads.match_classes(["bird"], sources)
    with pytest.raises(UserError, match=r"^--class-map names 'bird', which is not one of the new classes"):
        class_heads.match_classes(["ant"], sources)


def _folder(root, classes, seed):
    image_folder(root, classes, seed, counts=(4, 2))


def test_a_run_keeps_the_shared_rows_and_a_frozen_head_keeps_them_bit_for_bit(tmp_path):
    """A 3-class tiny run is the source; a run on Bee, insect (= ant + bee) and zebra keeps rows 1 and (0+1)/2."""
    import tensorflow as tf

    _folder(tmp_path / "source_photos", ("ant", "bee", "cat"), 0)
    _folder(tmp_path / "photos", ("Bee", "insect", "zebra"), 1)
    (tmp_path / "labels.txt").write_text("# the source's rows\nant, emmet\nbee\ncat\n")
    (tmp_path / "map.json").write_text(json.dumps({"insect": ["Emmet", "bee"]}))
    common = ["--network", "tiny_test_net", "--epochs", "2", "--batch-size", "6", "--validation-percent", "0"]
    source = ["train_transfer", *common, "--data-dir", "source_photos", "--restore", "none", "--model-dir", "src"]
    keep = ["train_transfer", *common, "--data-dir", "photos", "--checkpoint", "src", "--model-dir", "run"]
    keep += ["--restore", "backbone", "--keep-classes", "--source-labels", "labels.txt", "--class-map", "map.json"]
    keep += ["--fine-tune", "--lr-mult", "tiny/logits=0"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    argv = [*source, "+", *keep]
    done = subprocess.run(
        [sys.executable, str(HELPER), *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    out = done.stdout.split("=== train_transfer")[2]
    assert "Bee     1      (same name)" in out and "insect  0, 1   (mean of 2 rows (--class-map))" in out, out
    assert "zebra   fresh  (fresh: not a source class)" in out and "checkpoint variables not restored" not in out
    assert "class rows: 4 columns of 2 head variables written; each equals the checkpoint's" in out
    zero_shot = json.loads((tmp_path / "run" / "metrics.json").read_text())["test_accuracy_before_training"]
    assert f"test accuracy before training (the kept class rows): {zero_shot:.4f} (6 images)" in out
    row = r"tiny/logits/kernel +\[8, 3\] +tiny/logits/kernel +classes \(2 of 3 classes from the checkpoint.s rows\) +fr"
    assert re.search(row, out), out
    before = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "src")))
    after = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "run")))
    for name in ("tiny/logits/kernel", "tiny/logits/bias"):
        theirs, ours = before.get_tensor(name), after.get_tensor(name)
        assert np.array_equal(ours[..., 0], theirs[..., 1])
        mean = ((theirs[..., 0].astype(np.float64) + theirs[..., 1]) / 2).astype(np.float32)
        assert np.array_equal(ours[..., 1], mean)
    assert not np.array_equal(after.get_tensor("tiny/conv1/kernel"), before.get_tensor("tiny/conv1/kernel"))
    assert "frozen check of the head's kept class columns: 4 columns, max |diff| = 0\n" in out
    # The labels edited since: the same flags now match other rows, which the run's weights did not start from.
    (tmp_path / "labels.txt").write_text("bee\nant, emmet\ncat\n")
    plan_file = (tmp_path / "run" / "restore_plan.json").read_bytes()
    again = subprocess.run(
        [sys.executable, str(HELPER), *keep, "--epochs", "3"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert again.returncode == 2, (again.stdout[-2000:], again.stderr[-2000:])
    assert "started with other settings (class_columns" in again.stderr, again.stderr
    assert (tmp_path / "run" / "restore_plan.json").read_bytes() == plan_file


def test_the_keep_classes_flags_refuse_in_one_line(tmp_path):
    """Flags without --keep-classes, a network with no class names, a labels file that is empty or not text."""
    from transfer.flags import _class_sources

    efficientnet, cae = networks.get("efficientnet_lite0"), networks.get("cae")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    cases = [
        ((efficientnet, False, "labels.txt", None), "--source-labels and --class-map go with --keep-classes"),
        ((efficientnet, False, None, "map.json"), "--source-labels and --class-map go with --keep-classes"),
        ((cae, True, None, None), "--keep-classes: cae has no class names; name its head's rows with --source-labels"),
        ((cae, True, str(tmp_path / "empty.txt"), None), f"--source-labels {tmp_path / 'empty.txt'} names no class"),
        ((cae, True, str(tmp_path / "binary.txt"), None), f"--source-labels {tmp_path / 'binary.txt'} is not UTF-8"),
        ((cae, True, str(tmp_path / "gone.txt"), None), f"--source-labels {tmp_path / 'gone.txt'}: No such file"),
    ]
    for arguments, message in cases:
        with pytest.raises(UserError) as caught:
            _class_sources(*arguments)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value), str(caught.value)
    sources = _class_sources(efficientnet, True, None, None)
    assert len(sources.rows) == 1000 and sources.rows[281] == ("tabby", "tabby cat")


def test_a_plan_with_no_head_of_the_classes_is_one_line():
    """--keep-classes with the head restored (nothing fresh of one entry per class) is refused."""
    graph = [VariableInfo("head/kernel", (4, 3), "float32")]
    plan = make_plan(graph, graph, RestoreSelection(None, fine_tune=True), "ckpt")
    sources = class_heads.sources_of(["ant", "bee", "cat"], 0)
    selection = RestoreSelection(None, fine_tune=True, classes=sources)
    with pytest.raises(UserError) as caught:
        class_heads.keep_classes(plan, ["ant", "bee", "cat"], selection, graph)
    assert str(caught.value) == (
        "--keep-classes: no fresh graph variable has one entry per new class (3) and a checkpoint namesake of one "
        "per row of the source's class names (3); head/kernel is restored: restore less than the head "
        "(e.g. --restore backbone)"
    )


LIBRARY_SITUATIONS = 4  # (head trained or frozen) x (with a class map or not)


def _library_run(tmp_path, frozen, mapped):
    """A 3-class source head, then a 4-class graph through transfer.library: (plan, source head, head after, ...)."""
    import tensorflow as tf

    from transfer import library

    v1 = tf.compat.v1
    prefix = str(tmp_path / f"src{frozen}{mapped}" / "model.ckpt")
    with tf.Graph().as_default():
        v1.set_random_seed(5)
        v1.get_variable("body/kernel", (4, 5))
        head = v1.get_variable("head/kernel", (5, 3))
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver().save(sess, prefix, write_meta_graph=False)
            source = sess.run(head)
    (tmp_path / "map.json").write_text(json.dumps({"insect": ["Emmet", "bee"]}))
    sources = library.class_sources(["ant, emmet", "bee", "cat"], 0, str(tmp_path / "map.json") if mapped else None)
    lr_mults = (("head", 0.0),) if frozen else ()
    selection = library.RestoreSelection(("body",), lr_mults=lr_mults, fine_tune=True, classes=sources)
    with tf.Graph().as_default():
        v1.set_random_seed(6)
        x = v1.placeholder(tf.float32, (None, 4))
        logits = tf.matmul(tf.matmul(x, v1.get_variable("body/kernel", (4, 5))), v1.get_variable("head/kernel", (5, 4)))
        variables = library.model_variables()
        plan = library.make_plan(variables, prefix, selection, class_names=["Bee", "insect", "zebra", "CAT"])
        step = library.train_op(
            tf.reduce_sum(logits**2), plan, variables, lambda _: v1.train.GradientDescentOptimizer(0.1)
        )
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            values = library.restore(sess, plan, variables)
            restored = sess.run(variables[1])
            sess.run(step, {x: np.ones((2, 4), np.float32)})
            library.frozen_check(sess, plan, variables, values)
            trained = sess.run(variables[1])
            if frozen:  # a kept column that moves is named by the frozen check
                variables[1].load(trained + 1.0, sess)
                with pytest.raises(UserError, match=r"^frozen check failed: the frozen head's kept class columns"):
                    library.frozen_check(sess, plan, variables, values)
    return plan, source, restored, trained


def test_the_library_keeps_the_shared_columns_bit_for_bit(tmp_path, capsys):
    """make_plan with classes, restore writes the kept columns, frozen_check holds a frozen head's."""
    import itertools

    situations = list(itertools.product((False, True), (False, True)))
    assert len(situations) == LIBRARY_SITUATIONS
    for frozen, mapped in situations:
        plan, source, restored, trained = _library_run(tmp_path, frozen, mapped)
        text = plan.format()
        assert re.search(r"head/kernel +\[5, 4\] +head/kernel +classes", text), text
        assert "CAT     2" in text and "zebra   fresh" in text, text
        assert np.array_equal(restored[:, 0], source[:, 1]) and np.array_equal(restored[:, 3], source[:, 2])
        if mapped:
            mean = ((source[:, 0].astype(np.float64) + source[:, 1]) / 2).astype(np.float32)
            assert np.array_equal(restored[:, 1], mean)
        assert np.array_equal(trained, restored) == frozen
        out = capsys.readouterr().out
        assert f"class rows: {2 + mapped} columns of 1 head variables written; each equals the checkpoint's" in out


def test_the_library_asks_for_the_class_names():
    import tensorflow as tf

    from transfer import library

    with tf.Graph().as_default():
        tf.compat.v1.get_variable("head/kernel", (5, 4))
        selection = library.RestoreSelection((), classes=library.class_sources(["ant"]))
        with pytest.raises(library.PlanError, match=r"^the selection keeps classes \(classes=...\): pass class_names"):
            library.make_plan(library.model_variables(), None, selection)


def test_inspect_plan_shows_the_class_section_with_class_names(tmp_path):
    """inspect --plan --keep-classes --class-names prints the class rows; without names it is one error line."""
    _folder(tmp_path / "source_photos", ("ant", "bee", "cat"), 0)
    (tmp_path / "labels.txt").write_text("ant\nbee\ncat\n")
    common = ["--network", "tiny_test_net", "--epochs", "1", "--batch-size", "6", "--validation-percent", "0"]
    source = ["train_transfer", *common, "--data-dir", "source_photos", "--restore", "none", "--model-dir", "src"]
    flags = ["--plan", "--network", "tiny_test_net", "--restore", "backbone", "--keep-classes"]
    flags += ["--source-labels", "labels.txt"]
    shown = ["inspect", "src", *flags, "--class-names", "Bee,zebra,CAT,dog"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, str(HELPER), *source, "+", *shown, "+", "inspect", "src", *flags],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, (done.stdout[-3000:], done.stderr[-3000:])
    out = done.stdout.split("=== inspect")[1]
    assert re.search(r"tiny/logits/kernel +\[8, 4\] +tiny/logits/kernel +classes \(2 of 4 classes", out), out
    assert "Bee    1      (same name)" in out and "zebra  fresh  (fresh: not a source class)" in out, out
    assert "2 of 4 classes start from the checkpoint's rows, the others fresh" in out, out
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --keep-classes in inspect --plan needs the new classes: pass --class-names a,b,c"
    )


def test_two_classes_of_one_name_and_labels_of_another_width_are_one_line():
    sources = class_heads.sources_of(["ant", "bee", "cat"], 0)
    with pytest.raises(UserError) as caught:
        class_heads.match_classes(["Bee", "ant", "bee_"], sources)
    assert str(caught.value) == (
        "--keep-classes: the classes 'Bee', 'bee_' are one name to the matching (case, '_' and spaces aside): "
        "rename one"
    )
    graph = [VariableInfo("body/w", (3,), "float32"), VariableInfo("head/kernel", (4, 2), "float32")]
    checkpoint = [VariableInfo("body/w", (3,), "float32"), VariableInfo("head/kernel", (4, 10), "float32")]
    plan = make_plan(graph, checkpoint, RestoreSelection(("body",)), "ckpt")
    labels = class_heads.sources_of(["ant", "bee", "cat"], 0, where="--source-labels labels.txt")
    with pytest.raises(UserError) as caught:
        class_heads.keep_classes(plan, ["ant", "bee"], RestoreSelection(("body",), classes=labels), checkpoint)
    assert str(caught.value) == (
        "--keep-classes: --source-labels labels.txt name 3 rows, background logits included, but the checkpoint's "
        "head/kernel has 10: one class line per row of the head"
    )


def test_with_moving_average_the_kept_rows_and_an_adapted_kernel_read_the_shadows():
    """The backbone, the adapted first kernel and the kept head columns all come from the shadows."""
    shadow = "/ExponentialMovingAverage"
    graph = [
        VariableInfo("conv1/kernel", (3, 3, 1, 4), "float32"),
        VariableInfo("body/w", (3,), "float32"),
        VariableInfo("head/kernel", (4, 2), "float32"),
    ]
    checkpoint = [VariableInfo("conv1/kernel", (3, 3, 3, 4), "float32"), VariableInfo("body/w", (3,), "float32")]
    checkpoint.append(VariableInfo("head/kernel", (4, 3), "float32"))
    checkpoint += [VariableInfo(info.name + shadow, info.shape, "float32") for info in checkpoint]
    sources = class_heads.sources_of(["ant", "bee", "cat"], 0)
    selection = RestoreSelection(
        ("conv1", "body"), moving_average=True, adapt_channels="sum", first_conv="conv1/kernel", classes=sources
    )
    plan = make_plan(graph, checkpoint, selection, "ckpt")
    plan = class_heads.keep_classes(plan, ["cat", "ant"], selection, checkpoint)
    assert {row.name: (row.action, row.source) for row in plan.rows} == {
        "conv1/kernel": ("adapted", "conv1/kernel" + shadow),
        "body/w": ("restored", "body/w" + shadow),
        "head/kernel": ("classes", "head/kernel" + shadow),
    }
    assert plan.class_rows[0].source == "head/kernel" + shadow and plan.class_rows[0].columns == ((2,), (0,))
    assert "--moving-average: 2 variables take their ExponentialMovingAverage shadow, 0 their raw value" in (
        plan.format()
    )
    assert not [info.name for info in plan.unused if info.name.startswith("head/")]
