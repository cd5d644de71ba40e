"""Tests for transfer/selection.py and transfer/plan.py: anchored scopes, slot filtering,
flag parsing and the restore plan.

Everything here is pure data (names, shapes, dtypes): no graph and no session. The
variable tables are literal, as in tests/models/test_models.py, so that a change in the models
does not silently change what these tests check.
"""

import itertools
import json
import random
import types

import numpy as np
import pytest
import tensorflow as tf
from model_variables import AE_VARIABLES, CLASSIFIER_VARIABLES, CONV_NAMES, DECODER_NAMES, HEAD_NAMES

from models import batch_norm
from runtime.checkpoints import misfits, shape_differences
from runtime.errors import UserError
from transfer.plan import PlanError, PlanRow, RestorePlan, RestoreSelection, VariableInfo, make_plan
from transfer.selection import (
    PRESETS,
    in_any_scope,
    in_scope,
    model_variable_names,
    parse_pair,
    parse_scopes,
    top_scopes,
)
from transfer.source import worst_difference

F32 = "float32"
CKPT = "/runs/cae/model.ckpt-1000"

# The classifier's model variables, in graph (creation) order, shapes as tuples.
CLASSIFIER = [(name, tuple(shape)) for name, shape in CLASSIFIER_VARIABLES.items()]
ENCODER = CLASSIFIER[:4]
DECODER = [(name, tuple(AE_VARIABLES[name])) for name in DECODER_NAMES]
COUNTERS = ["beta1_power", "beta2_power", "global_step"]


def infos(table, dtype=F32):
    return [VariableInfo(name, tuple(shape), dtype) for name, shape in table]


def graph():
    return infos(CLASSIFIER)


def checkpoint_of(model_table):
    """What a Saver writes after Adam training: weights, two slots each, counters."""
    variables = infos(model_table)
    for name, shape in model_table:
        variables.append(VariableInfo(name + "/Adam", tuple(shape), F32))
        variables.append(VariableInfo(name + "/Adam_1", tuple(shape), F32))
    variables += [VariableInfo("beta1_power", (), F32), VariableInfo("beta2_power", (), F32)]
    variables.append(VariableInfo("global_step", (), "int64"))
    # Checkpoint readers list names sorted, not in graph order.
    return sorted(variables, key=lambda info: info.name)


def ae_checkpoint():
    return checkpoint_of(ENCODER + DECODER)


def classifier_checkpoint():
    return checkpoint_of(CLASSIFIER)


def rows_by_name(plan):
    return {row.name: row for row in plan.rows}


# --- selection.py -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["conv1/kernel", "conv1/bias", "conv1", "conv1/kernel/Adam"])
def test_in_scope_matches_scope_and_below(name):
    assert in_scope(name, "conv1")


@pytest.mark.parametrize(
    "name", ["conv10/kernel", "conv10", "dconv1/kernel", "conv1x/bias", "conv", "encoder/conv1/kernel"]
)
def test_in_scope_is_anchored_at_the_slash(name):
    assert not in_scope(name, "conv1")


def test_in_scope_nested_scopes():
    assert in_scope("encoder/conv1/kernel", "encoder/conv1")
    assert in_scope("encoder/conv1/bias", "encoder")
    assert not in_scope("encoder/conv10/kernel", "encoder/conv1")
    assert not in_scope("encoder/conv1x/kernel", "encoder/conv1")
    assert not in_scope("conv1/kernel", "encoder/conv1")


def test_in_scope_tolerates_slashes_around_the_scope():
    assert in_scope("conv1/kernel", "conv1/")
    assert in_scope("encoder/conv1/kernel", "encoder/conv1/")
    assert not in_scope("conv10/kernel", "conv1/")


def test_in_any_scope():
    assert in_any_scope("conv2/bias", ("conv1", "conv2"))
    assert not in_any_scope("dconv2/bias", ("conv1", "conv2"))
    assert not in_any_scope("conv1/kernel", ())


def test_top_scopes_drops_the_last_component():
    names = ["conv1/kernel", "conv1/bias", "encoder/conv2/kernel", "global_step"]
    assert top_scopes(names) == ["conv1", "encoder/conv2", "global_step"]
    assert top_scopes([]) == []


def test_model_variable_names_drops_slots_and_counters():
    names = [
        "conv1/kernel",
        "conv1/kernel/Adam",
        "conv1/kernel/Adam_1",
        "conv1/bias",
        "conv1/bias/Adam",
        "conv1/bias/Adam_1",
        "conv10/bias",
        "conv10/bias/Adam",
        "fc1/kernel",
        "fc1/kernel/Momentum",
        "logits/bias",
        "logits/bias/RMSProp",
        "logits/bias/RMSProp_1",
        "beta1_power",
        "beta2_power",
        "beta1_power_1",
        "beta2_power_1",
        "global_step",
    ]
    assert model_variable_names(names) == ["conv1/bias", "conv1/kernel", "conv10/bias", "fc1/kernel", "logits/bias"]


def test_model_variable_names_of_a_full_autoencoder_checkpoint():
    names = [info.name for info in ae_checkpoint()]
    assert len(names) == 12 * 3 + 3
    assert model_variable_names(names) == sorted(name for name, _ in ENCODER + DECODER)


