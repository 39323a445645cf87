"""`gmaivl model import`: the checkpoints people have, as GMAI-VL folders that enter the staged recipe.

Two source formats, read from their files (config.json, safetensors or .bin, tokenizer); neither
project's code is needed, and nothing is downloaded:

- `enhanced-llava`, the official GMAI-VL release (uni-medical/GMAI-VL, `model_type:
  "enhanced_llava"`, xtuner/_lite/modelings/llava): `vision_tower` (CLIP), `multi_modal_projector.
  linear_1/2`, and an InternLM2 `language_model` that runs its own code. InternLM2 is Llama with a
  fused, grouped `wqkv` and other names, so its weights are rewritten as transformers' own Llama
  (q/k/v split per key-value group, `w1/w3/w2` -> gate/up/down): the imported folder needs no LM
  code, exports to native LLaVA and takes the packed kernels. The release's single `<image>`
  token, expanded inside its model (the legacy merge), becomes the processor's `num_image_tokens`
  placeholders: the same sequence reaches the LM. Chat template: internlm2's (ChatML).
- `llava-original`, haotian-liu/LLaVA's layout (`llava_llama`, `llava_mistral` as LLaVA-Med v1.5):
  `model.mm_projector.0/2`, the LM at the top level, the vision tower loaded from the folder that
  `mm_vision_tower` names (as LLaVA's own loader does; the copy inside the checkpoint is used only
  when `unfreeze_mm_vision_tower` trained it). LLaVA marks images with the id -200 and no token, so
  `<image>` is added to the tokenizer (embedding row: the mean embedding; output row: zeros, and
  generation suppresses it). Chat template: LLaVA's conversation template (`llava_v1` for Llama,
  `mistral_instruct` for Mistral as LLaVA-Med uses; `--conv-mode` overrides).

Both keep CLIP's preprocessing (pad to square with the mean colour, bicubic resize, the source's
mean / std). The importer checks, before writing, that its processor gives the source's token ids
for a probe conversation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
)

from gmaivl.core.export import _copy_generation_config, _read_config, _write_atomically
from gmaivl.modeling_gmaivl import (
    GMAIVLConfig,
    GMAIVLForConditionalGeneration,
    GMAIVLImageProcessor,
    GMAIVLProcessor,
)
from gmaivl.modeling_gmaivl.image_processing_gmaivl import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from gmaivl.modeling_gmaivl.processing_gmaivl import chatml_template, render_macro

FORMATS = ("enhanced-llava", "llava-original")
ENHANCED_LLAVA_TYPES = ("enhanced_llava",)
# LLaVA's model types and the transformers LM each one is.
LLAVA_ORIGINAL_TYPES = {"llava": "llama", "llava_llama": "llama", "llava_mistral": "mistral"}
LLAVA_IMAGE_TOKEN_INDEX = -200  # llava/constants.py: IMAGE_TOKEN_INDEX
IMAGE_TOKEN = "<image>"

LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
CONV_MODES = ("llava_v1", "mistral_instruct")


# --------------------------------------------------------------------------- chat templates
def llava_chat_template(conv_mode: str, image_text: str = "<image>\\n") -> str:
    """LLaVA's `conv_templates[conv_mode].get_prompt()` as a Jinja chat template (llava/conversation.py):
    `llava_v1` (SeparatorStyle.TWO: system, "USER: ...", "ASSISTANT: ...</s>") or `mistral_instruct`
    (SeparatorStyle.LLAMA_2: "[INST] ... [/INST]", " answer </s>"). A system message replaces the
    template's system text. `{% generation %}` marks what the assistant says, for TRL."""
    system_of = (
        "{%- set ns = namespace(system=DEFAULT, first=true) -%}"
        "{%- for m in messages if m['role'] == 'system' -%}{%- set ns.system = render(m['content']) -%}{%- endfor -%}"
    )
    if conv_mode == "llava_v1":
        default = "'" + LLAVA_V1_SYSTEM.replace("'", "\\'") + "'"
        body = (
            "{{- ns.system + ' ' -}}"
            "{%- for m in messages if m['role'] != 'system' -%}"
            "{%- if m['role'] == 'user' -%}{{- 'USER: ' + render(m['content']) + ' ' -}}"
            "{%- else -%}{{- 'ASSISTANT: ' -}}{% generation %}{{- render(m['content']) + '</s>' -}}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
            "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
        )
    elif conv_mode == "mistral_instruct":
        default = "''"
        body = (
            "{%- for m in messages if m['role'] != 'system' -%}"
            "{%- if m['role'] == 'user' -%}"
            "{%- set content = render(m['content']) -%}"
            "{%- if ns.first and ns.system -%}"
            "{%- set content = '<<SYS>>\\n' + ns.system + '\\n<</SYS>>\\n\\n' + content -%}{%- endif -%}"
            "{%- set ns.first = false -%}"
            "{{- '[INST] ' + content + ' [/INST]' -}}"
            "{%- else -%}{{- ' ' -}}{% generation %}{{- render(m['content']) + ' </s>' -}}{% endgeneration %}"
            "{%- endif -%}{%- endfor -%}"
        )
    else:
        raise ValueError(f"conv mode {conv_mode!r}: the importer knows {', '.join(CONV_MODES)}.")
    return render_macro(image_text) + system_of.replace("DEFAULT", default) + body


