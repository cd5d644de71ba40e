"""The transfer run's config: its flags as runtime.options records, and their validation.

TRANSFER_OPTIONS choose what is restored and what trains; train_transfer.py and
`transfer.inspect --plan` both take them. TRAIN_TRANSFER is the whole of
train_transfer.py: its parser, the flag values in config.json, the resume keys
(transfer.train.RESUME_KEYS), the argv experiments build, and `validate`, the one check
of every flag value that can be made before data or graphs are touched.
"""

import dataclasses
import os

from models import networks, user_network
from runtime import cli, cluster
from runtime.errors import UserError
from runtime.options import Flags, Group, Option
from runtime.paths import shown
from transfer import channels, class_heads
from transfer import graph as transfer_graph
from transfer.plan import RestoreSelection
from transfer.selection import PRESETS, parse_pair, parse_scopes, parse_selector

TRANSFER_OPTIONS = (
    Option(
        "--network",
        type=user_network.flag_type,
        default=networks.DEFAULT,
        resume=True,
        help="the classifier's network: cae is the digit classifier over the autoencoder's encoder; the others "
        "take ImageNet checkpoints by TF-Slim's (or the EfficientNet-Lite release's) names; or "
        + user_network.HELP
        + " (default: %(default)s)",
    ),
    Option(
        "--image-size",
        type=cli.bounded_int(32, 1024),
        resume=True,
        help="side of the square input of an ImageNet network (default: its own, 224); smaller is faster",
    ),
    Option(
        "--restore",
        default="conv",
        resume=True,
        help=f"what to restore: a preset ({', '.join(PRESETS)}; backbone: everything but the network's head) "
        "or a comma list of scopes such as conv1,conv2 and patterns such as re:conv[12]/.* (re: marks a regular "
        "expression, matched against whole variable names; anything else is a scope) (default: %(default)s)",
    ),
    Option(
        "--restore-exclude",
        default="",
        resume=True,
        help="comma list of scopes or re: patterns to leave out of --restore",
    ),
    Option(
        "--map",
        action="append",
        metavar="SRC=DST",
        resume=True,
        help="restore checkpoint scope SRC into graph scope DST, e.g. encoder/conv1=conv1 (repeatable)",
    ),
    Option(
        "--skip-mismatched",
        action="store_true",
        resume=True,
        help="initialise variables whose shapes differ from the checkpoint instead of failing, and report them",
    ),
    Option(
        "--fine-tune",
        action="store_true",
        resume=True,
        help="train the restored variables too (default: freeze them)",
    ),
    Option(
        "--lr-mult",
        action="append",
        metavar="SCOPE=F",
        resume=True,
        help="scale SCOPE's learning rate by F; F=0 freezes it; SCOPE may be a pattern re:REGEX matched against "
        "whole variable names (repeatable; applied after --fine-tune)",
    ),
    Option(
        "--channels",
        type=cli.bounded_int(1, 4),
        resume=True,
        help="input channels the network takes (default: its own, 3 for the ImageNet networks); an image folder "
        "is decoded to them (4 keeps a PNG's alpha, 1 makes grey; see data.image_folder) and the first "
        "convolution is adapted by --adapt-channels",
    ),
    Option(
        "--adapt-channels",
        choices=(*channels.RULES, "none"),
        default=channels.DEFAULT_RULE,
        resume=True,
        help=channels.HELP,
    ),
    Option(
        "--train-batch-norm",
        action="store_true",
        resume=True,
        help="in restored BatchNorm layers that train (--fine-tune, --lr-mult), normalise with batch statistics "
        "and update the moving statistics; default: keep the checkpoint's statistics (inference mode)",
    ),
    Option(
        "--moving-average",
        action="store_true",
        resume=True,
        help="restore each variable's ExponentialMovingAverage shadow where the checkpoint holds one (the weights "
        "EfficientNet and other zoo models are evaluated with), its raw value where not; the plan marks each "
        "'shadow'. A checkpoint without shadows is refused",
    ),
    Option(
        "--keep-classes",
        action="store_true",
        resume=True,
        help="start the new head's rows of classes the source also has (by name, any synonym, case aside) from "
        "the checkpoint's head rows; the others fresh (with --restore backbone or less; default: all fresh)",
    ),
    Option(
        "--source-labels",
        metavar="FILE",
        resume=True,
        help="with --keep-classes: the checkpoint head's class names, one row per line, synonyms comma-separated; "
        "blank lines and lines starting with # are skipped, background logits are not listed "
        "(default: the network's own, e.g. ImageNet's)",
    ),
    Option(
        "--class-map",
        metavar="FILE",
        resume=True,
        help='with --keep-classes: JSON {"new class": ["source class", ...]} for names that differ; '
        "a class of several starts from their rows' mean",
    ),
)