def test_model_variable_names_keeps_lookalikes():
    # Nothing here is another variable's name plus one component, nor a counter.
    names = ["Adam/kernel", "dconv1/kernel", "conv1/kernel", "my_global_step/kernel", "beta1_power_x/bias"]
    assert model_variable_names(names) == sorted(names)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("conv", ("conv1", "conv2")),
        (" conv ", ("conv1", "conv2")),
        ("fc", ("fc1", "logits")),
        ("all", None),
        ("none", ()),
        ("conv1", ("conv1",)),
        ("conv1,fc1", ("conv1", "fc1")),
        (" conv1 , encoder/conv2/ ,logits", ("conv1", "encoder/conv2", "logits")),
    ],
)
def test_parse_scopes(text, expected):
    assert parse_scopes(text) == expected


def test_presets():
    assert PRESETS == {"conv": ("conv1", "conv2"), "fc": ("fc1", "logits"), "all": None, "none": ()}


@pytest.mark.parametrize("text", ["conv1,,conv2", "conv1,", ",conv1", "", "  ", "conv1, ,conv2", "/"])
def test_parse_scopes_rejects_empty_items(text):
    with pytest.raises(ValueError) as error:
        parse_scopes(text)
    message = str(error.value)
    assert message.startswith("empty scope in ")
    assert repr(text.strip()) in message
    assert "conv, fc, all, none" in message


def test_parse_pair():
    assert parse_pair("encoder/conv1=conv1", "=", "--map") == ("encoder/conv1", "conv1")
    assert parse_pair(" encoder/conv1/ = conv1/ ", "=", "--map") == ("encoder/conv1", "conv1")
    assert parse_pair("conv1=0.1", "=", "--lr-mult") == ("conv1", "0.1")


@pytest.mark.parametrize("text", ["encoder/conv1", "=conv1", "encoder/conv1=", "=", " = ", "/=conv1", ""])
def test_parse_pair_errors(text):
    with pytest.raises(ValueError) as error:
        parse_pair(text, "=", "--map")
    assert str(error.value) == f"--map takes LEFT=RIGHT, got {text!r}"


# --- make_plan: feature extraction (the default) ------------------------------------------


def test_conv_preset_from_the_autoencoder():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"]), CKPT)
    rows = rows_by_name(plan)
    assert [row.name for row in plan.rows] == [name for name, _ in CLASSIFIER]
    assert all(isinstance(row, PlanRow) for row in plan.rows)
    for name in CONV_NAMES:
        assert rows[name].action == "restored"
        assert rows[name].source == name
        assert rows[name].reason == ""
        assert rows[name].lr_mult == 0.0
        assert not rows[name].trainable
    for name in HEAD_NAMES:
        assert rows[name].action == "initialised"
        assert rows[name].source is None
        assert rows[name].lr_mult == 1.0
        assert rows[name].trainable
    assert rows["conv2/kernel"].shape == (5, 5, 16, 32)
    assert [row.name for row in plan.restored] == CONV_NAMES
    assert plan.frozen_restored == plan.restored
    assert plan.checkpoint == CKPT


def test_conv_preset_never_sources_decoder_or_slots():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"]), CKPT)
    sources = {row.source for row in plan.rows} - {None}
    assert sources == set(CONV_NAMES)
    for source in sources:
        assert not source.startswith("d")
        assert not source.endswith(("/Adam", "/Adam_1"))
    assert plan.restore_names() == {name: name for name in CONV_NAMES}
    assert plan.lr_groups() == {1.0: HEAD_NAMES}


def test_conv_preset_reports_unused_and_ignored():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"]), CKPT)
    assert sorted(info.name for info in plan.unused) == sorted(DECODER_NAMES)
    assert all(isinstance(info, VariableInfo) for info in plan.unused)
    assert dict((info.name, info.shape) for info in plan.unused) == dict(DECODER)
    # 12 model variables with two Adam slots each, plus beta1_power, beta2_power, global_step.
    assert plan.ignored_non_model == 12 * 2 + 3


def test_checkpoint_order_does_not_matter():
    forward = make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"]), CKPT)
    backward = make_plan(graph(), list(reversed(ae_checkpoint())), RestoreSelection(PRESETS["conv"]), CKPT)
    assert forward.rows == backward.rows
    assert sorted(forward.unused, key=lambda i: i.name) == sorted(backward.unused, key=lambda i: i.name)


def test_restore_single_scope():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(("conv1",)), CKPT)
    assert [row.name for row in plan.restored] == ["conv1/kernel", "conv1/bias"]
    assert rows_by_name(plan)["conv2/kernel"].action == "initialised"
    assert "conv2/kernel" in {info.name for info in plan.unused}
    assert plan.lr_groups() == {1.0: ["conv2/kernel", "conv2/bias"] + HEAD_NAMES}


def test_restore_a_single_variable_by_full_name():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(("conv1/kernel",)))
    assert [row.name for row in plan.restored] == ["conv1/kernel"]


def test_overlapping_restore_scopes_select_each_variable_once():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(("conv1", "conv1/kernel", "conv2", "conv1/")))
    assert [row.name for row in plan.restored] == CONV_NAMES
    assert plan.restore_names() == {name: name for name in CONV_NAMES}


# --- make_plan: fine-tuning and learning-rate multipliers ---------------------------------


