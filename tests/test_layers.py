"""Layers import one way (docs/ARCHITECTURE.md): no upward import, no cycle.

Every import of every module is read from its source (function-level imports included,
so a lazy import cannot hide a cycle) and checked against the layer table.
"""

import ast
import os
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = {
    "runtime.errors",
    "runtime.paths",
    "runtime.lock",
    "runtime.onednn",
    "runtime.native_stderr",
    "runtime.quiet",
    "runtime.outputs",
}
ENTRY = {"train_autoencoder", "train_transfer", "predict"}
PACKAGES = ("data", "models", "runtime", "transfer", "autoencoder", "experiments", "bench")


def layer(module):
    """0 base, 1 data and models, 2 runtime, 3 transfer and autoencoder, 4 entry points."""
    if module in BASE:
        return 0
    top = module.split(".")[0]
    return {"data": 1, "models": 1, "runtime": 2, "transfer": 3, "autoencoder": 3}.get(top, 4)


def _module_name(path):
    name = str(path.relative_to(REPO).with_suffix("")).replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _imports(path, known):
    """The project modules a file imports, resolved to the longest known module name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph():
    files = [REPO / f"{name}.py" for name in ENTRY if (REPO / f"{name}.py").exists()]
    for package in PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    known = {_module_name(path) for path in files}
    graph = {}
    for path in files:
        module = _module_name(path)
        # A package's own __init__ is not a dependency of its modules.
        graph[module] = {name for name in _imports(path, known) if name != module and not module.startswith(name + ".")}
    return graph


def test_the_graph_covers_the_tree():
    graph = import_graph()
    assert {
        "runtime.cli",
        "data.sources",
        "models.networks",
        "transfer.plan",
        "autoencoder.train",
        "train_transfer",
    } <= set(graph)
    assert "runtime.errors" in graph["data.sources"]


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{module} ({layer(module)}) imports {name} ({layer(name)})"
        for module, names in import_graph().items()
        for name in sorted(names)
        if layer(name) > layer(module)
    ]
    assert not upward, upward


def test_runtime_does_not_import_data():
    graph = import_graph()
    offenders = [
        m for m, names in graph.items() if m.startswith("runtime") and any(n.startswith("data") for n in names)
    ]
    assert not offenders, offenders


def test_there_is_no_import_cycle():
    graph = import_graph()
    state, cycles = defaultdict(int), []

    def visit(module, path):
        state[module] = 1
        for name in sorted(graph.get(module, ())):
            if state[name] == 1:
                cycles.append(path[path.index(name) :] + [name] if name in path else [module, name])
            elif state[name] == 0:
                visit(name, path + [name])
        state[module] = 2

    for module in sorted(graph):
        if state[module] == 0:
            visit(module, [module])
    assert not cycles, cycles


def test_no_module_imports_an_entry_script():
    # bench/ and experiments/ build and run through the libraries the scripts call, so they
    # measure and run exactly what a user does (transfer.train, autoencoder.train).
    importers = [
        f"{module} imports {name}" for module, names in import_graph().items() for name in names if name in ENTRY
    ]
    assert not importers, importers
