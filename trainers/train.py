"""Run a recipe stage (SFT or GRPO with TRL) or a chain of stages.

Each stage: build the data mixture, load the model (the previous stage's folder in a chain),
freeze the parts the recipe keeps fixed, train with TRL, then write into the output folder the
model and processor (`from_pretrained`-ready), the recipe actually used (`gmaivl_recipe.yaml`,
also into every intermediate `checkpoint-*`), the log history and a loss-curve PNG.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .freezing import apply_freezing, param_groups
from .packing import GMAIVLDataCollator, check_packing_attention
from .recipes import Recipe, parse_recipe, read_yaml_mapping, resolve_recipe_path

logger = logging.getLogger(__name__)

RECIPE_FILENAME = "gmaivl_recipe.yaml"
LOSS_CURVE_FILENAME = "loss_curve.png"
LOG_HISTORY_FILENAME = "log_history.json"


# ----------------------------------------------------------------------------------------------------
# model loading
# ----------------------------------------------------------------------------------------------------
def load_model_and_processor(recipe: Recipe) -> tuple[Any, Any]:
    """The stage's starting model: `tiny[:seed]`, a checkpoint folder / Hub id, or a fresh composition."""
    args = recipe.model
    dtype = getattr(torch, args.dtype) if isinstance(args.dtype, str) and args.dtype != "auto" else args.dtype
    path = args.model_name_or_path
    if path is not None and (path == "tiny" or path.startswith("tiny:")):
        from gmaivl.tiny import build_tiny_gmaivl

        seed = int(path.split(":", 1)[1]) if ":" in path else 0
        model, processor = build_tiny_gmaivl(
            seed=seed, image_size=args.image_size or 56, attn_implementation=args.attn_implementation
        )
        # TRL's GRPO rebuilds a reference model from `_name_or_path`; a tiny model has none, so keep beta 0.
        return model.to(dtype), processor
    if path is None:
        if not (args.vision_model_name_or_path and args.llm_model_name_or_path):
            raise ValueError(
                "the recipe needs `model_name_or_path`, or both `vision_model_name_or_path` and "
                "`llm_model_name_or_path` to compose a new model"
            )
        from gmaivl.compose import compose_gmaivl

        return compose_gmaivl(
            args.vision_model_name_or_path,
            args.llm_model_name_or_path,
            dtype=dtype,
            attn_implementation=args.attn_implementation,
        )
    from gmaivl import GMAIVLForConditionalGeneration, GMAIVLProcessor

    model = GMAIVLForConditionalGeneration.from_pretrained(
        path, dtype=dtype, attn_implementation=args.attn_implementation
    )
    processor = GMAIVLProcessor.from_pretrained(path)
    return model, processor


def text_attn_implementation(model: Any) -> str | None:
    text_config = model.config.get_text_config()
    return getattr(text_config, "_attn_implementation", None) or getattr(
        model.config, "_attn_implementation", None
    )