def test_fine_tune_trains_restored_layers():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"], fine_tune=True))
    for row in plan.restored:
        assert row.trainable
        assert row.lr_mult == 1.0
    assert plan.frozen_restored == ()
    assert plan.lr_groups() == {1.0: [name for name, _ in CLASSIFIER]}


def test_lr_mult_groups_by_multiplier():
    plan = make_plan(
        graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"], fine_tune=True, lr_mults=[("conv1", 0.1)])
    )
    rows = rows_by_name(plan)
    assert rows["conv1/kernel"].lr_mult == 0.1
    assert rows["conv1/bias"].lr_mult == 0.1
    assert rows["conv2/kernel"].lr_mult == 1.0
    assert plan.lr_groups() == {1.0: ["conv2/kernel", "conv2/bias"] + HEAD_NAMES, 0.1: ["conv1/kernel", "conv1/bias"]}


def test_lr_mult_zero_freezes():
    plan = make_plan(
        graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"], fine_tune=True, lr_mults=[("conv2", 0)])
    )
    rows = rows_by_name(plan)
    assert rows["conv2/kernel"].lr_mult == 0.0
    assert isinstance(rows["conv2/kernel"].lr_mult, float)
    assert not rows["conv2/kernel"].trainable
    assert [row.name for row in plan.frozen_restored] == ["conv2/kernel", "conv2/bias"]
    assert plan.lr_groups() == {1.0: ["conv1/kernel", "conv1/bias"] + HEAD_NAMES}


def test_lr_mult_unfreezes_without_fine_tune():
    # Multipliers apply last, so they override the default freezing.
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"], lr_mults=[("conv1", 0.1)]))
    assert plan.lr_groups() == {1.0: HEAD_NAMES, 0.1: ["conv1/kernel", "conv1/bias"]}
    assert [row.name for row in plan.frozen_restored] == ["conv2/kernel", "conv2/bias"]


def test_lr_mult_later_pairs_win_and_apply_to_fresh_layers():
    plan = make_plan(
        graph(),
        ae_checkpoint(),
        RestoreSelection(PRESETS["conv"], lr_mults=[("fc1", 0.5), ("fc1/bias", 2), ("logits", 0)]),
    )
    rows = rows_by_name(plan)
    assert rows["fc1/kernel"].lr_mult == 0.5
    assert rows["fc1/bias"].lr_mult == 2.0
    assert not rows["logits/kernel"].trainable
    assert plan.lr_groups() == {0.5: ["fc1/kernel"], 2.0: ["fc1/bias"]}


# --- make_plan: all and none ----------------------------------------------------------------


def test_restore_all_from_the_autoencoder_selects_the_encoder():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(None), CKPT)
    assert [row.name for row in plan.restored] == CONV_NAMES
    assert plan.restore_names() == {name: name for name in CONV_NAMES}
    assert plan.lr_groups() == {1.0: HEAD_NAMES}
    assert sorted(info.name for info in plan.unused) == sorted(DECODER_NAMES)


def test_restore_all_from_a_classifier_freezes_everything():
    with pytest.raises(PlanError) as error:
        make_plan(graph(), classifier_checkpoint(), RestoreSelection(None), CKPT)
    message = str(error.value)
    assert message.startswith("nothing left to train: every variable is frozen")
    assert "--fine-tune" in message and "--lr-mult" in message


def test_restore_all_from_a_classifier_with_fine_tune():
    plan = make_plan(graph(), classifier_checkpoint(), RestoreSelection(None, fine_tune=True), CKPT)
    assert [row.name for row in plan.restored] == [name for name, _ in CLASSIFIER]
    assert plan.unused == ()
    assert plan.ignored_non_model == 8 * 2 + 3
    assert plan.lr_groups() == {1.0: [name for name, _ in CLASSIFIER]}


def test_restore_all_when_the_checkpoint_shares_nothing():
    checkpoint = checkpoint_of([("other/kernel", (3, 3))])
    with pytest.raises(PlanError) as error:
        make_plan(graph(), checkpoint, RestoreSelection(None), CKPT)
    message = str(error.value)
    assert f"--restore all: no graph variable is in {CKPT}" in message
    assert "graph scopes: conv1, conv2, fc1, logits" in message
    assert "checkpoint scopes: other" in message


@pytest.mark.parametrize("with_checkpoint", [False, True], ids=["no-checkpoint", "ae-checkpoint"])
def test_restore_none_initialises_everything(with_checkpoint):
    checkpoint_variables = ae_checkpoint() if with_checkpoint else ()
    plan = make_plan(graph(), checkpoint_variables, RestoreSelection(()))
    assert plan.restored == ()
    assert plan.restore_names() == {}
    assert all(row.action == "initialised" and row.source is None and row.lr_mult == 1.0 for row in plan.rows)
    assert plan.lr_groups() == {1.0: [name for name, _ in CLASSIFIER]}


def test_restore_none_without_checkpoint():
    plan = make_plan(graph(), (), RestoreSelection(PRESETS["none"]))
    assert plan.checkpoint is None
    assert plan.unused == ()
    assert plan.ignored_non_model == 0
    assert "restore plan (checkpoint: none)" in plan.format()


def test_restore_errors_are_user_errors():
    assert issubclass(PlanError, UserError)


