"""The build benchmark script runs end to end (slow: several full builds in child processes)."""

from __future__ import annotations

import re

import pytest


@pytest.mark.slow
def test_benchmark_build_runs(capsys):
    from gmaivl.dataset_builders.benchmark_build import main

    assert main(["--dicom", "12", "--nifti", "1", "--sizes", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"rows grew x[\d.]+; peak RSS grew x[\d.]+", out)
    assert "1 process (baseline)" in out and "speed-up vs 1 process" in out
