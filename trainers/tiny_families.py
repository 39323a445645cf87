"""Tiny random LLaVA and Qwen2-VL / Qwen2.5-VL models with their processors, built offline.

They carry the module structure of the real families (`LlavaForConditionalGeneration`,
`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`) at a size that trains
in seconds on a CPU, so that every recipe can be tested on every family. The tokenizer is the
tiny byte-level BPE of `gmaivl.core.tiny`; the image processors are the PIL backends of transformers
(`CLIPImageProcessorPil`, `Qwen2VLImageProcessorPil`: the default classes need torchvision).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import CLIPVisionConfig, Qwen2Config

from gmaivl.core.compose import finalize_generation_config
from gmaivl.core.tiny import build_tiny_tokenizer, tiny_text_kwargs
from gmaivl.modeling_gmaivl.processing_gmaivl import chatml_template

# ChatML with `{% generation %}` markers (assistant tokens only are trained); images as Qwen2-VL writes them.
QWEN_CHAT_TEMPLATE = chatml_template("<|vision_start|><|image_pad|><|vision_end|>")
_QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def _text_config(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    return tiny_text_kwargs(tokenizer, bos_token_id=None, **extra)


def _finish(model: Any, tokenizer: Any, attn_implementation: str) -> None:
    model.set_attn_implementation(attn_implementation)
    model.eval()
    finalize_generation_config(model, tokenizer)


def build_tiny_llava(seed: int = 0, image_size: int = 56, attn_implementation: str = "sdpa"):
    """A random tiny `LlavaForConditionalGeneration` (CLIP ViT + Qwen2) and its `LlavaProcessor`."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from gmaivl.modeling_gmaivl.processing_gmaivl import CHATML_TEMPLATE

    tokenizer = build_tiny_tokenizer()
    patch = 14
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, patch_size=patch, projection_dim=32,
    )  # fmt: skip
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=Qwen2Config(**_text_config(tokenizer)).to_dict(),
        image_token_id=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(image_size // patch) ** 2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    _finish(model, tokenizer, attn_implementation)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        chat_template=CHATML_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    return model, processor


def build_tiny_qwen2_vl(seed: int = 0, version: str = "2.5", attn_implementation: str = "sdpa"):
    """A random tiny Qwen2-VL (`version="2"`) or Qwen2.5-VL (`"2.5"`) and its processor.

    Images are resized to between 4 and 16 merged 28 px patches (`min_pixels` / `max_pixels`), so a
    56 px image is 16 patches of 14 px, merged 2x2 into 4 image tokens.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if version == "2.5":
        from transformers import (
            Qwen2_5_VLConfig as Config,
        )
        from transformers import (
            Qwen2_5_VLForConditionalGeneration as Model,
        )
        from transformers import (
            Qwen2_5_VLProcessor as Processor,
        )

        vision = dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
            window_size=56, fullatt_block_indexes=[1],
        )  # fmt: skip
    elif version == "2":
        from transformers import (
            Qwen2VLConfig as Config,
        )
        from transformers import (
            Qwen2VLForConditionalGeneration as Model,
        )
        from transformers import (
            Qwen2VLProcessor as Processor,
        )

        vision = dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=4)
    else:
        raise ValueError(f"Qwen2-VL version must be '2' or '2.5', got {version!r}")
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens(_QWEN_TOKENS, special_tokens=True)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_TOKENS}
    vision.update(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    head_dim = 64 // 4
    text = _text_config(tokenizer, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]})
    config = Config(
        vision_config=vision,
        text_config=text,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    assert sum(text["rope_parameters"]["mrope_section"]) * 2 == head_dim
    torch.manual_seed(seed)
    model = Model(config)
    _finish(model, tokenizer, attn_implementation)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    tokenizer.image_token = "<|image_pad|>"
    processor = processor_without_video(Processor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE
    )
    return model, processor


def processor_without_video(processor_class: type) -> type:
    """The Qwen processor class without a video processor (transformers' needs torchvision): its
    argument check looks up the video processor's class even when none is given."""

    class Processor(processor_class):
        @classmethod
        def get_attributes(cls):
            return [a for a in super().get_attributes() if a != "video_processor"]

    Processor.__name__ = Processor.__qualname__ = processor_class.__name__
    return Processor
