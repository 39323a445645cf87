"""`gmaivl model export`: GMAI-VL checkpoints to native LLaVA folders for serving, and LLaVA into GMAI-VL.

GMAI-VL is LLaVA-1.5's architecture with the same state keys, so the conversion is a change of
config and processor, not of weights:

- `--format llava SRC DST` writes a `LlavaForConditionalGeneration` folder (`model_type: llava`,
  no remote code) that vLLM, SGLang and TGI serve as LLaVA. Only for language models transformers
  builds itself (Qwen2, Llama...): a serving stack cannot run an LM that ships its own code.
  Its processor is LLaVA's (pad to square with the mean colour, bicubic resize, CLIP
  normalisation) and takes 8-bit RGB images: window CT / scale 16-bit images before sending them.
- `--format gmaivl SRC DST` turns a LLaVA(-1.5) folder into a GMAI-VL one (remote code beside the
  weights), so LLaVA checkpoints can enter the staged recipe.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from gmaivl import register_auto_classes
from gmaivl.modeling_gmaivl import (
    GMAIVLConfig,
    GMAIVLForConditionalGeneration,
    GMAIVLImageProcessor,
    GMAIVLProcessor,
)
from gmaivl.modeling_gmaivl.configuration_gmaivl import is_native

SHARED_FIELDS = (
    "projector_hidden_act",
    "vision_feature_select_strategy",
    "vision_feature_layer",
    "multimodal_projector_bias",
    "tie_word_embeddings",
)


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json, so {folder} is not a model folder.")
    return json.loads(path.read_text())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomically(dst: Path, save) -> Path:
    """Save into a sibling temporary folder, then move it to `dst`: never a half-written folder.

    The folder and its files get the usual permissions (0755 / 0644 under umask 022), not
    `mkdtemp`'s 0700 or safetensors' 0600, so that a server running as another user can read them.
    """
    if dst.exists() and any(dst.iterdir()):
        raise ValueError(f"{dst}: the output folder exists and is not empty.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        save(staging)
        mask = _umask()
        for path in [staging, *staging.rglob("*")]:  # safetensors writes its files 0600
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
        if dst.exists():
            dst.rmdir()
        staging.rename(dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dst


def _copy_generation_config(src: Path, model) -> None:
    if (src / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(src)


def llava_config_from_gmaivl(config: GMAIVLConfig) -> LlavaConfig:
    text = config.text_config.to_dict()
    # vLLM builds the language model from `text_config.architectures`.
    causal_lm = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(text.get("model_type"))
    if causal_lm and not text.get("architectures"):
        text["architectures"] = [causal_lm]
    return LlavaConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=text,
        image_token_index=config.image_token_id,
        image_seq_length=config.num_image_tokens,
        **{name: getattr(config, name) for name in SHARED_FIELDS},
    )


def gmaivl_config_from_llava(config: LlavaConfig) -> GMAIVLConfig:
    if not isinstance(config.vision_feature_layer, int):
        raise ValueError(
            f"vision_feature_layer={config.vision_feature_layer}: GMAI-VL feeds one vision layer to the "
            "projector, this LLaVA concatenates several."
        )
    return GMAIVLConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_id=config.image_token_id,
        **{name: getattr(config, name) for name in SHARED_FIELDS},
    )


# transformers saves CLIP inside LLaVA as `vision_tower.embeddings...`; llava-hf checkpoints, and
# the loaders of vLLM and SGLang, read `vision_tower.vision_model.embeddings...`.
VISION_PREFIX, PUBLISHED_VISION_PREFIX = "vision_tower.", "vision_tower.vision_model."


def _published_key(key: str) -> str:
    if key.startswith(VISION_PREFIX) and not key.startswith(PUBLISHED_VISION_PREFIX):
        return PUBLISHED_VISION_PREFIX + key[len(VISION_PREFIX) :]
    return key


def _publish_vision_keys(folder: Path) -> None:
    """Rename the vision tower's keys in every saved shard (and the shard index) to llava-hf's layout."""
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(shard, framework="pt") as handle:
            metadata = handle.metadata() or {"format": "pt"}
            tensors = {_published_key(key): handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        save_file(tensors, shard, metadata=metadata)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        values = json.loads(index.read_text())
        values["weight_map"] = {_published_key(k): v for k, v in values["weight_map"].items()}
        index.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def _drop_remote_code_references(folder: Path) -> None:
    """The export ships no code: no `auto_map` may point at GMAI-VL's (unexported) processing file."""
    for path in folder.glob("*.json"):
        values = json.loads(path.read_text())
        if isinstance(values, dict) and "auto_map" in values:
            del values["auto_map"]
            path.write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n")


