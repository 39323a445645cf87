"""The starting model of a stage: a checkpoint of any supported family, a composition, or a tiny model.

Families: GMAI-VL (this package), native LLaVA (`LlavaForConditionalGeneration`: LLaVA-1.5,
LLaVA-Med) and Qwen2-VL / Qwen2.5-VL (Lingshu's base). `freezing` maps each to the parts
`vision` / `projector` / `llm`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gmaivl import register_auto_classes

from .configs import GMAIVLModelConfig
from .freezing import GMAIVL_MODEL_TYPE

#: `model_name_or_path` values that build a tiny random model (tests, CPU smoke runs).
TINY_FAMILIES: tuple[str, ...] = ("tiny", "tiny-llava", "tiny-qwen2-vl", "tiny-qwen2.5-vl")


_QWEN_PROCESSORS = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}


def parse_tiny(path: str | None) -> tuple[str, int] | None:
    """`tiny-llava:3` -> ("tiny-llava", 3); None when `path` is not a tiny model."""
    if not path:
        return None
    name, _, seed = path.partition(":")
    if name not in TINY_FAMILIES:
        return None
    return name, int(seed or 0)


def _dtype(value: Any) -> Any:
    return getattr(torch, value) if isinstance(value, str) and value != "auto" else value


def looks_local(path: str) -> bool:
    """A path the user means as a folder (not a Hub `org/name` id)."""
    return path.startswith((".", "/", "~")) or path.count("/") != 1 or os.path.exists(path)


def check_model_source(model_args: GMAIVLModelConfig) -> None:
    """Fail in one line before anything loads when the starting model cannot be found."""
    path = model_args.model_name_or_path
    if path is None:
        if not (model_args.vision_model_name_or_path and model_args.llm_model_name_or_path):
            raise ValueError(
                "the recipe needs `model_name_or_path`, or both `vision_model_name_or_path` and "
                "`llm_model_name_or_path` to compose a new model"
            )
        return
    if parse_tiny(path) is None and looks_local(path) and not Path(path).expanduser().is_dir():
        raise FileNotFoundError(
            f"model_name_or_path {path}: no such folder (train the stage that writes it first, or override "
            "--model_name_or_path)"
        )


def build_tiny(name: str, seed: int = 0, image_size: int | None = None, attn_implementation: str = "sdpa"):
    """A tiny random model of a family and its processor (nothing downloaded)."""
    if name == "tiny":
        from gmaivl.core.tiny import build_tiny_gmaivl

        return build_tiny_gmaivl(
            seed=seed, image_size=image_size or 56, attn_implementation=attn_implementation
        )
    from .tiny_families import build_tiny_llava, build_tiny_qwen2_vl

    if name == "tiny-llava":
        return build_tiny_llava(
            seed=seed, image_size=image_size or 56, attn_implementation=attn_implementation
        )
    version = "2.5" if name == "tiny-qwen2.5-vl" else "2"
    return build_tiny_qwen2_vl(seed=seed, version=version, attn_implementation=attn_implementation)


def _model_class(config: Any) -> type:
    if getattr(config, "model_type", None) == GMAIVL_MODEL_TYPE:
        from gmaivl import GMAIVLForConditionalGeneration

        return GMAIVLForConditionalGeneration
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText


def load_model_and_processor(model_args: GMAIVLModelConfig, device: str | None = None) -> tuple[Any, Any]:
    """The stage's starting model and processor. `device="meta"` builds the structure only (dry runs)."""
    register_auto_classes()  # GMAI-VL folders load without trust_remote_code
    check_model_source(model_args)
    dtype, attn = _dtype(model_args.dtype), model_args.attn_implementation
    path = model_args.model_name_or_path
    tiny = parse_tiny(path)
    if device == "meta":
        return _meta_model(model_args, tiny)
    if tiny is not None:
        model, processor = build_tiny(
            *tiny, image_size=model_args.image_size, attn_implementation=attn or "sdpa"
        )
        return model.to(dtype), processor
    if path is None:
        from gmaivl.core.compose import compose_gmaivl

        return compose_gmaivl(
            model_args.vision_model_name_or_path,
            model_args.llm_model_name_or_path,
            dtype=dtype,
            attn_implementation=attn,
        )
    from transformers import AutoConfig, AutoProcessor

    try:
        config = AutoConfig.from_pretrained(
            path, trust_remote_code=getattr(model_args, "trust_remote_code", False)
        )
    except OSError as err:
        raise FileNotFoundError(f"model_name_or_path {path}: {str(err).splitlines()[0]}") from err
    model = _model_class(config).from_pretrained(path, dtype=dtype, attn_implementation=attn)
    if config.model_type == GMAIVL_MODEL_TYPE:
        from gmaivl import GMAIVLProcessor

        return model, GMAIVLProcessor.from_pretrained(path)
    try:
        return model, AutoProcessor.from_pretrained(path)
    except OSError:
        if config.model_type not in _QWEN_PROCESSORS:
            raise
    # A Qwen2-VL folder without a video processor (its default class needs torchvision): images only
    import transformers

    from .tiny_families import processor_without_video

    cls = processor_without_video(getattr(transformers, _QWEN_PROCESSORS[config.model_type]))
    return model, cls.from_pretrained(path)


def _meta_model(model_args: GMAIVLModelConfig, tiny: tuple[str, int] | None) -> tuple[Any, None]:
    """The model's structure on the meta device (no weights read, no memory used)."""
    from transformers import AutoConfig

    if tiny is not None:
        model, _ = build_tiny(*tiny, image_size=model_args.image_size)
        return model.to("meta"), None
    path = model_args.model_name_or_path
    if path is None:
        raise ValueError(
            "a dry run needs `model_name_or_path` (a composed model's folder, e.g. from `gmaivl compose`); "
            f"composing {model_args.vision_model_name_or_path} + {model_args.llm_model_name_or_path} reads their weights"
        )
    try:
        config = AutoConfig.from_pretrained(
            path, trust_remote_code=getattr(model_args, "trust_remote_code", False)
        )
    except OSError as err:
        raise FileNotFoundError(f"model_name_or_path {path}: {str(err).splitlines()[0]}") from err
    cls = _model_class(config)
    if cls.__name__ == "AutoModelForImageTextToText":
        with torch.device("meta"):
            return cls.from_config(config), None
    with torch.device("meta"):
        return cls(config), None


def text_attn_implementation(model: Any) -> str | None:
    text_config = model.config.get_text_config()
    return getattr(text_config, "_attn_implementation", None) or getattr(
        model.config, "_attn_implementation", None
    )