# --- make_plan: errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "restore, bad",
    [
        (("conv3",), "conv3"),
        (parse_scopes("conv1,con"), "con"),
        (("conv1", "conv10"), "conv10"),
        (("onv1",), "onv1"),
        (("encoder/conv1",), "encoder/conv1"),
    ],
)
def test_restore_scope_matching_no_graph_variable(restore, bad):
    with pytest.raises(PlanError) as error:
        make_plan(graph(), ae_checkpoint(), RestoreSelection(restore), CKPT)
    assert str(error.value) == f"--restore {bad!r} matches no graph variable; graph scopes: conv1, conv2, fc1, logits"


def test_literal_conv_is_a_prefix_not_a_scope():
    # "conv" alone is a preset; inside a list it is a literal scope that owns nothing.
    with pytest.raises(PlanError, match="--restore 'conv' matches no graph variable"):
        make_plan(graph(), ae_checkpoint(), RestoreSelection(("conv1", "conv")))


def test_checkpoint_lacks_a_requested_scope():
    with pytest.raises(PlanError) as error:
        make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["fc"]), CKPT)
    message = str(error.value)
    assert message == (
        f"{CKPT} lacks fc1/kernel, fc1/bias, logits/kernel, logits/bias; "
        "checkpoint scopes: conv1, conv2, dconv1, dconv2, latent_var, z_matrix"
    )


def test_checkpoint_lacks_without_a_checkpoint_name():
    with pytest.raises(
        PlanError, match=r"^the checkpoint lacks fc1/kernel, fc1/bias; checkpoint scopes: conv1, conv2, dconv1"
    ):
        make_plan(graph(), ae_checkpoint(), RestoreSelection(("fc1",)))


def test_slots_never_stand_in_for_a_missing_variable():
    # Only conv1/kernel's slots are saved, not conv1/kernel itself: nothing to restore it from.
    checkpoint = [
        VariableInfo("conv1/kernel/Adam", (5, 5, 1, 16), F32),
        VariableInfo("conv1/bias", (16,), F32),
        VariableInfo("global_step", (), "int64"),
    ]
    with pytest.raises(PlanError) as error:
        make_plan(graph(), checkpoint, RestoreSelection(("conv1",)), CKPT)
    assert str(error.value).startswith(f"{CKPT} lacks conv1/kernel; checkpoint scopes: ")


def mismatched_checkpoint():
    table = list(ENCODER + DECODER)
    table[2] = ("conv2/kernel", (5, 5, 16, 64))
    return checkpoint_of(table)


def test_shape_mismatch_fails_by_default():
    with pytest.raises(PlanError) as error:
        make_plan(graph(), mismatched_checkpoint(), RestoreSelection(PRESETS["conv"]), CKPT)
    assert str(error.value) == (
        f"shape mismatch between {CKPT} and the graph: conv2/kernel: shape [5, 5, 16, 64] in checkpoint, "
        "[5, 5, 16, 32] in graph (pass --skip-mismatched to initialise these instead)"
    )


def test_shape_mismatch_lists_every_mismatch():
    table = list(ENCODER + DECODER)
    table[1] = ("conv1/bias", (8,))
    table[2] = ("conv2/kernel", (5, 5, 16, 64))
    with pytest.raises(PlanError) as error:
        make_plan(graph(), checkpoint_of(table), RestoreSelection(PRESETS["conv"]))
    message = str(error.value)
    assert "conv1/bias: shape [8] in checkpoint, [16] in graph" in message
    assert "conv2/kernel: shape [5, 5, 16, 64] in checkpoint, [5, 5, 16, 32] in graph" in message
    assert "--skip-mismatched" in message


def test_shape_mismatch_skipped():
    plan = make_plan(graph(), mismatched_checkpoint(), RestoreSelection(PRESETS["conv"], skip_mismatched=True), CKPT)
    rows = rows_by_name(plan)
    skipped = rows["conv2/kernel"]
    assert skipped.action == "skipped"
    assert skipped.source is None
    assert skipped.reason == "shape [5, 5, 16, 64] in checkpoint, [5, 5, 16, 32] in graph"
    assert skipped.trainable and skipped.lr_mult == 1.0
    # the whole layer: conv2/bias fits, but is not restored beside a fresh kernel
    assert rows["conv2/bias"].action == "skipped" and rows["conv2/bias"].reason == "layer skipped with conv2/kernel"
    assert [row.name for row in plan.restored] == ["conv1/kernel", "conv1/bias"]
    assert "conv2/kernel" not in plan.restore_names()
    assert plan.lr_groups() == {1.0: ["conv2/kernel", "conv2/bias"] + HEAD_NAMES}
    unused = {info.name: info.shape for info in plan.unused}
    assert unused["conv2/kernel"] == (5, 5, 16, 64)
    assert "skipped (shape [5, 5, 16, 64] in checkpoint, [5, 5, 16, 32] in graph)" in plan.format()
    assert plan.skipped_layer_notes() == [
        "skipped layer conv2 (2 variables initialised): conv2/kernel has shape [5, 5, 16, 64] in checkpoint, "
        "[5, 5, 16, 32] in graph"
    ]
    assert "  " + plan.skipped_layer_notes()[0] in plan.format().splitlines()


def test_dtype_mismatch_fails_even_when_skipping_shapes():
    checkpoint = [
        info if info.name != "conv1/bias" else VariableInfo("conv1/bias", (16,), "float64") for info in ae_checkpoint()
    ]
    for skip in (False, True):
        with pytest.raises(PlanError) as error:
            make_plan(graph(), checkpoint, RestoreSelection(PRESETS["conv"], skip_mismatched=skip), CKPT)
        message = str(error.value)
        assert message == f"conv1/bias is float64 in {CKPT} but conv1/bias is float32 in the graph"


