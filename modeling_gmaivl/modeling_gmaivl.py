"""GMAI-VL model: a CLIP-style ViT -> 2-layer MLP projector -> causal language model.

GMAI-VL is LLaVA-1.5's architecture, so the classes here derive from transformers' LLaVA
(`transformers.models.llava.modeling_llava`) and keep only what GMAI-VL adds:

- the language model may ship its own code (InternLM2 in the paper), built from the checkpoint
  folder with `trust_remote_code=True` and saved beside the weights;
- a packed row (several samples, restarting position ids, no mask) never gets a KV cache, which
  would make transformers drop the block-diagonal mask;
- the tied embedding is looked up by identity, since LMs name it differently;
- image placeholders never count in the loss, whatever labels the caller passes.

Everything else (projector, placeholder mask and its checks, image features, both forwards,
generation, the tensor-parallel plan) is LLaVA's own code. This file travels to the Hub with
`save_pretrained`: it imports only torch, transformers and sibling files (single-dot relative
imports); see README.md for which transformers versions the saved code runs on.
"""

from __future__ import annotations

import importlib
import re
import sys
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin
from transformers.cache_utils import Cache
from transformers.dynamic_module_utils import custom_object_save, get_class_from_dynamic_module
from transformers.modeling_flash_attention_utils import FlashAttentionKwargs
from transformers.models.llava.modeling_llava import (
    LlavaCausalLMOutputWithPast,
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaModelOutputWithPast,
    LlavaMultiModalProjector,
    LlavaPreTrainedModel,
)
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.versions import require_version

from .configuration_gmaivl import GMAIVLConfig, is_native

# LLaVA's classes gained `cache`, `mm_encoder_outputs` and pooled image outputs in 5.24; the next
# major version may rename what this file overrides. Fail at import with the reason, not mid-forward.
require_version(
    "transformers>=5.24,<6", "GMAI-VL's model code derives from transformers' LLaVA classes of 5.x"
)

GMAIVLModelOutputWithPast = LlavaModelOutputWithPast
GMAIVLCausalLMOutputWithPast = LlavaCausalLMOutputWithPast

# `trust_remote_code` given to `from_pretrained`, for the language model's own code (set below).
_TRUST_TEXT_CODE: ContextVar[bool] = ContextVar("gmaivl_trust_text_code", default=False)

# The Hub arguments of `from_pretrained` that also locate the language model's own code: a pinned
# `revision` (or `code_revision`) must pin that code too, and `token` / `cache_dir` / offline flags
# must reach it. transformers passes none of them on to the model's `__init__`.
HUB_CODE_KWARGS = (
    "cache_dir",
    "force_download",
    "proxies",
    "token",
    "revision",
    "local_files_only",
    "code_revision",
)
_HUB_KWARGS: ContextVar[dict[str, Any] | None] = ContextVar("gmaivl_hub_kwargs", default=None)


def _runs_as_trusted_code(obj: object) -> bool:
    """Code loaded through `trust_remote_code=True` lives in transformers' dynamic-modules package."""
    return type(obj).__module__.startswith("transformers_modules")


def _local_class_ref(ref: str) -> str:
    """'org/repo--modeling_x.Cls' -> 'modeling_x.Cls': once saved, the code sits beside the weights."""
    return ref.split("--", 1)[-1]


def build_language_model(config: GMAIVLConfig) -> nn.Module:
    """The language backbone: a native transformers model, or one that ships its own code
    (InternLM2 and the like), loaded from the checkpoint folder only with `trust_remote_code=True`."""
    text_config = config.text_config
    if is_native(text_config):
        return AutoModel.from_config(text_config)
    if not (_TRUST_TEXT_CODE.get() or _runs_as_trusted_code(text_config)):
        raise ValueError(
            f"The language model (model_type '{text_config.model_type}') runs its own code; load this "
            "checkpoint with trust_remote_code=True."
        )
    auto_map = text_config.auto_map or {}
    if "AutoModel" not in auto_map:
        raise ValueError(
            f"text_config.auto_map has no 'AutoModel' entry to build '{text_config.model_type}'."
        )
    source = config.name_or_path or text_config.name_or_path
    hub_kwargs = _HUB_KWARGS.get() or {}
    if not _runs_as_trusted_code(text_config):  # a placeholder from config.json: load the real class
        config_class = get_class_from_dynamic_module(
            _local_class_ref(auto_map["AutoConfig"]), source, **hub_kwargs
        )
        text_config = config_class(**text_config.to_dict())
        text_config._attn_implementation = config.text_config._attn_implementation
        config.text_config = text_config
    model_class = get_class_from_dynamic_module(_local_class_ref(auto_map["AutoModel"]), source, **hub_kwargs)
    return model_class(text_config)


