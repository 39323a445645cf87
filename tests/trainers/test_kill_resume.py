"""A SIGKILL in the middle of a checkpoint save: resuming skips the half-written checkpoint."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from gmaivl.app.cli import main
from gmaivl.trainers.outputs import is_complete_checkpoint, last_complete_checkpoint
from gmaivl.trainers.recipes import packaged_recipe_dir, parse_recipe
from gmaivl.trainers.train import run_stage

# Runs `gmaivl ARGS...` and SIGKILLs itself while `Trainer` saves checkpoint-4 in a folder whose path holds
# KILL_IN: after the weights are written, before the optimizer state and trainer_state.json.
KILLER = """
import os, signal, sys
from transformers import Trainer
save = Trainer._save_optimizer_and_scheduler
def killed_while_saving(self, output_dir):
    if self.state.global_step == 4 and os.environ["KILL_IN"] in str(self.args.output_dir):
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, output_dir)
Trainer._save_optimizer_and_scheduler = killed_while_saving
from gmaivl.app.cli import main
sys.exit(main(sys.argv[1:]))
"""
STAGE = ["--model_name_or_path", "tiny", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]


def _killed_run(tmp_path: Path, kill_in: str, *args: str) -> None:
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "KILL_IN": kill_in, "OMP_NUM_THREADS": "1"}
    # run outside the repository: its `kernels/` folder would shadow Hugging Face's `kernels` package
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr[-3000:]  # killed, not finished


def _steps(folder: Path) -> list[int]:
    history = json.loads((folder / "log_history.json").read_text())
    return [e["step"] for e in history if "loss" in e]


@pytest.fixture
def one_thread():
    """The killed run uses one thread (OMP_NUM_THREADS=1): the in-process runs too, so sums add up alike."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_stage_killed_while_saving_resumes_from_the_last_complete_checkpoint(tmp_path, caplog, one_thread):
    recipe = "tiny/stage3_instruction_tuning.yaml"
    part = tmp_path / "part"
    _killed_run(tmp_path, "part", "train", "--config", recipe, *STAGE, "--output_dir", str(part))
    assert (part / "checkpoint-4" / "model.safetensors").is_file()  # half-written: weights only
    assert not is_complete_checkpoint(part / "checkpoint-4") and is_complete_checkpoint(part / "checkpoint-2")
    assert last_complete_checkpoint(part) == str(part / "checkpoint-2")

    with caplog.at_level(logging.WARNING, logger="gmaivl.trainers.outputs"):
        run_stage(
            parse_recipe(
                packaged_recipe_dir() / recipe,
                [*STAGE, "--output_dir", str(part), "--resume_from_checkpoint", "last"],
            )
        )
    assert "checkpoint-4 is incomplete" in caplog.text
    assert _steps(part) == [1, 2, 3, 4]
    full = tmp_path / "full"
    run_stage(parse_recipe(packaged_recipe_dir() / recipe, [*STAGE, "--output_dir", str(full)]))
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)


def test_a_chain_killed_while_saving_resumes_on_rerun(tmp_path, caplog):
    out = tmp_path / "chain"
    chain = {
        "output_dir": str(out),
        "stages": [
            {"recipe": "tiny/stage1_shallow_alignment.yaml"},
            {"recipe": "tiny/stage2_deep_alignment.yaml"},
        ],
        "overrides": {"max_steps": 4, "save_strategy": "steps", "save_steps": 2},
    }
    config = tmp_path / "chain.yaml"
    config.write_text(yaml.safe_dump(chain))
    _killed_run(
        tmp_path, "02_deep_alignment", "train-chain", "--config", str(config), "--model_name_or_path", "tiny"
    )
    stage1, stage2 = out / "01_shallow_alignment", out / "02_deep_alignment"
    assert (stage1 / "gmaivl_recipe.yaml").is_file()  # stage I finished; stage II was killed in its last save
    assert sorted(p.name for p in stage2.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    stamp = (stage2 / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns

    with caplog.at_level(logging.WARNING, logger="gmaivl.trainers.outputs"):
        assert main(["train-chain", "--config", str(config), "--model_name_or_path", "tiny"]) == 0
    assert "checkpoint-4 is incomplete" in caplog.text
    assert (stage2 / "gmaivl_recipe.yaml").is_file() and _steps(stage2) == [1, 2, 3, 4]
    assert (stage2 / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns == stamp  # resumed, not redone
    assert is_complete_checkpoint(stage2 / "checkpoint-4")  # rewritten by the resumed run


@pytest.mark.parametrize("value", ["last", True])
def test_resume_without_a_complete_checkpoint_starts_fresh(tmp_path, value):
    from gmaivl.trainers.outputs import resolve_resume

    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "trainer_state.json").write_text('{"global_step": 3')  # cut mid-write
    assert resolve_resume(value, tmp_path) is None
    with pytest.raises(ValueError, match="checkpoint-3 is incomplete"):
        resolve_resume(str(tmp_path / "checkpoint-3"), tmp_path)
