"""A tiny stage under a 2-process `accelerate launch` (gloo, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources

import torch


def test_two_process_accelerate_launch(tmp_path):
    config = resources.files("gmaivl.trainers") / "accelerate" / "cpu_2proc.yaml"
    out = tmp_path / "stage"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port", "29531",
        "-m", "gmaivl.app.cli", "train", "--config", "tiny/stage3_instruction_tuning.yaml",
        "--model_name_or_path", "tiny", "--max_steps", "2", "--output_dir", str(out), "--use_cpu", "true",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # run outside the repository: its `kernels/` folder would shadow Hugging Face's `kernels` package
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert args.world_size == 2 and args.parallel_mode.value == "distributed"
    assert (out / "model.safetensors").is_file() and (out / "gmaivl_recipe.yaml").is_file()


def test_an_fsdp_launch_on_the_cpu_is_refused_with_the_reason(tmp_path):
    config = resources.files("gmaivl.trainers") / "accelerate" / "fsdp.yaml"
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
        "--main_process_port", "29533", "-m", "gmaivl.app.cli", "train", "--config",
        "tiny/stage3_instruction_tuning.yaml", "--model_name_or_path", "tiny", "--max_steps", "1",
        "--output_dir", str(tmp_path / "stage"), "--use_cpu", "true",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "FSDP needs GPUs" in proc.stderr and "cpu_2proc.yaml" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "stage" / "model.safetensors").exists()