def test_unselected_mismatches_do_not_matter():
    # conv2 differs, but only conv1 is restored.
    plan = make_plan(graph(), mismatched_checkpoint(), RestoreSelection(("conv1",)))
    assert [row.name for row in plan.restored] == ["conv1/kernel", "conv1/bias"]


# --- make_plan: --map ---------------------------------------------------------------------------


ENCODER_MAPS = [("encoder/conv1", "conv1"), ("encoder/conv2", "conv2")]


def encoder_checkpoint(extra=()):
    return checkpoint_of([("encoder/" + name, shape) for name, shape in ENCODER] + list(extra))


def test_map_restores_from_another_scope():
    plan = make_plan(graph(), encoder_checkpoint(), RestoreSelection(PRESETS["conv"], maps=ENCODER_MAPS), CKPT)
    rows = rows_by_name(plan)
    for name in CONV_NAMES:
        assert rows[name].action == "restored"
        assert rows[name].source == "encoder/" + name
        assert rows[name].reason == "mapped"
    assert plan.restore_names() == {"encoder/" + name: name for name in CONV_NAMES}
    assert plan.unused == ()
    assert "encoder/conv1/kernel" in plan.format()
    assert "restored (mapped)" in plan.format()


def test_map_with_restore_all():
    plan = make_plan(graph(), encoder_checkpoint(), RestoreSelection(None, maps=ENCODER_MAPS))
    assert plan.restore_names() == {"encoder/" + name: name for name in CONV_NAMES}


def test_map_from_parse_pair_with_slashes():
    maps = [parse_pair("encoder/conv1/=conv1/", "=", "--map"), parse_pair("/encoder/conv2=conv2", "=", "--map")]
    plan = make_plan(graph(), encoder_checkpoint(), RestoreSelection(PRESETS["conv"], maps=maps))
    assert plan.restore_names() == {"encoder/" + name: name for name in CONV_NAMES}


def test_map_tolerates_a_trailing_slash_on_both_sides():
    # in_scope tolerates "scope/"; the map's source side should too, as its target side does.
    plan = make_plan(
        graph(),
        encoder_checkpoint(),
        RestoreSelection(PRESETS["conv"], maps=[("encoder/conv1/", "conv1/"), ("encoder/conv2/", "conv2/")]),
    )
    assert plan.restore_names() == {"encoder/" + name: name for name in CONV_NAMES}


def test_map_does_not_catch_a_longer_scope():
    checkpoint = encoder_checkpoint(extra=[("encoder/conv10/kernel", (5, 5, 1, 16)), ("encoder/conv10/bias", (16,))])
    plan = make_plan(graph(), checkpoint, RestoreSelection(PRESETS["conv"], maps=ENCODER_MAPS))
    assert plan.restore_names() == {"encoder/" + name: name for name in CONV_NAMES}
    assert sorted(info.name for info in plan.unused) == ["encoder/conv10/bias", "encoder/conv10/kernel"]


def test_map_source_only_matching_a_longer_scope_is_an_error():
    checkpoint = checkpoint_of([("encoder/conv10/kernel", (5, 5, 1, 16)), ("encoder/conv10/bias", (16,))])
    with pytest.raises(PlanError) as error:
        make_plan(graph(), checkpoint, RestoreSelection(("conv1",), maps=[("encoder/conv1", "conv1")]), CKPT)
    assert (
        str(error.value)
        == f"--map encoder/conv1=conv1: {CKPT} has no scope 'encoder/conv1'; checkpoint scopes: encoder/conv10"
    )


def test_map_source_matching_only_slots_is_an_error():
    checkpoint = encoder_checkpoint()
    with pytest.raises(
        PlanError,
        match=r"--map encoder/conv1/kernel/Adam=conv1/kernel: the checkpoint has no scope 'encoder/conv1/kernel/Adam'",
    ):
        make_plan(
            graph(), checkpoint, RestoreSelection(("conv1",), maps=[("encoder/conv1/kernel/Adam", "conv1/kernel")])
        )


@pytest.mark.parametrize("target", ["conv3", "con", "encoder/conv1", "conv1/kern"])
def test_map_target_matching_no_graph_scope(target):
    with pytest.raises(PlanError) as error:
        make_plan(
            graph(), encoder_checkpoint(), RestoreSelection(PRESETS["conv"], maps=[("encoder/conv1", target)]), CKPT
        )
    assert (
        str(error.value)
        == f"--map encoder/conv1={target}: the graph has no scope {target!r}; graph scopes: conv1, conv2, fc1, logits"
    )


def test_map_target_does_not_catch_a_longer_graph_scope():
    wide_graph = infos(CLASSIFIER + [("conv10/kernel", (5, 5, 1, 16)), ("conv10/bias", (16,))])
    checkpoint = encoder_checkpoint(extra=[("conv10/kernel", (5, 5, 1, 16)), ("conv10/bias", (16,))])
    plan = make_plan(wide_graph, checkpoint, RestoreSelection(("conv1", "conv2", "conv10"), maps=ENCODER_MAPS))
    names = plan.restore_names()
    assert names["conv10/kernel"] == "conv10/kernel"
    assert names["encoder/conv1/kernel"] == "conv1/kernel"
    assert rows_by_name(plan)["conv10/bias"].reason == ""


