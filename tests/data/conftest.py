"""Shared fixtures: the demo sources (real files from pydicom, nibabel, scikit-image) and one build."""

from __future__ import annotations

from pathlib import Path

import pytest

from gmaivl.dataset_builders.build import run_build
from gmaivl.dataset_builders.demo import write_demo_sources


@pytest.fixture(scope="session")
def demo_spec(tmp_path_factory) -> Path:
    return write_demo_sources(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def built(demo_spec, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("built")
    report = run_build(demo_spec, out, progress=False)
    return out, report
