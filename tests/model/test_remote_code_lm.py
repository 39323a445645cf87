"""A language model that ships its own code (as InternLM2 does) composes, saves and reloads."""

import json
import textwrap

import pytest
import torch
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    CLIPVisionModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from gmaivl.core.compose import compose_gmaivl
from gmaivl.core.tiny import build_tiny_tokenizer

from ._helpers import conversation, random_image
from .test_hub_roundtrip import load_without_the_package

# A stand-in for InternLM2's Hub code: its own config, backbone and causal-LM classes, which
# transformers knows nothing about.
CONFIGURATION = (
    "from transformers import Qwen2Config\n\n\nclass ToyLMConfig(Qwen2Config):\n    model_type = 'toylm'\n"
)
MODELING = textwrap.dedent(
    """
    from transformers import Qwen2ForCausalLM, Qwen2Model

    from .configuration_toylm import ToyLMConfig


    class ToyLMModel(Qwen2Model):
        config_class = ToyLMConfig


    class ToyLMForCausalLM(Qwen2ForCausalLM):
        config_class = ToyLMConfig

        def __init__(self, config):
            super().__init__(config)
            self.model = ToyLMModel(config)
            self.post_init()
    """
)


def remote_code_llm(folder):
    tokenizer = build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "configuration_toylm.py").write_text(CONFIGURATION)
    (folder / "modeling_toylm.py").write_text(MODELING)
    values = json.loads((folder / "config.json").read_text())
    values.update(
        model_type="toylm",
        architectures=["ToyLMForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_toylm.ToyLMConfig",
            "AutoModel": "modeling_toylm.ToyLMModel",
            "AutoModelForCausalLM": "modeling_toylm.ToyLMForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(values))


def save_vision_tower(folder, num_hidden_layers: int = 2) -> None:
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        image_size=56,
        patch_size=14,
    )
    CLIPVisionModel(config).save_pretrained(folder)


def test_remote_code_language_model_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules_parent"))
    remote_code_llm(tmp_path / "llm")
    save_vision_tower(tmp_path / "vision")
    with pytest.raises(ValueError, match="trust_remote_code"):
        compose_gmaivl(str(tmp_path / "vision"), str(tmp_path / "llm"))
    model, processor = compose_gmaivl(
        str(tmp_path / "vision"), str(tmp_path / "llm"), trust_remote_code=True, dtype=torch.float32
    )
    assert type(model.model.language_model).__name__ == "ToyLMModel"
    assert model.config.text_config.model_type == "toylm"

    folder = tmp_path / "gmai-vl"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    assert {"modeling_toylm.py", "configuration_toylm.py"} <= {p.name for p in folder.iterdir()}
    saved = json.loads((folder / "config.json").read_text())["text_config"]
    assert saved["model_type"] == "toylm" and saved["auto_map"]["AutoModel"] == "modeling_toylm.ToyLMModel"

    texts = [processor.apply_chat_template(conversation("What is shown?"), add_generation_prompt=True)]
    images = [[random_image(0)]]
    inputs = processor(text=texts, images=images, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits

    # With the package installed: the LM's code runs only after an explicit opt-in.
    with pytest.raises(
        ValueError, match="runs its own code; load this checkpoint with trust_remote_code=True"
    ):
        AutoModelForImageTextToText.from_pretrained(folder)
    reloaded = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    assert type(reloaded.model.language_model).__name__ == "ToyLMModel"
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, logits)

    # Without the package, as a Hub user: everything comes from the folder's own files.
    report, out = load_without_the_package(folder, texts, images, tmp_path)
    assert report["model"] == "GMAIVLForConditionalGeneration" and report["modules"] == []
    assert torch.equal(out["logits"], logits)
