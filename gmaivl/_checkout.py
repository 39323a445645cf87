"""The design card's top-level folders (`kernels/`, `trainers/`, `evaluation/`, ...) are the packages
`gmaivl.kernels`, `gmaivl.trainers`, ... (pyproject's `package-dir`). Python puts the working directory
first on `sys.path` for `python -m`, `python -c` and a REPL, so in a checkout `import kernels` would
find the folder before Hugging Face's installed `kernels` (which transformers imports).

Each folder's `__init__.py` therefore starts with::

    if __name__ != "gmaivl.kernels":  # imported by its folder name from a checkout
        import runpy, pathlib
        runpy.run_path(str(pathlib.Path(__file__).parents[1] / "gmaivl" / "_checkout.py"))["hand_over"](__name__)

`hand_over` gives the name to the installed distribution, or fails as a missing module would.
This file is run by path (stdlib only): importing `gmaivl` here would import transformers, which
imports `kernels`, which is the module being imported.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import PathFinder
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def _outside_checkout(entry: str) -> bool:
    try:
        return Path(entry or ".").resolve() != CHECKOUT
    except OSError:
        return True


def hand_over(name: str) -> None:
    """Replace the half-imported top-level module `name` (one of this checkout's folders) in
    `sys.modules` by the module of that name found on `sys.path` outside the checkout."""
    path = [entry for entry in sys.path if _outside_checkout(entry)]
    spec = PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(
            f"No module named {name!r}: the folder {CHECKOUT / name} of this checkout is "
            f"`gmaivl.{name}` (import it by that name), and no other {name!r} is installed",
            name=name,
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the import statement returns what sys.modules holds
    spec.loader.exec_module(module)
