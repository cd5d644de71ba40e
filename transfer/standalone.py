"""The predict.py an export carries: the toolkit's predict.py, made to stand alone.

predict.py imports two modules of the toolkit, each on a line ending with MARK, such as

    from data.image_header import NotARegularFile, open_regular, refusal  # inlined in an export

`script` returns predict.py's text with each such line replaced by the source of the module
it names, so the file `python -m transfer.export` writes beside the model runs with no
toolkit there. The code lives once, in its module; the export's predict.py is made from it
each time. A marked module must import nothing but the standard library, TensorFlow, numpy
and PIL (ALLOWED): anything else would be missing beside an export, so it is refused.
"""

import ast
import os
import sys

MARK = "# inlined in an export"
# What may be imported by the code inlined: what a machine running an export has.
ALLOWED = frozenset(sys.stdlib_module_names) | {"tensorflow", "numpy", "PIL"}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREDICT = os.path.join(REPO, "predict.py")


def script(path=PREDICT, root=REPO):
    """The text of the script at `path` with each line ending with MARK replaced by its module's source.

    A marked line must read `from PACKAGE.MODULE import NAME, ...  MARK`; the module's file
    (below root, the toolkit's folder) is put in its place, whole, between two comment lines
    naming it.

    Raises:
      ValueError: a marked line of another form; a module that imports anything outside
        ALLOWED; a name the line imports that the module does not define, or one the module
        defines that the script defines too (one would silently replace the other).
      SyntaxError: the result does not compile.
    """
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().splitlines(keepends=True)
    marked = [i for i, line in enumerate(lines) if line.rstrip().endswith(MARK)]
    own = _defined(ast.parse("".join(line for i, line in enumerate(lines) if i not in marked)))
    for i in marked:
        lines[i] = _module_text(lines[i], own, root)
    text = "".join(lines)
    compile(text, path, "exec")
    return text


def _module_text(line, own, root):
    """The source standing for one marked import line, once it is checked (see `script`)."""
    statement = ast.parse(line).body
    if len(statement) != 1 or not isinstance(statement[0], ast.ImportFrom) or statement[0].level:
        raise ValueError(f"a line marked {MARK!r} must read `from PACKAGE.MODULE import NAME, ...`: {line.strip()}")
    name = statement[0].module
    relative = name.replace(".", os.sep) + ".py"
    with open(os.path.join(root, relative), encoding="utf-8") as stream:
        source = stream.read()
    tree = ast.parse(source)
    outside = sorted(_imported(tree) - ALLOWED)
    missing = sorted({alias.name for alias in statement[0].names} - _defined(tree))
    twice = sorted(_defined(tree) & own)
    for problem, names in (("imports", outside), ("does not define", missing), ("defines as predict.py does", twice)):
        if names:
            raise ValueError(f"{name} cannot be inlined in an export's predict.py: it {problem} {', '.join(names)}")
    return f"# --- {relative}, inlined by transfer.standalone ---\n{source}# --- end of {relative} ---\n"


def _imported(tree):
    """The top-level packages a module imports anywhere (a relative import as ".")."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." if node.level else node.module.split(".")[0])
    return found


def _defined(tree):
    """The names a module's own top-level statements define (imports not counted: the same module twice is one)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name))
    return names
