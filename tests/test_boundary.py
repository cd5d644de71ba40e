"""Library code takes typed records: only the parse/validate boundary reads the argparse Namespace,
and no library function is over 60 lines or 8 parameters.

Read from the source (ast), over every function of the library packages; bench/, experiments/
and the scripts are entry points, which may read their flags.
"""

import ast

from conftest import REPO

PACKAGES = ("autoencoder", "data", "models", "runtime", "transfer")
MAX_LINES = 60
MAX_PARAMETERS = 8

# The functions that take a parameter named `args`: the boundary that turns the parsed flags into
# records (runtime.options, runtime.lifecycle.settings and each run's `settings`, the validators of
# transfer.flags, the commands' own run/prepare that cli.main calls) and two hooks whose `args` is
# no Namespace (threading.excepthook's, pickle's reduce).
BOUNDARY = {
    "autoencoder/train.py:run",
    "autoencoder/train.py:settings",
    "runtime/cli.py:script_main.owner_kind",
    "runtime/lifecycle.py:settings",
    "runtime/options.py:Flags.config_values",
    "runtime/options.py:Flags.record",
    "runtime/options.py:Flags.validate",
    "runtime/options.py:given",
    "runtime/options.py:record",
    "runtime/quiet.py:_thread_excepthook",
    "transfer/flags.py:network_and_flags",
    "transfer/flags.py:parse_transfer_flags",
    "transfer/flags.py:restore_scopes",
    "transfer/flags.py:validate",
    "transfer/inspect.py:meta_plan",
    "transfer/inspect.py:run",
    "transfer/keras_bridge.py:handles",
    "transfer/keras_bridge.py:main",
    "transfer/look/__main__.py:run",
    "transfer/torch_legacy.py:_Machine._reduce",
    "transfer/train.py:run",
    "transfer/train.py:settings",
}
OVER_LIMITS = set()


def _functions():
    """(module path:qualified name, ast node) of every function of the library packages."""
    found = []

    def walk(node, path, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                walk(child, path, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((f"{path}:{prefix}{child.name}", child))
                walk(child, path, f"{prefix}{child.name}.")

    for package in PACKAGES:
        for file in sorted((REPO / package).rglob("*.py")):
            path = file.relative_to(REPO).as_posix()
            walk(ast.parse(file.read_text(encoding="utf-8")), path, "")
    return found


def _parameters(node):
    arguments = node.args
    names = [a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs]
    return [name for name in names if name not in ("self", "cls")]


def test_only_the_boundary_takes_the_parsed_flags():
    functions = _functions()
    assert len(functions) > 600  # every function of the five packages, nested ones and methods included
    taking = {name for name, node in functions if "args" in _parameters(node)}
    assert taking == BOUNDARY, f"new: {sorted(taking - BOUNDARY)}; gone: {sorted(BOUNDARY - taking)}"


def test_no_library_function_is_over_the_limits():
    over = {
        name: (node.end_lineno - node.lineno + 1, len(_parameters(node)))
        for name, node in _functions()
        if node.end_lineno - node.lineno + 1 > MAX_LINES or len(_parameters(node)) > MAX_PARAMETERS
    }
    assert set(over) <= OVER_LIMITS, {name: size for name, size in over.items() if name not in OVER_LIMITS}


def test_the_checks_catch_what_they_look_for():
    """A function taking `args`, one of 61 lines and one of 9 parameters are each found."""
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    source = f"def long():\n{body}\n\ndef wide(a, b, c, d, e, f, g, h, i):\n    pass\n\ndef reads(args):\n    pass\n"
    nodes = {node.name: node for node in ast.parse(source).body}
    assert nodes["long"].end_lineno - nodes["long"].lineno + 1 == MAX_LINES + 1
    assert len(_parameters(nodes["wide"])) == MAX_PARAMETERS + 1
    assert "args" in _parameters(nodes["reads"])
