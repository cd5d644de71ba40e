"""The run directory: which folder a run may write into, its config.json, and the resume check.

A model dir belongs to a run when the run created it, when it is empty, or when it holds
this toolkit's config.json. Anything else is refused before a byte is written there, so
a mistyped `--model-dir` pointing at a user's folder costs nothing. A model dir holding a
symbolic link anywhere below it is refused too: this toolkit makes none, and TensorFlow
would write through it (runtime.owned). The config.json saved beside the checkpoints is
the source of truth for resuming them.
"""

import json
import os

from runtime import owned
from runtime.checkpoints import list_checkpoints
from runtime.errors import UserError, disk_full_reason, one_line
from runtime.lock import LOCK_NAME
from runtime.outputs import TOOLKIT
from runtime.paths import shown

SCHEMA = 1
CONFIG = "config.json"
KINDS = ("autoencoder", "transfer")


def write_json(path, payload):
    """Writes JSON atomically: a reader never sees half a file, and a failed write changes nothing.

    Raises:
      UserError: when the file cannot be written (a full disk, a read-only folder).
    """
    temporary = path + ".tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=2, sort_keys=True)
            stream.write("\n")
        os.replace(temporary, path)
    except OSError as error:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise UserError(f"cannot write {shown(path)}: {disk_full_reason(error) or one_line(error)}") from None


