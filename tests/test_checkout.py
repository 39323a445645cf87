"""Run from the repository root, no folder of the checkout shadows an installed distribution.

`python -m`, `python -c` and a REPL put the working directory first on `sys.path`; the design card's
top-level folders (`kernels/`, `evaluation/`, ...) are then found before site-packages. transformers
(>= 5.25) imports Hugging Face's `kernels`, and PyPI has an `evaluation` too.
"""

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["dataset_builders", "evaluation", "kernels", "model_cards", "modeling_gmaivl", "trainers"]
README = ROOT / "README.md"


def python(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300):
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_folders_are_the_packages_the_design_card_names():
    for folder in FOLDERS:
        assert (ROOT / folder / "__init__.py").is_file()
        module = __import__(f"gmaivl.{folder}", fromlist=["_"])
        assert Path(module.__file__).resolve().parent == ROOT / folder


def test_hugging_face_kernels_is_installed():
    # the shadowing below only means something while the real distribution is there
    assert importlib.metadata.version("kernels")


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_folder_name_imported_from_the_root_is_the_installed_distribution_or_missing(folder):
    probe = python("-c", f"import {folder} as m; print(m.__file__)")
    if probe.returncode == 0:
        location = Path(probe.stdout.strip()).resolve()
        assert ROOT / folder not in location.parents, f"{folder!r} resolved to the checkout: {location}"
    else:
        assert "ModuleNotFoundError" in probe.stderr
        assert f"gmaivl.{folder}" in probe.stderr  # the error says what the folder is


def test_transformers_gets_hugging_face_kernels_from_the_root():
    probe = python("-c", "import kernels, transformers.integrations.hub_kernels; print(kernels.__file__)")
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert "site-packages" in probe.stdout


def test_import_and_the_command_line_from_the_root():
    imported = python(
        "-c", "import gmaivl, gmaivl.kernels; print(gmaivl.kernels.packed_attention.__module__)"
    )
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert imported.stdout.strip() == "gmaivl.kernels.varlen"
    helped = python("-m", "gmaivl", "--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "model" in helped.stdout and "data" in helped.stdout


def test_pytest_collects_from_the_root():
    collected = python("-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", timeout=600)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-2000:]
    assert re.search(r"\d+/\d+ tests collected|\d+ tests collected", collected.stdout)
    assert "error" not in collected.stdout.splitlines()[-1].lower()


def test_readme_snippets_with_the_root_on_sys_path(tmp_path):
    # PYTHONPATH=root puts the checkout before site-packages, as running from the root does,
    # while the snippets write their folder into a scratch directory
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    script = tmp_path / "readme.py"
    script.write_text("\n".join(blocks))
    ran = python(str(script), cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert (tmp_path / "my-gmai-vl" / "model.safetensors").is_file()
