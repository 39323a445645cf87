"""The console entry point turns bad input into one line on stderr and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    code = "import sys; from gmaivl.cli import run; sys.argv = ['gmaivl', *sys.argv[1:]]; run()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path):
    missing = str(tmp_path / "missing.yaml")
    proc = _run("train", "--config", missing)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("gmaivl: error: recipe")
    assert missing in proc.stderr and "Traceback" not in proc.stderr


def test_traceback_on_request(tmp_path):
    proc = _run("train", "--config", str(tmp_path / "missing.yaml"), GMAIVL_TRACEBACK="1")
    assert proc.returncode == 1 and "Traceback" in proc.stderr
