"""A chain of stages (e.g. I -> II -> III -> GRPO): lineage, and refusal to reuse a stale stage.

Each stage starts from the previous stage's output folder. A re-run skips finished stages whose
recipe is unchanged, resumes an interrupted one from its newest complete checkpoint, and refuses
(before anything trains) to keep a finished stage made from another recipe or another parent.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from .outputs import RECIPE_FILENAME, is_stage_done
from .recipes import Recipe, parse_recipe, read_yaml_mapping, resolve_recipe_path
from .train import run_stage

logger = logging.getLogger(__name__)


def load_chain(path: str | os.PathLike) -> dict[str, Any]:
    chain = read_yaml_mapping(path)
    stages = chain.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ValueError(f"{path}: a chain needs a non-empty `stages` list")
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or "recipe" not in stage:
            raise ValueError(f"{path}: stages[{i}] must be a mapping with a `recipe` path")
        if not isinstance(stage.get("overrides", {}), dict):
            raise ValueError(f"{path}: stages[{i}].overrides must be a mapping")
    if "output_dir" not in chain:
        raise ValueError(f"{path}: a chain needs `output_dir`")
    return chain


def chain_recipes(path: str | os.PathLike, overrides: list[str] | None = None) -> list[Recipe]:
    """Parse every stage of a chain; each starts from the previous stage's output folder."""
    chain = load_chain(path)
    base = Path(path).parent
    overrides = list(overrides or [])
    out_root = Path(chain["output_dir"])
    rest = []  # `--output_dir X` / `--output_dir=X` names the chain's folder, not each stage's
    args = iter(overrides)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in ("--output_dir", "--output-dir"):
            folder = value if eq else next(args, "")
            if not folder:
                raise ValueError(f"{path}: {flag} needs a folder")
            out_root = Path(folder)
        else:
            rest.append(arg)
    overrides = rest
    common = chain.get("overrides", {}) or {}
    recipes: list[Recipe] = []
    previous: str | None = None
    for i, stage in enumerate(chain["stages"]):
        recipe_path = resolve_recipe_path(stage["recipe"], base)
        values = {**read_yaml_mapping(recipe_path), **common, **stage.get("overrides", {})}
        name = values.get("stage", f"stage{i + 1}")
        values["output_dir"] = str(out_root / f"{i + 1:02d}_{name}")
        values.setdefault("resume_from_checkpoint", "last")  # a re-run picks up where it stopped
        if previous is not None:
            values["model_name_or_path"] = previous
            values.pop("vision_model_name_or_path", None)
            values.pop("llm_model_name_or_path", None)
        # a command-line --model_name_or_path starts the first stage only; the others start from the previous one
        stage_overrides = overrides if previous is None else [*overrides, "--model_name_or_path", previous]
        recipe = parse_recipe(values, stage_overrides, source=str(recipe_path))
        recipes.append(recipe)
        previous = recipe.training_args.output_dir
    return recipes


# Keys that change how a run is logged or restarted, not the weights it produces.
_RUN_ONLY_KEYS = frozenset(
    {"resume_from_checkpoint", "report_to", "logging_steps", "logging_dir", "disable_tqdm"}
)


def _same_paths(values: dict[str, Any]) -> dict[str, Any]:
    """`runs/x` and `/abs/runs/x` name the same folder: compare folders by their real path."""
    return {
        k: os.path.realpath(v)
        if k in ("output_dir", "model_name_or_path") and isinstance(v, str) and os.path.exists(v)
        else v
        for k, v in values.items()
    }


def recipe_changes(folder: str | os.PathLike, recipe: Recipe) -> list[str]:
    """How `recipe` differs from the one a finished stage in `folder` was trained with ("key: old -> new")."""
    saved = _same_paths(yaml.safe_load((Path(folder) / RECIPE_FILENAME).read_text()) or {})
    current = _same_paths(yaml.safe_load(recipe.to_yaml()) or {})
    keys = (saved.keys() | current.keys()) - _RUN_ONLY_KEYS
    return [
        f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(keys) if saved.get(k) != current.get(k)
    ]


def plan_chain(recipes: list[Recipe]) -> list[bool]:
    """Which stages to run. A finished stage is skipped only if nothing it was built from changed.

    A finished stage whose recipe differs from the chain's, or that follows a stage about to be
    trained (again), would silently keep weights made from another model or recipe; it is an
    error, raised before anything trains, and nothing is deleted.
    """
    plan, first_to_run = [], None
    for recipe in recipes:
        out = Path(recipe.training_args.output_dir)
        if not is_stage_done(out):
            first_to_run = first_to_run or out
            plan.append(True)
            continue
        if first_to_run is not None:
            raise ValueError(
                f"{out} holds a finished stage, but the stage before it ({first_to_run}) will be trained "
                "again, so it would no longer follow from it. Delete it or choose another --output_dir."
            )
        changes = recipe_changes(out, recipe)
        if changes:
            raise ValueError(
                f"{out} holds a finished stage trained with another recipe ({'; '.join(changes)}). "
                "Delete it or choose another --output_dir."
            )
        plan.append(False)
    return plan


def run_chain(path: str | os.PathLike, overrides: list[str] | None = None) -> list[Path]:
    """Run the stages in order; finished stages with an unchanged recipe and lineage are skipped."""
    recipes = chain_recipes(path, overrides)
    outputs = []
    for recipe, to_run in zip(recipes, plan_chain(recipes)):
        out = Path(recipe.training_args.output_dir)
        if to_run:
            logger.info("stage %s -> %s", recipe.script_args.stage, out)
            run_stage(recipe)
        else:
            logger.info("stage %s already done in %s: skipped", recipe.script_args.stage, out)
        outputs.append(out)
    return outputs