def test_mapped_variable_missing_from_the_checkpoint():
    # encoder/conv1 exists, so the map is valid, but one of its variables is absent.
    checkpoint = [info for info in encoder_checkpoint() if not info.name.startswith("encoder/conv1/bias")]
    with pytest.raises(PlanError) as error:
        make_plan(graph(), checkpoint, RestoreSelection(("conv1",), maps=ENCODER_MAPS[:1]), CKPT)
    assert (
        str(error.value)
        == f"{CKPT} lacks encoder/conv1/bias (for conv1/bias); checkpoint scopes: encoder/conv1, encoder/conv2"
    )


def test_every_restored_row_reaches_the_saver():
    # Two graph scopes mapped from one checkpoint scope: the Saver's {checkpoint name:
    # graph name} cannot hold both, so make_plan must refuse, or restore_names must still
    # cover every restored row; it must never report a restore that will not happen.
    small_graph = infos([("a/kernel", (3,)), ("b/kernel", (3,)), ("head/kernel", (3,))])
    checkpoint = checkpoint_of([("src/kernel", (3,))])
    try:
        plan = make_plan(small_graph, checkpoint, RestoreSelection(("a", "b"), maps=[("src", "a"), ("src", "b")]), CKPT)
    except PlanError as error:
        assert "src/kernel" in str(error)
    else:
        assert sorted(plan.restore_names().values()) == sorted(row.name for row in plan.restored)


# --- make_plan: exclude and lr_mult errors ---------------------------------------------------------


def test_exclude_removes_a_scope():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"], exclude=("conv2",)))
    assert [row.name for row in plan.restored] == ["conv1/kernel", "conv1/bias"]
    rows = rows_by_name(plan)
    assert rows["conv2/kernel"].action == "initialised" and rows["conv2/kernel"].trainable
    assert plan.lr_groups() == {1.0: ["conv2/kernel", "conv2/bias"] + HEAD_NAMES}


def test_exclude_with_restore_all():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(None, exclude=("conv1/bias",)))
    assert [row.name for row in plan.restored] == ["conv1/kernel", "conv2/kernel", "conv2/bias"]


@pytest.mark.parametrize("scope", ["fc1", "conv", "conv10", "dconv1"])
def test_exclude_matching_nothing_selected(scope):
    with pytest.raises(PlanError) as error:
        make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"], exclude=(scope,)))
    assert (
        str(error.value)
        == f"--restore-exclude {scope!r} matches none of the variables selected to restore (conv1, conv2)"
    )


@pytest.mark.parametrize("scope", ["conv3", "fc", "dconv1", "logits/kern"])
def test_lr_mult_matching_no_graph_variable(scope):
    with pytest.raises(PlanError) as error:
        make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"], lr_mults=[(scope, 0.1)]))
    assert str(error.value) == f"--lr-mult {scope!r} matches no graph variable; graph scopes: conv1, conv2, fc1, logits"


def test_freezing_the_head_too_leaves_nothing_to_train():
    with pytest.raises(PlanError, match="^nothing left to train"):
        make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"], lr_mults=[("fc1", 0), ("logits", 0)]))


# --- RestorePlan.format and to_json ------------------------------------------------------------


def test_format_has_a_line_per_graph_variable():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"], lr_mults=[("fc1", 0.5)]), CKPT)
    lines = plan.format().splitlines()
    assert lines[0] == f"restore plan (checkpoint: {CKPT})"
    assert lines[1].split() == ["variable", "shape", "source", "action", "train", "lr", "x"]
    table = lines[2:10]
    assert [line.split()[0] for line in table] == [name for name, _ in CLASSIFIER]
    by_name = {line.split()[0]: line for line in table}
    conv1 = by_name["conv1/kernel"]
    assert "[5, 5, 1, 16]" in conv1
    assert conv1.split()[-4:] == ["conv1/kernel", "restored", "frozen", "0"]
    fc1 = by_name["fc1/kernel"]
    assert "[1568, 200]" in fc1
    assert fc1.split()[-4:] == ["fresh", "initialised", "yes", "0.5"]
    assert by_name["logits/bias"].split()[-4:] == ["fresh", "initialised", "yes", "1"]
    # Columns line up: every variable's shape starts at the same offset.
    assert len({line.index("[") for line in table}) == 1


def test_format_lists_unused_and_ignored():
    plan = make_plan(graph(), ae_checkpoint(), RestoreSelection(PRESETS["conv"]), CKPT)
    text = plan.format()
    assert len(text.splitlines()) == 2 + 8 + 2
    unused_line = [line for line in text.splitlines() if "not restored" in line]
    assert len(unused_line) == 1
    assert unused_line[0].strip().startswith("checkpoint variables not restored (8): ")
    for name, shape in DECODER:
        assert f"{name} [{', '.join(map(str, shape))}]" in unused_line[0]
    assert "latent_var/kernel [1568, 20]" in unused_line[0]
    assert "dconv2/bias [1]" in unused_line[0]
    assert "checkpoint optimizer slots and counters ignored: 27" in text
    assert "/Adam" not in text


