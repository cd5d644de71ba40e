"""The registry record (models.networks.Network) is the only description of a network.

Two halves. No module outside models/ and tests/ decides anything by a network's name
(an `ast` rule over every module, itself tested over generated snippets). And a network
that exists only as a registry entry, registered by a test helper
(tests/registry_network.py), goes through train_transfer.py's dry run and a 1-epoch run,
inspect --plan, export, predict and look ideal with no other edit.

The name rule, precisely: outside models/ and tests/, a network name is never an operand
of a comparison (==, !=, in, not in, is, is not; also an element of a tuple, list or set
operand), a `case` pattern, or a dict-literal key. A network name is a string literal
equal to a registered name, or the registry's DEFAULT (an attribute `DEFAULT` of a name
bound to models.networks). Docstrings, help text, defaults and messages may name networks.
"""

import ast
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import networks
from tests.test_layers import ENTRY, PACKAGES

REPO = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).resolve().parents[1] / "registry_network.py"
OUTSIDE = ("models", "tests")


def _registry_aliases(tree):
    """The local names a module binds to models.networks."""
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "models" and node.level == 0:
            aliases |= {alias.asname or alias.name for alias in node.names if alias.name == "networks"}
        elif isinstance(node, ast.Import):
            aliases |= {alias.asname for alias in node.names if alias.name == "models.networks" and alias.asname}
    return aliases


def _names_a_network(node, aliases, names):
    """Whether an expression is a network name, or a tuple/list/set holding one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_network(element, aliases, names) for element in node.elts)
    if isinstance(node, ast.Attribute) and node.attr == "DEFAULT":
        base = node.value
        while isinstance(base, ast.Attribute):  # models.networks.DEFAULT
            if base.attr == "networks":
                return True
            base = base.value
        return isinstance(base, ast.Name) and base.id in aliases
    return False


def name_branches(source, names=networks.NAMES):
    """Line numbers where `source` decides by a network's name (the module docstring's rule)."""
    tree = ast.parse(source)
    aliases = _registry_aliases(tree)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Dict):
            operands = [key for key in node.keys if key is not None]
        elif isinstance(node, ast.MatchValue):
            operands = [node.value]
        else:
            continue
        if any(_names_a_network(operand, aliases, names) for operand in operands):
            lines.append(node.lineno)
    return sorted(set(lines))


def library_files():
    files = [REPO / f"{name}.py" for name in sorted(ENTRY)]
    for package in PACKAGES:
        if package not in OUTSIDE:
            files += sorted((REPO / package).rglob("*.py"))
    return files


def test_no_module_outside_models_branches_on_a_network_name():
    files = library_files()
    assert REPO / "transfer" / "look" / "common.py" in files and len(files) > 50  # the tree is read
    offenders = [
        f"{path.relative_to(REPO)}:{line}" for path in files for line in name_branches(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, offenders


# A snippet per (what is compared, where it stands); the rule must flag exactly the
# network names in deciding positions.
_OPERANDS = {
    "literal": ('"vgg_16"', True),
    "other_literal": ('"vgg_17"', False),
    "default": ("networks.DEFAULT", True),
    "aliased_default": ("registry.DEFAULT", True),
    "dotted_default": ("models.networks.DEFAULT", True),
    "unrelated_default": ("options.DEFAULT", False),
    "tuple": ('("cae", "x")', True),
    "name_attribute": ("network.name", False),
}
_PLACES = {
    "eq": ("if x == {}:\n    pass", True),
    "ne": ("y = 1 if {} != x else 2", True),
    "in": ("ok = x in ({},)", True),
    "is": ("ok = x is {}", True),
    "dict_key": ("table = {{{}: 1}}", True),
    "match": ("match x:\n    case {}:\n        pass", True),
    "dict_value": ("table = {{'k': {}}}", False),
    "assign": ("x = {}", False),
    "call_arg": ("f(default={})", False),
    "docstring": ('def f():\n    """{}"""', False),
}
_HEADER = "from models import networks\nfrom models import networks as registry\nimport models.networks\n"


def _situations():
    for (operand, (text, is_name)), (place, (template, decides)) in itertools.product(
        _OPERANDS.items(), _PLACES.items()
    ):
        if place == "match" and operand in ("tuple", "name_attribute"):
            continue  # not a value pattern
        if place == "docstring":
            text = text.strip('"')
        yield operand, place, _HEADER + template.format(text), is_name and decides


def test_the_name_rule_flags_exactly_names_in_deciding_places():
    situations = list(_situations())
    assert len(situations) == 78
    wrong = [
        (operand, place) for operand, place, source, expected in situations if bool(name_branches(source)) != expected
    ]
    assert not wrong, wrong


# --- a network that is only a registry entry ------------------------------------------------

TINY = "tiny_test_net"
SIZE = 16
CLASSES = ("ant", "bee", "cat")


def _image_folder(root, classes=CLASSES, seed=0, counts=(6, 3)):
    """train/ and test/ with counts[0] and counts[1] 16x16 RGB images per class, a colour per class (seeded)."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), counts):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for number in range(count):
                pixels = rng.integers(0, 60, (SIZE, SIZE, 3))
                pixels[..., index % 3] += 180
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{number}.png")