PROBE = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown here?"}]},
    {"role": "assistant", "content": "An image."},
    {"role": "user", "content": "Anything else?"},
]


def _probe_prompt(conv_mode: str) -> str:
    """PROBE as LLaVA's Conversation.get_prompt() writes it ("<image>\\n" + the first question)."""
    first, answer, second = "<image>\nWhat is shown here?", "An image.", "Anything else?"
    if conv_mode == "llava_v1":
        return f"{LLAVA_V1_SYSTEM} USER: {first} ASSISTANT: {answer}</s>USER: {second} ASSISTANT:"
    return f"[INST] {first} [/INST] {answer} </s>[INST] {second} [/INST]"


def _xtuner_probe_prompt() -> str:
    """PROBE as xtuner's internlm2 template writes it (xtuner/_lite/chat: items joined by "\\n")."""
    return (
        "<|im_start|>user\n<image>\nWhat is shown here?<|im_end|>\n<|im_start|>assistant\n"
        "An image.<|im_end|>\n<|im_start|>user\nAnything else?<|im_end|>\n<|im_start|>assistant\n"
    )


def llava_token_ids(prompt: str, tokenizer, image_token_id: int, num_image_tokens: int) -> list[int]:
    """The ids LLaVA's `tokenizer_image_token` gives `prompt` (each chunk between images tokenized on its
    own, the <s> of later chunks dropped), each image then expanded to `num_image_tokens` ids."""
    chunks = [tokenizer(chunk)["input_ids"] for chunk in prompt.split(IMAGE_TOKEN)]
    offset = 1 if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    ids = chunks[0][:offset]
    for i, chunk in enumerate(chunks):
        if i:
            ids.extend([image_token_id] * num_image_tokens)
        ids.extend(chunk[offset:])
    return ids


# --------------------------------------------------------------------------- weights
def _load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: safetensors (single or sharded) or PyTorch .bin files."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(
            f"{folder}: no model weights (*.safetensors or pytorch_model*.bin) next to its config.json."
        )
    state: dict[str, torch.Tensor] = {}
    for path in files:
        part = (
            load_file(path)
            if path.suffix == ".safetensors"
            else torch.load(path, map_location="cpu", weights_only=True)
        )
        state.update(part)
    return state


def _vision_key(key: str) -> str:
    """A CLIPVisionModel tensor name (`vision_model.encoder...`) as GMAI-VL's tower names it."""
    return key.removeprefix("vision_model.")


def _take(state: dict, key: str, src: Path) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"{src}: the checkpoint has no tensor {key!r}.")
    return state.pop(key)


