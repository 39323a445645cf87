"""TRL's own `trl sft` / `trl grpo` on a corpus in the published Hub layout, with this package's rewards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gmaivl.trainers.grpo_data import prepare_grpo_dataset
from gmaivl.trainers.rewards import accuracy_reward

from ._helpers import published_rows, write_hub_corpus


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A built corpus (`percept` config: closed-form questions and captions) and a saved tiny LLaVA."""
    from gmaivl.trainers.models import build_tiny

    root = tmp_path_factory.mktemp("trl_cli")
    write_hub_corpus(root / "corpus", {"percept": published_rows(8)})
    model, processor = build_tiny("tiny-llava")
    model.save_pretrained(root / "llava")
    processor.save_pretrained(root / "llava")
    return root


def _trl(command: str, workdir: Path, *args: str) -> str:
    cmd = [
        sys.executable, "-m", "trl.cli.main", command, "--model_name_or_path", "llava",
        "--dataset_name", "corpus", "--dataset_config", "percept", "--output_dir", f"out_{command}",
        "--max_steps", "1", "--report_to", "none", "--use_cpu", "true", *args,
    ]  # fmt: skip
    # run outside the repository: its `kernels/` folder would shadow Hugging Face's `kernels` package
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (workdir / f"out_{command}" / "model.safetensors").is_file()
    return proc.stdout + proc.stderr


def test_trl_sft_trains_on_the_built_corpus(workdir):
    log = _trl("sft", workdir, "--per_device_train_batch_size", "2")
    assert "'train_loss'" in log


def test_trl_grpo_with_the_package_rewards_by_dotted_path(workdir):
    log = _trl(
        "grpo", workdir,
        "--reward_funcs", "gmaivl.trainers.rewards.format_reward", "gmaivl.trainers.rewards.accuracy_reward",
        "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8",
    )  # fmt: skip
    assert "rewards/format_reward/mean" in log and "rewards/accuracy_reward/mean" in log


def test_grpo_reads_the_published_rows():
    rows = published_rows(8)
    prepared = prepare_grpo_dataset(rows, yes_no_ratio=0.1)
    assert set(prepared["question_type"]) <= {"mcq", "closed", "open"}  # the captions are skipped
    assert len(prepared) == 7  # 6 other questions + 1 of the 2 yes/no ones (~10 %)
    # a caption row reaching the reward through `trl grpo`: "does not apply"
    assert accuracy_reward(
        ["<answer>red</answer>"] * 2, answer=["", "red"], question_type=["caption", "open"]
    ) == [None, 1.0]
