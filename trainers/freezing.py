"""Which parts of GMAI-VL train in a stage, and at which learning rate."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .recipes import MODULE_NAMES


def module_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The three parts of a LLaVA-style model: vision tower, projector, language model (+ LM head)."""
    inner = getattr(model, "model", model)
    parts = {
        "vision": [inner.vision_tower],
        "projector": [inner.multi_modal_projector],
        "llm": [inner.language_model],
    }
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        parts["llm"].append(head)
    return parts


def part_of_parameter(model: nn.Module) -> dict[str, str]:
    """Map parameter name -> part name."""
    by_id = {}
    for part, modules in module_parts(model).items():
        for module in modules:
            for p in module.parameters():
                by_id[id(p)] = part
    out = {}
    for name, p in model.named_parameters():
        if id(p) not in by_id:
            raise ValueError(f"parameter {name} belongs to none of {MODULE_NAMES}")
        out[name] = by_id[id(p)]
    return out


def apply_freezing(model: nn.Module, trainable: Iterable[str]) -> dict[str, int]:
    """Set `requires_grad` per part (before the trainer is built); returns trainable counts per part."""
    trainable = set(trainable)
    counts = dict.fromkeys(MODULE_NAMES, 0)
    for part, modules in module_parts(model).items():
        for module in modules:
            module.requires_grad_(part in trainable)
            if part in trainable:
                counts[part] += sum(p.numel() for p in module.parameters())
    if not any(p.requires_grad for p in model.parameters()):
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


def state_snapshot(model: nn.Module, parts: Iterable[str]) -> dict[str, torch.Tensor]:
    """Copies of the parameters of some parts (to prove later that frozen weights did not move)."""
    wanted = set(parts)
    owner = part_of_parameter(model)
    return {n: p.detach().clone() for n, p in model.named_parameters() if owner[n] in wanted}
