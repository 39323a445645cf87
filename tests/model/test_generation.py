"""Every generation path of LLaVA works for GMAI-VL: greedy, sampling, beam, assisted, left-padded
batches with different image counts, static cache, an <image> emitted while decoding, and a
text-only step under torch.compile(fullgraph=True) and torch.export."""

import pytest
import torch
from transformers.integrations.executorch import TorchExportableModuleWithStaticCache

from gmaivl.core.tiny import build_tiny_gmaivl

from ._helpers import conversation, random_image


@pytest.fixture(scope="module")
def prompt(tiny_shared):
    _, processor = tiny_shared
    text = processor.apply_chat_template(conversation("What modality is this?"), add_generation_prompt=True)
    return processor(text=text, images=[random_image(0)], return_tensors="pt")


def greedy(model, inputs, **kwargs):
    with torch.no_grad():
        return model.generate(**inputs, do_sample=False, max_new_tokens=6, min_new_tokens=6, **kwargs)


def test_sampling_and_beam_search(tiny, prompt):
    model, _ = tiny
    with torch.no_grad():
        torch.manual_seed(0)
        sampled = model.generate(**prompt, do_sample=True, top_k=20, max_new_tokens=6, min_new_tokens=6)
        torch.manual_seed(0)
        again = model.generate(**prompt, do_sample=True, top_k=20, max_new_tokens=6, min_new_tokens=6)
        beams = model.generate(
            **prompt, num_beams=3, num_return_sequences=2, max_new_tokens=6, min_new_tokens=6, do_sample=False
        )
    assert torch.equal(sampled, again) and sampled.shape == (1, prompt["input_ids"].shape[1] + 6)
    assert beams.shape == (2, prompt["input_ids"].shape[1] + 6)
    assert torch.equal(beams[:, : prompt["input_ids"].shape[1]], prompt["input_ids"].expand(2, -1))


def test_assisted_generation_matches_greedy(tiny, prompt):
    """The assistant's first step runs without pixel_values (transformers' assisted decoding)."""
    model, _ = tiny
    reference = greedy(model, prompt)
    # A random draft model also drafts <image> tokens, which no LLaVA-style verifier can take (their
    # count must match the images'); a real draft model never emits them, so neither does this one.
    assistant, _ = build_tiny_gmaivl(seed=7)  # another GMAI-VL with the same tokenizer
    assistant.generation_config.suppress_tokens = [model.config.image_token_id]
    assisted = greedy(model, prompt, assistant_model=assistant)
    assert torch.equal(assisted, reference)


def test_image_token_emitted_while_decoding(tiny, prompt):
    """LLaVA goes on when the model itself emits <image>; so does GMAI-VL."""
    model, _ = tiny
    image_token_id = model.config.image_token_id
    out = greedy(model, prompt, sequence_bias={(image_token_id,): 100.0})
    new_tokens = out[0, prompt["input_ids"].shape[1] :]
    assert len(new_tokens) == 6 and (new_tokens == image_token_id).all()


def test_left_padded_batch_with_different_image_counts(tiny):
    model, processor = tiny
    texts = [
        processor.apply_chat_template(conversation("Compare.", n_images=2), add_generation_prompt=True),
        processor.apply_chat_template(conversation("Is there a fracture?"), add_generation_prompt=True),
        processor.apply_chat_template(
            [{"role": "user", "content": "No image: which department?"}], add_generation_prompt=True
        ),
    ]
    images = [[random_image(1), random_image(2, (30, 70))], [random_image(3)], []]
    batch = processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    assert batch["pixel_values"].shape[0] == 3 and (batch["attention_mask"] == 0).any()
    out = greedy(model, batch)
    width = batch["input_ids"].shape[1]
    for i, (text, row_images) in enumerate(zip(texts, images)):
        alone = processor(text=[text], images=[row_images] if row_images else None, return_tensors="pt")
        single = greedy(model, alone)
        assert torch.equal(out[i, width:], single[0, alone["input_ids"].shape[1] :]), f"row {i}"


def test_static_cache_matches_dynamic_cache(tiny, prompt):
    model, processor = tiny
    assert torch.equal(greedy(model, prompt, cache_implementation="static"), greedy(model, prompt))
    texts = [
        processor.apply_chat_template(conversation("Two?", n_images=2), add_generation_prompt=True),
        processor.apply_chat_template(conversation("One?"), add_generation_prompt=True),
    ]
    images = [[random_image(4), random_image(5)], [random_image(6)]]
    batch = processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    assert torch.equal(greedy(model, batch, cache_implementation="static"), greedy(model, batch))


def test_text_only_forward_compiles_with_fullgraph(tiny, prompt):
    """No data-dependent host check in a text-only step: dynamo traces it without a graph break."""
    model, _ = tiny
    torch._dynamo.reset()
    inputs = {"input_ids": prompt["input_ids"], "attention_mask": prompt["attention_mask"]}
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        reference = model(**inputs, use_cache=False).logits
        logits = compiled(**inputs, use_cache=False).logits
    torch.testing.assert_close(logits, reference)
    torch._dynamo.reset()


def test_decode_step_exports_with_static_cache(tiny, prompt):
    model, _ = tiny
    model.generation_config.cache_implementation = "static"
    try:
        exportable = TorchExportableModuleWithStaticCache(model, batch_size=1, max_cache_len=64)
        ids = prompt["input_ids"][:, :1]
        program = torch.export.export(
            exportable, args=(), kwargs={"input_ids": ids, "cache_position": torch.tensor([0])}, strict=False
        )
    finally:
        model.generation_config.cache_implementation = None
    # The exported decode step, fed the prompt token by token, predicts what the model predicts.
    text = prompt["input_ids"][:, prompt["input_ids"][0] != model.config.image_token_id][:, :12]
    generated = TorchExportableModuleWithStaticCache.generate(program, text, max_new_tokens=4)
    with torch.no_grad():
        reference = model.generate(input_ids=text, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(generated, reference)


def test_inherits_generation_mixin_directly():
    # transformers' GenerationTesterMixin.test_inherits_generation_mixin, whose file PyPI's sdist
    # does not ship: a generative class names GenerationMixin among its direct bases.
    from gmaivl import GMAIVLForConditionalGeneration

    assert "GenerationMixin" in str(GMAIVLForConditionalGeneration.__bases__)
    assert GMAIVLForConditionalGeneration.can_generate()