# ----------------------------------------------------------------------------------------------------
# trainers
# ----------------------------------------------------------------------------------------------------
class _PerModuleLearningRates:
    """Trainer mixin: AdamW groups per model part with the recipe's `module_learning_rates`."""

    gmaivl_module_lrs: dict[str, float] | None = None

    def create_optimizer(self, model=None):  # type: ignore[override]
        if self.optimizer is None and self.gmaivl_module_lrs:
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            no_decay = [n for n, _ in opt_model.named_parameters() if n not in decay]
            groups = param_groups(
                opt_model, self.args.learning_rate, self.gmaivl_module_lrs, self.args.weight_decay, no_decay
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            return self.optimizer
        return super().create_optimizer(model) if model is not None else super().create_optimizer()


def _sft_trainer_class():
    from trl import SFTTrainer

    class GMAIVLSFTTrainer(_PerModuleLearningRates, SFTTrainer):
        """TRL's SFTTrainer with the GMAI-VL collator (padded or packed) and per-module learning rates."""

        gmaivl_packing = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.gmaivl_packing:  # refuse, at every step, a batch whose attention would leak
                check_packing_attention(text_attn_implementation(self.model), inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return GMAIVLSFTTrainer


def _grpo_trainer_class():
    from trl import GRPOTrainer

    class GMAIVLGRPOTrainer(_PerModuleLearningRates, GRPOTrainer):
        """TRL's GRPOTrainer with per-module learning rates."""

    return GMAIVLGRPOTrainer


class SaveRecipeCallback(TrainerCallback):
    """Write the recipe into each intermediate checkpoint folder."""

    def __init__(self, recipe_yaml: str) -> None:
        self.recipe_yaml = recipe_yaml

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                atomic_write_text(folder / RECIPE_FILENAME, self.recipe_yaml)
        return control


# ----------------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------------
def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plot_loss_curve(log_history: list[dict[str, Any]], path: str | os.PathLike, title: str = "") -> bool:
    """Training loss (and GRPO reward) against steps; returns False when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    reward = [(e["step"], e["reward"]) for e in log_history if "reward" in e and "step" in e]
    if not loss and not reward:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    if loss:
        ax.plot(*zip(*loss), marker="o", label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if reward:
        ax2 = ax.twinx()
        ax2.plot(*zip(*reward), color="tab:green", marker=".", label="reward")
        ax2.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def is_stage_done(output_dir: str | os.PathLike) -> bool:
    folder = Path(output_dir)
    return (folder / RECIPE_FILENAME).exists() and any(folder.glob("*.safetensors"))


# ----------------------------------------------------------------------------------------------------
# one stage
# ----------------------------------------------------------------------------------------------------
def _resolve_resume(value: Any, output_dir: str) -> str | bool | None:
    if value in (None, "", False, "false", "False", "no"):
        return None
    if value in (True, "true", "True", "last", "latest", "yes"):
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            logger.warning("resume requested but no checkpoint in %s: starting fresh", output_dir)
        return last
    if not os.path.isdir(str(value)):
        raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint folder {value}")
    return str(value)


def build_trainer(recipe: Recipe, model: Any = None, processor: Any = None, train_dataset: Any = None):
    """The configured TRL trainer of a stage (model frozen as the recipe says), without training it."""
    set_seed(recipe.training.seed)
    if model is None:
        model, processor = load_model_and_processor(recipe)
    counts = apply_freezing(model, recipe.recipe.trainable_modules)
    logger.info("stage %s trains %s", recipe.recipe.stage, {k: v for k, v in counts.items() if v})
    args = recipe.training
    if recipe.recipe.trainer == "sft":
        from .mixture import build_mixture

        if train_dataset is None:
            train_dataset = build_mixture(recipe.data)
        attn = text_attn_implementation(model)
        packing = recipe.recipe.vlm_packing
        collator = GMAIVLDataCollator(
            processor,
            max_length=recipe.recipe.packing_max_length if packing else args.max_length,
            packing=packing,
            attn_implementation=attn,
            pad_to_multiple_of=args.pad_to_multiple_of,
        )
        # The collator tokenises the raw rows; TRL must keep all columns (ids name bad rows) and skip
        # its own preparation, which would reject packing for vision data.
        args.remove_unused_columns = False
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        trainer_cls = _sft_trainer_class()
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=train_dataset,
            processing_class=processor,
            data_collator=collator,
        )
        trainer.gmaivl_packing = packing
    else:
        from .grpo_data import prepare_grpo_dataset
        from .mixture import build_mixture
        from .rewards import get_reward_functions

        if train_dataset is None:
            train_dataset = prepare_grpo_dataset(
                build_mixture(recipe.data),
                open_from_mcq=recipe.data.grpo_open_from_mcq,
                yes_no_ratio=recipe.data.grpo_yes_no_ratio,
                seed=recipe.data.mixture_seed,
            )
        if args.reward_weights is not None and len(args.reward_weights) != len(recipe.recipe.reward_funcs):
            raise ValueError(
                f"reward_weights {args.reward_weights} and reward_funcs {recipe.recipe.reward_funcs} differ in length"
            )
        trainer_cls = _grpo_trainer_class()
        trainer = trainer_cls(
            model=model,
            reward_funcs=get_reward_functions(recipe.recipe.reward_funcs),
            args=args,
            train_dataset=train_dataset,
            processing_class=processor,
        )
    trainer.gmaivl_module_lrs = recipe.recipe.module_learning_rates
    trainer.add_callback(SaveRecipeCallback(recipe.to_yaml()))
    return trainer


def save_final_model(trainer: Any, output_dir: Path) -> None:
    """Write the stage's weights into `output_dir` so that it loads with `from_pretrained`, or fail."""
    if getattr(trainer, "is_fsdp_enabled", False):
        # With a sharded state dict (FSDP2's default) `Trainer.save_model` writes no weights at all: gather a
        # full one for the final save; intermediate checkpoints stay sharded.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero() and not any(Path(output_dir).glob("*.safetensors")):
        raise RuntimeError(
            f"{output_dir}: training finished but no *.safetensors weights were written, so the next stage could not "
            "load this folder (DeepSpeed ZeRO-3 needs `zero3_save_16bit_model: true` in the accelerate config)"
        )


def run_stage(recipe: Recipe, train_dataset: Any = None) -> Path:
    """Train one stage and write its output folder; returns that folder."""
    output_dir = Path(recipe.training.output_dir)
    trainer = build_trainer(recipe, train_dataset=train_dataset)
    resume = _resolve_resume(recipe.training.resume_from_checkpoint, str(output_dir))
    trainer.train(resume_from_checkpoint=resume)
    save_final_model(trainer, output_dir)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(output_dir))
        history = trainer.state.log_history
        atomic_write_text(output_dir / LOG_HISTORY_FILENAME, json.dumps(history, indent=1))
        plot_loss_curve(history, output_dir / LOSS_CURVE_FILENAME, title=f"{recipe.recipe.stage}")
        atomic_write_text(output_dir / RECIPE_FILENAME, recipe.to_yaml())  # last: marks the stage done
    trainer.accelerator.wait_for_everyone()
    return output_dir


# ----------------------------------------------------------------------------------------------------
# a chain of stages
# ----------------------------------------------------------------------------------------------------
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
        previous = recipe.training.output_dir
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
        out = Path(recipe.training.output_dir)
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
        out = Path(recipe.training.output_dir)
        if to_run:
            logger.info("stage %s -> %s", recipe.recipe.stage, out)
            run_stage(recipe)
        else:
            logger.info("stage %s already done in %s: skipped", recipe.recipe.stage, out)
        outputs.append(out)
    return outputs


def dump_yaml(values: dict[str, Any]) -> str:
    return yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
