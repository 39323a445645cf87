"""Compose a GMAI-VL from pretrained parts, as the paper does before stage I.

`compose_gmaivl("openai/clip-vit-large-patch14-336", "Qwen/Qwen2-7B")` (Hub ids or local folders)
loads the vision encoder and the causal LM, adds the `<image>` token (and ChatML tokens when the
tokenizer lacks them), resizes the embeddings, puts a freshly initialised 2-layer MLP projector
between them and returns `(model, processor)`, ready for stage I (projector-only training).
"""

from __future__ import annotations

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from gmaivl.modeling_gmaivl import (
    GMAIVLConfig,
    GMAIVLForConditionalGeneration,
    GMAIVLImageProcessor,
    GMAIVLProcessor,
)
from gmaivl.modeling_gmaivl.image_processing_gmaivl import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

SPECIAL_TOKENS = {
    "pad": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "image": "<image>",
}


def build_processor(
    tokenizer: PreTrainedTokenizerBase, config: GMAIVLConfig, **image_kwargs
) -> GMAIVLProcessor:
    """The processor matching `config`: image size and tokens per image come from the vision config."""
    image_kwargs.setdefault("size", config.vision_config.image_size)
    return GMAIVLProcessor(
        image_processor=GMAIVLImageProcessor(**image_kwargs),
        tokenizer=tokenizer,
        image_token=SPECIAL_TOKENS["image"],
        num_image_tokens=config.num_image_tokens,
    )


def finalize_generation_config(
    model: GMAIVLForConditionalGeneration, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Stop generation at `<|im_end|>` (the end of a ChatML turn) and pad with the tokenizer's pad."""
    stop_ids = [tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["im_end"])]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stop_ids:
        stop_ids.append(tokenizer.eos_token_id)
    model.generation_config.eos_token_id = stop_ids
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None


def _vision_config(vision_name_or_path: str, **hub_kwargs):
    config = AutoConfig.from_pretrained(vision_name_or_path, **hub_kwargs)
    # Full CLIP / SigLIP checkpoints hold a text tower too: keep the vision half only.
    return getattr(config, "vision_config", config)


def compose_gmaivl(
    vision_name_or_path: str,
    llm_name_or_path: str,
    *,
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str = "default",
    projector_hidden_act: str = "gelu",
    dtype: torch.dtype | str = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    **hub_kwargs,
) -> tuple[GMAIVLForConditionalGeneration, GMAIVLProcessor]:
    """Build a GMAI-VL from a pretrained ViT and a pretrained causal LM (see the module docstring)."""
    vision_config = _vision_config(vision_name_or_path, **hub_kwargs)
    vision_cls = MODEL_MAPPING.get(type(vision_config), None)
    if vision_cls is None:
        raise ValueError(
            f"{vision_name_or_path}: model type '{vision_config.model_type}' has no vision model class in transformers."
        )
    vision = vision_cls.from_pretrained(vision_name_or_path, config=vision_config, dtype=dtype, **hub_kwargs)
    language = AutoModelForCausalLM.from_pretrained(
        llm_name_or_path, dtype=dtype, trust_remote_code=trust_remote_code, **hub_kwargs
    )
    tokenizer = AutoTokenizer.from_pretrained(
        llm_name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs
    )

    missing = [tok for tok in SPECIAL_TOKENS.values() if tok not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = SPECIAL_TOKENS["pad"]

    config = GMAIVLConfig(
        vision_config=vision.config.to_dict(),
        text_config=language.config,
        image_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["image"]),
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        projector_hidden_act=projector_hidden_act,
        tie_word_embeddings=bool(getattr(language.config, "tie_word_embeddings", False)),
    )
    # Build the shell on the meta device, then move the pretrained towers in: no second copy.
    with torch.device("meta"):
        model = GMAIVLForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = language.get_decoder()
    model.lm_head = language.get_output_embeddings()
    projector = type(model.model.multi_modal_projector)(config).to(dtype=language.dtype)
    projector.apply(model._init_weights)
    model.model.multi_modal_projector = projector
    model.config.text_config = language.config

    model.resize_token_embeddings(len(tokenizer))
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    finalize_generation_config(model, tokenizer)

    image_processor_kwargs = {"image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD}
    return model, build_processor(tokenizer, config, **image_processor_kwargs)
