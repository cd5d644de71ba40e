"""Selecting variables by `re:` pattern as well as by scope (issue 23, item 3).

The one rule is models.scopes.selects: `re:REGEX` must match a whole variable name
(re.fullmatch), anything else is a scope (models.scopes.in_scope). The plan restores,
excludes and scales what the selectors choose, lists the patterns that chose each row,
and refuses a pattern that matches nothing in one line. Checked here against a reference
written with `re` directly, over seeded generated graphs and selections.
"""

import random
import re

import pytest
import tensorflow as tf

from models.scopes import selects
from transfer import library
from transfer.plan import PlanError, RestoreSelection, VariableInfo, make_plan
from transfer.selection import parse_scopes

SITUATIONS = 1000
LAYERS = ("conv1", "conv10", "conv2", "dconv1", "fc1", "logits", "block_1/unit_2", "block_1/unit_12", "enc/conv1")
LEAVES = ("kernel", "bias", "BatchNorm/gamma", "BatchNorm/beta")
# Patterns with the constructs users write: classes, groups, alternation, counted repeats (a comma
# inside the list item), anchors that fullmatch makes redundant, and scope-looking text.
PATTERNS = (
    "re:conv[12]/.*",
    "re:.*/(kernel|bias)",
    "re:block_1/unit_\\d{1,2}/.*",
    "re:(conv|dconv)1/.*",
    "re:.*BatchNorm/.*",
    "re:^fc1/.*$",
    "re:[a-z]+1/kernel",
    "re:.*/unit_2/.*",
    "re:conv1",  # a scope's text as a pattern: fullmatch never matches conv1/kernel
    "re:conv[,3]/.*",
    "re:nothing/.*",
)


def reference(name, selector):
    """The documented rule, written without the code under test."""
    if selector.startswith("re:"):
        return re.fullmatch(selector[3:], name) is not None
    return name == selector or name.startswith(selector + "/")


def situation(rng):
    """A graph (its variable names) and a selection of 1-3 restore items, 0-1 exclude, 0-2 --lr-mult."""
    names = sorted(rng.sample([f"{layer}/{leaf}" for layer in LAYERS for leaf in LEAVES], rng.randint(6, 24)))

    def selector():
        return rng.choice(PATTERNS) if rng.random() < 0.6 else rng.choice(LAYERS)

    restore = tuple(dict.fromkeys(selector() for _ in range(rng.randint(1, 3))))
    exclude = tuple(selector() for _ in range(rng.randint(0, 1)))
    lr_mults = tuple((selector(), rng.choice((0.0, 0.5, 2.0))) for _ in range(rng.randint(0, 2)))
    return names, restore, exclude, lr_mults


def expected_plan(names, restore, exclude, lr_mults):
    """("error", text the one line must hold) or ("plan", {name: (restored, lr_mult, matched_by)})."""
    for item in restore:
        if not any(reference(name, item) for name in names):
            return "error", f"--restore {item if item.startswith('re:') else repr(item)} matches no graph variable"
    selected = [name for name in names if any(reference(name, item) for item in restore)]
    for item in exclude:
        if not any(reference(name, item) for name in selected):
            return "error", f"--restore-exclude {item if item.startswith('re:') else repr(item)} matches none"
        selected = [name for name in selected if not reference(name, item)]
    for item, _ in lr_mults:
        if not any(reference(name, item) for name in names):
            return "error", f"--lr-mult {item if item.startswith('re:') else repr(item)} matches no graph variable"
    flagged = [("--restore", item) for item in restore] + [("--restore-exclude", item) for item in exclude]
    flagged += [("--lr-mult", item) for item, _ in lr_mults]
    rows = {}
    for name in names:
        mult = 0.0 if name in selected else 1.0
        for item, value in lr_mults:
            mult = value if reference(name, item) else mult
        matched = tuple(f"{flag} {item}" for flag, item in flagged if item.startswith("re:") and reference(name, item))
        rows[name] = (name in selected, mult, matched)
    if not any(mult > 0 for _, mult, _ in rows.values()):
        return "error", "nothing left to train"
    return "plan", rows


def test_selects_is_fullmatch_for_patterns_and_in_scope_for_the_rest():
    pairs = [(f"{layer}/{leaf}", item) for layer in LAYERS for leaf in LEAVES for item in PATTERNS + LAYERS]
    assert len(pairs) == 36 * 20
    assert [selects(name, item) for name, item in pairs] == [reference(name, item) for name, item in pairs]
    assert not selects("conv10/kernel", "conv1") and not selects("conv1/kernel", "re:conv1")
    assert selects("conv1/kernel", "re:conv1/.*") and selects("conv1", "re:conv1")