def _run_all(tmp_path, *commands):
    """Runs the commands in one process of the helper that registers the tiny network; {command: stdout}."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    argv = [word for command in commands for word in ("+", *command)][1:]
    done = subprocess.run(
        [sys.executable, str(HELPER), *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    parts = done.stdout.split("=== ")[1:]
    outputs = [part.split("\n", 1)[1] for part in parts]
    assert [part.split("\n", 1)[0] for part in parts] == [command[0] for command in commands]
    return outputs


def test_a_registry_entry_alone_makes_a_network_every_command_takes(tmp_path):
    _image_folder(tmp_path / "photos")
    train = ["train_transfer", "--network", TINY, "--data-dir", "photos", "--restore", "none", "--model-dir", "run"]
    train += ["--epochs", "1", "--batch-size", "6", "--validation-percent", "0", "--seed", "0"]
    inspect = ["inspect", "run", "--plan", "--json", "--network", TINY, "--restore", "backbone", "--num-classes", "3"]
    dry, _, plan, _, predicted, _ = _run_all(
        tmp_path,
        [*train, "--dry-run", "--model-dir", "dry"],
        train,
        inspect,
        ["export", "--model-dir", "run", "--output", "exported"],
        ["predict", "--model", "exported", "photos/test/bee/0.png", "--json"],
        ["look", "ideal", "run", "--classes", "cat", "--steps", "2", "--out-dir", "ideal"],
    )
    assert "tiny/conv1/kernel" in dry and not (tmp_path / "dry").exists()

    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["network"], config["image_size"], config["class_names"]) == (TINY, SIZE, list(CLASSES))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_test"] == 9 and 0.0 <= metrics["test_accuracy"] <= 1.0

    actions = {row["name"]: row["action"] for row in json.loads(plan)["variables"]}
    assert actions == {
        "tiny/conv1/kernel": "restored",
        "tiny/conv1/bias": "restored",
        "tiny/conv2/kernel": "restored",
        "tiny/conv2/bias": "restored",
        "tiny/logits/kernel": "initialised",
        "tiny/logits/bias": "initialised",
    }, plan

    card = json.loads((tmp_path / "exported" / "model_card.json").read_text())
    assert card["network"]["name"] == TINY and card["classes"] == list(CLASSES)
    assert card["network"]["layers"] == "conv1 (3x3/2, 4), conv2 (3x3/2, 8), mean, logits"

    assert set(CLASSES) & set(predicted.replace('"', " ").split()), predicted
    assert list((tmp_path / "ideal").iterdir())


@pytest.mark.parametrize("name", networks.NAMES)
def test_every_record_describes_what_the_commands_ask(name):
    """The record's look and card fields name what its builder makes: the first conv kernel, the end points."""
    import tensorflow as tf

    v1 = tf.compat.v1
    network = networks.get(name)
    assert network.title and network.min_image_size <= min(network.image_size)
    with tf.Graph().as_default():
        _, end_points = network.build(v1.placeholder(tf.float32, network.input_shape()), network.num_classes)
        model_variables = v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)
        variables = [var.op.name for var in model_variables]
        first_conv = next(var.op.name for var in model_variables if var.shape.rank == 4)
    assert network.first_conv == first_conv
    assert set(network.probe_end_points) <= set(end_points), sorted(end_points)
    assert all(any(var.startswith(scope + "/") for var in variables) for scope in network.variable_scopes)


