"""GMAIVLForConditionalGeneration: conventions, packing, labels, generation, bad input."""

import numpy as np
import pytest
import torch
from transformers import AttentionInterface, CLIPVisionConfig, Qwen2Config, ResNetConfig, ViTConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from gmaivl import GMAIVLConfig, GMAIVLForConditionalGeneration
from gmaivl.core.tiny import build_tiny_gmaivl

from ._helpers import conversation, random_image


def encode(processor, messages, images, **kwargs):
    text = processor.apply_chat_template(messages, **kwargs)
    return processor(text=text, images=images, return_tensors="pt")


def test_llava_layout_and_image_features(tiny):
    model, processor = tiny
    assert model.base_model_prefix == "model"
    for name in ("vision_tower", "multi_modal_projector", "language_model"):
        assert hasattr(model.model, name)
    projector = model.model.multi_modal_projector
    assert [type(m).__name__ for m in projector.children()] == ["Linear", "GELUActivation", "Linear"]
    assert model.get_output_embeddings() is model.lm_head
    assert model.lm_head.weight is not model.get_input_embeddings().weight  # untied, like the paper's LLMs
    assert model.config.num_image_tokens == processor.num_image_tokens == 16
    pixel_values = processor.image_processor([random_image(0), random_image(1)])["pixel_values"]
    outputs = model.get_image_features(pixel_values)  # LLaVA's: a BaseModelOutputWithPooling
    features = torch.stack(outputs.pooler_output)
    assert features.shape == (2, 16, model.config.text_config.hidden_size)
    # Layer -2 without CLS: recompute by hand from the vision tower's hidden states.
    hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
    torch.testing.assert_close(features, projector(hidden))
    torch.testing.assert_close(outputs.hidden_states[-2][:, 1:], hidden)
    as_tuple = model.get_image_features(pixel_values, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(torch.stack(as_tuple[1]), features)


def test_image_placeholders_are_replaced_by_image_features(tiny):
    model, processor = tiny
    inputs = encode(processor, conversation("Describe."), [random_image(0)], add_generation_prompt=True)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    with torch.no_grad():
        out = model(**inputs)
        other = model(
            **{**inputs, "pixel_values": processor.image_processor(random_image(5))["pixel_values"]}
        )
    assert [f.shape for f in out.image_outputs.pooler_output] == [(16, 64)]
    assert not torch.allclose(out.logits, other.logits), "the image must influence the logits"


def test_several_images_per_conversation_and_generate(tiny):
    model, processor = tiny
    images = [random_image(0), random_image(1, (30, 50)), random_image(2)]
    inputs = encode(processor, conversation("Which differ?", n_images=3), images, add_generation_prompt=True)
    assert inputs["pixel_values"].shape == (3, 3, 56, 56)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 48
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        again = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new_tokens = generated[0, inputs["input_ids"].shape[1] :]
    assert 1 <= len(new_tokens) <= 6
    assert torch.equal(generated, again)
    # Greedy generation equals the argmax of a full forward pass at each step.
    with torch.no_grad():
        logits = model(input_ids=generated[:, :-1], pixel_values=inputs["pixel_values"]).logits
    prompt_len = inputs["input_ids"].shape[1]
    stepwise = logits[0, prompt_len - 1 :].argmax(-1)
    assert torch.equal(stepwise[: len(new_tokens)], new_tokens)


def test_mismatched_images_and_tokens_raise(tiny):
    model, processor = tiny
    inputs = encode(processor, conversation("Q?"), [random_image(0)], add_generation_prompt=True)
    two = processor.image_processor([random_image(0), random_image(1)])["pixel_values"]
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        model(input_ids=inputs["input_ids"], pixel_values=two)
    # Without pixel_values the placeholders are plain tokens, as in LLaVA (assisted generation runs
    # the assistant that way, and a model may emit <image> while decoding).
    with torch.no_grad():
        assert model(input_ids=inputs["input_ids"]).logits.isfinite().all()
    text = processor.apply_chat_template(conversation("Q?", n_images=2), add_generation_prompt=True)
    with pytest.raises(ValueError, match="same as the number of images"):
        processor(text=text, images=[random_image(0)])
    with pytest.raises(ValueError, match="no images were passed"):
        processor(text=text)


def test_assistant_mask_covers_answers_only(tiny):
    model, processor = tiny
    messages = [
        *conversation("What is shown?", "A chest CT."),
        {"role": "user", "content": "Any lesion?"},
        {"role": "assistant", "content": "Yes, in the liver."},
    ]
    messages[0]["content"][0]["image"] = random_image(0)
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0].bool()
    labelled = processor.tokenizer.decode(ids[mask])
    assert labelled == "A chest CT.<|im_end|>Yes, in the liver.<|im_end|>"
    assert not mask[ids == model.config.image_token_id].any(), "image placeholders must never be labelled"
    user_text = processor.tokenizer.decode(ids[~mask])
    assert "What is shown?" in user_text and "Any lesion?" in user_text