def _dropout_rate(rate):
    return None if 0.0 <= rate < 1.0 else f"must be in [0, 1), got {rate}"


SOURCE_OPTIONS = (
    Option(
        "--checkpoint",
        default=os.path.join("checkpoints", "autoencoder"),
        resume=True,
        help="the transfer source: a model dir (its newest checkpoint) or a checkpoint prefix (default: %(default)s)",
    ),
    *TRANSFER_OPTIONS,
    Option("--dry-run", action="store_true", help="print the restore plan and exit without training"),
    Option(
        "--cache-features",
        choices=("auto", "on", "off"),
        default="auto",
        help="train the head on features computed once; "
        "auto: whenever everything below the head is frozen (default: %(default)s)",
    ),
    Option(
        "--feature-cache",
        metavar="DIR",
        help="keep the frozen layers' features on disk in DIR, keyed by the checkpoint's content, the network, "
        "its preprocessing and each image's content, so a later run skips the frozen layers (default: off)",
    ),
    Option(
        "--feature-cache-max-mb",
        type=cli.positive_int,
        default=2048,
        help="size bound of --feature-cache; the least recently used entries go first (default: %(default)s)",
    ),
)

TRAINING_OPTIONS = (
    Option(
        "--labels-per-class",
        type=cli.positive_int,
        resume=True,
        help="labelled training examples per class, a balanced seeded subset (default: all)",
    ),
    Option(
        "--validation-size",
        type=cli.non_negative_int,
        default=500,
        resume=True,
        help="IDX data: training examples held out to pick the best epoch; "
        "the test set is never used for that (default: %(default)s)",
    ),
    Option(
        "--validation-percent",
        type=cli.percent,
        default=10.0,
        resume=True,
        help="image folder: share of each class held out to pick the best epoch, by a hash of each file's path "
        "in its class folder (default: %(default)s)",
    ),
    Option(
        "--test-percent",
        type=cli.percent,
        default=10.0,
        resume=True,
        help="image folder without train/ and test/ subfolders: share of each class kept for test "
        "(default: %(default)s)",
    ),
    Option(
        "--min-per-class",
        type=cli.positive_int,
        default=1,
        help="image folder: fewest usable training images a class may have (default: %(default)s)",
    ),
    *(
        option.but(
            default=None,
            help="passes over the labelled examples (default: 30, or as many more as make --min-steps steps)",
        )
        if option.flag == "--epochs"
        else option
        for option in cli.training_options(30, "the labelled examples", "examples")
    ),
    Option(
        "--min-steps",
        type=cli.non_negative_int,
        default=600,
        help="without --epochs, train at least this many steps: a small labelled set makes short epochs "
        "(0: 30 epochs whatever their length; default: %(default)s)",
    ),
    Option(
        "--dropout",
        type=float,
        default=0.0,
        resume=True,
        check=_dropout_rate,
        help="dropout rate on fc1 while training, in [0, 1) (default: %(default)s)",
    ),
    Option(
        "--shift",
        type=cli.non_negative_int,
        default=0,
        resume=True,
        help="shift each training image by up to this many pixels at random; "
        "turns the feature cache off (default: %(default)s)",
    ),
)


def _lr_mult(text):
    # The multiplier follows the last "=", so a pattern may hold one: re:(?=.*conv).*=0.1.
    head, found, value = text.rpartition("=")
    scope, value = parse_selector(head, "--lr-mult"), value.strip()
    if not found or not scope or not value:
        raise ValueError(f"--lr-mult takes SCOPE=F, got {text!r}")
    try:
        multiplier = float(value)
    except ValueError:
        raise ValueError(f"--lr-mult {text}: {value!r} is not a number") from None
    if not 0.0 <= multiplier < float("inf"):
        raise ValueError(f"--lr-mult {text}: the multiplier must be 0 or a positive number")
    return scope, multiplier


def parse_transfer_flags(args, restore_text=None):
    """Reads the TRANSFER_OPTIONS restore flags; raises before any graph is built.

    Args:
      args: the parsed flags.
      restore_text: read instead of args.restore when given.

    Returns:
      A RestoreSelection.

    Raises:
      UserError: for a malformed value.
    """
    try:
        restore = parse_scopes(args.restore if restore_text is None else restore_text)
        exclude = parse_scopes(args.restore_exclude, "--restore-exclude") if args.restore_exclude.strip() else ()
        maps = tuple(parse_pair(text, "=", "--map") for text in args.map)
        lr_mults = tuple(_lr_mult(text) for text in args.lr_mult)
    except ValueError as error:
        raise UserError(str(error)) from None
    if exclude is None:
        raise UserError("--restore-exclude takes scopes, not 'all'")
    if restore == () and (maps or exclude):
        raise UserError("--map and --restore-exclude need something to restore; --restore none restores nothing")
    if restore == () and args.moving_average:
        raise UserError("--moving-average picks what is restored; --restore none restores nothing")
    return RestoreSelection(
        restore,
        exclude,
        maps,
        lr_mults,
        skip_mismatched=args.skip_mismatched,
        fine_tune=args.fine_tune,
        train_batch_norm=args.train_batch_norm,
        moving_average=args.moving_average,
    )