def _flag_situations():
    sizes = (None, 32, 223, 224, 225, 512)
    presets = ("all", "none", "backbone", "conv", "fc", "conv1,fc1")
    return list(itertools.product(networks.NAMES, sizes, presets))


def test_the_image_size_and_preset_checks_read_only_the_record():
    """network_and_flags over every network x --image-size x --restore: refused exactly as the record says."""
    from runtime.errors import UserError
    from transfer import flags

    situations = _flag_situations()
    assert len(situations) == 6 * 6 * len(networks.NAMES)
    wrong = []
    for name, size, preset in situations:
        network = networks.get(name)
        argv = ["--network", name, "--restore", preset] + ([] if size is None else ["--image-size", str(size)])
        if size is not None and not network.resizable:
            expected = f"--image-size is for the ImageNet networks; the {network.title} takes 28x28"
        elif size is not None and size < network.min_image_size:
            expected = (
                f"--image-size {size}: {name} needs at least {network.min_image_size} ({network.min_size_reason})"
            )
        elif preset in ("conv", "fc") and preset not in network.restore_presets:
            expected = f"--restore {preset} is the digit classifier's preset; for {name} use backbone, all, none "
        else:
            expected = None
        try:
            got, spec, _ = flags.network_and_flags(flags.TRAIN_TRANSFER.parse(argv))
            outcome = None if (got, spec.height) == (network, size or network.image_size[0]) else "wrong spec"
        except UserError as error:
            outcome = str(error)
        agrees = outcome is None if expected is None else outcome is not None and outcome.startswith(expected)
        if not agrees:
            wrong.append((name, size, preset, outcome))
    assert not wrong, wrong


def test_the_issue_examples_of_the_image_size_check():
    from runtime.errors import UserError
    from transfer import flags

    for argv, message in (
        (
            ["--network", "vgg_16", "--image-size", "192"],
            "--image-size 192: vgg_16 needs at least 224 (fc6 is a 7x7 VALID convolution)",
        ),
        (["--image-size", "64"], "--image-size is for the ImageNet networks; the digit classifier takes 28x28"),
    ):
        with pytest.raises(UserError) as caught:
            flags.network_and_flags(flags.TRAIN_TRANSFER.parse(argv))
        assert str(caught.value) == message
    assert (
        flags.network_and_flags(
            flags.TRAIN_TRANSFER.parse(["--network", "vgg_16", "--image-size", "224", "--restore", "backbone"])
        )[1].height
        == 224
    )


def test_the_registry_refuses_a_second_record_of_a_name_and_names_the_converters_network():
    from models.scopes import CLASSIFIER_SCOPES

    with pytest.raises(ValueError, match="already registered"):
        networks.register(networks.get("vgg_16"))
    assert networks.NAMES == tuple(networks.NETWORKS)
    assert [network.name for network, _ in networks.with_name_maps()] == [
        "vgg_16",
        "mobilenet_v1",
        "efficientnet_lite0",
    ]
    assert all(os.path.isfile(path) for _, path in networks.with_name_maps())
    assert networks.get(networks.DEFAULT).variable_scopes == CLASSIFIER_SCOPES  # what look owned before
