"""`gmaivl train --dry-run`: check a recipe and size the run before renting GPUs.

Resolves the recipe, builds the model on the meta device (no weights read), freezes it as the
stage says, reads the data sources (rows per source after ratios and filters), estimates tokens
per sample on a few rows, and reports steps, the global batch against the paper's and an
estimate of the memory per GPU for an accelerate / DeepSpeed config. Anything missing (model
folder, data source, unknown key) is an error raised before training would start.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import yaml

from .freezing import apply_freezing, model_family, parameters_per_part
from .recipes import Recipe

#: Global batch of the papers' SFT stages (GMAI-VL, Sec. 4.2: 32 GPUs x 8 x 2, or 32 x 4 x 4).
PAPER_GLOBAL_BATCH: dict[str, int] = {"gmaivl": 512}
_GIB = 1024**3
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Launch:
    """What an accelerate config says about the processes and the sharding."""

    processes: int = 1
    kind: str = "single process"  # DDP, DeepSpeed ZeRO-N, FSDP
    zero_stage: int = 0  # 0: replicated; 2: gradients + optimizer sharded; 3: everything sharded
    deepspeed_bf16: bool = False  # DeepSpeed keeps bf16 weights and fp32 master weights in the optimizer


def read_accelerate_config(path: str | os.PathLike | None) -> Launch:
    if path is None:
        return Launch()
    from .recipes import packaged_recipe_dir

    candidates = [str(path), str(packaged_recipe_dir().parent / "accelerate" / str(path))]
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
        raise FileNotFoundError(f"accelerate config {path}: no such file")
    with open(found, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    processes = int(config.get("num_processes", 1))
    kind = str(config.get("distributed_type", "NO"))
    if kind == "DEEPSPEED":
        stage = int((config.get("deepspeed_config") or {}).get("zero_stage", 0))
        return Launch(processes, f"DeepSpeed ZeRO-{stage}", stage, config.get("mixed_precision") == "bf16")
    if kind == "FSDP":
        return Launch(processes, "FSDP full shard", 3)
    return Launch(processes, "DDP" if processes > 1 else "single process", 0)


def memory_per_gpu(
    total: int, trainable: int, weight_bytes: int, launch: Launch, reference: bool
) -> dict[str, float]:
    """GiB per GPU for weights, gradients and AdamW states (fp32 m and v), and a KL reference model.

    Activations are not included (they depend on sequence length and gradient checkpointing).
    """
    n = launch.processes
    optim_bytes = 8
    if launch.deepspeed_bf16:  # bf16 weights and gradients, fp32 master copy + m + v in the optimizer
        weight_bytes, optim_bytes = 2, 12
    weights = total * weight_bytes / (n if launch.zero_stage >= 3 else 1)
    grads = trainable * weight_bytes / (n if launch.zero_stage >= 2 else 1)
    optim = trainable * optim_bytes / (n if launch.zero_stage >= 1 else 1)
    ref = (total * weight_bytes / (n if launch.zero_stage >= 3 else 1)) if reference else 0.0
    out = {"weights": weights, "gradients": grads, "AdamW states": optim, "reference model": ref}
    out = {k: v / _GIB for k, v in out.items()}
    out["total (no activations)"] = sum(out.values())
    return out


def _token_estimate(recipe: Recipe, processor: Any, rows: Any, n: int = 16) -> tuple[float, int] | None:
    """Mean and max tokens per sample over the first `n` mixed rows, image tokens included.

    SFT: prompt + answer, as the collator encodes them. GRPO: the prompt the model is given, built
    from the rows as the GRPO stage builds it, rendered with the chat template and processed with
    its images (the reasoning instruction, the options and every image's tokens count).
    """
    if processor is None or rows is None or len(rows) == 0:
        return None
    from .packing import GMAIVLDataCollator

    if recipe.trainer == "grpo":
        from .grpo_data import prepare_grpo_dataset

        args = recipe.training_args
        prompts = prepare_grpo_dataset(
            rows.select(range(min(n, len(rows)))),
            open_from_mcq=args.grpo_open_from_mcq,
            yes_no_ratio=args.grpo_yes_no_ratio,
            seed=args.mixture_seed,
        )
        if len(prompts) == 0:
            return None
        lengths = []
        for row in prompts:
            text = processor.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            encoded = processor(text=[text], images=row["images"] or None, return_tensors="pt")
            lengths.append(int(encoded["input_ids"].shape[1]))
    else:
        collator = GMAIVLDataCollator(processor, max_length=None)
        lengths = [len(collator.encode(rows[i], i)) for i in range(min(n, len(rows)))]
    return sum(lengths) / len(lengths), max(lengths)


def dry_run(recipe: Recipe, accelerate_config: str | None = None) -> str:
    """The dry-run report of a parsed recipe (raises on a missing model folder or data source)."""
    from .mixture import load_training_data
    from .models import load_model_and_processor, parse_tiny

    script, args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    launch = read_accelerate_config(accelerate_config)
    lines = [f"recipe: stage {script.stage!r} ({script.recipe_family}), trainer {recipe.trainer}"]

    model, _ = load_model_and_processor(model_args, device="meta")
    apply_freezing(model, args.trainable_modules)
    family = model_family(model)
    lines.append(
        f"model: {model_args.model_name_or_path} ({type(model).__name__}, family {family}), meta device"
    )
    parts = parameters_per_part(model)
    for part, (count, trainable) in parts.items():
        lines.append(f"  {part:<9} {count:>15,} parameters, {trainable:>15,} trainable")
    total = sum(c for c, _ in parts.values())
    trainable = sum(t for _, t in parts.values())

    lines.append("data mixture (rows after filters -> rows used at the ratio):")
    stats: list[tuple[str, int, float, int]] = []
    rows = load_training_data(script, args, stats)
    rows_used = 0
    for name, n, ratio, used in stats:
        lines.append(f"  {name:<34} {n:>10,} x {ratio:<5g} -> {used:>10,}")
        rows_used += used
    if not args.datasets:
        rows_used = len(rows)
        lines.append(f"  {script.dataset_name:<34} {rows_used:>10,}")
    if args.max_train_samples is not None:
        rows_used = min(rows_used, args.max_train_samples)
    lines.append(f"  total {rows_used:,} rows")

    processor = None
    if parse_tiny(model_args.model_name_or_path) is not None:
        from .models import build_tiny

        _, processor = build_tiny(
            *parse_tiny(model_args.model_name_or_path), image_size=model_args.image_size
        )
    elif model_args.model_name_or_path:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
    estimate = _token_estimate(recipe, processor, rows)
    per_device, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
    global_batch = per_device * accum * launch.processes
    samples_per_step = global_batch
    if estimate is not None:
        mean, longest = estimate
        what = "prompt tokens" if recipe.trainer == "grpo" else "tokens per sample"
        lines.append(f"{what}: mean {mean:.0f}, max {longest} (first {min(16, len(rows))} rows)")
        if recipe.trainer == "sft" and args.vlm_packing:
            per_row = max(1.0, args.packing_max_length / mean)
            samples_per_step = global_batch * per_row
            lines.append(
                f"vlm_packing: ~{per_row:.1f} samples per packed row of {args.packing_max_length} tokens"
            )
    if recipe.trainer == "grpo":
        samples_per_step = global_batch / args.num_generations  # prompts per optimizer step
        use_vllm = recipe.gpu_values.get("use_vllm", args.use_vllm)  # as on GPUs
        generation = f"vLLM ({args.vllm_mode} mode)" if use_vllm else "model.generate()"
        lines.append(
            f"GRPO: {args.num_generations} samples per prompt, up to {args.max_completion_length} completion tokens, "
            f"generation with {generation}, beta {args.beta}"
        )
    steps = (
        args.max_steps
        if args.max_steps > 0
        else math.ceil(rows_used / samples_per_step * args.num_train_epochs)
    )
    lines.append(f"steps: {steps:,}" + (" (max_steps)" if args.max_steps > 0 else " (estimate)"))
    paper = PAPER_GLOBAL_BATCH.get(script.recipe_family)
    batch = f"global batch: {per_device} per device x {accum} accumulation x {launch.processes} processes = {global_batch}"
    if paper and recipe.trainer == "sft":
        need = paper / (per_device * accum)
        batch += f" (paper: {paper}, which needs {need:g} processes at this per-device batch)"
    lines.append(batch)

    dtype = model_args.dtype if model_args.dtype in _BYTES else "float32"  # as loaded; autocast keeps them
    if launch.deepspeed_bf16:
        dtype = "bfloat16 (fp32 master copy in the optimizer)"
    memory = memory_per_gpu(
        total, trainable, _BYTES.get(dtype, 4), launch, reference=recipe.trainer == "grpo" and args.beta != 0
    )
    lines.append(
        f"memory per GPU, {launch.kind} on {launch.processes} processes, {dtype} weights (estimate):"
    )
    lines.extend(f"  {k:<24} {v:9.3f} GiB" for k, v in memory.items() if v or k.startswith("total"))
    if (
        recipe.trainer == "grpo"
        and recipe.gpu_values.get("use_vllm", args.use_vllm)
        and args.vllm_mode == "colocate"
    ):
        lines.append(f"  + vLLM colocated: {args.vllm_gpu_memory_utilization:.0%} of each GPU's memory")
    return "\n".join(lines)
