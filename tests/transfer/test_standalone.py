"""The export's predict.py (transfer.standalone): the toolkit's code inlined once, nothing else of the toolkit.

The rule: a line of a script ending with standalone.MARK is replaced by the source of the module
it imports from, and refused when that module imports anything a machine running an export may
not have (only the standard library, TensorFlow, numpy and PIL), when the line is not a plain
`from PACKAGE.MODULE import NAME`, or when the names do not fit (one missing, one defined twice).
"""

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from transfer import standalone

REPO = Path(__file__).resolve().parents[2]
MARK = standalone.MARK
# What the module imports: (statement, allowed beside an export).
IMPORTS = (
    ("import os", True),
    ("import os.path", True),
    ("import numpy as np", True),
    ("from PIL import Image", True),
    ("import tensorflow as tf", True),
    ("from data import idx", False),
    ("import runtime.errors", False),
    ("from . import sibling", False),
    ("import yaml", False),
)
PLACES = ("top", "function")  # the import at the module's top level, or lazily inside its function
LINES = ("from pkg.mod import f", "import pkg.mod", "from .mod import f")
NAMES = ("f", "missing", "clash")  # the line imports f; imports g, which the module lacks; the module defines h too


def _situation(folder, statement, place, line, names):
    """Writes a toolkit folder with pkg/mod.py and a script importing it on a marked line; returns (script, module)."""
    (folder / "pkg").mkdir(parents=True)
    body = "    return 'module'\n"
    module = '"""A module."""\n\n' + (f"{statement}\n\n\n" if place == "top" else "\n")
    module += "def f():\n" + (f"    {statement}\n\n" if place == "function" else "") + body
    module += "\n\nh = 1\n" if names == "clash" else ""
    (folder / "pkg" / "mod.py").write_text(module, encoding="utf-8")
    line = line.replace("import f", "import g") if names == "missing" else line
    script = f'"""A script."""\n\nimport os\n{line}  {MARK}\n\n\ndef h():\n    return os.sep\n\n\nRESULT = f()\n'
    (folder / "script.py").write_text(script, encoding="utf-8")
    return module


def _expected_refusal(statement, allowed, line, names):
    """The start of the message the rule gives, or None when the script is made."""
    if line != LINES[0]:
        return "must read `from PACKAGE.MODULE import NAME, ...`"
    if not allowed:
        top = "." if statement.startswith("from .") else statement.split()[1].split(".")[0]
        return f"pkg.mod cannot be inlined in an export's predict.py: it imports {top}"
    return {"f": None, "missing": "it does not define g", "clash": "it defines as predict.py does h"}[names]


def test_a_marked_import_is_inlined_once_or_refused(tmp_path):
    situations = list(itertools.product(IMPORTS, PLACES, LINES, NAMES))
    assert len(situations) == 162
    made = 0
    for n, ((statement, allowed), place, line, names) in enumerate(situations):
        folder = tmp_path / str(n)
        module = _situation(folder, statement, place, line, names)
        refusal = _expected_refusal(statement, allowed, line, names)
        if refusal is not None:
            with pytest.raises(ValueError, match=re.escape(refusal)):
                standalone.script(str(folder / "script.py"), str(folder))
            continue
        text = standalone.script(str(folder / "script.py"), str(folder))
        assert text.count(module) == 1 and MARK not in text and "pkg" not in text.replace("pkg/mod.py", "")
        space = {}
        exec(compile(text, "script.py", "exec"), space)  # the modules imported are all present here
        assert space["RESULT"] == "module" and space["h"]() == os.sep
        made += 1
    assert made == 10  # the 5 allowed imports x 2 places, on the one good line form with fitting names


def test_the_exports_predict_holds_the_toolkit_code_it_imports_once(tmp_path):
    text = standalone.script()
    marked = [line for line in (REPO / "predict.py").read_text(encoding="utf-8").splitlines() if line.endswith(MARK)]
    assert [line.split()[1] for line in marked] == ["data.image_header", "runtime.native_stderr"]
    for name in ("data/image_header.py", "runtime/native_stderr.py"):
        assert text.count((REPO / name).read_text(encoding="utf-8")) == 1, name
    assert not re.search(r"^\s*(from|import) (data|runtime|models|transfer|autoencoder)\b", text, re.MULTILINE)
    (tmp_path / "predict.py").write_text(text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "py_compile", str(tmp_path / "predict.py")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_runtime_quiet_could_not_be_inlined(tmp_path):
    """Why the silencer lives in runtime.native_stderr: runtime.quiet imports the toolkit."""
    script = tmp_path / "script.py"
    script.write_text(f"from runtime.quiet import native_stderr_silenced  {MARK}\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"^runtime.quiet cannot be inlined in an export's predict.py: it imports runtime$"
    ):
        standalone.script(str(script))
