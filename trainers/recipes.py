"""Recipes: a stage YAML parsed with TRL's `TrlParser` into the dataclasses of `configs`.

A recipe is one flat YAML mapping, the convention of TRL's own scripts (`trl sft --config x.yaml`):
the keys of `GMAIVLScriptArguments`, `GMAIVLModelConfig` and `GMAIVLSFTConfig` (SFT stages) or
`GMAIVLGRPOConfig` (the RL stage). Command-line flags override the file.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .configs import (
    MODULE_NAMES,
    TRAINER_KINDS,
    GMAIVLModelConfig,
    GMAIVLScriptArguments,
    config_class,
)

logger = logging.getLogger(__name__)
__all__ = ["MODULE_NAMES", "Recipe", "packaged_recipe_dir", "parse_recipe", "resolve_recipe_path"]


def packaged_recipe_dir() -> Path:
    """Folder of the YAML recipes shipped with the package."""
    return Path(str(resources.files("gmaivl.trainers") / "recipes"))


def resolve_recipe_path(path: str | os.PathLike, base: Path | None = None) -> Path:
    """Find a recipe: as given, relative to `base` (a chain file's folder), or inside the packaged recipes."""
    candidates = [Path(path)]
    if base is not None:
        candidates.append(base / path)
    candidates.append(packaged_recipe_dir() / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"recipe {path!s} not found (looked in: {', '.join(str(c) for c in candidates)})")


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping, got {type(data).__name__}")
    return data


@dataclass
class Recipe:
    """A parsed stage recipe: `main(script_args, training_args, model_args)`'s arguments and the raw values."""

    script_args: GMAIVLScriptArguments
    training_args: Any  # GMAIVLSFTConfig or GMAIVLGRPOConfig
    model_args: GMAIVLModelConfig
    values: dict[str, Any]
    #: values the recipe asks for on GPUs that this CUDA-less machine replaced (`bf16`, `use_vllm`...)
    gpu_values: dict[str, Any] = field(default_factory=dict)

    @property
    def trainer(self) -> str:
        return self.script_args.trainer

    def to_yaml(self) -> str:
        """The recipe as actually used (file values plus overrides), as a flat YAML mapping."""
        return yaml.safe_dump(self.values, sort_keys=False, allow_unicode=True)


def _cpu_adjustments(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Recipes are written for GPUs (bf16, vLLM). Without CUDA, fall back to fp32 and `generate()`.

    Returns the values to use and the GPU values they replace.
    """
    import torch

    if torch.cuda.is_available():
        return values, {}
    replaced = {k: values[k] for k in ("bf16", "fp16", "use_vllm") if values.get(k)}
    if values.get("bf16") or values.get("fp16"):
        logger.warning("No CUDA device: turning bf16/fp16 off for this run.")
    if values.get("use_vllm"):
        logger.warning("No CUDA device: generating with model.generate() instead of vLLM for this run.")
    out = {**values, "bf16": False, "fp16": False}
    if "use_vllm" in values:
        out["use_vllm"] = False
    return out, replaced


def _trainer_kind(values: dict[str, Any], overrides: list[str], source: str) -> str:
    kind = values.get("trainer", "sft")
    for i, arg in enumerate(overrides):  # overrides may change the trainer kind: peek at them first
        if arg == "--trainer" and i + 1 < len(overrides):
            kind = overrides[i + 1]
        elif arg.startswith("--trainer="):
            kind = arg.split("=", 1)[1]
    if kind not in TRAINER_KINDS:
        raise ValueError(f"{source}: `trainer` must be one of {TRAINER_KINDS}, got {kind!r}")
    return kind


def parse_recipe(
    config: str | os.PathLike | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    source: str | None = None,
) -> Recipe:
    """Parse a stage recipe (YAML path or mapping) plus command-line style overrides with `TrlParser`.

    The trainer kind (`trainer: sft|grpo`) picks `GMAIVLSFTConfig` or `GMAIVLGRPOConfig`. Unknown
    keys and bad values are errors naming the recipe file.
    """
    from trl import TrlParser

    overrides = list(overrides or [])
    source = source or "<dict>"
    if config is None:
        values: dict[str, Any] = {}
    elif isinstance(config, dict):
        values = dict(config)
    else:
        source = str(config)
        values = read_yaml_mapping(config)
    kind = _trainer_kind(values, overrides, source)
    values, gpu_values = _cpu_adjustments(values)
    parser = TrlParser((GMAIVLScriptArguments, config_class(kind), GMAIVLModelConfig))
    parser.allow_abbrev = False  # `--learning_rat` must be an unknown key, not `--learning_rate`
    env = values.pop("env", None)
    if env:
        if not isinstance(env, dict):
            raise ValueError(f"{source}: `env` must be a mapping")
        for key, value in env.items():
            os.environ[key] = str(value)
    valid = recipe_keys(kind)
    _check_keys(values, valid, source, "recipe key")
    _check_keys(_override_keys(overrides), valid, source, "override")
    remaining = parser.set_defaults_with_config(**values)
    if remaining:  # not reached while `recipe_keys` covers the parser's options
        raise ValueError(f"{source}: unknown recipe keys {sorted({s[2:] for s in remaining[::2]})}")
    try:
        script_args, training_args, model_args = parser.parse_args_into_dataclasses(args=overrides)
    except SystemExit as err:  # argparse exits on bad flags; turn it into an error callers can catch
        raise ValueError(f"{source}: bad recipe overrides {overrides}") from err
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
    used = _used_values(values, overrides, (script_args, training_args, model_args))
    return Recipe(script_args, training_args, model_args, used, gpu_values)


def recipe_keys(kind: str = "sft") -> list[str]:
    """Every key a recipe of this trainer kind may set (the fields of its three dataclasses)."""
    classes = (GMAIVLScriptArguments, config_class(kind), GMAIVLModelConfig)
    return sorted({f.name for cls in classes for f in fields(cls)} | {"env"})


def _override_keys(overrides: list[str]) -> list[str]:
    """The keys of `--key value` / `--key=value` overrides (argparse takes `--max-steps` too)."""
    return [a[2:].split("=", 1)[0].replace("-", "_") for a in overrides if a.startswith("--")]


def _check_keys(keys: Any, valid: list[str], source: str, what: str) -> None:
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{source}: unknown {what} {key!r}{hint}")


def _used_values(values: dict[str, Any], overrides: list[str], objects: tuple) -> dict[str, Any]:
    """File values with the command-line overrides applied, typed as the dataclasses hold them."""
    out = dict(values)
    # argparse takes `--max-steps` for `--max_steps` too
    overridden = {a[2:].split("=", 1)[0].replace("-", "_") for a in overrides if a.startswith("--")}
    for obj in objects:
        for f in fields(obj):
            if f.name in overridden:
                value = getattr(obj, f.name)
                if hasattr(value, "value"):  # enums such as lr_scheduler_type
                    value = value.value
                out[f.name] = value
    return out
