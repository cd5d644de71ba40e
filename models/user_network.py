"""A network the user wrote: the one place the toolkit runs code a user hands it.

`--network` takes a registry name (models.networks) or `FILE.py:ATTRIBUTE` or
`PACKAGE.MODULE:ATTRIBUTE`. ATTRIBUTE names a `models.networks.Network` record, or a
function of no arguments that returns one: the registry record is the contract, with
its builder's signature (`build(images, num_classes, is_training) -> (net, end_points)`,
`end_points["batch_norm_updates"]` a dict, `is_training` possibly a callable of a layer
scope, see `models.net_ops.layer_training`) and a `head` creating the builder's head
variables. Variables the builder or head creates that are not in MODEL_VARIABLES (a
`tf.compat.v1.layers` model's) are put there, so a tf.layers model plans like a TF-Slim one.

Loading runs the user's file (and the modules it imports) in this process: nothing
else a user hands the toolkit is ever imported or executed. The bytes hashed are the
bytes run. A run records the file's path, its sha256 and the attribute in config.json
(`record`), so export, look, predict and inspect find the network again from the run
alone (`resolve`); a file that changed since is refused in one line, because the run's
weights were made by the old one (naming the file on `--network` again uses it as it is).

Only the standard library is imported here at module level: commands check a spec's
syntax and file (`check`) before TensorFlow starts.
"""

import hashlib
import importlib.util
import os
import re
import sys
import sysconfig
import traceback

from runtime.errors import UserError
from runtime.paths import shown

HELP = (
    "a registry name, or a network you wrote: FILE.py:ATTRIBUTE or PACKAGE.MODULE:ATTRIBUTE naming a "
    "models.networks.Network record (or a function of no arguments returning one). Loading it RUNS THAT "
    "FILE'S CODE (the only code the toolkit imports from a user); the run records its path and sha256"
)
_MODULE_PREFIX = "cae_transfer_user_network_"
# A module path into these is the toolkit's code, never run again as a user's.
TOOLKIT_PACKAGES = ("models", "transfer", "runtime", "data", "autoencoder", "experiments", "bench")
# (path, attribute, sha256) -> Network: a file loaded once per process, whoever asks.
_LOADED = {}


def is_spec(text):
    """Whether a --network value names user code (`X:ATTRIBUTE`) rather than a registry network."""
    return isinstance(text, str) and ":" in text


def _split(text):
    """(module or None, path or None, attribute) of a spec; raises UserError for a malformed one."""
    where, _, attribute = text.rpartition(":")
    if not where or not attribute.isidentifier():
        raise UserError(f"--network {shown(text)}: expected FILE.py:ATTRIBUTE or PACKAGE.MODULE:ATTRIBUTE")
    if where.endswith(".py") or os.sep in where or (os.altsep and os.altsep in where):
        return None, os.path.abspath(os.path.expanduser(where)), attribute
    if not all(part.isidentifier() for part in where.split(".")):
        raise UserError(f"--network {shown(text)}: {where!r} is neither a .py file nor a dotted module path")
    if where.split(".")[0] in TOOLKIT_PACKAGES:
        raise UserError(f"--network {shown(text)}: {where} is the toolkit's own module, not a network you wrote")
    return where, None, attribute


def check(text):
    """Checks a --network value without running anything: a spec's form and its file.

    Raises:
      UserError: a malformed spec, or a file that is missing or not a regular file.
    """
    if not is_spec(text):
        return
    _, path, _ = _split(text)
    if path is not None and not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "does not exist"
        raise UserError(f"--network {shown(text)}: {shown(path)} {what}")


def _read(path, text):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise UserError(f"--network {shown(text)}: cannot read {shown(path)}: {error.strerror or error}") from None


def _locate(module, path, text):
    """(importlib spec, file path) of the user's module, importing its parent packages."""
    if path is not None:
        check(text)
        digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return importlib.util.spec_from_file_location(_MODULE_PREFIX + digest, path), path
    try:
        found = importlib.util.find_spec(module)
    except Exception as error:  # a parent package's own code failed
        raise UserError(f"--network {shown(text)}: importing {module} raised {type(error).__name__}: {error}") from None
    if found is None or not found.origin or not found.has_location or not found.origin.endswith(".py"):
        raise UserError(f"--network {shown(text)}: no Python file for module {module} on the import path (PYTHONPATH)")
    return found, os.path.abspath(found.origin)


