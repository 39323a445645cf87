"""The "gmaivl_packed" attention implementation inside real transformers causal LMs."""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.masking_utils import AttentionMaskInterface

import gmaivl.kernels
from gmaivl.kernels import ATTENTION_NAME, cu_seqlens_from_position_ids, register, seqlens_to_cu

LENS = [5, 17, 1, 30]


def _qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA
        max_position_embeddings=256,
    )
    return Qwen2ForCausalLM(cfg).eval()


def _llama() -> LlamaForCausalLM:
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=96,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # MHA, head dim 48: not a power of two
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(cfg).eval()


MODELS = {"qwen2": _qwen2, "llama": _llama}


def _packed_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 128, (1, sum(LENS)), generator=gen)
    pos = torch.cat([torch.arange(n) for n in LENS])[None]
    return ids, pos


def _logits(model, impl: str, **inputs) -> torch.Tensor:
    model.set_attn_implementation(impl)
    with torch.no_grad():
        return model(**inputs, use_cache=False).logits


def test_register_is_idempotent_and_named_without_flash():
    assert ATTENTION_NAME == "gmaivl_packed" and "flash" not in ATTENTION_NAME
    assert register() == register() == ATTENTION_NAME
    assert (
        AttentionInterface._global_mapping[ATTENTION_NAME]
        is gmaivl.kernels.transformers_integration.gmaivl_packed_attention_forward
    )
    assert ATTENTION_NAME in AttentionMaskInterface._global_mapping


def test_cu_seqlens_from_position_ids():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 0, 1, 0, 1]])
    cu, max_len = cu_seqlens_from_position_ids(pos)
    assert cu.dtype == torch.int32
    assert cu.tolist() == [0, 3, 5, 6, 10, 16, 18, 20]
    assert max_len == 6
    with pytest.raises(ValueError, match="2-D position_ids"):
        cu_seqlens_from_position_ids(torch.zeros(3, 1, 4, dtype=torch.long))


@pytest.mark.parametrize("name", list(MODELS))
def test_packed_logits_match_sdpa_block_diagonal(name):
    """Same logits as sdpa on one packed row (sdpa builds a block-diagonal mask from position_ids)."""
    model = MODELS[name]()
    ids, pos = _packed_inputs()
    ref = _logits(model, "sdpa", input_ids=ids, position_ids=pos)
    out = _logits(model, ATTENTION_NAME, input_ids=ids, position_ids=pos)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # and the packing really matters: one causal sequence over the whole row is different
    whole = _logits(model, "sdpa", input_ids=ids)
    assert (whole - ref).abs().max() > 1e-2


@pytest.mark.parametrize("name", list(MODELS))
def test_cu_seq_lens_kwargs_path(name):
    """Collator-provided cu_seq_lens/max_length (no per-layer derivation) give the same logits."""
    model = MODELS[name]()
    ids, pos = _packed_inputs(1)
    cu = seqlens_to_cu(LENS)
    ref = _logits(model, "sdpa", input_ids=ids, position_ids=pos)
    for max_names in (("max_length_q", "max_length_k"), ("max_seqlen_q", "max_seqlen_k")):
        kwargs = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, max_names[0]: max(LENS), max_names[1]: max(LENS)}
        out = _logits(model, ATTENTION_NAME, input_ids=ids, position_ids=pos, **kwargs)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_padded_batch_matches_sdpa(name):
    """A 2-D padding mask (left and right padding): unpadded, attended, re-padded."""
    model = MODELS[name]()
    ids = torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1] * 10 + [0] * 6, [0] * 3 + [1] * 13, [1] * 16])
    ref = _logits(model, "sdpa", input_ids=ids, attention_mask=mask)
    out = _logits(model, ATTENTION_NAME, input_ids=ids, attention_mask=mask)
    keep = mask.bool()
    torch.testing.assert_close(out[keep], ref[keep], rtol=1e-5, atol=1e-5)


def test_training_gradients_match_sdpa():
    """Loss and parameter gradients through a packed row equal sdpa's."""
    model = _qwen2().train()
    ids, pos = _packed_inputs(3)
    grads = {}
    for impl in ("sdpa", ATTENTION_NAME):
        model.set_attn_implementation(impl)
        model.zero_grad()
        loss = model(input_ids=ids, position_ids=pos, labels=ids, use_cache=False).loss
        loss.backward()
        grads[impl] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    (l_ref, g_ref), (l_out, g_out) = grads["sdpa"], grads[ATTENTION_NAME]
    torch.testing.assert_close(l_out, l_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_generation_with_cache_matches_sdpa():
    """Decoding with a KV cache (queries shorter than keys, left padding) gives sdpa's tokens."""
    model = _qwen2()
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(4))
    mask = torch.tensor([[0] * 4 + [1] * 8, [1] * 12])
    outs = {}
    for impl in ("sdpa", ATTENTION_NAME):
        model.set_attn_implementation(impl)
        outs[impl] = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert torch.equal(outs["sdpa"], outs[ATTENTION_NAME])