def restore_scopes(args, network):
    """The restore flags for this network, with `backbone` resolved.

    Returns:
      A RestoreSelection.

    Raises:
      UserError: a preset of the digit classifier's for another network, or a bad value.
    """
    preset = args.restore.strip()
    if preset in PRESETS and preset not in ("all", "none", *network.restore_presets):
        owners = " or ".join(other.title for other in networks.NETWORKS.values() if preset in other.restore_presets)
        raise UserError(
            f"--restore {preset} is the {owners}'s preset; for {network.name} use backbone, all, none "
            "or a comma list of scopes"
        )
    classes = _class_sources(network, args.keep_classes, args.source_labels, args.class_map)
    if preset != "backbone":
        return dataclasses.replace(parse_transfer_flags(args), classes=classes)
    selection = dataclasses.replace(parse_transfer_flags(args, restore_text="all"), classes=classes)
    # Everything below the head: the network's top scopes (its outer scope, or for the
    # digit classifier its encoder), the head's scopes left out.
    if network.scope:
        return dataclasses.replace(
            selection, restore=(network.scope,), exclude=(*selection.exclude, *network.head_scopes)
        )
    return dataclasses.replace(selection, restore=network.block_scopes)


def _class_sources(network, keep_classes, source_labels, class_map):
    """The --keep-classes request: a class_heads.ClassSources, or None when not asked for.

    Raises:
      UserError: --source-labels or --class-map without --keep-classes, a network without class
        names and no --source-labels, or a file that does not parse.
    """
    if not keep_classes:
        if source_labels or class_map:
            raise UserError("--source-labels and --class-map go with --keep-classes")
        return None
    mapped = class_heads.load_class_map(class_map) if class_map else ()
    if source_labels:
        lines, where = class_heads.read_labels(source_labels), f"--source-labels {shown(source_labels)}"
    elif network.class_names_file is None:
        raise UserError(f"--keep-classes: {network.name} has no class names; name its head's rows with --source-labels")
    else:
        lines, where = network.class_names()[network.label_offset :], f"the {network.name} class names"
    return class_heads.sources_of(lines, network.label_offset, mapped, where)


def network_and_flags(args):
    """The --network, --image-size and restore flags, checked (train_transfer.py and inspect --plan).

    Returns:
      (network, InputSpec it is fed, RestoreSelection).

    Raises:
      UserError: for an image size the network cannot take, or a restore flag that does not parse.
    """
    network = user_network.resolve(args.network)
    if args.image_size is not None and not network.resizable:
        height, width = network.image_size
        raise UserError(f"--image-size is for the ImageNet networks; the {network.title} takes {height}x{width}")
    if args.image_size is not None and args.image_size < network.min_image_size:
        raise UserError(
            f"--image-size {args.image_size}: {network.name} needs at least {network.min_image_size} "
            f"({network.min_size_reason})"
        )
    rule = "" if args.adapt_channels == "none" else args.adapt_channels
    selection = dataclasses.replace(restore_scopes(args, network), adapt_channels=rule, first_conv=network.first_conv)
    return network, transfer_graph.input_spec(network, args.image_size, args.channels), selection


TRAIN_TRANSFER = Flags(
    Group("transfer", SOURCE_OPTIONS),
    Group("training", TRAINING_OPTIONS),
    cli.DATA_OPTIONS,
    cli.runtime_options(os.path.join("checkpoints", "transfer")),
    cluster.CLUSTER_FLAGS,
    validators=(network_and_flags,),
    # Not flags: where the data came from, its fingerprint and its files' sha256 (transfer.labelled);
    # the user's network file; the kept class rows (transfer.class_heads).
    resume_extra=("data_source", "data_identity", "data_sha256", "network_source", "class_columns"),
)


def validate(args):
    """Checks every flag value of a transfer run that argparse cannot, before data or graphs are touched.

    Returns:
      (network, InputSpec it is fed, RestoreSelection).

    Raises:
      UserError: naming the first offending value.
    """
    ((network, spec, flags),) = TRAIN_TRANSFER.validate(args)
    return network, spec, flags
