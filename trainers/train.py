"""Run one parsed recipe stage with its script (`sft.main` or `grpo.main`)."""

from __future__ import annotations

from pathlib import Path

from .recipes import Recipe


def run_stage(recipe: Recipe) -> Path:
    """Train one stage and write its output folder; returns that folder."""
    if recipe.trainer == "grpo":
        from .grpo import main
    else:
        from .sft import main
    return main(recipe.script_args, recipe.training_args, recipe.model_args, recipe_yaml=recipe.to_yaml())
