"""Packing: best-fit-decreasing, labels, packed == padded loss and gradients, no leaks."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from gmaivl.trainers.packing import (
    GMAIVLDataCollator,
    PackingAttentionError,
    best_fit_decreasing,
    check_packing_attention,
)

from ._helpers import colour_row, text_row


def test_best_fit_decreasing_places_every_item_within_capacity():
    rng = random.Random(0)
    for _ in range(50):
        capacity = rng.randint(10, 200)
        lengths = [rng.randint(1, capacity) for _ in range(rng.randint(1, 60))]
        bins = best_fit_decreasing(lengths, capacity)
        flat = sorted(i for b in bins for i in b)
        assert flat == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
        # an any-fit packing never opens a bin its item fits elsewhere: no two bins could be merged
        loads = sorted(sum(lengths[i] for i in b) for b in bins)
        assert len(loads) < 2 or loads[0] + loads[1] > capacity


def test_best_fit_decreasing_picks_the_fullest_bin():
    # 8 -> bin0 (2 left), 7 -> bin1 (3 left), 5 -> bin2; then 3 fits bin1 exactly, 2 fits bin0 exactly
    assert best_fit_decreasing([5, 3, 7, 2, 2, 8, 1], 10) == [[5, 3], [2, 1], [0, 4, 6]]
    with pytest.raises(ValueError, match="capacity"):
        best_fit_decreasing([11], 10)


def test_labels_are_assistant_tokens_only(tiny):
    _, processor = tiny
    collator = GMAIVLDataCollator(processor, max_length=256)
    sample = collator.encode(colour_row("red", "red"))
    labelled = sample.input_ids[sample.labels != -100]
    assert processor.tokenizer.decode(labelled) == "red<|im_end|>"
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    n_image = int((sample.input_ids == image_id).sum())
    assert n_image == processor.num_image_tokens
    assert not (sample.labels == image_id).any()
    assert sample.labels[0] == -100


def test_bad_rows_are_named(tiny):
    _, processor = tiny
    collator = GMAIVLDataCollator(processor, max_length=256)
    row = colour_row("red", "red", rid="case-17")
    row["images"] = row["images"] * 2
    with pytest.raises(ValueError, match="case-17"):
        collator([row])
    no_answer = {"id": "case-18", "images": [], "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(ValueError, match="case-18.*assistant"):
        collator([no_answer])
    short = GMAIVLDataCollator(processor, max_length=8)
    with pytest.raises(ValueError, match="image tokens"):
        short([colour_row("red", "red", rid="case-19")])


def test_packed_layout(tiny, rows):
    _, processor = tiny
    padded = GMAIVLDataCollator(processor, max_length=128)(rows)
    packed = GMAIVLDataCollator(processor, max_length=128, packing=True)(rows)
    assert "attention_mask" not in packed and packed["use_cache"] is False
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
    assert packed["input_ids"].shape[1] <= 128
    # same label tokens, same images
    assert sorted(padded["labels"][padded["labels"] != -100].tolist()) == sorted(
        packed["labels"][packed["labels"] != -100].tolist()
    )
    assert packed["pixel_values"].shape == padded["pixel_values"].shape
    # position ids restart at every cu_seq_lens boundary
    flat_pos = packed["position_ids"].reshape(-1)
    cu = packed["cu_seq_lens_q"].tolist()
    assert cu[-1] == flat_pos.numel()
    for start, end in itertools.pairwise(cu):
        assert flat_pos[start:end].tolist() == list(range(end - start))
    real = int(padded["attention_mask"].sum())
    assert sum(e - s for s, e in itertools.pairwise(cu)) == packed["input_ids"].numel() >= real


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_padded_loss_and_gradients(rows, attn):
    from gmaivl.core.tiny import build_tiny_gmaivl

    model, processor = build_tiny_gmaivl(seed=1, attn_implementation=attn)
    model.train()
    padded = GMAIVLDataCollator(processor, max_length=128, attn_implementation=attn)(rows)
    packed = GMAIVLDataCollator(processor, max_length=128, packing=True, attn_implementation=attn)(rows)
    # rows are re-ordered by packing, so image order differs: feed each its own pixel_values
    loss_a, grads_a = _loss_and_grads(model, padded)
    loss_b, grads_b = _loss_and_grads(model, packed)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packed_samples_do_not_see_each_other(tiny):
    model, processor = tiny
    collator = GMAIVLDataCollator(processor, max_length=256, packing=True)
    first = text_row("Which organ is abnormal?", "The liver.")
    variants = [colour_row("red", "red"), colour_row("blue", "a long answer about a blue image")]
    outputs = []
    for second in variants:
        samples = [collator.encode(first), collator.encode(second)]
        batch = collator._build([samples])  # one row: first, then second
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        outputs.append(logits[0, : len(samples[0])])
    assert torch.equal(outputs[0], outputs[1])  # bit-identical whatever follows

    # the same row with an attention mask (or a KV cache) leaks: the guard must refuse it
    samples = [collator.encode(first), collator.encode(variants[1])]
    batch = collator._build([samples])
    alone = collator._build([[samples[1]]])
    with torch.no_grad():
        masked = {k: v for k, v in batch.items() if k != "labels"}
        masked["attention_mask"] = torch.ones_like(batch["input_ids"])
        leaky = model(**masked).logits[0, len(samples[0]) :]
        clean = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, len(samples[0]) :]
        ref = model(**{k: v for k, v in alone.items() if k != "labels"}).logits[0]
    torch.testing.assert_close(clean, ref, rtol=1e-5, atol=1e-5)
    assert (leaky - ref).abs().max() > 1e-3
    for impl in ("sdpa", "eager", "gmaivl_packed"):  # gmaivl_packed unpads by the mask, ignoring cu_seq_lens
        with pytest.raises(PackingAttentionError, match="attention_mask"):
            check_packing_attention(impl, {**masked, "use_cache": False})
    with pytest.raises(PackingAttentionError, match="use_cache"):
        check_packing_attention("sdpa", {**batch, "use_cache": True})


@pytest.mark.parametrize("impl", ["flex_attention", "paged|sdpa", None])
def test_leaky_attention_implementations_are_refused(tiny, impl):
    _, processor = tiny
    with pytest.raises(PackingAttentionError):
        GMAIVLDataCollator(processor, max_length=64, packing=True, attn_implementation=impl)
    GMAIVLDataCollator(processor, max_length=64, packing=False, attn_implementation=impl)  # padding is fine


@pytest.mark.parametrize("max_length", [128, 48])  # one packed row, then several rows
def test_triton_packed_kernel_matches_padded_sdpa(rows, max_length):
    import gmaivl.kernels  # registers "gmaivl_packed"
    from gmaivl.core.tiny import build_tiny_gmaivl

    assert gmaivl.kernels is not None
    model, processor = build_tiny_gmaivl(seed=1, attn_implementation="sdpa")
    model.train()
    subset = [rows[0], rows[1], rows[3]]
    padded = GMAIVLDataCollator(processor, max_length=max_length)(subset)
    loss_ref, grads_ref = _loss_and_grads(model, padded)
    model.set_attn_implementation("gmaivl_packed")
    collator = GMAIVLDataCollator(
        processor, max_length=max_length, packing=True, attn_implementation="gmaivl_packed"
    )
    packed = collator(subset)
    loss, grads = _loss_and_grads(model, packed)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-5)
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-3, atol=1e-5, msg=name)