def test_format_without_unused_or_ignored():
    plan = make_plan(graph(), (), RestoreSelection(()))
    text = plan.format()
    assert "not restored" not in text
    assert "ignored" not in text
    assert len(text.splitlines()) == 2 + 8


def test_to_json():
    plan = make_plan(
        graph(),
        mismatched_checkpoint(),
        RestoreSelection(PRESETS["conv"], skip_mismatched=True, lr_mults=[("conv1", 0.1)]),
        CKPT,
    )
    record = json.loads(json.dumps(plan.to_json()))
    assert record == plan.to_json()
    assert set(record) == {
        "checkpoint",
        "variables",
        "unused_checkpoint_variables",
        "ignored_optimizer_and_counter_variables",
    }
    assert record["checkpoint"] == CKPT
    assert [entry["name"] for entry in record["variables"]] == [name for name, _ in CLASSIFIER]
    for entry in record["variables"]:
        assert set(entry) == {"name", "shape", "source", "action", "reason", "trainable", "updated", "lr_mult"}
    by_name = {entry["name"]: entry for entry in record["variables"]}
    assert by_name["conv1/kernel"] == {
        "name": "conv1/kernel",
        "shape": [5, 5, 1, 16],
        "source": "conv1/kernel",
        "action": "restored",
        "reason": "",
        "trainable": True,
        "updated": False,
        "lr_mult": 0.1,
    }
    assert by_name["conv2/bias"]["action"] == "skipped" and by_name["conv2/bias"]["trainable"] is True
    assert by_name["conv2/kernel"] == {
        "name": "conv2/kernel",
        "shape": [5, 5, 16, 32],
        "source": None,
        "action": "skipped",
        "reason": "shape [5, 5, 16, 64] in checkpoint, [5, 5, 16, 32] in graph",
        "trainable": True,
        "updated": False,
        "lr_mult": 1.0,
    }
    assert by_name["fc1/kernel"]["source"] is None and by_name["fc1/kernel"]["action"] == "initialised"
    unused = {entry["name"]: entry["shape"] for entry in record["unused_checkpoint_variables"]}
    expected = {"conv2/kernel": [5, 5, 16, 64], "conv2/bias": [32]}
    assert unused == {**expected, **{name: list(shape) for name, shape in DECODER}}
    assert all(set(entry) == {"name", "shape"} for entry in record["unused_checkpoint_variables"])
    assert record["ignored_optimizer_and_counter_variables"] == 27


def test_to_json_without_checkpoint():
    record = json.loads(json.dumps(make_plan(graph(), (), RestoreSelection(())).to_json()))
    assert record["checkpoint"] is None
    assert record["unused_checkpoint_variables"] == []
    assert record["ignored_optimizer_and_counter_variables"] == 0


def test_lr_groups_follow_graph_order_not_multiplier_order():
    rows = (
        PlanRow("b", (1,), None, "initialised", "", 0.5),
        PlanRow("a", (1,), "a", "restored", "", 0.0),
        PlanRow("c", (1,), None, "initialised", "", 1.0),
        PlanRow("d", (1,), None, "initialised", "", 0.5),
    )
    plan = RestorePlan(checkpoint=None, rows=rows, unused=(), ignored_non_model=0)
    assert plan.lr_groups() == {0.5: ["b", "d"], 1.0: ["c"]}
    assert plan.restore_names() == {"a": "a"}
    assert plan.frozen_restored == (rows[1],)


# --- BatchNorm's moving statistics -----------------------------------------------------------

BN_GRAPH = [
    VariableInfo("net/conv1/weights", (3, 3, 3, 8), F32),
    VariableInfo("net/conv1/BatchNorm/beta", (8,), F32),
    VariableInfo("net/conv1/BatchNorm/moving_mean", (8,), F32, trainable=False),
    VariableInfo("net/conv1/BatchNorm/moving_variance", (8,), F32, trainable=False),
    VariableInfo("net/conv2/weights", (3, 3, 8, 8), F32),
    VariableInfo("net/conv2/BatchNorm/beta", (8,), F32),
    VariableInfo("net/conv2/BatchNorm/moving_mean", (8,), F32, trainable=False),
    VariableInfo("net/conv2/BatchNorm/moving_variance", (8,), F32, trainable=False),
    VariableInfo("net/logits/weights", (8, 4), F32),
]
BN_CHECKPOINT = [VariableInfo(info.name, info.shape, info.dtype) for info in BN_GRAPH[:-1]] + [
    VariableInfo("net/logits/weights", (8, 1000), F32)
]


def _rows(plan):
    return {row.name: row for row in plan.rows}


def test_moving_statistics_of_frozen_layers_are_frozen_and_checked():
    plan = make_plan(BN_GRAPH, BN_CHECKPOINT, RestoreSelection(("net",), exclude=("net/logits",)), CKPT)
    rows = _rows(plan)
    assert {name for name, row in rows.items() if row.trainable} == {"net/logits/weights"}
    assert not any(row.updated for row in plan.rows)
    assert plan.batch_norm_training_scopes() == set()
    assert "net/conv2/BatchNorm/moving_variance" in {row.name for row in plan.frozen_restored}
    assert "4 frozen (inference mode, never updated" in plan.format()


