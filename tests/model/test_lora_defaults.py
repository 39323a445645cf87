"""PEFT's `get_peft_model` with no `target_modules` on GMAI-VL: the language model's layers only."""

from __future__ import annotations

import peft
import pytest
import torch

from gmaivl.core.tiny import build_tiny_gmaivl


def _lora_modules(model) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, peft.tuners.lora.LoraLayer)]


@pytest.mark.parametrize("seed", [0, 1])
def test_default_lora_targets_adapt_the_language_model_only(seed):
    model, _ = build_tiny_gmaivl(seed=seed)
    tower_names = {
        n.rsplit(".", 1)[-1]
        for n, m in model.model.vision_tower.named_modules()
        if isinstance(m, torch.nn.Linear)
    }
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4))
    adapted = _lora_modules(wrapped)
    assert adapted, "no layer was adapted"
    assert all(".model.language_model." in name for name in adapted), adapted
    # the CLIP tower has layers of the same names (q_proj, v_proj), and they stay as they were
    leaves = {name.rsplit(".", 1)[-1] for name in adapted}
    assert leaves & tower_names, (leaves, tower_names)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_targets_the_caller_names_still_win():
    model, _ = build_tiny_gmaivl()
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["linear_1"]))
    assert [n.rsplit(".", 1)[-1] for n in _lora_modules(wrapped)] == ["linear_1"]


def test_a_language_model_with_its_own_code_gets_all_its_linear_layers(tmp_path, monkeypatch):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from gmaivl.core.compose import compose_gmaivl

    from .test_remote_code_lm import remote_code_llm

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    remote_code_llm(tmp_path / "llm")  # model type `toylm`, which PEFT has no names for
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4
    )
    CLIPVisionModel(vision).save_pretrained(tmp_path / "vision")
    model, _ = compose_gmaivl(str(tmp_path / "vision"), str(tmp_path / "llm"), trust_remote_code=True)
    lm_linear = {n for n, m in model.model.language_model.named_modules() if isinstance(m, torch.nn.Linear)}
    adapted = _lora_modules(peft.get_peft_model(model, peft.LoraConfig(r=4)))
    assert {name.split(".model.language_model.", 1)[1] for name in adapted} == lm_linear