def read_json(path, expect=dict):
    """The JSON at path, or None when there is no such file.

    Raises:
      UserError: when it cannot be read, is not JSON, or is not of the expected type.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            value = json.load(stream)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read {shown(path)}: {one_line(error)}") from None
    if expect is not None and not isinstance(value, expect):
        raise UserError(
            f"{shown(path)} holds a JSON {type(value).__name__}, not the {expect.__name__} this toolkit writes"
        )
    return value


def is_ours(config):
    """Whether a config.json was written by this toolkit (a schema'd one, or one from before schemas)."""
    if config.get("toolkit") == TOOLKIT:
        return True
    return "toolkit" not in config and config.get("model") in KINDS and "seed" in config and "batch_size" in config


def _a(noun):
    noun = str(noun)
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def check_owner(path, kind):
    """Refuses a model dir that this run may not write into; read-only.

    Args:
      path: the --model-dir.
      kind: "autoencoder" or "transfer".

    Returns:
      The config.json found there, or None for a missing or empty folder.

    Raises:
      UserError: for a folder that holds anything but this toolkit's run of this kind, or
        that holds a symbolic link anywhere below it (runtime.owned).
    """
    if not os.path.exists(path):
        return None
    if not os.path.isdir(path):
        raise UserError(f"model dir {shown(path)} is a file, not a directory; pass another --model-dir")
    try:
        entries = sorted(name for name in os.listdir(path) if name != LOCK_NAME)
    except OSError as error:
        raise UserError(f"cannot read model dir {shown(path)}: {one_line(error)}") from None
    if not entries:
        _refuse_links(path)  # a lone .lock may be a link too
        return None
    config_path = os.path.join(path, CONFIG)
    if not os.path.lexists(config_path):
        if list_checkpoints(path):
            raise UserError(
                f"{shown(path)} holds checkpoints but no {CONFIG}, so nothing says which settings wrote them; "
                f"put the run's {CONFIG} back, or pass another --model-dir"
            )
        listed = ", ".join(shown(name) for name in entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UserError(
            f"{shown(path)} is not empty ({len(entries)} entries: {listed}) and holds no {TOOLKIT} run; "
            "pass a new or empty --model-dir"
        )
    _refuse_links(path)  # before config.json is read: it may be the link
    config = read_json(config_path)
    if not is_ours(config):
        raise UserError(f"{shown(config_path)} was not written by {TOOLKIT}; pass another --model-dir")
    if config.get("model") != kind:
        raise UserError(
            f"{shown(path)} holds {_a(config.get('model'))} run, not {_a(kind)} run; pass another --model-dir"
        )
    return config


def _refuse_links(path):
    """Refuses a model dir with a symbolic link anywhere below it (runtime.owned): a run would write through it."""
    try:
        link = owned.find_link(path)
    except OSError as error:
        raise UserError(f"cannot read model dir {shown(path)}: {one_line(error)}") from None
    if link is not None:
        target = owned.link_target(link)
        raise UserError(
            f"model dir {shown(path)} holds a symbolic link, {shown(os.path.relpath(link, path))} -> "
            f"{'?' if target is None else shown(target)}, which {TOOLKIT} never makes; "
            "remove the link or pass another --model-dir"
        )


def check_apart(data_dir, outputs):
    """Refuses an output folder inside the data folder, the same folder, or one holding it.

    A folder written inside an image folder is a class to its next scan (a feature cache
    made there broke every later run on that folder), and a data folder inside a model
    dir sits among the names a run writes and deletes (`best/` is replaced by a new run).
    Paths are compared with their links resolved, before anything is created.

    Args:
      data_dir: --data-dir, or None.
      outputs: {flag: path or None} of the folders the run writes, e.g. {"--model-dir": ...}.

    Raises:
      UserError: naming the flag and both paths.
    """
    if not data_dir:
        return
    data = os.path.realpath(os.path.expanduser(data_dir))
    for flag, path in outputs.items():
        if not path:
            continue
        output = os.path.realpath(os.path.expanduser(path))
        common = os.path.commonpath([data, output])
        if common == data:
            raise UserError(
                f"{flag} {shown(path)} lies inside --data-dir {shown(data_dir)}: a run never writes into the data "
                f"it reads (a later scan would take it for a class); pass a {flag} outside it"
            )
        if common == output:
            raise UserError(
                f"--data-dir {shown(data_dir)} lies inside {flag} {shown(path)}, among what runs write and delete; "
                f"move the data out, or pass another {flag}"
            )


def make_dir(path, what):
    """Creates a directory a command writes into (never wipes it) and checks it is writable.

    Args:
      path: the directory.
      what: its name in the error line ("model dir", "output dir").

    Returns:
      Whether this call created it.

    Raises:
      UserError: when it cannot be created or is not writable.
    """
    created = not os.path.exists(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {what} {shown(path)}: {disk_full_reason(error) or error.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{what} {shown(path)} is not writable")
    return created


def make_model_dir(path):
    """Creates the model dir (never wipes it) and checks it is writable; returns whether it was created."""
    return make_dir(path, "model dir")


def remove_if_untouched(path):
    """Removes a model dir this run created when the run left nothing in it but its lock."""
    try:
        if set(os.listdir(path)) <= {LOCK_NAME}:
            for name in os.listdir(path):
                os.remove(os.path.join(path, name))
            os.rmdir(path)
    except OSError:
        pass


def check_resume(model_dir, config, keys):
    """Refuses to continue checkpoints that these settings did not write.

    Args:
      model_dir: the run's directory, already passed by check_owner.
      config: this run's config.
      keys: config entries that a run continuing the dir's checkpoints must share.

    Returns:
      The previous config when the dir holds checkpoints to resume, else None.

    Raises:
      UserError: naming each setting that differs, and what to do.
    """
    previous = read_json(os.path.join(model_dir, CONFIG))
    if previous is None or not list_checkpoints(model_dir):
        return None
    # A config.json from before a key was recorded cannot vouch for it: such keys are not compared.
    changed = [
        _change(key, previous[key], config[key]) for key in keys if key in previous and previous[key] != config[key]
    ]
    if changed:
        raise UserError(
            f"{shown(model_dir)} holds {_a(config['model'])} run started with other settings ({'; '.join(changed)}); "
            "pass a new --model-dir, or repeat the original flags and data to resume it"
        )
    return previous


def _change(key, before, after):
    """How one setting changed, in a few words.

    A mapping (the data's files and their sha256) is named by its first entry that differs,
    in sorted order: one file that is new, gone or rewritten, rather than two whole tables.
    """
    if isinstance(before, dict) and isinstance(after, dict):
        name = min(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
        if name not in before:
            return f"{key}: {shown(name)} is new"
        if name not in after:
            return f"{key}: {shown(name)} is gone"
        return f"{key}: {shown(name)} changed ({str(before[name])[:12]}... -> {str(after[name])[:12]}...)"
    return f"{key} {_summary(before)} -> {_summary(after)}"


def _summary(value):
    return f"{len(value)} entries" if isinstance(value, dict) else repr(value)


def write_config(model_dir, config):
    """Writes config.json with the toolkit's marker and schema version."""
    write_json(os.path.join(model_dir, CONFIG), dict(config, toolkit=TOOLKIT, schema=SCHEMA))
