"""The toolkit's own top-level packages, found even from a folder holding packages of the same names.

The toolkit's modules import `data`, `runtime` and `models` as top-level packages. A user's
script runs with its own folder first on sys.path, so that folder's `data/` or `runtime/`
package would be imported in their place ("No module named 'runtime.errors'"). While the
library (transfer.library) imports its modules, `imported()` loads the toolkit's `data`
and `runtime` from beside `transfer/` and, when the user's folder has packages of those
names, sets the toolkit's aside afterwards, so that the user's `import data` still finds
the user's own. The library's modules keep the toolkit's, bound at import time.

`models` is not swapped: it holds the network registry that a user's network code and
the toolkit share (`models.networks.register`), so there can be only one. A user's own
`models` package in its place is refused with one line saying so. Standard library only:
this runs before any toolkit package is imported.
"""

import contextlib
import importlib.machinery
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWAPPED = ("data", "runtime")
SHARED = ("models",)
_SET_ASIDE = {}  # the toolkit's modules taken out of sys.modules for a user's packages of the same names


def origin(name):
    """The file `import name` gives (its __init__.py), whether or not it is imported yet; None for a namespace."""
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def is_ours(name):
    """Whether `import name` gives the toolkit's own package of that name."""
    found = origin(name)
    return found is not None and os.path.realpath(found) == os.path.realpath(os.path.join(ROOT, name, "__init__.py"))


def refuse_foreign_shared():
    """Raises ImportError naming a `models` package that is not the toolkit's."""
    for name in SHARED:
        if not is_ours(name):
            raise ImportError(
                f"the package {name!r} at {origin(name) or 'a folder without __init__.py'} hides cae-transfer's own "
                f"{name} package (the network registry, which the toolkit and your network code share): rename your "
                f"{name}/ package or run your script from another folder"
            )


class _OwnFinder:
    """A meta path finder for the toolkit's top-level packages `names`, beside transfer/."""

    def __init__(self, names):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None  # submodules follow their package's __path__, which is the toolkit's
        return importlib.machinery.PathFinder.find_spec(fullname, [ROOT])


def _top(name):
    return name.partition(".")[0]


@contextlib.contextmanager
def imported():
    """Inside, `data` and `runtime` are the toolkit's; after, a user's packages of those names are back.

    Raises:
      ImportError: when `models` is not the toolkit's (see the module docstring).
    """
    refuse_foreign_shared()
    shadowed = tuple(name for name in SWAPPED if not is_ours(name))
    if not shadowed:
        yield
        return
    theirs = {key: sys.modules.pop(key) for key in list(sys.modules) if _top(key) in shadowed}
    ours = {key: module for key, module in _SET_ASIDE.items() if _top(key) in shadowed}
    sys.modules.update(ours)
    finder = _OwnFinder(shadowed)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for key in [key for key in sys.modules if _top(key) in shadowed]:
            _SET_ASIDE[key] = sys.modules.pop(key)
        sys.modules.update(theirs)
