"""Run one parsed recipe stage with its script (`sft.main` or `grpo.main`)."""

from __future__ import annotations

import os
from pathlib import Path

from .recipes import Recipe


def check_launch(use_cpu: bool) -> None:
    """Refuse launches that would not run as configured.

    `accelerate launch --config_file fsdp.yaml` on the CPU (`--use_cpu`, or no GPU) runs as plain DDP
    without a word: every process holds the whole model, nothing is sharded.
    """
    import torch

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true") and (
        use_cpu or not torch.cuda.is_available()
    ):
        raise ValueError(
            "FSDP needs GPUs: on the CPU accelerate runs an FSDP config as unsharded DDP; "
            "launch CPU runs with trainers/accelerate/cpu_2proc.yaml instead"
        )


def run_stage(recipe: Recipe) -> Path:
    """Train one stage and write its output folder; returns that folder."""
    check_launch(recipe.training_args.use_cpu)
    if recipe.trainer == "grpo":
        from .grpo import main
    else:
        from .sft import main
    return main(recipe.script_args, recipe.training_args, recipe.model_args, recipe_yaml=recipe.to_yaml())
