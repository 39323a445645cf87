"""GMAI-VL is transformers' LLaVA plus GMAI-VL's deltas: classes, earlier checkpoints, config, init."""

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import LlavaForConditionalGeneration, LlavaModel, LlavaPreTrainedModel
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from gmaivl import GMAIVLConfig, GMAIVLForConditionalGeneration, GMAIVLModel
from gmaivl.modeling_gmaivl.modeling_gmaivl import GMAIVLMultiModalProjector, GMAIVLPreTrainedModel

# Saved by the model code before it derived from LLaVA (commit a320331), see make_gmaivl_0_1_0.py.
FIXTURE = Path(__file__).parent / "fixtures" / "gmaivl-0.1.0"


def test_classes_derive_from_llava():
    assert issubclass(GMAIVLPreTrainedModel, LlavaPreTrainedModel)
    assert issubclass(GMAIVLModel, LlavaModel)
    assert issubclass(GMAIVLForConditionalGeneration, LlavaForConditionalGeneration)
    assert issubclass(GMAIVLMultiModalProjector, LlavaMultiModalProjector)
    # Only the deltas are overridden; LLaVA's own code does the rest.
    for name in ("get_image_features", "get_placeholder_mask"):
        assert name not in vars(GMAIVLModel)
    assert GMAIVLForConditionalGeneration._tp_plan == {"lm_head": "colwise_gather_output"}


def test_checkpoint_saved_by_earlier_code_loads_unchanged():
    model, info = GMAIVLForConditionalGeneration.from_pretrained(FIXTURE, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set()
    saved_keys = set(load_file(FIXTURE / "model.safetensors"))
    assert set(model.state_dict()) == saved_keys
    expected = load_file(FIXTURE / "expected.safetensors")
    with torch.no_grad():
        logits = model(input_ids=expected["input_ids"], pixel_values=expected["pixel_values"]).logits
    torch.testing.assert_close(logits, expected["logits"], atol=1e-6, rtol=1e-6)


def test_tie_word_embeddings_is_read_from_text_config():
    values = GMAIVLConfig.from_pretrained(FIXTURE).to_dict()
    assert values["tie_word_embeddings"] is False
    values["text_config"]["tie_word_embeddings"] = True
    del values["tie_word_embeddings"]
    config = GMAIVLConfig(
        **{k: v for k, v in values.items() if k not in ("model_type", "transformers_version")}
    )
    assert config.tie_word_embeddings is True
    model = GMAIVLForConditionalGeneration(config)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    untied = GMAIVLForConditionalGeneration(GMAIVLConfig.from_pretrained(FIXTURE))
    assert untied.lm_head.weight is not untied.get_input_embeddings().weight


def test_missing_vision_weights_get_clip_init(tmp_path):
    """CLIP's `_init_weights` sets q/k/v to std d^-0.5 (2L)^-0.5 and fc1 to (2d)^-0.5: far from 0.02."""
    shutil.copy(FIXTURE / "config.json", tmp_path)
    weights = load_file(FIXTURE / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith("model.vision_tower.encoder")}
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    torch.manual_seed(0)
    model = GMAIVLForConditionalGeneration.from_pretrained(tmp_path)
    vision = model.config.vision_config
    d, n_layers = vision.hidden_size, vision.num_hidden_layers
    layers = model.model.vision_tower.encoder.layers
    q = torch.cat([layer.self_attn.q_proj.weight.flatten() for layer in layers])
    fc1 = torch.cat([layer.mlp.fc1.weight.flatten() for layer in layers])
    assert abs(q.std().item() - d**-0.5 * (2 * n_layers) ** -0.5) < 0.03  # 0.125 for d=16, 2 layers
    assert abs(fc1.std().item() - (2 * d) ** -0.5) < 0.03  # 0.177
    # Loaded weights are left as they were.
    torch.testing.assert_close(model.lm_head.weight, weights["lm_head.weight"])
