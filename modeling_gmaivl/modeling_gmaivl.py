"""GMAI-VL model: ViT vision encoder -> 2-layer MLP projector -> causal language model.

The layout follows transformers' LLaVA (`model.vision_tower`, `model.multi_modal_projector`,
`model.language_model`, `lm_head`) so that TRL, PEFT and generation utilities treat it like any
other image-text-to-text model. This file travels to the Hub with `save_pretrained`: it may
import only torch, transformers and sibling files through single-dot relative imports.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.dynamic_module_utils import custom_object_save, get_class_from_dynamic_module
from transformers.modeling_outputs import BaseModelOutputWithPast, ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_gmaivl import GMAIVLConfig, is_native


@dataclass
class GMAIVLModelOutputWithPast(BaseModelOutputWithPast):
    """Backbone output; `image_hidden_states` are the projected image features `(num_images, tokens, dim)`."""

    image_hidden_states: torch.FloatTensor | None = None


@dataclass
class GMAIVLCausalLMOutputWithPast(ModelOutput):
    """Language-modelling output of [`GMAIVLForConditionalGeneration`]."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None


def _is_packed(
    position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, past_key_values: Cache | None
) -> bool:
    """Several samples share a row: no mask, no cache, and position ids that restart within a row."""
    if position_ids is None or attention_mask is not None or past_key_values is not None:
        return False
    return bool((position_ids[..., 1:] < position_ids[..., :-1]).any())


# `trust_remote_code` given to `from_pretrained`, for the language model's own code (set below).
_TRUST_TEXT_CODE: ContextVar[bool] = ContextVar("gmaivl_trust_text_code", default=False)


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
    if not _runs_as_trusted_code(text_config):  # a placeholder from config.json: load the real class
        config_class = get_class_from_dynamic_module(_local_class_ref(auto_map["AutoConfig"]), source)
        text_config = config_class(**text_config.to_dict())
        text_config._attn_implementation = config.text_config._attn_implementation
        config.text_config = text_config
    model_class = get_class_from_dynamic_module(_local_class_ref(auto_map["AutoModel"]), source)
    return model_class(text_config)


class GMAIVLMultiModalProjector(nn.Module):
    """Linear -> activation -> Linear, from vision width to the language model's width."""

    def __init__(self, config: GMAIVLConfig):
        super().__init__()
        vision_dim = config.vision_config.hidden_size
        text_dim = config.text_config.hidden_size
        self.linear_1 = nn.Linear(vision_dim, text_dim, bias=config.multimodal_projector_bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_dim, text_dim, bias=config.multimodal_projector_bias)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


class GMAIVLPreTrainedModel(PreTrainedModel):
    config_class = GMAIVLConfig
    config: GMAIVLConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # transformers does not pass `trust_remote_code` on to the model; a language model that ships
        # its own code (InternLM2...) is loaded only when the caller opted in.
        token = _TRUST_TEXT_CODE.set(bool(kwargs.get("trust_remote_code")))
        try:
            return super().from_pretrained(*args, **kwargs)
        finally:
            _TRUST_TEXT_CODE.reset(token)


class GMAIVLModel(GMAIVLPreTrainedModel):
    """The GMAI-VL backbone without the language-modelling head."""

    def __init__(self, config: GMAIVLConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = GMAIVLMultiModalProjector(config)
        self.language_model = build_language_model(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values: torch.FloatTensor, **kwargs) -> torch.FloatTensor:
        """Encode `pixel_values` `(num_images, 3, H, W)` into projected features `(num_images, tokens, dim)`."""
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must have shape (num_images, channels, height, width), got {tuple(pixel_values.shape)}."
            )
        pixel_values = pixel_values.to(dtype=self.vision_tower.dtype)
        outputs = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        features = outputs.hidden_states[self.config.vision_feature_layer]
        if self.config.vision_feature_select_strategy == "default":
            features = features[:, 1:]  # drop CLS
        return self.multi_modal_projector(features)

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.BoolTensor:
        """Boolean mask `(batch, seq, 1)` of the image placeholders; checks it matches the features."""
        if input_ids is None:
            image_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == image_embedding).all(-1)
        else:
            mask = input_ids == self.config.image_token_id
        n_tokens = int(mask.sum())
        n_features = image_features.shape[0] * image_features.shape[1]
        if n_tokens != n_features:
            raise ValueError(
                f"Image features and image tokens do not match: tokens: {n_tokens}, features: {n_features} "
                f"({image_features.shape[0]} image(s) x {image_features.shape[1]} tokens). Use the GMAI-VL "
                "processor so that each <image> expands to the right number of tokens, one per image."
            )
        return mask.unsqueeze(-1)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> GMAIVLModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        image_features = None
        if pixel_values is not None:
            image_features = self.get_image_features(pixel_values)
            image_features = image_features.to(inputs_embeds.device, inputs_embeds.dtype)
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            inputs_embeds = inputs_embeds.masked_scatter(mask, image_features)
        elif input_ids is not None and self.config.image_token_id is not None:
            n_tokens = int((input_ids == self.config.image_token_id).sum())
            if n_tokens:
                raise ValueError(
                    f"Image features and image tokens do not match: tokens: {n_tokens}, features: 0 "
                    "(the input holds image tokens but no pixel_values were given)."
                )

        if use_cache is not False and _is_packed(position_ids, attention_mask, past_key_values):
            # transformers builds the block-diagonal mask from restarting position ids only when no
            # cache exists; a fresh cache would silently let packed samples attend to each other.
            use_cache = False

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return GMAIVLModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
        )


class GMAIVLForConditionalGeneration(GMAIVLPreTrainedModel, GenerationMixin):
    """GMAI-VL with a language-modelling head: answers questions, writes captions and reports."""

    def __init__(self, config: GMAIVLConfig):
        super().__init__(config)
        self.model = GMAIVLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        # LMs name their embedding differently (embed_tokens, tok_embeddings...): declare the tie the
        # LM uses when its config ties input and output embeddings.
        embeddings = self.model.get_input_embeddings()
        name = next(n for n, m in self.model.language_model.named_modules() if m is embeddings)
        self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{name}.weight"}
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def save_pretrained(self, save_directory, *args, **kwargs):
        text_config = self.config.text_config
        if not is_native(text_config):
            # The language model's own code travels with the checkpoint, referenced locally.
            text_config.auto_map = {k: _local_class_ref(v) for k, v in (text_config.auto_map or {}).items()}
        super().save_pretrained(save_directory, *args, **kwargs)
        if not is_native(text_config):
            source = text_config.name_or_path or self.config.name_or_path
            for ref in text_config.auto_map.values():
                custom_object_save(get_class_from_dynamic_module(ref, source), save_directory)

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def get_image_features(self, pixel_values: torch.FloatTensor, **kwargs) -> torch.FloatTensor:
        return self.model.get_image_features(pixel_values, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> GMAIVLCausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return GMAIVLCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )


__all__ = ["GMAIVLForConditionalGeneration", "GMAIVLModel", "GMAIVLPreTrainedModel"]
