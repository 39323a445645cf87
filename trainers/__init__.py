"""Training: the staged GMAI-VL / Lingshu recipes on TRL (see trainers/README.md).

- `recipes`, `mixture`, `freezing`: YAML recipes, per-stage data mixtures, what each stage trains.
- `packing`: the VLM data collator (padded or best-fit-decreasing packed rows).
- `train`, `cli`: `gmaivl train` and `gmaivl train-chain`.
- `rewards`, `grpo_data`: verifiable rewards and data preparation for GRPO.
"""