def _internlm2_to_llama(state: dict, text: dict, src: Path) -> dict[str, torch.Tensor]:
    """InternLM2 `language_model.*` tensors as transformers' Llama (`model.language_model.*`, `lm_head`).

    InternLM2's `wqkv` rows are `(kv_heads, groups + 2, head_dim)`: for each key-value head, its
    `groups` query heads, then its key, then its value (modeling_internlm2.py's rearrange)."""
    heads, kv_heads = (
        text["num_attention_heads"],
        text.get("num_key_value_heads") or text["num_attention_heads"],
    )
    head_dim = text["hidden_size"] // heads
    groups = heads // kv_heads
    out = {
        "model.language_model.embed_tokens.weight": _take(
            state, "language_model.model.tok_embeddings.weight", src
        ),
        "model.language_model.norm.weight": _take(state, "language_model.model.norm.weight", src),
        "lm_head.weight": _take(state, "language_model.output.weight", src),
    }
    names = {
        "attention.wo": "self_attn.o_proj",
        "feed_forward.w1": "mlp.gate_proj",
        "feed_forward.w3": "mlp.up_proj",
        "feed_forward.w2": "mlp.down_proj",
        "attention_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
    }
    for i in range(text["num_hidden_layers"]):
        old, new = f"language_model.model.layers.{i}.", f"model.language_model.layers.{i}."
        for suffix in ("weight", "bias"):
            key = f"{old}attention.wqkv.{suffix}"
            if key not in state:
                if suffix == "weight":
                    raise ValueError(f"{src}: the checkpoint has no tensor {key!r}.")
                continue
            fused = state.pop(key)
            grouped = fused.reshape(kv_heads, groups + 2, head_dim, *fused.shape[1:])
            out[f"{new}self_attn.q_proj.{suffix}"] = grouped[:, :groups].reshape(
                heads * head_dim, *fused.shape[1:]
            )
            out[f"{new}self_attn.k_proj.{suffix}"] = grouped[:, -2].reshape(
                kv_heads * head_dim, *fused.shape[1:]
            )
            out[f"{new}self_attn.v_proj.{suffix}"] = grouped[:, -1].reshape(
                kv_heads * head_dim, *fused.shape[1:]
            )
        for name, target in names.items():
            for suffix in ("weight", "bias"):
                if f"{old}{name}.{suffix}" in state:
                    out[f"{new}{target}.{suffix}"] = state.pop(f"{old}{name}.{suffix}")
    return out


def _rope_parameters(values: dict) -> dict:
    """transformers 5's `rope_parameters` from a 4.x config's `rope_theta` and `rope_scaling`."""
    rope = {"rope_type": "default", "rope_theta": float(values.get("rope_theta", 10000.0))}
    scaling = values.get("rope_scaling")
    if scaling:
        kind = scaling.get("rope_type") or scaling.get("type")
        rope.update({k: v for k, v in scaling.items() if k != "type"}, rope_type=kind)
    return rope