def _pack(samples):
    """Concatenate samples into one row with restarting position ids (no attention mask)."""
    input_ids = torch.cat([s["input_ids"][0] for s in samples])[None]
    position_ids = torch.cat([torch.arange(s["input_ids"].shape[1]) for s in samples])[None]
    pixel_values = torch.cat([s["pixel_values"] for s in samples])
    return input_ids, position_ids, pixel_values


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_gives_the_same_logits_as_separate_samples(attn):
    model, processor = build_tiny_gmaivl(seed=1, attn_implementation=attn)
    samples = [
        encode(processor, conversation("Short?", "Yes."), [random_image(0)]),
        encode(
            processor,
            conversation("A longer question about the two images here?", "No.", 2),
            [random_image(1), random_image(2)],
        ),
        encode(processor, conversation("Third?", "The answer is B."), [random_image(3)]),
    ]
    input_ids, position_ids, pixel_values = _pack(samples)
    with torch.no_grad():
        packed = model(input_ids=input_ids, position_ids=position_ids, pixel_values=pixel_values).logits[0]
        start = 0
        for sample in samples:
            alone = model(input_ids=sample["input_ids"], pixel_values=sample["pixel_values"]).logits[0]
            torch.testing.assert_close(packed[start : start + len(alone)], alone, atol=1e-5, rtol=1e-5)
            start += len(alone)


def test_eager_and_sdpa_agree_and_registered_attention_is_used(tiny):
    model, processor = tiny
    inputs = encode(processor, conversation("Q?", "A."), [random_image(0)])
    with torch.no_grad():
        reference = model(**inputs).logits
    calls = []

    def counting_attention(module, query, key, value, attention_mask, **kwargs):
        calls.append(query.shape)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("gmaivl_test_counting", counting_attention)
    for name in ("eager", "gmaivl_test_counting"):
        model.set_attn_implementation(name)
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).logits, reference, atol=1e-5, rtol=1e-5)
    model.set_attn_implementation("sdpa")
    # Vision tower (2 layers) and language model (2 layers) both dispatched to the registered function.
    assert len(calls) == 4


