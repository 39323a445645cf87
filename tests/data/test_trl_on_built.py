"""TRL on the corpus the builders publish (the demo build), with a saved tiny GMAI-VL and this
package blocked: `SFTTrainer` on every config logs the mean over the trained tokens, and `trl grpo`
reads the percept config's one-question prompts as they are."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gmaivl.core.tiny import build_tiny_gmaivl

from ..trainers.test_trl_on_gmaivl import assert_logged_loss_is_the_true_mean


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
    assert_logged_loss_is_the_true_mean(folder.parent, folder, corpus, config, batch=2, accumulation=2)


GRPO_CHILD = """
import importlib.abc, sys
class BlockGmaivl(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "gmaivl" or name.startswith("gmaivl."):
            raise ImportError("gmaivl must not be importable in this process")
sys.meta_path.insert(0, BlockGmaivl())
from trl.cli.main import main
sys.argv = ["trl", "grpo", *sys.argv[1:]]
main()
"""


def test_trl_grpo_takes_its_prompts_from_the_published_percept_config(built, folder):
    """No code between the corpus and `trl grpo`: its `prompt` and `images` columns are the input."""
    corpus, _ = built
    args = [
        "--model_name_or_path", str(folder), "--trust_remote_code", "--dataset_name", str(corpus),
        "--dataset_config", "percept", "--output_dir", "out_grpo", "--reward_funcs", "think_format_reward",
        "--max_steps", "1", "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--max_completion_length", "4", "--report_to", "none", "--use_cpu", "true", "--logging_steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "HF_MODULES_CACHE": str(folder.parent / "modules"), "PYTHONPATH": ""}
    child = subprocess.run(
        [sys.executable, "-c", GRPO_CHILD, *args], cwd=folder.parent, capture_output=True, text=True,
        env=env, timeout=600,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    assert "rewards/think_format_reward/mean" in child.stdout + child.stderr
    assert (folder.parent / "out_grpo" / "model.safetensors").is_file()