def _internlm2_llama_config(text: dict) -> dict:
    """The Llama config of an InternLM2 text config (configuration_internlm2.py's fields)."""
    heads = text["num_attention_heads"]
    return {
        "model_type": "llama",
        "vocab_size": text["vocab_size"],
        "hidden_size": text["hidden_size"],
        "intermediate_size": text["intermediate_size"],
        "num_hidden_layers": text["num_hidden_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": text.get("num_key_value_heads") or heads,
        "head_dim": text["hidden_size"] // heads,
        "hidden_act": text.get("hidden_act", "silu"),
        "max_position_embeddings": text.get("max_position_embeddings", 2048),
        "rms_norm_eps": text.get("rms_norm_eps", 1e-6),
        "attention_bias": bool(text.get("bias", True)),
        "mlp_bias": False,
        "rope_parameters": _rope_parameters(text),
        "tie_word_embeddings": bool(text.get("tie_word_embeddings", False)),
        **{k: text[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in text},
    }


# --------------------------------------------------------------------------- helpers
def _tokenizer(src: Path):
    """The source tokenizer; a tokenizer.json is read as it is when the tokenizer class needs its own
    code (InternLM2's), which this importer never runs."""
    try:
        return AutoTokenizer.from_pretrained(src, trust_remote_code=False)
    except (ValueError, OSError, ImportError) as err:
        if (src / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast.from_pretrained(src)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{src}: cannot read its tokenizer without running its code ({reason}).") from err


def _image_processor(clip_folder: Path | None, image_size: int, pad: bool) -> GMAIVLImageProcessor:
    """CLIP's preprocessing at the tower's size, with the source's mean / std when it ships them."""
    mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    path = clip_folder / "preprocessor_config.json" if clip_folder else None
    if path is not None and path.is_file():
        values = json.loads(path.read_text())
        mean, std = values.get("image_mean", mean), values.get("image_std", std)
    return GMAIVLImageProcessor(size=image_size, image_mean=mean, image_std=std, do_pad_to_square=pad)


def _build(
    config: GMAIVLConfig, state: dict, dtype: torch.dtype, src: Path
) -> GMAIVLForConditionalGeneration:
    model = GMAIVLForConditionalGeneration(config).to(dtype)
    expected = set(model.state_dict())
    missing, unused = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unused:
        raise ValueError(
            f"{src}: its tensors do not fit the GMAI-VL layout: missing {missing[:4]}, unused {unused[:4]}."
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def _processor_token_ids(processor: GMAIVLProcessor) -> list[int]:
    """The ids the processor gives PROBE (with one image), as a user of the imported folder gets them."""
    from PIL import Image

    text = processor.apply_chat_template(PROBE, add_generation_prompt=True)
    side = processor.image_processor.side
    image = Image.new("RGB", (side, side))
    return processor(text=[text], images=[[image]], return_tensors="pt")["input_ids"][0].tolist()


# --------------------------------------------------------------------------- enhanced-llava
def _from_enhanced_llava(src: Path, values: dict):
    text = dict(values.get("text_config") or {})
    vision = dict(values.get("vision_config") or {})
    missing = [k for k in ("vision_config", "text_config", "image_token_index") if k not in values]
    if missing:
        raise ValueError(f"{src}: an enhanced_llava config.json needs {', '.join(missing)}.")
    state = _load_state_dict(src)
    dtype = next(iter(state.values())).dtype
    converted = {}
    for key in list(state):
        if key.startswith("vision_tower."):
            converted[f"model.vision_tower.{_vision_key(key[len('vision_tower.') :])}"] = state.pop(key)
        elif key.startswith("multi_modal_projector."):
            converted[f"model.{key}"] = state.pop(key)
    if text.get("model_type") == "internlm2":
        converted.update(_internlm2_to_llama(state, text, src))
        text_config = _internlm2_llama_config(text)
    elif text.get("model_type") in ("llama", "qwen2", "mistral"):
        for key in list(state):
            if key.startswith("language_model.model."):
                converted["model.language_model." + key[len("language_model.model.") :]] = state.pop(key)
        converted["lm_head.weight"] = _take(state, "language_model.lm_head.weight", src)
        text_config = text
    else:
        raise ValueError(
            f"{src}: text_config.model_type {text.get('model_type')!r}: the importer reads InternLM2, Llama, "
            "Qwen2 and Mistral language models."
        )
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if state:
        raise ValueError(f"{src}: tensors the importer does not place: {sorted(state)[:4]}.")
    vision.setdefault("model_type", "clip_vision_model")
    config = GMAIVLConfig(
        vision_config=vision,
        text_config=text_config,
        image_token_id=values["image_token_index"],
        vision_feature_layer=values.get("vision_feature_layer", -2),
        vision_feature_select_strategy=values.get("vision_feature_select_strategy", "default"),
        projector_hidden_act=values.get("projector_hidden_act", "gelu"),
    )
    model = _build(config, converted, dtype, src)
    _copy_generation_config(src, model)

    tokenizer = _tokenizer(src)
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if token_id != values["image_token_index"]:
        raise ValueError(
            f"{src}: the tokenizer's {IMAGE_TOKEN} is id {token_id}, config.json's image_token_index is "
            f"{values['image_token_index']}."
        )

    def build_processor() -> GMAIVLProcessor:
        return GMAIVLProcessor(
            image_processor=_image_processor(src, config.vision_config.image_size, pad=True),
            tokenizer=tokenizer,
            chat_template=chatml_template(),  # xtuner's internlm2 template is ChatML
            image_token=IMAGE_TOKEN,
            num_image_tokens=config.num_image_tokens,
        )

    # xtuner trained on `tokenizer.encode(prompt, add_special_tokens=False)` (ChatMessages.tokenize):
    # no <s>, which InternLM2's tokenizer would otherwise prepend.
    prompt = _xtuner_probe_prompt().replace(IMAGE_TOKEN, IMAGE_TOKEN * config.num_image_tokens)
    expected = tokenizer.encode(prompt, add_special_tokens=False)
    processor = build_processor()
    got = _processor_token_ids(processor)
    if got != expected and got[1:] == expected and got[0] == tokenizer.bos_token_id:
        tokenizer.add_bos_token = False
        processor = build_processor()
        got = _processor_token_ids(processor)
    if got != expected:
        raise ValueError(
            f"{src}: the processor does not give the ids xtuner's internlm2 template gives with this "
            "tokenizer (a ChatML conversation); the imported processor would not tokenize as the release."
        )
    return model, processor


# --------------------------------------------------------------------------- llava-original
def _vision_tower_folder(src: Path, values: dict, vision_tower: str | Path | None) -> Path:
    name = values.get("mm_vision_tower") or values.get("vision_tower")
    for candidate in (vision_tower, name):
        if candidate is None:
            continue
        for path in (Path(candidate), src / candidate):
            if (path / "config.json").is_file():
                return path
    raise ValueError(
        f"{src}: LLaVA loads its vision tower from mm_vision_tower={name!r}, which is not a local folder; "
        "pass --vision-tower FOLDER (a local copy of that CLIP checkpoint)."
    )


def _from_llava_original(src: Path, values: dict, vision_tower, conv_mode: str | None):
    model_type = values.get("model_type")
    checks = {
        "mm_projector_type": ("mlp2x_gelu", values.get("mm_projector_type", "linear")),
        "mm_patch_merge_type": ("flat", values.get("mm_patch_merge_type", "flat")),
        "image_aspect_ratio": ("pad", values.get("image_aspect_ratio", "square")),
        "mm_use_im_start_end": (False, bool(values.get("mm_use_im_start_end", False))),
    }
    for key, (wanted, got) in checks.items():
        if got != wanted:
            raise ValueError(
                f"{src}: {key} is {got!r}; the importer reads LLaVA-1.5 checkpoints ({key}: {wanted!r})."
            )
    feature = values.get("mm_vision_select_feature", "patch")
    if feature not in ("patch", "cls_patch"):
        raise ValueError(f"{src}: mm_vision_select_feature {feature!r} is neither 'patch' nor 'cls_patch'.")
    clip_folder = _vision_tower_folder(src, values, vision_tower)
    vision_config = CLIPVisionConfig.from_pretrained(clip_folder)
    if vision_config.hidden_size != values.get("mm_hidden_size", vision_config.hidden_size):
        raise ValueError(
            f"{clip_folder}: its hidden size {vision_config.hidden_size} is not the checkpoint's mm_hidden_size "
            f"{values['mm_hidden_size']}."
        )

    state = _load_state_dict(src)
    dtype = state["lm_head.weight"].dtype if "lm_head.weight" in state else torch.float32
    tower_keys = [k for k in state if k.startswith("model.vision_tower.vision_tower.")]
    if values.get("unfreeze_mm_vision_tower") and tower_keys:  # LLaVA then loads the trained copy
        vision_state = {
            _vision_key(k[len("model.vision_tower.vision_tower.") :]): state[k] for k in tower_keys
        }
    else:  # as llava/model/builder.py: vision_tower.load_model() from mm_vision_tower
        vision_state = CLIPVisionModel.from_pretrained(clip_folder, dtype=torch.float32).state_dict()
    for key in tower_keys:
        del state[key]
    converted = {f"model.vision_tower.{_vision_key(k)}": v for k, v in vision_state.items()}
    for old, new in (("model.mm_projector.0.", "linear_1."), ("model.mm_projector.2.", "linear_2.")):
        for suffix in ("weight", "bias"):
            converted[f"model.multi_modal_projector.{new}{suffix}"] = _take(state, old + suffix, src)
    converted["lm_head.weight"] = _take(state, "lm_head.weight", src)
    for key in list(state):
        if key.startswith("model.") and not key.endswith("rotary_emb.inv_freq"):
            converted["model.language_model." + key[len("model.") :]] = state.pop(key)
        elif key.endswith("rotary_emb.inv_freq"):
            del state[key]
    if state:
        raise ValueError(f"{src}: tensors the importer does not place: {sorted(state)[:4]}.")

    lm_type = LLAVA_ORIGINAL_TYPES[model_type]
    lm_fields = set(AutoConfig.for_model(lm_type).to_dict())
    text_values = {
        k: v for k, v in values.items() if k in lm_fields and k not in ("architectures", "auto_map")
    }
    text_values.pop("model_type", None)
    text_values["rope_parameters"] = _rope_parameters(values)

    tokenizer = _tokenizer(src)
    if tokenizer.pad_token is None:  # llava/train/train.py: pad with <unk> (v1 templates)
        tokenizer.pad_token = tokenizer.unk_token
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    embed_key = "model.language_model.embed_tokens.weight"
    rows = converted[embed_key].shape[0]
    if image_token_id >= rows:  # a new row for <image>: never read (features replace it), never generated
        extra = image_token_id + 1 - rows
        embed, head = converted[embed_key], converted["lm_head.weight"]
        converted[embed_key] = torch.cat([embed, embed.mean(0, keepdim=True).expand(extra, -1)])
        converted["lm_head.weight"] = torch.cat([head, head.new_zeros(extra, head.shape[1])])
        text_values["vocab_size"] = image_token_id + 1
    config = GMAIVLConfig(
        vision_config=vision_config.to_dict(),
        text_config={"model_type": lm_type, **text_values},
        image_token_id=image_token_id,
        vision_feature_layer=values.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy="default" if feature == "patch" else "full",
        projector_hidden_act="gelu",  # nn.GELU() between the two linears
    )
    model = _build(config, converted, dtype, src)
    _copy_generation_config(src, model)
    model.generation_config.suppress_tokens = [image_token_id]

    conv_mode = conv_mode or ("mistral_instruct" if lm_type == "mistral" else "llava_v1")
    image_processor = _image_processor(clip_folder, vision_config.image_size, pad=True)
    # LLaVA tokenizes the text after an image on its own: SentencePiece tokenizers then start it
    # with "▁", which the processor reproduces by rendering the image as "<image> \n" instead.
    expected = llava_token_ids(_probe_prompt(conv_mode), tokenizer, image_token_id, config.num_image_tokens)
    for image_text in ("<image>\\n", "<image> \\n"):
        processor = GMAIVLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            chat_template=llava_chat_template(conv_mode, image_text),
            image_token=IMAGE_TOKEN,
            num_image_tokens=config.num_image_tokens,
        )
        if _processor_token_ids(processor) == expected:
            return model, processor
    raise ValueError(
        f"{src}: no chat template reproduces LLaVA's token ids for a {conv_mode} conversation with this "
        "tokenizer; the imported processor would not tokenize as LLaVA does."
    )


# --------------------------------------------------------------------------- entry point
def detect_format(values: dict) -> str | None:
    model_type = values.get("model_type")
    if model_type in ENHANCED_LLAVA_TYPES:
        return "enhanced-llava"
    if model_type in LLAVA_ORIGINAL_TYPES or "mm_projector_type" in values:
        return "llava-original"
    return None


def _refusal(src: Path, source_format: str, values: dict) -> str:
    model_type = values.get("model_type")
    if source_format == "enhanced-llava":
        return (
            f"{src}: not an enhanced-llava checkpoint: config.json has model_type {model_type!r}, "
            "not 'enhanced_llava' (the official GMAI-VL release)."
        )
    if "text_config" in values and "vision_config" in values and model_type != "gmai_vl":
        return (
            f"{src}: a transformers {model_type!r} folder (vision_config / text_config), not haotian-liu/LLaVA's "
            "layout; `gmaivl model export --format gmaivl` converts transformers' LLaVA."
        )
    if model_type in LLAVA_ORIGINAL_TYPES or "mm_projector_type" in values:
        return (
            f"{src}: model_type {model_type!r} is an original-LLaVA variant the importer does not read "
            f"(it reads {', '.join(sorted(LLAVA_ORIGINAL_TYPES))})."
        )
    return (
        f"{src}: not an original-LLaVA checkpoint: config.json has model_type {model_type!r} and no "
        "mm_projector_type / mm_vision_tower (expected llava_llama or llava_mistral)."
    )


def import_checkpoint(
    src: str | Path,
    dst: str | Path,
    source_format: str,
    *,
    vision_tower: str | Path | None = None,
    conv_mode: str | None = None,
) -> Path:
    """Write the `source_format` checkpoint `src` as a GMAI-VL folder `dst` (see the module docstring)."""
    if source_format not in FORMATS:
        raise ValueError(f"--from {source_format!r}: the importer reads {', '.join(FORMATS)}.")
    src, dst = Path(src), Path(dst)
    values = _read_config(src)
    model_type = values.get("model_type")
    if source_format == "enhanced-llava" and model_type in ENHANCED_LLAVA_TYPES:
        model, processor = _from_enhanced_llava(src, values)
    elif (
        source_format == "llava-original"
        and model_type in LLAVA_ORIGINAL_TYPES
        and "text_config" not in values
    ):
        model, processor = _from_llava_original(src, values, vision_tower, conv_mode)
    else:
        raise ValueError(_refusal(src, source_format, values))

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    return _write_atomically(dst, save)


__all__ = ["FORMATS", "detect_format", "import_checkpoint", "llava_chat_template", "llava_token_ids"]