def llava_image_processor(image_processor: GMAIVLImageProcessor) -> LlavaImageProcessorPil:
    """LLaVA's image processor with GMAI-VL's settings: the same pixels for 8-bit RGB images.

    Padded (the default): pad to a square with the 8-bit mean colour, resize it to `size` (bicubic),
    CLIP-normalise. Unpadded: GMAI-VL stretches to the square, so no shortest-edge resize and crop.
    """
    size, pad = image_processor.side, image_processor.do_pad_to_square
    return LlavaImageProcessorPil(
        do_pad=pad,
        size={"shortest_edge": size} if pad else {"height": size, "width": size},
        do_center_crop=pad,
        crop_size={"height": size, "width": size},
        resample=3,  # bicubic
        image_mean=image_processor.image_mean,
        image_std=image_processor.image_std,
    )


def export_to_llava(src: str | Path, dst: str | Path) -> Path:
    """Write the GMAI-VL checkpoint `src` as a native LLaVA folder `dst` (see the module docstring)."""
    register_auto_classes()  # the GMAI-VL folder loads through the auto classes
    src, dst = Path(src), Path(dst)
    values = _read_config(src)
    if values.get("model_type") != GMAIVLConfig.model_type:
        raise ValueError(f"{src}: model_type is {values.get('model_type')!r}, not a GMAI-VL checkpoint.")
    text = values.get("text_config") or {}
    if not is_native(text):
        raise ValueError(
            f"{src}: its language model (model_type '{text.get('model_type')}') ships its own code, which "
            "LLaVA serving stacks cannot build; only LMs native to transformers (Qwen2, Llama...) export."
        )
    model = GMAIVLForConditionalGeneration.from_pretrained(src, dtype="auto")
    processor = GMAIVLProcessor.from_pretrained(src)
    llava = LlavaForConditionalGeneration(llava_config_from_gmaivl(model.config)).to(model.dtype)
    llava.load_state_dict(model.state_dict(), strict=True)
    llava.generation_config = model.generation_config
    llava_processor = LlavaProcessor(
        image_processor=llava_image_processor(processor.image_processor),
        tokenizer=processor.tokenizer,
        patch_size=model.config.vision_config.patch_size,
        vision_feature_select_strategy=model.config.vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS, dropped again by the "default" strategy
        chat_template=processor.chat_template,
        image_token=processor.image_token,
    )

    def save(folder: Path) -> None:
        llava.save_pretrained(folder)
        llava_processor.save_pretrained(folder)
        _publish_vision_keys(folder)
        _drop_remote_code_references(folder)

    return _write_atomically(dst, save)


def import_from_llava(src: str | Path, dst: str | Path) -> Path:
    """Write the LLaVA checkpoint `src` as a GMAI-VL folder `dst` with its Hub code."""
    src, dst = Path(src), Path(dst)
    values = _read_config(src)
    if values.get("model_type") != LlavaConfig.model_type:
        raise ValueError(f"{src}: model_type is {values.get('model_type')!r}, not a LLaVA checkpoint.")
    llava = LlavaForConditionalGeneration.from_pretrained(src, dtype="auto")
    config = gmaivl_config_from_llava(llava.config)
    model = GMAIVLForConditionalGeneration(config).to(llava.dtype)
    model.load_state_dict(llava.state_dict(), strict=True)
    _copy_generation_config(src, model)
    source = AutoProcessor.from_pretrained(src)
    tokenizer = getattr(source, "tokenizer", None) or AutoTokenizer.from_pretrained(src)
    source_images = getattr(source, "image_processor", None)
    image_kwargs = {"size": config.vision_config.image_size}
    if source_images is not None:
        image_kwargs.update(image_mean=source_images.image_mean, image_std=source_images.image_std)
    processor = GMAIVLProcessor(
        image_processor=GMAIVLImageProcessor(**image_kwargs),
        tokenizer=tokenizer,
        chat_template=getattr(source, "chat_template", None),  # keep the prompt format it was trained on
        image_token=getattr(source, "image_token", "<image>"),
        num_image_tokens=config.num_image_tokens,
    )

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    return _write_atomically(dst, save)
