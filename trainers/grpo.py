"""GRPO stage (Lingshu stage IV), in the shape of TRL's `trl grpo` script.

python -m gmaivl.trainers.grpo --config recipe.yaml [--key value ...]
gmaivl train --config lingshu/stage4_medical_rl_grpo.yaml       # the same, plus chains and --dry-run
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from transformers import set_seed

from .configs import GMAIVLGRPOConfig, GMAIVLModelConfig, GMAIVLScriptArguments
from .grpo_data import prepare_grpo_dataset
from .mixture import load_training_data
from .models import check_model_source, load_model_and_processor
from .outputs import SaveRecipeCallback, resolve_resume, write_stage_outputs
from .trainer import GMAIVLGRPOTrainer


def main(
    script_args: GMAIVLScriptArguments,
    training_args: GMAIVLGRPOConfig,
    model_args: GMAIVLModelConfig,
    recipe_yaml: str | None = None,
) -> Path:
    """Train one GRPO stage and write its output folder (returned)."""
    check_model_source(model_args)  # a missing model folder fails now, not after the data is loaded
    set_seed(training_args.seed)

    # Dataset: verifiable QA rows (as the dataset builders publish them) -> TRL prompts + reward columns
    dataset = prepare_grpo_dataset(
        load_training_data(script_args, training_args),
        open_from_mcq=training_args.grpo_open_from_mcq,
        yes_no_ratio=training_args.grpo_yes_no_ratio,
        seed=training_args.mixture_seed,
    )

    # Model
    model, processor = load_model_and_processor(model_args)
    with tempfile.TemporaryDirectory(prefix="gmaivl-grpo-ref-") as reference_dir:
        name_or_path = model.config._name_or_path
        if training_args.beta != 0 and not (name_or_path and Path(name_or_path).is_dir()):
            # TRL builds the KL reference model with `from_pretrained(config._name_or_path)`; a model built in
            # memory (tiny, composed) has no such folder, so give it one holding the initial weights.
            model.save_pretrained(reference_dir)
            model.config._name_or_path = reference_dir

        # Trainer: parts frozen, per-part learning rates, reward functions - all from `training_args`
        trainer = GMAIVLGRPOTrainer(
            model=model,
            args=training_args,
            train_dataset=dataset,
            processing_class=processor,
            callbacks=[SaveRecipeCallback(recipe_yaml)] if recipe_yaml else None,
        )
        model.config._name_or_path = name_or_path

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

    parser = TrlParser((GMAIVLScriptArguments, GMAIVLGRPOConfig, GMAIVLModelConfig))
    main(*parser.parse_args_and_config())
