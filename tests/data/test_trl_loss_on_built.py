"""TRL's stock `SFTTrainer` on every config the builders publish (the demo build), with a saved
tiny GMAI-VL and this package blocked: the logged loss is the mean over the trained tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gmaivl.core.tiny import build_tiny_gmaivl

from ..trainers.test_trl_on_gmaivl import CHILD


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl_built")
    model, processor = build_tiny_gmaivl(image_size=112)
    model.save_pretrained(root / "gmaivl")
    processor.save_pretrained(root / "gmaivl")
    return root / "gmaivl"


@pytest.mark.parametrize("config", ["caption", "instruct", "percept"])
def test_trl_sft_logs_the_true_mean_on_each_built_config(built, folder, config):
    corpus, _ = built
    env = {**os.environ, "HF_MODULES_CACHE": str(folder.parent / "modules"), "PYTHONPATH": ""}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(corpus), config, "2", "2"],
        cwd=folder.parent,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["modules"] == [] and len(result["logged"]) == 3
    for logged, true in zip(result["logged"], result["true"], strict=True):
        assert logged == pytest.approx(true, rel=0.01), result