def test_gradient_checkpointing_backward_matches_plain_backward():
    model, processor = build_tiny_gmaivl(seed=2)
    model.train()
    inputs = encode(processor, conversation("Q?", "A CT."), [random_image(0)])
    labels = inputs["input_ids"].clone()

    def grads():
        model.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert model.model.language_model.gradient_checkpointing
    assert model.model.vision_tower.encoder.gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    assert any(n.startswith("model.vision_tower") for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_config_rejects_parts_that_do_not_fit():
    text = Qwen2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=100).to_dict()
    vision = CLIPVisionConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14
    ).to_dict()
    with pytest.raises(ValueError, match="needs a causal language model.*'vit'"):
        GMAIVLConfig(vision_config=vision, text_config=ViTConfig().to_dict())
    with pytest.raises(
        ValueError, match="ViT-style vision encoder.*'resnet'.*image_size, patch_size, hidden_size"
    ):
        GMAIVLConfig(vision_config=ResNetConfig().to_dict(), text_config=text)
    with pytest.raises(ValueError, match="multiple of its patch_size"):
        GMAIVLConfig(vision_config={**vision, "image_size": 30}, text_config=text)
    with pytest.raises(ValueError, match="vision_feature_layer=-5 is outside"):
        GMAIVLConfig(vision_config=vision, text_config=text, vision_feature_layer=-5)
    config = GMAIVLConfig(vision_config=vision, text_config=text, image_token_id=99)
    assert config.num_image_tokens == 4
    assert (
        GMAIVLConfig(
            vision_config=vision, text_config=text, vision_feature_select_strategy="full"
        ).num_image_tokens
        == 5
    )
    model = GMAIVLForConditionalGeneration(config)
    assert model.lm_head.out_features == 100


def test_default_config_is_clip_vit_l_336():
    config = GMAIVLConfig()
    assert config.vision_config.model_type == "clip_vision_model"
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (336, 14)
    assert config.vision_config.hidden_size == 1024 and config.vision_config.num_hidden_layers == 24
    assert config.num_image_tokens == 576 and config.vision_feature_layer == -2
    assert np.isclose(config.vision_config.num_attention_heads, 16)


def test_packed_rows_through_the_triton_kernel_match_sdpa():
    import gmaivl.kernels  # registers "gmaivl_packed"

    model, processor = build_tiny_gmaivl(seed=1)
    samples = [
        encode(processor, conversation("Short?", "Yes."), [random_image(0)]),
        encode(processor, conversation("Two images?", "No.", 2), [random_image(1), random_image(2)]),
    ]
    input_ids, position_ids, pixel_values = _pack(samples)
    with torch.no_grad():
        reference = model(input_ids=input_ids, position_ids=position_ids, pixel_values=pixel_values).logits
    model.model.language_model.set_attn_implementation(gmaivl.kernels.ATTENTION_NAME)
    assert model.config.text_config._attn_implementation == "gmaivl_packed"
    assert model.config.vision_config._attn_implementation == "sdpa"
    with torch.no_grad():
        packed = model(input_ids=input_ids, position_ids=position_ids, pixel_values=pixel_values).logits
    torch.testing.assert_close(packed, reference, atol=2e-5, rtol=1e-4)


def test_vision_tower_never_gets_the_packed_text_arguments():
    """LLaVA passes forward kwargs on to the vision tower; a packed row's cu_seq_lens / max_length
    describe the text and must not reach the image attention (a varlen kernel would read past the
    images with them)."""
    model, processor = build_tiny_gmaivl(seed=1)
    samples = [
        encode(processor, conversation("Short?", "Yes."), [random_image(0)]),
        encode(processor, conversation("Two images?", "No.", 2), [random_image(1), random_image(2)]),
    ]
    input_ids, position_ids, pixel_values = _pack(samples)
    lengths = torch.tensor([0] + [s["input_ids"].shape[1] for s in samples])
    cu = lengths.cumsum(0).to(torch.int32)
    seen = {}

    def spy(module, query, key, value, attention_mask, **kwargs):
        tower = "vision" if query.shape[2] == 17 else "text"  # 16 patches + CLS per image
        seen.setdefault(tower, set()).update(k for k in kwargs if k.startswith(("cu_seq", "max_length")))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("gmaivl_test_spy", spy)
    model.set_attn_implementation("gmaivl_test_spy")
    packed_kwargs = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": 60, "max_length_k": 60}
    with torch.no_grad():
        model(input_ids=input_ids, position_ids=position_ids, pixel_values=pixel_values, **packed_kwargs)
    assert seen["text"] == set(packed_kwargs) and seen["vision"] == set()
