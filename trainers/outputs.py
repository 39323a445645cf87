"""What a stage writes, and how it picks the checkpoint to resume from.

An output folder holds the model and processor (`from_pretrained`-ready), the recipe actually used
(`gmaivl_recipe.yaml`, written last: it marks the stage done; also copied into every
`checkpoint-*`), the log history and a loss-curve PNG.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from gmaivl.core.files import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

RECIPE_FILENAME = "gmaivl_recipe.yaml"
LOSS_CURVE_FILENAME = "loss_curve.png"
LOG_HISTORY_FILENAME = "log_history.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


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


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """A `checkpoint-N` that `Trainer` finished writing.

    `Trainer._save_checkpoint` writes the weights, then optimizer, scheduler and RNG states, and
    `trainer_state.json` last; so a checkpoint is complete when that file parses and names step N.
    """
    folder = Path(folder)
    match = _CHECKPOINT_RE.match(folder.name)
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    has_weights = (
        any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or any(folder.glob("global_step*"))
    )
    return bool(match) and state.get("global_step") == int(match.group(1)) and has_weights


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete `checkpoint-N` of a folder; half-written newer ones are skipped with a warning."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    checkpoints = sorted(
        (p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT_RE.match(p.name)),
        key=lambda p: int(_CHECKPOINT_RE.match(p.name).group(1)),
        reverse=True,
    )
    for checkpoint in checkpoints:
        if is_complete_checkpoint(checkpoint):
            return str(checkpoint)
        logger.warning("%s is incomplete (interrupted while saving?): skipped for resuming", checkpoint)
    return None


def resolve_resume(value: Any, output_dir: str | os.PathLike) -> str | None:
    """`resume_from_checkpoint`: off, `last`/`true` (newest complete checkpoint), or a folder."""
    if value in (None, "", False, "false", "False", "no"):
        return None
    if value in (True, "true", "True", "last", "latest", "yes"):
        last = last_complete_checkpoint(output_dir)
        if last is None:
            logger.warning("resume requested but no complete checkpoint in %s: starting fresh", output_dir)
        return last
    if not os.path.isdir(str(value)):
        raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint folder {value}")
    if not is_complete_checkpoint(value):
        raise ValueError(f"resume_from_checkpoint: {value} is incomplete (no valid trainer_state.json)")
    return str(value)


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
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return True


def is_stage_done(output_dir: str | os.PathLike) -> bool:
    folder = Path(output_dir)
    return (folder / RECIPE_FILENAME).exists() and any(folder.glob("*.safetensors"))


def save_final_model(trainer: Any, output_dir: str | os.PathLike) -> None:
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


def write_stage_outputs(
    trainer: Any, output_dir: str | os.PathLike, recipe_yaml: str | None, title: str
) -> None:
    """Final weights, processor, log history, loss curve, then the recipe (which marks the stage done)."""
    output_dir = Path(output_dir)
    save_final_model(trainer, output_dir)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(output_dir))
        history = trainer.state.log_history
        atomic_write_text(output_dir / LOG_HISTORY_FILENAME, json.dumps(history, indent=1))
        plot_loss_curve(history, output_dir / LOSS_CURVE_FILENAME, title=title)
        if recipe_yaml:
            atomic_write_text(output_dir / RECIPE_FILENAME, recipe_yaml)
    trainer.accelerator.wait_for_everyone()