def test_fine_tuned_layers_keep_their_statistics_unless_asked():
    kept = make_plan(
        BN_GRAPH,
        BN_CHECKPOINT,
        RestoreSelection(("net",), exclude=("net/logits",), lr_mults=[("net/conv2", 0.1)]),
        CKPT,
    )
    rows = _rows(kept)
    assert rows["net/conv2/BatchNorm/beta"].trainable
    # An optimizer never trains a moving statistic, whatever the multipliers say.
    assert rows["net/conv2/BatchNorm/moving_mean"].lr_mult == 0 and not rows["net/conv2/BatchNorm/moving_mean"].updated
    assert "net/conv2/BatchNorm/moving_mean" in {row.name for row in kept.frozen_restored}
    assert "net/conv2/BatchNorm/moving_mean" not in kept.lr_groups().get(0.1, [])

    updated = make_plan(
        BN_GRAPH,
        BN_CHECKPOINT,
        RestoreSelection(("net",), exclude=("net/logits",), lr_mults=[("net/conv2", 0.1)], train_batch_norm=True),
        CKPT,
    )
    rows = _rows(updated)
    assert rows["net/conv2/BatchNorm/moving_mean"].updated and rows["net/conv2/BatchNorm/moving_variance"].updated
    assert not rows["net/conv1/BatchNorm/moving_mean"].updated
    assert updated.batch_norm_training_scopes() == {"net/conv2/BatchNorm"}
    frozen = {row.name for row in updated.frozen_restored}
    assert "net/conv2/BatchNorm/moving_mean" not in frozen and "net/conv1/BatchNorm/moving_mean" in frozen
    assert "| net/conv2/BatchNorm/moving_mean | [8] | net/conv2/BatchNorm/moving_mean | restored | updated | 0 |" in (
        updated.markdown()
    )


def test_fresh_batch_norm_layers_always_train_their_statistics():
    plan = make_plan(BN_GRAPH, (), RestoreSelection(()), None)
    assert plan.batch_norm_training_scopes() == {"net/conv1/BatchNorm", "net/conv2/BatchNorm"}
    assert plan.frozen_restored == ()


# --- bit identity ----------------------------------------------------------------------


def test_worst_difference_is_zero_only_for_bit_identical_pairs():
    """Over shapes x dtypes x what one element of one pair becomes: the largest |difference|, NaN as inf."""
    rng = np.random.default_rng(7)
    changes = {"same": None, "+1e-7": 1e-7, "-2.5": -2.5, "nan": np.nan, "inf": np.inf}
    situations = list(itertools.product([(1,), (3, 4), (2, 2, 3)], [np.float32, np.float64], changes, [0, 1, 2]))
    for shape, dtype, change, which in situations:
        sources = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
        values = [source.copy() for source in sources]
        delta = changes[change]
        if delta is not None:
            flat = values[which].reshape(-1)
            flat[rng.integers(flat.size)] += dtype(delta)
        worst = worst_difference(zip(values, sources))
        if delta is None:
            assert worst == 0.0
        elif np.isnan(delta):
            assert worst == np.inf
        elif np.isinf(delta):
            assert worst == np.finfo(np.float64).max  # nan_to_num's stand-in for inf: never 0.0
        else:
            expected = float(np.abs(values[which].astype(np.float64) - sources[which]).max())
            assert worst == expected and worst > 0.0, (shape, dtype, change)
    assert len(situations) == 90


# --- the shape check -------------------------------------------------------------------


def test_misfits_names_every_missing_or_reshaped_variable_in_graph_order():
    """Each of the classifier's variables held as is, missing, or with one dimension changed."""
    graph = [
        types.SimpleNamespace(op=types.SimpleNamespace(name=name), shape=tf.TensorShape(shape))
        for name, shape in CLASSIFIER_VARIABLES.items()
    ]
    rng = random.Random(11)
    situations = 0
    for _ in range(200):
        states = [rng.choice(["fits", "missing", "reshaped"]) for _ in graph]
        held, expected = {"global_step": []}, []
        for (name, shape), state in zip(CLASSIFIER_VARIABLES.items(), states):
            if state == "fits":
                held[name] = tuple(shape)
            elif state == "missing":
                expected.append((name, None, shape))
            else:
                other = [*shape[:-1], shape[-1] + 1]
                held[name] = tuple(other)
                expected.append((name, other, shape))
        assert misfits(graph, held) == expected
        assert shape_differences(graph, held) == [
            f"{name} is missing" if theirs is None else f"{name} is {theirs}, the graph has {want}"
            for name, theirs, want in expected
        ]
        situations += 1
    assert situations == 200


# --- the scope boundary ----------------------------------------------------------------


def test_one_scope_boundary_rule_for_selection_and_batch_norm_updates():
    """Every name and scope of 1-3 parts over pieces that prefix one another, scopes with and without a trailing /."""
    pieces = ["net", "conv1", "conv10", "conv1_1", "BatchNorm"]
    paths = ["/".join(parts) for size in (1, 2, 3) for parts in itertools.product(pieces, repeat=size)]
    updates = {name: index for index, name in enumerate(paths)}
    situations = 0
    for scope in paths:
        for written in (scope, scope + "/"):
            expected = [name for name in paths if name.split("/")[: scope.count("/") + 1] == scope.split("/")]
            assert [name for name in paths if in_scope(name, written)] == expected
            assert batch_norm.update_ops(updates, [written]) == [updates[name] for name in expected]
            situations += 1
    assert situations == 2 * len(paths) == 310
