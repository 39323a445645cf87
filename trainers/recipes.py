"""Recipe schema: the dataclasses a stage YAML is parsed into with TRL's `TrlParser`.

A recipe is one flat YAML mapping, the convention of TRL's own scripts (`trl sft --config x.yaml`):
our keys (`GMAIVLRecipeArguments`, `ModelArguments`, `DataArguments`) sit beside the keys of TRL's
`SFTConfig` (SFT stages) or `GRPOConfig` (the RL stage). Command-line flags override the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

#: Names of the three trainable parts of the model, as used in `trainable_modules` and
#: `module_learning_rates`.
MODULE_NAMES: tuple[str, ...] = ("vision", "projector", "llm")
TRAINER_KINDS: tuple[str, ...] = ("sft", "grpo")


@dataclass
class GMAIVLRecipeArguments:
    """What a stage is: its name, which trainer runs it, what trains, and how rows are packed."""

    stage: str = field(default="stage", metadata={"help": "Stage name, e.g. shallow_alignment."})
    trainer: str = field(default="sft", metadata={"help": "Trainer that runs the stage: sft or grpo."})
    recipe_family: str = field(default="gmaivl", metadata={"help": "Recipe family (gmaivl or lingshu)."})
    trainable_modules: list[str] = field(
        default_factory=lambda: list(MODULE_NAMES),
        metadata={"help": "Parts that train, among vision, projector, llm; the others are frozen."},
    )
    module_learning_rates: dict[str, float] | None = field(
        default=None,
        metadata={"help": "Per-module learning rates, e.g. {vision: 2e-6, projector: 1e-5, llm: 1e-5}."},
    )
    vlm_packing: bool = field(
        default=False,
        metadata={"help": "Pack whole samples into rows of `packing_max_length` (best-fit-decreasing)."},
    )
    packing_max_length: int = field(default=4096, metadata={"help": "Token length of one packed row."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["format", "accuracy"],
        metadata={"help": "GRPO reward functions by name (see gmaivl.trainers.rewards.REWARD_FUNCTIONS)."},
    )

    def __post_init__(self) -> None:
        if self.trainer not in TRAINER_KINDS:
            raise ValueError(f"recipe key `trainer` must be one of {TRAINER_KINDS}, got {self.trainer!r}")
        if isinstance(self.trainable_modules, str):
            self.trainable_modules = [m.strip() for m in self.trainable_modules.split(",") if m.strip()]
        unknown = set(self.trainable_modules) - set(MODULE_NAMES)
        if unknown:
            raise ValueError(
                f"recipe key `trainable_modules` has unknown parts {sorted(unknown)}; use {MODULE_NAMES}"
            )
        if isinstance(self.module_learning_rates, str):
            self.module_learning_rates = yaml.safe_load(self.module_learning_rates)
        if self.module_learning_rates is not None:
            unknown = set(self.module_learning_rates) - set(MODULE_NAMES)
            if unknown:
                raise ValueError(
                    f"recipe key `module_learning_rates` has unknown parts {sorted(unknown)}; use {MODULE_NAMES}"
                )
            self.module_learning_rates = {k: float(v) for k, v in self.module_learning_rates.items()}
        if self.packing_max_length < 2:
            raise ValueError("recipe key `packing_max_length` must be at least 2")


@dataclass
class ModelArguments:
    """Where the stage's starting weights come from."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint folder or Hub id of a GMAI-VL model; `tiny` or `tiny:SEED` builds the tiny test "
            "model. Empty in a chain: the previous stage's output folder."
        },
    )
    vision_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "With llm_model_name_or_path: compose a new model (stage I from scratch)."},
    )
    llm_model_name_or_path: str | None = field(default=None, metadata={"help": "LLM to compose with."})
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "Attention of the language model: sdpa, eager or gmaivl_packed."}
    )
    dtype: str = field(
        default="float32", metadata={"help": "Weights dtype at load time: float32, bfloat16..."}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "Image side length in pixels (336 for the paper's recipe)."}
    )