def test_plan_follows_the_selectors_over_generated_situations():
    rng = random.Random(23)
    outcomes = {}
    for _ in range(SITUATIONS):
        names, restore, exclude, lr_mults = situation(rng)
        # Through the flag parser: the comma list reads back as the items (commas inside `re:conv[,3]` kept).
        assert parse_scopes(",".join(restore)) == restore
        selection = RestoreSelection(restore, exclude, lr_mults=lr_mults)
        variables = [VariableInfo(name, (2,), "float32") for name in names]
        kind, want = expected_plan(names, restore, exclude, lr_mults)
        try:
            plan = make_plan(variables, variables, selection, "ckpt")
        except PlanError as error:
            assert kind == "error", (names, selection, str(error))
            assert want in str(error) and "\n" not in str(error)
            outcomes[want.split(" ")[0]] = outcomes.get(want.split(" ")[0], 0) + 1
            continue
        assert kind == "plan", (names, selection, want)
        got = {row.name: (row.action == "restored", row.lr_mult, row.matched_by) for row in plan.rows}
        assert got == want
        shown = plan.format()
        assert ("matched by" in shown) == any(row.matched_by for row in plan.rows)
        outcomes["plan"] = outcomes.get("plan", 0) + 1
    # Every outcome is exercised (seeded, so the counts are pinned): plans, and each kind of refusal.
    assert outcomes == {"plan": 315, "--restore": 419, "--restore-exclude": 177, "--lr-mult": 88, "nothing": 1}


CLASSIFIER = [
    ("conv1/kernel", (5, 5, 1, 16)),
    ("conv1/bias", (16,)),
    ("conv2/kernel", (5, 5, 16, 32)),
    ("conv2/bias", (32,)),
    ("fc1/kernel", (1568, 200)),
    ("fc1/bias", (200,)),
    ("logits/kernel", (200, 10)),
    ("logits/bias", (10,)),
]


def test_the_issue_example_restores_both_convolutions_and_says_which_pattern():
    graph = [VariableInfo(name, shape, "float32") for name, shape in CLASSIFIER]
    checkpoint = graph[:4]
    selection = RestoreSelection(parse_scopes("re:conv[12]/.*"), lr_mults=(("re:.*/bias", 0.5),))
    plan = make_plan(graph, checkpoint, selection, "ckpt")
    assert [row.name for row in plan.restored] == ["conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias"]
    lines = plan.format().splitlines()
    assert lines[1].split() == ["variable", "shape", "source", "action", "train", "lr", "x", "matched", "by"]
    assert lines[2].split()[-5:] == ["restored", "frozen", "0", "--restore", "re:conv[12]/.*"]
    assert lines[3].endswith("--restore re:conv[12]/.*, --lr-mult re:.*/bias")
    assert plan.to_json()["variables"][5]["matched_by"] == ["--lr-mult re:.*/bias"]
    assert "matched by --restore re:conv[12]/.*" in plan.markdown()
    # Scopes alone: the plan's table and record are as before (no column, no key).
    plain = make_plan(graph, checkpoint, RestoreSelection(("conv1", "conv2")), "ckpt")
    assert "matched by" not in plain.format() and "matched_by" not in plain.to_json()["variables"][0]


@pytest.mark.parametrize(
    "selection, message",
    [
        (
            RestoreSelection(("re:conv1",)),
            "--restore re:conv1 matches no graph variable; graph variables: conv1/kernel",
        ),
        (RestoreSelection(("re:conv[",)), "--restore re:conv[: bad regular expression (unterminated character set"),
        (RestoreSelection(("re:",)), "--restore re:: empty regular expression"),
        (RestoreSelection(("conv1",), ("re:fc.*",)), "--restore-exclude re:fc.* matches none of the variables"),
    ],
)
def test_a_pattern_that_matches_nothing_or_is_no_regex_is_one_line(selection, message):
    graph = [VariableInfo(name, shape, "float32") for name, shape in CLASSIFIER]
    with pytest.raises(PlanError) as error:
        make_plan(graph, graph, selection, "ckpt")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_library_takes_patterns_on_a_users_graph():
    with tf.Graph().as_default():
        with tf.compat.v1.variable_scope("encoder"):
            tf.compat.v1.get_variable("w", (3, 2))
            tf.compat.v1.get_variable("b", (2,))
        tf.compat.v1.get_variable("head/w", (2, 1))
        variables = library.model_variables()
        plan = library.make_plan(variables, None, RestoreSelection((), lr_mults=(("re:.*/b", 0.0),)))
        assert {row.name: row.lr_mult for row in plan.rows} == {"encoder/w": 1.0, "encoder/b": 0.0, "head/w": 1.0}
        assert plan.rows[1].matched_by == ("--lr-mult re:.*/b",)
        with pytest.raises(PlanError, match=r"^--restore re:enc\[: bad regular expression"):
            library.make_plan(variables, None, "re:enc[")
