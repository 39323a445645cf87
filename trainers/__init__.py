"""Training: the staged GMAI-VL / Lingshu recipes on TRL (see trainers/README.md).

- `configs`: `GMAIVLSFTConfig`, `GMAIVLGRPOConfig` (TRL's configs plus trainable parts, per-part
  learning rates, VLM packing, data mixture, GRPO data options), script and model arguments.
- `sft`, `grpo`: the scripts, `main(script_args, training_args, model_args)`; `trainer`: the trainers.
- `recipes`, `chain`, `outputs`, `dry_run`, `cli`: YAML recipes, chains of stages, output folders
  and resume, `gmaivl train [--dry-run]` and `gmaivl train-chain`.
- `models`, `tiny_families`, `freezing`: GMAI-VL, LLaVA and Qwen2-VL families and their parts.
- `mixture`, `packing`, `rewards`, `grpo_data`, `toy`: data mixtures, the VLM collator, GRPO.
"""

if __name__ != "gmaivl.trainers":  # imported by its folder name from a checkout: see gmaivl/_checkout.py
    import pathlib
    import runpy

    runpy.run_path(str(pathlib.Path(__file__).parents[1] / "gmaivl" / "_checkout.py"))["hand_over"](__name__)
