"""SFT stage of the GMAI-VL / Lingshu recipes, in the shape of TRL's `trl sft` script.

python -m gmaivl.trainers.sft --config recipe.yaml [--key value ...]
gmaivl train --config gmaivl/stage1_shallow_alignment.yaml      # the same, plus chains and --dry-run
"""

from __future__ import annotations

from pathlib import Path

from transformers import set_seed

from .configs import GMAIVLModelConfig, GMAIVLScriptArguments, GMAIVLSFTConfig
from .mixture import load_training_data
from .models import check_model_source, load_model_and_processor
from .outputs import SaveRecipeCallback, resolve_resume, write_stage_outputs
from .trainer import GMAIVLSFTTrainer


def main(
    script_args: GMAIVLScriptArguments,
    training_args: GMAIVLSFTConfig,
    model_args: GMAIVLModelConfig,
    recipe_yaml: str | None = None,
) -> Path:
    """Train one SFT stage and write its output folder (returned)."""
    check_model_source(model_args)  # a missing model folder fails now, not after the data is loaded
    set_seed(training_args.seed)

    # Dataset: the recipe's mixture (sources, ratios, quality filters) or TRL's `dataset_name`
    dataset = load_training_data(script_args, training_args)

    # Model: a checkpoint (GMAI-VL, LLaVA, Qwen2-VL), a composition, or a tiny model
    model, processor = load_model_and_processor(model_args)

    # Trainer: parts frozen, per-part learning rates, VLM collator (padded or packed) - all from `training_args`
    trainer = GMAIVLSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[SaveRecipeCallback(recipe_yaml)] if recipe_yaml else None,
    )

    # Train, resuming from the newest complete checkpoint when asked
    trainer.train(
        resume_from_checkpoint=resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    )

    # Save: weights, processor, log history, loss curve, and the recipe last (the stage is done)
    write_stage_outputs(trainer, training_args.output_dir, recipe_yaml, title=script_args.stage)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return Path(training_args.output_dir)


if __name__ == "__main__":
    from trl import TrlParser

    parser = TrlParser((GMAIVLScriptArguments, GMAIVLSFTConfig, GMAIVLModelConfig))
    main(*parser.parse_args_and_config())