@dataclass
class DataArguments:
    """The data mixture of a stage (Table 10 of the GMAI-VL paper: a sampling ratio per source)."""

    datasets: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={
            "help": "Sources: each {path, name?, data_files?, split?, ratio, source?}. `ratio` is the share of "
            "that source used in this stage (1.0 = all rows, 0.05 = 5%, above 1 repeats rows)."
        },
    )
    mixture_seed: int = field(
        default=0, metadata={"help": "Seed of the ratio sub-sampling and of the shuffle."}
    )
    min_response_chars: int = field(
        default=0,
        metadata={"help": "Drop rows whose assistant text is shorter than this (stage III filter)."},
    )
    max_quality_score: float | None = field(
        default=None,
        metadata={
            "help": "Drop rows whose judge score is above this. The GMAI-VL judge scale runs 1 (best) to 5 "
            "(worst); 3 or better counts as satisfactory (stage III filter)."
        },
    )
    min_quality_score: float | None = field(
        default=None,
        metadata={"help": "Drop rows whose judge score is below this (for higher-is-better scales)."},
    )
    quality_score_column: str = field(
        default="quality_score", metadata={"help": "Column with the judge score."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Cap on the mixed rows (debugging)."}
    )
    grpo_yes_no_ratio: float = field(
        default=0.05, metadata={"help": "GRPO data: target share of yes/no questions after down-sampling."}
    )
    grpo_open_from_mcq: bool = field(
        default=True, metadata={"help": "GRPO data: turn MCQs whose options are words into open questions."}
    )

    def __post_init__(self) -> None:
        for i, source in enumerate(self.datasets):
            if not isinstance(source, dict) or "path" not in source:
                raise ValueError(
                    f"recipe `datasets[{i}]` must be a mapping with at least `path`, got {source!r}"
                )
            ratio = float(source.get("ratio", 1.0))
            if ratio < 0:
                raise ValueError(
                    f"recipe `datasets[{i}]` ({source['path']}): ratio must be >= 0, got {ratio}"
                )


def trl_config_class(trainer: str) -> type:
    """TRL's config dataclass for a trainer kind."""
    from trl import GRPOConfig, SFTConfig

    return {"sft": SFTConfig, "grpo": GRPOConfig}[trainer]


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
    """A parsed stage recipe: our three dataclasses plus TRL's training config, and the raw values."""

    recipe: GMAIVLRecipeArguments
    model: ModelArguments
    data: DataArguments
    training: Any  # trl.SFTConfig or trl.GRPOConfig
    values: dict[str, Any]

    def to_yaml(self) -> str:
        """The recipe as actually used (file values plus overrides), as a flat YAML mapping."""
        return yaml.safe_dump(self.values, sort_keys=False, allow_unicode=True)


def _cpu_adjustments(values: dict[str, Any]) -> dict[str, Any]:
    """Recipes are written for GPUs (bf16). Without CUDA, fall back to fp32 instead of failing."""
    import torch

    if not torch.cuda.is_available() and (values.get("bf16") is not False or values.get("fp16")):
        if values.get("bf16") or values.get("fp16"):
            logger.warning("No CUDA device: turning bf16/fp16 off for this run.")
        values = {**values, "bf16": False, "fp16": False}
    return values


def parse_recipe(
    config: str | os.PathLike | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    source: str | None = None,
) -> Recipe:
    """Parse a stage recipe (YAML path or mapping) plus command-line style overrides with `TrlParser`.

    The trainer kind (`trainer: sft|grpo`) picks TRL's `SFTConfig` or `GRPOConfig` as the fourth
    dataclass. Unknown keys are errors, naming the recipe file.
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
    # Overrides may change the trainer kind: peek at them first.
    trainer_kind = values.get("trainer", "sft")
    for i, arg in enumerate(overrides):
        if arg == "--trainer" and i + 1 < len(overrides):
            trainer_kind = overrides[i + 1]
        elif arg.startswith("--trainer="):
            trainer_kind = arg.split("=", 1)[1]
    if trainer_kind not in TRAINER_KINDS:
        raise ValueError(f"{source}: `trainer` must be one of {TRAINER_KINDS}, got {trainer_kind!r}")
    values = _cpu_adjustments(values)
    classes = (GMAIVLRecipeArguments, ModelArguments, DataArguments, trl_config_class(trainer_kind))
    parser = TrlParser(classes)
    env = values.pop("env", None)
    if env:
        if not isinstance(env, dict):
            raise ValueError(f"{source}: `env` must be a mapping")
        for key, value in env.items():
            os.environ[key] = str(value)
    remaining = parser.set_defaults_with_config(**values)
    if remaining:
        unknown = sorted({s[2:] for s in remaining[::2]})
        raise ValueError(f"{source}: unknown recipe keys {unknown}")
    try:
        recipe_args, model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=overrides)
    except SystemExit as err:  # argparse exits on bad flags; turn it into an error callers can catch
        raise ValueError(f"{source}: bad recipe overrides {overrides}") from err
    used = _used_values(values, overrides, (recipe_args, model_args, data_args, training_args))
    return Recipe(recipe_args, model_args, data_args, training_args, used)


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