# Arguments that describe the text rows (packed sequences), never the images.
_TEXT_SEQUENCE_KWARGS = frozenset(
    (*FlashAttentionKwargs.__annotations__, "seq_idx", "is_causal", "num_items_in_batch")
)


def _is_packed(
    position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, cache: object | None
) -> bool:
    """Several samples share a row: no mask, no cache, and position ids that restart within a row.

    Only such a forward (a packed training row) reads a tensor on the host; a generation step has
    a cache or a mask and returns before that.
    """
    if position_ids is None or attention_mask is not None or cache is not None:
        return False
    return bool((position_ids[..., 1:] < position_ids[..., :-1]).any())


def ignore_image_labels(
    labels: torch.Tensor,
    image_token_id: int | None,
    input_ids: torch.Tensor | None = None,
    image_embedding: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """`labels` with -100 wherever the input is an `<image>` placeholder (found from `input_ids`,
    or from `inputs_embeds` equal to the placeholder's embedding)."""
    if image_token_id is None:
        return labels
    if input_ids is not None and input_ids.shape == labels.shape:
        placeholders = input_ids == image_token_id
    elif (
        inputs_embeds is not None and image_embedding is not None and inputs_embeds.shape[:-1] == labels.shape
    ):
        placeholders = (inputs_embeds == image_embedding).all(-1)
    else:  # e.g. pre-shifted labels of another length: positions cannot be matched
        return labels
    return labels.masked_fill(placeholders.to(labels.device), -100)


def _ignore_image_labels_hook(module: GMAIVLForConditionalGeneration, args: tuple, kwargs: dict):
    """Forward pre-hook of GMAIVLForConditionalGeneration: the labels any forward sees are masked."""
    labels = kwargs.get("labels")
    if labels is None:
        return None
    input_ids = args[0] if args else kwargs.get("input_ids")
    kwargs["labels"] = module._ignore_image_labels(labels, input_ids, kwargs.get("inputs_embeds"))
    return args, kwargs


class GMAIVLMultiModalProjector(LlavaMultiModalProjector):
    """Linear -> activation -> Linear from the vision width to the language model's width (LLaVA's)."""


class GMAIVLPreTrainedModel(LlavaPreTrainedModel):
    config_class = GMAIVLConfig
    config: GMAIVLConfig
    _skip_keys_device_placement = ["past_key_values", "cache"]

    def is_custom_code(self) -> bool:
        # transformers treats any class outside its package as remote code and then skips modules with
        # no parameters of their own while initialising missing weights, guarding against remote
        # `_init_weights` that write in place. That skips CLIPAttention / CLIPMLP, whose `_init_weights`
        # sets their Linear children's std, leaving 0.02 there. Both towers run transformers' own
        # `_init_weights` here (as in LLaVA); the guard is kept for a language model with its own code.
        return not is_native(self.config.text_config)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # transformers does not pass `trust_remote_code` on to the model; a language model that ships
        # its own code (InternLM2...) is loaded only when the caller opted in.
        trust = _TRUST_TEXT_CODE.set(bool(kwargs.get("trust_remote_code")))
        hub = _HUB_KWARGS.set({k: kwargs[k] for k in HUB_CODE_KWARGS if kwargs.get(k) is not None})
        try:
            return super().from_pretrained(*args, **kwargs)
        finally:
            _HUB_KWARGS.reset(hub)
            _TRUST_TEXT_CODE.reset(trust)


class GMAIVLModel(GMAIVLPreTrainedModel, LlavaModel):
    """The GMAI-VL backbone without the language-modelling head."""

    def __init__(self, config: GMAIVLConfig):
        LlavaPreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = GMAIVLMultiModalProjector(config)
        self.language_model = build_language_model(config)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # as LLaVA's forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_sizes: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        **kwargs,
    ) -> LlavaModelOutputWithPast | tuple:
        if kwargs.get("use_cache") is not False and _is_packed(position_ids, attention_mask, cache):
            # transformers builds the block-diagonal mask from restarting position ids only when no
            # cache exists; a fresh cache would silently let packed samples attend to each other.
            kwargs["use_cache"] = False
        if pixel_values is not None and mm_encoder_outputs is None:
            # LLaVA hands all kwargs to the vision tower too; a packed row's sequence arguments
            # (cu_seq_lens_*, max_length_*...) describe the text, not the images, and would make a
            # varlen attention read the images with the text's boundaries.
            vision_kwargs = {
                k: v for k, v in kwargs.items() if k not in _TEXT_SEQUENCE_KWARGS and k != "return_dict"
            }
            image_outputs = self.get_image_features(
                pixel_values=pixel_values,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy,
                image_sizes=image_sizes,
                return_dict=True,
                **vision_kwargs,
            )
            pixel_values, mm_encoder_outputs = None, {"image": image_outputs}
        return super().forward(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            image_sizes=image_sizes,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )


