"""transformers' own common model tests (`ModelTesterMixin`), for the installed version.

The test files ship in transformers' source distribution on PyPI, not in the wheel, and are not
copied into this repository: on first use `pip download` fetches the sdist of exactly the
installed version (PyPI is reachable in CI) and its `tests/*.py` are unpacked under
`~/.cache/gmaivl/` (or `$GMAIVL_CACHE`) as the package `transformers_tests`.

`test_modeling_common.py` imports two modules the sdist does not ship
(`tests/exporters/test_export.py`, `tests/generation/test_utils.py`, both only in the GitHub
tree); they are stood in for by empty mixins, named `MissingFromSdist*`, so the common model
tests run and nothing pretends the generation mixin ran (tests/model/test_generation.py covers
generation).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "transformers_tests"
STUBS = {
    "exporters/test_export.py": "class MissingFromSdistExportTesterMixin:\n    pass\n\n\n"
    "ExportTesterMixin = MissingFromSdistExportTesterMixin\n",
    "generation/test_utils.py": "class MissingFromSdistGenerationTesterMixin:\n    pass\n\n\n"
    "GenerationTesterMixin = MissingFromSdistGenerationTesterMixin\n",
}


def cache_root() -> Path:
    return Path(os.environ.get("GMAIVL_CACHE", Path.home() / ".cache" / "gmaivl"))


def _unpack(version: str, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
             f"transformers=={version}", "-d", tmp],
            check=True,
            timeout=600,
        )  # fmt: skip
        (sdist,) = Path(tmp).glob("transformers-*.tar.gz")
        staging = Path(tmp) / PACKAGE
        staging.mkdir()
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    (staging / parts[2]).write_bytes(archive.extractfile(member).read())
        (staging / "__init__.py").write_text("")
        for relative, text in STUBS.items():
            path = staging / relative
            path.parent.mkdir(exist_ok=True)
            (path.parent / "__init__.py").write_text("")
            path.write_text(text)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging), target)  # complete, or absent: never half-unpacked


def load_common_tests():
    """The `test_modeling_common` module of the installed transformers (downloaded once)."""
    version = transformers.__version__
    root = cache_root() / f"transformers-{version}-tests"
    if not (root / PACKAGE / "test_modeling_common.py").exists():
        _unpack(version, root / PACKAGE)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"{PACKAGE}.test_modeling_common")
