"""TRL's trainers with the GMAI-VL stage options, read from `self.args`.

`GMAIVLSFTTrainer(SFTTrainer)` and `GMAIVLGRPOTrainer(GRPOTrainer)` take a model instance and a
`GMAIVLSFTConfig` / `GMAIVLGRPOConfig`: they freeze the parts not in `args.trainable_modules`,
build one AdamW group per part with `args.module_learning_rates`, and (SFT) collate with the
VLM collator, padded or packed (`args.vlm_packing`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from trl import GRPOTrainer, SFTTrainer

from .configs import GMAIVLGRPOConfig, GMAIVLSFTConfig
from .freezing import apply_freezing, model_family, param_groups
from .models import text_attn_implementation
from .packing import GMAIVLDataCollator, check_packing_attention
from .rewards import REWARD_FUNCTIONS


class PerPartLearningRatesMixin:
    """AdamW groups per model part with `args.module_learning_rates` (parts left out: `learning_rate`)."""

    def create_optimizer(self, model=None):  # type: ignore[override]
        if self.optimizer is None and self.args.module_learning_rates:
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            no_decay = [n for n, _ in opt_model.named_parameters() if n not in decay]
            groups = param_groups(
                opt_model,
                self.args.learning_rate,
                self.args.module_learning_rates,
                self.args.weight_decay,
                no_decay,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            return self.optimizer
        return super().create_optimizer(model) if model is not None else super().create_optimizer()


def _require(args: Any, cls: type) -> None:
    if not isinstance(args, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(args).__name__}")


class GMAIVLSFTTrainer(PerPartLearningRatesMixin, SFTTrainer):
    """TRL's `SFTTrainer` with frozen parts, per-part learning rates and the VLM collator (padded or packed)."""

    def __init__(
        self, model: Any, args: GMAIVLSFTConfig, processing_class: Any, data_collator=None, **kwargs
    ):
        _require(args, GMAIVLSFTConfig)
        apply_freezing(model, args.trainable_modules)
        if data_collator is None:
            # Qwen2-VL's M-RoPE positions depend on the image grids: packed rows get them sample by sample
            qwen = model_family(model) == "qwen2_vl"
            data_collator = GMAIVLDataCollator(
                processing_class,
                max_length=args.packing_max_length if args.vlm_packing else args.max_length,
                packing=args.vlm_packing,
                attn_implementation=text_attn_implementation(model),
                pad_to_multiple_of=args.pad_to_multiple_of,
                rope_index=model.model.get_rope_index if qwen and args.vlm_packing else None,
            )
        super().__init__(
            model=model, args=args, processing_class=processing_class, data_collator=data_collator, **kwargs
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.vlm_packing:  # refuse, at every step, a batch whose attention would leak
            check_packing_attention(text_attn_implementation(self.model), inputs)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def resolve_reward_funcs(names: Sequence[str]) -> list[Callable[..., list[float]]]:
    """Reward functions by name (`format`, `accuracy`) or dotted import path, as TRL's `--reward_funcs`."""
    out = []
    for name in names:
        if name in REWARD_FUNCTIONS:
            out.append(REWARD_FUNCTIONS[name])
        elif "." in name:
            module, attr = name.rsplit(".", 1)
            sys.path.insert(0, os.getcwd())
            try:
                out.append(getattr(importlib.import_module(module), attr))
            except (ImportError, AttributeError) as err:
                raise ValueError(f"reward function {name!r}: {err}") from err
        else:
            raise ValueError(
                f"unknown reward function {name!r}; use {sorted(REWARD_FUNCTIONS)} or a dotted path"
            )
    return out


class GMAIVLGRPOTrainer(PerPartLearningRatesMixin, GRPOTrainer):
    """TRL's `GRPOTrainer` with frozen parts, per-part learning rates and `args.reward_funcs`."""

    def __init__(self, model: Any, args: GMAIVLGRPOConfig, reward_funcs=None, **kwargs):
        _require(args, GMAIVLGRPOConfig)
        apply_freezing(model, args.trainable_modules)
        if reward_funcs is None:
            reward_funcs = resolve_reward_funcs(args.reward_funcs)
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