# Leaf names of the language model's layers that LoRA adapts by default, over the GMAI-VL models
# built in this process (the default is registered per model type, not per model).
_LORA_LEAF_NAMES: set[str] = set()


def _register_lora_defaults(model: GMAIVLForConditionalGeneration) -> None:
    """Give PEFT a default `target_modules` for `gmai_vl`: the language model's layers only.

    PEFT looks up the default by `config.model_type` and has none for `gmai_vl`, so `get_peft_model`
    (and `trl sft --use_peft`) would refuse; the names it uses for the LM's own type (`q_proj`,
    `v_proj`...) would also adapt the CLIP tower's layers of the same names. The default registered
    here is a regex anchored at `model.language_model.`, with PEFT's names for the LM's type, or
    every linear layer of the LM when PEFT has none for it (an LM with its own code). Registered
    only when PEFT is already imported: this file must not import it.
    """
    constants = sys.modules.get("peft.utils.constants")
    mapping = getattr(constants, "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING", None)
    if mapping is None:
        return
    language_model = model.model.language_model
    linear = {
        name.rsplit(".", 1)[-1] for name, m in language_model.named_modules() if isinstance(m, nn.Linear)
    }
    known = set(mapping.get(model.config.text_config.model_type) or ()) & linear
    _LORA_LEAF_NAMES.update(known or linear)
    leaves = "|".join(sorted(re.escape(name) for name in _LORA_LEAF_NAMES))
    mapping[model.config.model_type] = rf"model\.language_model\..*\.(?:{leaves})"


class GMAIVLForConditionalGeneration(GMAIVLPreTrainedModel, LlavaForConditionalGeneration, GenerationMixin):
    """GMAI-VL with a language-modelling head: answers questions, writes captions and reports.

    `GenerationMixin` is named among the bases (it also comes through LLaVA's class) because
    transformers decides from a class's direct bases whether it can `generate`.
    """

    def __init__(self, config: GMAIVLConfig):
        LlavaPreTrainedModel.__init__(self, config)
        self.model = GMAIVLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        # LMs name their embedding differently (embed_tokens, tok_embeddings...): declare the tie the
        # LM uses when the config ties input and output embeddings.
        embeddings = self.model.get_input_embeddings()
        name = next(n for n, m in self.model.language_model.named_modules() if m is embeddings)
        self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{name}.weight"}
        self.post_init()
        # Trainers may replace `forward` (TRL's SFTTrainer patches in a fused LM head that reads the
        # labels itself): mask the placeholders' labels before any forward runs.
        self.register_forward_pre_hook(_ignore_image_labels_hook, with_kwargs=True)
        _register_lora_defaults(self)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # as LLaVA's forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        image_sizes: torch.Tensor | None = None,
        mm_encoder_outputs: dict | None = None,
        **kwargs,
    ) -> LlavaCausalLMOutputWithPast | tuple:
        if labels is not None:  # also here: PEFT and others call `.forward` directly, skipping hooks
            labels = self._ignore_image_labels(labels, input_ids, inputs_embeds)
        return super().forward(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            labels=labels,
            logits_to_keep=logits_to_keep,
            image_sizes=image_sizes,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )

    def _ignore_image_labels(
        self, labels: torch.Tensor, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        image_embedding = None
        if input_ids is None and inputs_embeds is not None and self.config.image_token_id is not None:
            token = torch.full((), self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
            image_embedding = self.get_input_embeddings()(token)
        return ignore_image_labels(
            labels, self.config.image_token_id, input_ids, image_embedding, inputs_embeds
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        text_config = self.config.text_config
        if not is_native(text_config):
            # The language model's own code travels with the checkpoint, referenced locally.
            text_config.auto_map = {k: _local_class_ref(v) for k, v in (text_config.auto_map or {}).items()}
        super().save_pretrained(save_directory, *args, **kwargs)
        if not is_native(text_config):
            # Copy the code that is running (the revision it was loaded from), not a fresh lookup.
            package = type(self.model.language_model).__module__.rpartition(".")[0]
            for ref in text_config.auto_map.values():
                module_name, _, class_name = ref.rpartition(".")
                module = importlib.import_module(f"{package}.{module_name}")
                custom_object_save(getattr(module, class_name), save_directory)


# `save_pretrained` writes `auto_map` and copies this code beside the weights for these auto classes.
GMAIVLModel.register_for_auto_class("AutoModel")
GMAIVLForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

__all__ = ["GMAIVLForConditionalGeneration", "GMAIVLModel", "GMAIVLPreTrainedModel"]
