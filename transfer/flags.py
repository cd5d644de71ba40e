"""The flags that choose what is restored and what trains: one definition for every command."""

from models import networks
from runtime import cli
from runtime.errors import UserError
from transfer.selection import PRESETS, parse_pair, parse_scopes


def add_transfer_flags(group):
    """Adds --network, --image-size, --restore, --restore-exclude, --map, --skip-mismatched,
    --fine-tune, --lr-mult and --train-batch-norm.

    Args:
      group: an argparse parser or argument group.

    Returns:
      The group.
    """
    group.add_argument(
        "--network",
        choices=networks.NAMES,
        default=networks.DEFAULT,
        help="the classifier's network: cae is the digit classifier over the autoencoder's encoder; the others "
        "take ImageNet checkpoints by TF-Slim's (or the EfficientNet-Lite release's) names (default: %(default)s)",
    )
    group.add_argument(
        "--image-size",
        type=cli.bounded_int(32, 1024),
        default=None,
        help="side of the square input of an ImageNet network (default: its own, 224); smaller is faster",
    )
    group.add_argument(
        "--restore",
        default="conv",
        help=f"what to restore: a preset ({', '.join(PRESETS)}; backbone: everything but the network's head) "
        "or a comma list of scopes such as conv1,conv2 (default: %(default)s)",
    )
    group.add_argument("--restore-exclude", default="", help="comma list of scopes to leave out of --restore")
    group.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SRC=DST",
        help="restore checkpoint scope SRC into graph scope DST, e.g. encoder/conv1=conv1 (repeatable)",
    )
    group.add_argument(
        "--skip-mismatched",
        action="store_true",
        help="initialise variables whose shapes differ from the checkpoint instead of failing, and report them",
    )
    group.add_argument(
        "--fine-tune", action="store_true", help="train the restored variables too (default: freeze them)"
    )
    group.add_argument(
        "--lr-mult",
        action="append",
        default=[],
        metavar="SCOPE=F",
        help="scale SCOPE's learning rate by F; F=0 freezes it (repeatable; applied after --fine-tune)",
    )
    group.add_argument(
        "--train-batch-norm",
        action="store_true",
        help="in restored BatchNorm layers that train (--fine-tune, --lr-mult), normalise with batch statistics "
        "and update the moving statistics; default: keep the checkpoint's statistics (inference mode)",
    )
    return group


def parse_transfer_flags(args):
    """Reads the flags that add_transfer_flags defined; raises before any graph is built.

    Returns:
      (restore, exclude, maps, lr_mults) as make_plan takes them.

    Raises:
      UserError: for a malformed value.
    """
    try:
        restore = parse_scopes(args.restore)
        exclude = parse_scopes(args.restore_exclude) if args.restore_exclude.strip() else ()
        maps = [parse_pair(text, "=", "--map") for text in args.map]
        lr_mults = []
        for text in args.lr_mult:
            scope, value = parse_pair(text, "=", "--lr-mult")
            try:
                multiplier = float(value)
            except ValueError:
                raise ValueError(f"--lr-mult {text}: {value!r} is not a number") from None
            if not 0.0 <= multiplier < float("inf"):
                raise ValueError(f"--lr-mult {text}: the multiplier must be 0 or a positive number")
            lr_mults.append((scope, multiplier))
    except ValueError as error:
        raise UserError(str(error)) from None
    if exclude is None:
        raise UserError("--restore-exclude takes scopes, not 'all'")
    if restore == () and (maps or exclude):
        raise UserError("--map and --restore-exclude need something to restore; --restore none restores nothing")
    return restore, exclude, maps, lr_mults