# What an error raised in a user's network usually means (a pattern of its message), said after its line.
_HINTS = (
    ("not available with Keras 3", "tf.compat.v1.layers needs tf_keras: run with TF_USE_LEGACY_KERAS=1"),
    (
        "`pred` must be a Tensor|elements of <function",  # smart_cond (batch norm, dropout); tf.cond
        "is_training may be a function of a layer's scope: models.net_ops.layer_training(is_training, scope) "
        "gives that layer's bool",
    ),
)


def _run_user_code(text, action, what):
    """Runs one step of the user's code; anything it raises becomes one UserError line, which names the
    innermost line of the user's own code it passed through, and a hint for errors with a usual cause."""
    try:
        return action()
    except (Exception, SystemExit) as error:
        reason = " ".join(str(error).split())[:300]
        hints = [hint for pattern, hint in _HINTS if re.search(pattern, reason)]
        raise UserError(
            f"--network {shown(text)}: {what} raised {type(error).__name__}: {reason}{_user_line(error)}"
            + "".join(f"; {hint}" for hint in hints)
        ) from None


def _user_line(error):
    """ " (at FILE:LINE)" of the innermost frame of error's traceback outside the toolkit's packages, the
    standard library and the installed packages: the user's own code; "" when there is none."""
    own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    roots = {os.path.join(own, package) for package in TOOLKIT_PACKAGES}
    roots |= {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not any(os.path.abspath(frame.filename).startswith(root + os.sep) for root in roots if root)
    ]
    return f" (at {shown(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""


def _execute(found, data, path, text):
    """Runs the file's bytes (the ones hashed) as the module `found` describes; returns the module."""
    module = importlib.util.module_from_spec(found)
    code = _run_user_code(text, lambda: compile(data, path, "exec"), f"compiling {shown(path)}")
    sys.modules[found.name] = module

    def run():
        exec(code, module.__dict__)  # the user's own network file, the one code the toolkit runs from a user

    # The modules beside the file import as they would were it run as a script, though after
    # everything else on the path (appended), so none of them shadows the toolkit or a package.
    folder = os.path.dirname(path)
    added = found.name.startswith(_MODULE_PREFIX) and folder not in sys.path  # a FILE.py spec
    if added:
        sys.path.append(folder)
    try:
        _run_user_code(text, run, f"running {shown(path)}")
    except UserError:
        sys.modules.pop(found.name, None)
        raise
    finally:
        if added:
            sys.path.remove(folder)
    return module


def _record_of(module, attribute, text):
    """The Network the attribute names (calling a function of no arguments)."""
    from models.networks import Network

    if not hasattr(module, attribute):
        defined = sorted(name for name in vars(module) if not name.startswith("_"))[:20]
        raise UserError(
            f"--network {shown(text)}: no attribute {attribute!r} (it defines: {', '.join(defined) or 'nothing'})"
        )
    value = getattr(module, attribute)
    if callable(value) and not isinstance(value, Network):
        value = _run_user_code(text, value, f"{attribute}()")
    if not isinstance(value, Network):
        raise UserError(
            f"--network {shown(text)}: {attribute} is of type {type(value).__name__}, "
            "not a models.networks.Network record or a function of no arguments returning one"
        )
    return value


def _wrapped(function, text, what):
    """`function` whose errors are one line naming the spec, and which puts the variables it creates into
    MODEL_VARIABLES (tf.layers and get_variable leave them out)."""
    import tensorflow as tf

    v1 = tf.compat.v1

    def wrapped(*args, **kwargs):
        before = {id(var) for var in v1.global_variables()}
        result = _run_user_code(text, lambda: function(*args, **kwargs), what)
        _check_returned(result, text, what)
        model = {id(var) for var in v1.get_collection(v1.GraphKeys.MODEL_VARIABLES)}
        for var in v1.global_variables():
            if id(var) not in before and id(var) not in model:
                v1.add_to_collection(v1.GraphKeys.MODEL_VARIABLES, var)
        return result

    wrapped.__doc__ = function.__doc__
    return wrapped


def _is_net_and_end_points(result):
    """Whether a build returned what builders return: (net, end_points), a tensor and a dict."""
    import tensorflow as tf

    return (
        isinstance(result, (tuple, list))
        and len(result) == 2
        and isinstance(result[0], tf.Tensor)
        and isinstance(result[1], dict)
    )


def _is_logits(result):
    """Whether a head returned what heads return: the logits tensor."""
    import tensorflow as tf

    return isinstance(result, tf.Tensor)


# What each wrapped function must return: (the check, the contract as messages state it).
_RETURNS = {
    "its build": (_is_net_and_end_points, "(net, end_points): a tensor and a dict"),
    "its head": (_is_logits, "the logits tensor"),
}