@pytest.mark.parametrize("padded", [True, False], ids=["padding-mask", "no-mask"])
def test_static_cache_generation_matches_sdpa(padded):
    """A static cache hands over all its preallocated slots: unwritten ones must not be attended.

    With padding the 2-D mask marks the written slots; without padding (no mask at all) the
    filled length comes from position_ids. Scores of every generated step match sdpa's.
    """
    model = _qwen2()
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(4))
    kwargs = {"attention_mask": torch.tensor([[0] * 4 + [1] * 8, [1] * 12])} if padded else {}
    if not padded:
        ids = ids[1:]
    outs = {}
    for impl in ("sdpa", ATTENTION_NAME):
        model.set_attn_implementation(impl)
        outs[impl] = model.generate(
            ids, max_new_tokens=4, do_sample=False, cache_implementation="static", output_scores=True,
            return_dict_in_generate=True, **kwargs,
        )  # fmt: skip
    assert torch.equal(outs["sdpa"].sequences, outs[ATTENTION_NAME].sequences)
    for ours, ref in zip(outs[ATTENTION_NAME].scores, outs["sdpa"].scores):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_cache_without_mask_or_positions_is_refused():
    """More keys than queries, no mask, no position_ids: written slots are unknowable, so refuse."""
    from gmaivl.kernels.transformers_integration import gmaivl_packed_attention_forward as fn

    q, kv = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match="cannot tell written cache slots"):
        fn(torch.nn.Module(), q, kv, kv, None)
    with pytest.raises(ValueError, match="positions do not index cache slots"):
        fn(torch.nn.Module(), q, kv, kv, None, position_ids=torch.tensor([[20]]))
    # positions that index the cache: the first 5 slots are used, and only they are attended
    out, _ = fn(torch.nn.Module(), q, kv, kv, None, position_ids=torch.tensor([[4]]))
    ref, _ = fn(torch.nn.Module(), q, kv[:, :, :5], kv[:, :, :5], None, position_ids=torch.tensor([[4]]))
    torch.testing.assert_close(out, ref)


def _sliding_models():
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    torch.manual_seed(2)
    moe = Qwen2MoeConfig(
        vocab_size=128, hidden_size=64, intermediate_size=64, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
        max_window_layers=2, max_position_embeddings=256,
    )  # fmt: skip
    dense = Qwen2Config(
        vocab_size=128, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256,
    )  # fmt: skip
    return {"qwen2_moe": Qwen2MoeForCausalLM(moe).eval(), "qwen2-layer-types": Qwen2ForCausalLM(dense).eval()}


@pytest.mark.parametrize("name", ["qwen2_moe", "qwen2-layer-types"])
def test_sliding_window_layers_match_sdpa(name):
    """The window is a band in the kernels, read from wherever the model keeps it.

    Qwen2-MoE keeps it on the module without passing it; the Qwen2 config names sliding layers in
    layer_types. A 20-token sequence over an 8-token window, and a pack of 14 + 11 tokens, give
    sdpa's logits; without the window they would not.
    """
    model = _sliding_models()[name]
    ids = torch.randint(0, 128, (1, 25), generator=torch.Generator().manual_seed(5))
    for inputs in (
        {"input_ids": ids[:, :20]},
        {"input_ids": ids, "position_ids": torch.tensor([[*range(14), *range(11)]])},
    ):
        ref = _logits(model, "sdpa", **inputs)
        out = _logits(model, ATTENTION_NAME, **inputs)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    narrow = _logits(model, ATTENTION_NAME, input_ids=ids[:, :20])
    model.config.sliding_window = 1000  # the window matters: a wide one changes the logits
    for layer in model.model.layers:
        if getattr(layer.self_attn, "sliding_window", None):
            layer.self_attn.sliding_window = 1000
    assert (_logits(model, ATTENTION_NAME, input_ids=ids[:, :20]) - narrow).abs().max() > 1e-3


def test_unsupported_features_raise_clear_errors():
    from gmaivl.kernels.transformers_integration import gmaivl_packed_attention_forward as fn

    module = torch.nn.Module()
    q = torch.randn(1, 2, 4, 16)
    with pytest.raises(NotImplementedError, match="dropout"):
        fn(module, q, q, q, None, dropout=0.1)
    with pytest.raises(NotImplementedError, match="softcap"):
        fn(module, q, q, q, None, softcap=30.0)
    bidirectional = torch.nn.Module()
    bidirectional.is_causal = False
    with pytest.raises(NotImplementedError, match="sliding windows only for causal"):
        fn(bidirectional, q, q, q, None, sliding_window=2)
    with pytest.raises(ValueError, match="2-D padding mask"):
        fn(module, q, q, q, torch.ones(1, 1, 4, 4, dtype=torch.bool))
