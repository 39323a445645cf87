"""Which parts of a vision-language model train in a stage, and at which learning rate.

The parts, by family (transformers 5 module names):

| part        | GMAI-VL / LLaVA (`LlavaForConditionalGeneration`) | Qwen2-VL / Qwen2.5-VL             |
|-------------|---------------------------------------------------|-----------------------------------|
| `vision`    | `model.vision_tower`                              | `model.visual` (but its merger)   |
| `projector` | `model.multi_modal_projector`                     | `model.visual.merger`             |
| `llm`       | `model.language_model`, `lm_head`                 | `model.language_model`, `lm_head` |
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from gmaivl.modeling_gmaivl import GMAIVLConfig

from .configs import MODULE_NAMES

FAMILIES: tuple[str, ...] = ("gmaivl", "llava", "qwen2_vl")
GMAIVL_MODEL_TYPE: str = GMAIVLConfig.model_type


def model_family(model: nn.Module) -> str:
    """`gmaivl`, `llava` or `qwen2_vl` (Qwen2-VL and Qwen2.5-VL), from the model's structure."""
    inner = getattr(model, "model", model)
    if hasattr(inner, "visual") and hasattr(inner.visual, "merger"):
        return "qwen2_vl"
    if hasattr(inner, "vision_tower") and hasattr(inner, "multi_modal_projector"):
        return "gmaivl" if getattr(model.config, "model_type", "") == GMAIVL_MODEL_TYPE else "llava"
    raise ValueError(
        f"{type(model).__name__}: not a supported vision-language model (GMAI-VL, LLaVA, Qwen2-VL, Qwen2.5-VL); "
        "it has neither `vision_tower` + `multi_modal_projector` nor `visual.merger`"
    )


def module_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The three parts: vision encoder, projector, language model (+ LM head). For Qwen2-VL the
    projector (`visual.merger`) sits inside the vision module; `part_of_parameter` gives it to `projector`."""
    inner = getattr(model, "model", model)
    if model_family(model) == "qwen2_vl":
        vision, projector = inner.visual, inner.visual.merger
    else:
        vision, projector = inner.vision_tower, inner.multi_modal_projector
    parts = {"vision": [vision], "projector": [projector], "llm": [inner.language_model]}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        parts["llm"].append(head)
    return parts


def part_of_parameter(model: nn.Module) -> dict[str, str]:
    """Map parameter name -> part name (every parameter belongs to exactly one part)."""
    by_id = {}
    for part, modules in module_parts(model).items():  # vision first: the merger inside it is re-labelled
        for module in modules:
            for p in module.parameters():
                by_id[id(p)] = part
    out = {}
    for name, p in model.named_parameters():
        if id(p) not in by_id:
            raise ValueError(f"parameter {name} belongs to none of {MODULE_NAMES}")
        out[name] = by_id[id(p)]
    return out


def parameters_per_part(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Part -> (parameters, trainable parameters)."""
    owner = part_of_parameter(model)
    out = dict.fromkeys(MODULE_NAMES, (0, 0))
    for name, p in model.named_parameters():
        total, trainable = out[owner[name]]
        out[owner[name]] = (total + p.numel(), trainable + (p.numel() if p.requires_grad else 0))
    return out


def apply_freezing(model: nn.Module, trainable: Iterable[str]) -> dict[str, int]:
    """Set `requires_grad` per part (before the trainer is built); returns trainable counts per part."""
    trainable = set(trainable)
    owner = part_of_parameter(model)
    counts = dict.fromkeys(MODULE_NAMES, 0)
    for name, p in model.named_parameters():
        p.requires_grad_(owner[name] in trainable)
        if p.requires_grad:
            counts[owner[name]] += p.numel()
    if not any(counts.values()):
        raise ValueError("no parameter trains: `trainable_modules` is empty")
    return counts


def param_groups(
    model: nn.Module,
    base_lr: float,
    module_lrs: dict[str, float] | None,
    weight_decay: float,
    no_decay_names: Iterable[str] = (),
) -> list[dict]:
    """AdamW parameter groups: one per (part, decay) with the part's learning rate."""
    module_lrs = module_lrs or {}
    no_decay = set(no_decay_names)
    parts = part_of_parameter(model)
    groups: dict[tuple[str, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = parts[name]
        decay = name not in no_decay
        key = (part, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": module_lrs.get(part, base_lr),
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{part}{'' if decay else '_no_decay'}",
            }
        groups[key]["params"].append(p)
    return list(groups.values())
