"""GMAI-VL configuration.

This file travels to the Hub with `save_pretrained`: it may import only torch, transformers and
sibling files through single-dot relative imports.
"""

from __future__ import annotations

from typing import Literal

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

# CLIP ViT-L/14 at 336 px, the vision encoder of the GMAI-VL paper.
CLIP_VIT_L_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
}

# Written into every saved config so that all auto classes resolve to the files saved beside it
# (transformers itself only records the class that was saved).
HUB_AUTO_MAP = {
    "AutoConfig": "configuration_gmaivl.GMAIVLConfig",
    "AutoModel": "modeling_gmaivl.GMAIVLModel",
    "AutoModelForImageTextToText": "modeling_gmaivl.GMAIVLForConditionalGeneration",
}


def is_native(config: PreTrainedConfig | dict) -> bool:
    """Whether transformers itself knows this model type (else its code ships with the checkpoint)."""
    model_type = config.get("model_type") if isinstance(config, dict) else config.model_type
    return model_type in CONFIG_MAPPING_NAMES


def remote_text_config(values: dict) -> PreTrainedConfig:
    """Hold the config of a language model that ships its own code (e.g. InternLM2) until the model
    is built: its real config class is loaded from the checkpoint folder then (see modeling)."""
    holder = type("RemoteTextConfig", (PreTrainedConfig,), {"model_type": values["model_type"]})
    return holder(**{k: v for k, v in values.items() if k != "model_type"})


class GMAIVLConfig(PreTrainedConfig):
    r"""
    Configuration of a GMAI-VL model: a ViT vision encoder, a 2-layer MLP projector and a causal LM.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            A ViT-style vision encoder (CLIP ViT-L/14-336 by default). It must have `image_size`,
            `patch_size` and `hidden_size`.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Any configuration that `AutoModelForCausalLM` can build (natively, or through remote code
            with an `auto_map["AutoModelForCausalLM"]` entry).
        image_token_id (`int`, *optional*):
            Id of the `<image>` placeholder token; each image expands to `num_image_tokens` of them.
        vision_feature_layer (`int`, defaults to -2):
            Vision hidden state fed to the projector (-2: the penultimate layer, as LLaVA-1.5).
        vision_feature_select_strategy (`str`, defaults to `"default"`):
            `"default"` drops the CLS token (576 tokens at 336 px), `"full"` keeps it.
        projector_hidden_act (`str`, defaults to `"gelu"`):
            Activation between the projector's two linear layers.
    """

    model_type = "gmai_vl"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="clip_vision_model", init_kwargs=CLIP_VIT_L_336
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int | None = None
    vision_feature_layer: int = -2
    vision_feature_select_strategy: Literal["default", "full"] = "default"
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        text = self.text_config
        if isinstance(text, dict) and not is_native(text):
            if "AutoConfig" not in (text.get("auto_map") or {}):
                raise ValueError(
                    f"text_config has model_type '{text.get('model_type')}', which transformers does not know, "
                    "and no auto_map to the code that defines it."
                )
            self.text_config = remote_text_config(text)
        super().__post_init__(**kwargs)
        # As LLaVA: checkpoints record the tie in text_config; the top-level flag is what ties lm_head.
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        self._validate_parts()
        self.auto_map = {**HUB_AUTO_MAP, **(getattr(self, "auto_map", None) or {})}

    def _validate_parts(self) -> None:
        vision = self.vision_config
        missing = [name for name in ("image_size", "patch_size", "hidden_size") if not hasattr(vision, name)]
        if missing:
            raise ValueError(
                f"GMAI-VL needs a ViT-style vision encoder, but vision_config of type "
                f"'{vision.model_type}' has no {', '.join(missing)}."
            )
        if vision.image_size % vision.patch_size:
            raise ValueError(
                f"vision_config.image_size ({vision.image_size}) must be a multiple of its patch_size "
                f"({vision.patch_size})."
            )
        num_layers = getattr(vision, "num_hidden_layers", None)
        if num_layers is not None and not -num_layers - 1 <= self.vision_feature_layer <= num_layers:
            raise ValueError(
                f"vision_feature_layer={self.vision_feature_layer} is outside the vision encoder's "
                f"{num_layers} layers (hidden states are indexed 0..{num_layers})."
            )
        if self.vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(
                f"vision_feature_select_strategy must be 'default' or 'full', got "
                f"{self.vision_feature_select_strategy!r}."
            )
        text = self.text_config
        remote_causal_lm = "AutoModelForCausalLM" in (getattr(text, "auto_map", None) or {})
        if text.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not remote_causal_lm:
            raise ValueError(
                f"GMAI-VL needs a causal language model, but text_config has model_type "
                f"'{text.model_type}', which AutoModelForCausalLM cannot build."
            )

    @property
    def num_image_tokens(self) -> int:
        """Placeholder tokens per image: one per patch (plus the CLS token for the 'full' strategy)."""
        side = self.vision_config.image_size // self.vision_config.patch_size
        return side * side + (1 if self.vision_feature_select_strategy == "full" else 0)


# `save_pretrained` writes `auto_map` and copies this code beside the weights for these auto classes.
GMAIVLConfig.register_for_auto_class("AutoConfig")

__all__ = ["GMAIVLConfig"]
