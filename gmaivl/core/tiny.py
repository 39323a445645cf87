"""Tiny GMAI-VL models for tests, examples and CPU smoke runs.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in milliseconds on a small
built-in medical vocabulary, and both towers are random models built from configs. The result
has exactly the structure of the 7B model, at a size a laptop trains in seconds.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import CLIPVisionConfig, PreTrainedTokenizerFast, Qwen2Config

from gmaivl.modeling_gmaivl import GMAIVLConfig, GMAIVLForConditionalGeneration, GMAIVLProcessor

from .compose import SPECIAL_TOKENS, build_processor, finalize_generation_config

_CORPUS = """
What modality is shown in this image? This is a computed tomography (CT) scan of the chest.
Which organ is abnormal? The liver shows a hypodense lesion in the right lobe.
Describe the findings. A magnetic resonance (MR) image of the brain with a T1 weighted sequence.
Is there a fracture? Yes. No. The answer is A. The answer is B. The answer is C. The answer is D.
Fundus photograph of the retina with microaneurysms, haemorrhages and exudates near the optic disc.
Histopathology slide with immunohistochemistry staining; microscopy of cells and nuclei.
Ultrasound of the abdomen, kidney, gallbladder, spleen, pancreas, heart, lung, bone, tumor, nodule.
X-ray radiograph of the chest showing pneumonia, effusion, cardiomegaly, atelectasis, normal.
Dermoscopy of a skin lesion: melanoma, nevus, keratosis. Endoscopy of the colon with a polyp.
Department: radiology, pathology, ophthalmology, dermatology, oncology, neurology, cardiology.
Please answer with the option letter. Options: A. B. C. D. E. left right upper lower region box.
This region contains the lesion. The image shows a normal anatomy without acute abnormality.
red green blue white black bright dark round square small large one two three four five
"""


def build_tiny_tokenizer(vocab_size: int = 640) -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE with ChatML and `<image>` special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([line for line in _CORPUS.splitlines() if line] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=SPECIAL_TOKENS["im_end"],
        pad_token=SPECIAL_TOKENS["pad"],
        extra_special_tokens={"image_token": SPECIAL_TOKENS["image"]},
        model_max_length=4096,
    )


def tiny_text_kwargs(tokenizer: PreTrainedTokenizerFast, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of the tiny language models (a 2-layer Qwen2 with 4 query / 2 kv heads)."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **overrides,
    }


def tiny_config(
    tokenizer: PreTrainedTokenizerFast, image_size: int = 56, patch_size: int = 14, **text_overrides
) -> GMAIVLConfig:
    """A GMAI-VL config with a 2-layer CLIP ViT and a 2-layer Qwen2 (GQA: 4 query / 2 kv heads)."""
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=32,
    )
    text_kwargs = tiny_text_kwargs(tokenizer, **text_overrides)
    return GMAIVLConfig(
        vision_config=vision.to_dict(),
        text_config=Qwen2Config(**text_kwargs).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["image"]),
    )


def build_tiny_gmaivl(
    seed: int = 0,
    image_size: int = 56,
    attn_implementation: str = "sdpa",
    **text_overrides,
) -> tuple[GMAIVLForConditionalGeneration, GMAIVLProcessor]:
    """A random tiny GMAI-VL and its processor (16 image tokens per 56 px image by default)."""
    tokenizer = build_tiny_tokenizer()
    config = tiny_config(tokenizer, image_size=image_size, **text_overrides)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = GMAIVLForConditionalGeneration(config)
    model.set_attn_implementation(attn_implementation)
    model.eval()
    finalize_generation_config(model, tokenizer)
    return model, build_processor(tokenizer, config)
