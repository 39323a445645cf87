"""Shared fixtures: the demo sources (real files from pydicom, nibabel, scikit-image) and one build."""

from __future__ import annotations

from pathlib import Path

import pytest

from gmaivl.dataset_builders.demo import write_demo_sources
from gmaivl.dataset_builders.engine import run_build


@pytest.fixture(scope="session", autouse=True)
def reproducible_build_time():
    """Cards carry the build time; a fixed `SOURCE_DATE_EPOCH` makes two builds byte-identical."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", "1798675200")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def demo_spec(tmp_path_factory) -> Path:
    return write_demo_sources(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def built(demo_spec, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("built")
    report = run_build(demo_spec, out, progress=False)
    return out, report


@pytest.fixture()
def cli_exit(capsys):
    """Run the console entry point `gmaivl ...`; returns (exit status, the last stderr line)."""
    import sys

    from gmaivl.app.cli import run

    def call(argv: list[str]) -> tuple[int, str]:
        capsys.readouterr()
        old = sys.argv
        sys.argv = ["gmaivl", *argv]
        try:
            with pytest.raises(SystemExit) as exit_info:
                run()
        finally:
            sys.argv = old
        err = capsys.readouterr().err.strip().splitlines()
        return exit_info.value.code, err[-1] if err else ""

    return call