def _check_returned(result, text, what):
    """Refuses a result that breaks the contract of `what` (_RETURNS), in one line saying what came back."""
    import tensorflow as tf

    check, wanted = _RETURNS[what]
    if not check(result):
        if isinstance(result, tf.Tensor):
            got = "a tensor alone"
        else:
            got = f"a {type(result).__name__}" + (f" of {len(result)}" if isinstance(result, (tuple, list)) else "")
        raise UserError(f"--network {shown(text)}: {what} returned {got}, not {wanted}")


def load(text):
    """The Network a spec names, registered in models.networks under its name. Runs the user's code.

    Returns:
      The registered Network (the same object for the same file content and attribute).

    Raises:
      UserError: a malformed spec, a missing file or module, code that raises, no such
        attribute, a value that is no Network, or a name the registry already holds.
    """
    import dataclasses

    from models import networks

    module, path, attribute = _split(text)
    found, path = _locate(module, path, text)
    data = _read(path, text)
    key = (path, attribute, hashlib.sha256(data).hexdigest())
    if key not in _LOADED:
        record = _record_of(_execute(found, data, path, text), attribute, text)
        if record.name in networks.NETWORKS:
            raise UserError(f"--network {shown(text)}: the name {record.name!r} is taken (registry or another file)")
        network = dataclasses.replace(
            record, build=_wrapped(record.build, text, "its build"), head=_wrapped(record.head, text, "its head")
        )
        networks.register(network)
        _LOADED[key] = (network, {"module": module, "path": path, "attribute": attribute, "sha256": key[2]})
    return _LOADED[key][0]


def record(network):
    """What config.json records of a network (`network_source`): None for a registry one.

    Returns:
      {"module": dotted path or None, "path": the file, "attribute", "sha256"}, or None.
    """
    for loaded, source in _LOADED.values():
        if loaded is network:
            return dict(source)
    return None


def identity(network):
    """What a cache of the network's outputs is keyed by: its name, and for a user's its file's sha256."""
    source = record(network)
    return f"{network.name}@sha256:{source['sha256']}" if source else network.name


def _spec_of(source):
    return f"{source.get('module') or source.get('path')}:{source.get('attribute')}"


def _recorded(config, where):
    """The network a config.json's network_source names, loaded after its sha256 is checked."""
    source = config["network_source"]
    if not isinstance(source, dict) or not all(isinstance(source.get(key), str) for key in ("path", "attribute")):
        raise UserError(f"{shown(where)}: config.json's network_source is not a file, attribute and sha256")
    text = _spec_of(source)
    path = source["path"]
    if source.get("module"):
        path = _locate(source["module"], None, text)[1]
    elif not os.path.isfile(path):
        raise UserError(
            f"{shown(where)} was trained with the network in {shown(path)}, which is gone; "
            "pass --network FILE:ATTRIBUTE"
        )
    digest = hashlib.sha256(_read(path, text)).hexdigest()
    if digest != source.get("sha256"):
        raise UserError(
            f"{shown(where)} was trained with {shown(path)} at sha256 {str(source.get('sha256'))[:12]}, "
            f"it is now {digest[:12]}: the run's weights were made by the old file; restore it, "
            f"or pass --network {shown(text)} to use it as it is"
        )
    return load(text)


def resolve(flag, config=None, where="the run"):
    """Which network a command uses: the one place --network and a run's record are read.

    Args:
      flag: --network's value (a registry name, a spec, or None).
      config: the run's config.json as a dict (or a transfer.convert output's facts), or None.
      where: what messages call the run.

    Returns:
      The Network (a user's is loaded and registered).

    Raises:
      UserError: an unknown name, any error of `load`, a recorded file that changed or
        is gone, or a --network other than the one the run was trained with.
    """
    from models import networks

    config = config or {}
    recorded = config.get("network")
    if is_spec(flag):
        network = load(flag)
    elif config.get("network_source") and flag in (None, recorded):
        network = _recorded(config, where)
    else:
        try:
            network = networks.get(flag or recorded or networks.DEFAULT)
        except ValueError as error:
            raise UserError(str(error)) from None
    if recorded and network.name != recorded and config.get("model") == "transfer":
        raise UserError(f"--network {shown(flag)}: {shown(where)} was trained as {recorded}")
    return network


def flag_type(text):
    """argparse type of --network: a registry name, or a spec (checked, with its file, by `resolve`)."""
    import argparse

    from models import networks

    if not is_spec(text) and text not in networks.NETWORKS:
        raise argparse.ArgumentTypeError(
            f"unknown network {text!r}: choose one of {', '.join(networks.NAMES)}, or FILE.py:ATTRIBUTE"
        )
    return text
