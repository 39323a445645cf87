"""Correctness of the Triton packed-attention kernels (CPU: Triton interpreter, fp32 and fp16)."""

from __future__ import annotations

import pytest
import torch

from gmaivl.kernels import packed_attention, packed_attention_reference, seqlens_to_cu

from ._helpers import make_inputs, max_err, run_and_compare

DTYPES = [torch.float32, torch.float16]
# lengths around the block sizes (the interpreter tiles are 16 and 32 rows), empty and tiny ones
EDGE_LENS = [0, 1, 2, 113, 127, 128, 129]


def _random_lens(n: int, hi: int, seed: int) -> list[int]:
    return torch.randint(0, hi, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize(
    ("dtype", "causal", "kv_heads", "deterministic"),
    [
        (torch.float32, True, 1, False),  # MQA, dQ by atomics
        (torch.float32, False, 2, True),  # MHA, dQ in its own pass
        (torch.float16, True, 2, True),
        (torch.float16, False, 1, False),
    ],
    ids=["fp32-causal-mqa-atomic", "fp32-bidir-mha-det", "fp16-causal-mha-det", "fp16-bidir-mqa-atomic"],
)
def test_edge_lengths(dtype, causal, kv_heads, deterministic):
    """All edge lengths plus random ones in one pack, head dim 64 (GQA: the tests below)."""
    lens = EDGE_LENS + _random_lens(3, 90, seed=1)
    run_and_compare(lens, lens, 2, kv_heads, 64, dtype, causal, deterministic=deterministic)


@pytest.mark.parametrize(
    ("head_dim", "heads", "kv_heads", "dtype", "causal"),
    [
        (32, 3, 3, torch.float16, True),  # MHA
        (32, 3, 1, torch.float32, False),  # MQA
        (59, 6, 2, torch.float16, False),  # non power of two, GQA 6 over 2
        (59, 3, 1, torch.float32, True),
        (64, 2, 2, torch.float32, True),
        (128, 2, 1, torch.float16, True),
        (128, 2, 2, torch.float32, False),
    ],
)
def test_head_dims_and_head_layouts(head_dim, heads, kv_heads, dtype, causal):
    lens = [1, 37, 0, 70, 16]
    run_and_compare(lens, lens, heads, kv_heads, head_dim, dtype, causal, seed=head_dim + heads)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_different_query_and_key_lengths(dtype, causal):
    """seqlen_q != seqlen_k per sequence: causal is bottom-right aligned, as flash-attn >= 2.1.

    Sequences with more queries than keys have leading rows that see nothing (output 0), and
    empty query or key sequences sit next to full ones. Both backward paths.
    """
    lens_q = [5, 40, 33, 0, 7, 20]
    lens_k = [17, 9, 33, 6, 0, 65]
    res = run_and_compare(
        lens_q, lens_k, 4, 2, 32, dtype, causal, seed=7, deterministic=dtype == torch.float32
    )
    if causal:
        # sequence 1: 40 queries over 9 keys, the first 31 queries see no key
        start = 5
        assert torch.all(res["out"][start : start + 31] == 0)
        assert torch.isinf(res["lse"][:, start : start + 31]).all()
        assert torch.isfinite(res["lse"][:, start + 31 : start + 40]).all()
    # queries of sequence 4 have no key at all
    assert torch.all(res["out"][5 + 40 + 33 : 5 + 40 + 33 + 7] == 0)


@pytest.mark.parametrize(
    ("dtype", "window", "deterministic"),
    [(torch.float32, 7, False), (torch.float16, 20, True), (torch.float32, 0, True)],
    ids=["fp32-w7-atomic", "fp16-w20-det", "fp32-w0-diagonal-only"],
)
def test_causal_sliding_window(dtype, window, deterministic):
    """window_size=(w, 0): query i sees keys i+diag-w .. i+diag, a band the kernels skip outside of.

    Lengths straddle the tiles and the window; seqlen_q != seqlen_k keeps the band bottom-right.
    """
    lens_q = [5, 40, 33, 0, 70, 20]
    lens_k = [17, 9, 33, 6, 70, 65]
    res = run_and_compare(
        lens_q, lens_k, 4, 2, 32, dtype, True, seed=window, deterministic=deterministic, window_left=window,
        atol=1e-5 if dtype == torch.float32 else 1e-3,
    )  # fmt: skip
    if window == 0:  # each query sees exactly its diagonal key: the output is that value row
        q0, k0 = 5 + 40 + 33, 17 + 9 + 33 + 6  # sequence 4 (70 x 70)
        torch.testing.assert_close(
            res["out"][q0 : q0 + 70].float(),
            res["v"][k0 : k0 + 70].detach().float().repeat_interleave(2, 1),
            rtol=0,
            atol=1e-5,
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
def test_single_key_causal_nan_regression(dtype):
    """One key under causal masking: only the last query sees it; no NaN anywhere, also in grads."""
    # softmax over one key is exactly 1, so dq is exactly 0 in PyTorch; the kernel's exp2/log2 round
    # trip leaves a few ulps: allow that much absolutely
    atol = 1e-5 if dtype == torch.float32 else 1e-3
    res = run_and_compare([9, 1, 24], [1, 1, 1], 2, 1, 32, dtype, causal=True, seed=3, atol=atol)
    out, dq, dk, dv = res["out"], *res["grads"]
    for t in (out, dq, dk, dv):
        assert not torch.isnan(t).any()
    # each sequence's last query sees its single key: the output is that value row exactly
    v = res["v"].detach()
    for last, key in ((8, 0), (9, 1), (33, 2)):
        torch.testing.assert_close(out[last].float(), v[key].float().expand(2, -1), rtol=0, atol=1e-3)
    assert torch.all(out[:8] == 0) and torch.all(out[10:33] == 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
def test_inputs_scaled_by_three(dtype):
    """Large logits (inputs x3) stress the online softmax rescaling."""
    lens = [50, 1, 77]
    run_and_compare(lens, lens, 2, 1, 64, dtype, causal=True, scale=3.0, seed=11)


@pytest.mark.parametrize("layout", ["head_major", "strided_last_dim"])
def test_non_contiguous_grad_output(layout):
    lens = [20, 45]
    total, heads, dim = sum(lens), 2, 32
    if layout == "head_major":  # strides (D, T*D, 1): kernel reads strides as they are
        grad = torch.randn(heads, total, dim, dtype=torch.float16).transpose(0, 1)
    else:  # last dim not contiguous: copied before the kernels
        grad = torch.randn(total, heads, 2 * dim, dtype=torch.float16)[..., ::2]
    assert not grad.is_contiguous()
    run_and_compare(lens, lens, heads, 1, dim, torch.float16, causal=True, seed=5, grad_out=grad)
    # and the result equals the one with a contiguous copy of the same gradient
    q, k, v, cu, _ = make_inputs(lens, lens, heads, 1, dim, torch.float16, seed=5)
    out = packed_attention(q, k, v, cu, cu, max(lens), max(lens))
    g1 = torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
    g2 = torch.autograd.grad(out, (q, k, v), grad.contiguous())
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_non_contiguous_inputs():
    """q/k/v as views of a fused (T, 3, H, D) projection, like transformers produces."""
    lens = [30, 3]
    qkv = torch.randn(sum(lens), 3, 2, 32, dtype=torch.float32, requires_grad=True)
    q, k, v = qkv.unbind(1)
    cu = seqlens_to_cu(lens)
    out = packed_attention(q, k, v, cu, cu, 30, 30)
    ref = packed_attention_reference(q, k, v, cu, cu)
    assert max_err(out, ref) < 1e-5
    (g,) = torch.autograd.grad(out.sum(), qkv)
    (rg,) = torch.autograd.grad(ref.sum(), qkv)
    assert max_err(g, rg) < 1e-4
    # cu_seqlens as a strided view (a column of a (batch + 1, 2) table) is read by value
    cu_view = torch.stack([cu, torch.full_like(cu, 99)], 1)[:, 0]
    assert not cu_view.is_contiguous()
    out = packed_attention(q, k, v, cu_view, cu_view, 30, 30)
    assert max_err(out, ref) < 1e-5
    (g,) = torch.autograd.grad(out.sum(), qkv)
    assert max_err(g, rg) < 1e-4


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_no_leak_between_packed_sequences(causal):
    """Changing one packed sequence leaves every other sequence's outputs and grads bit-identical."""
    lens = [23, 40, 1, 37]
    starts = seqlens_to_cu(lens).tolist()
    q, k, v, cu, _ = make_inputs(lens, lens, 4, 2, 32, torch.float16, seed=21)
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(4)).half()

    def run(q, k, v, grad):
        q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
        # deterministic: on a GPU the atomic dQ's summation order varies from run to run
        out = packed_attention(q, k, v, cu, cu, max(lens), max(lens), causal=causal, deterministic=True)
        return (out, *torch.autograd.grad(out, (q, k, v), grad))

    base = run(q, k, v, grad)
    s, e = starts[1], starts[2]  # perturb sequence 1 only: inputs and its gradient
    q2, k2, v2, grad2 = (t.detach().clone() for t in (q, k, v, grad))
    for t in (q2, k2, v2, grad2):
        t[s:e] = torch.randn(t[s:e].shape).to(t.dtype) * 2
    changed = run(q2, k2, v2, grad2)
    keep = torch.ones(sum(lens), dtype=torch.bool)
    keep[s:e] = False
    for a, b in zip(base, changed):
        assert torch.equal(a[keep], b[keep])
        assert not torch.equal(a[~keep], b[~keep])  # the perturbed sequence did change


def test_deterministic_backward_is_bit_reproducible():
    """deterministic=True: dQ in its own pass, no atomics, so repeated backward passes are equal.

    (The default atomic dQ is not asserted reproducible: on a GPU its summation order varies.)
    """
    lens = [40, 50]
    q, k, v, cu, _ = make_inputs(lens, lens, 4, 2, 32, torch.float16, seed=8)
    out = packed_attention(q, k, v, cu, cu, 50, 50, deterministic=True)
    grad = torch.randn_like(out)
    first = torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
    for _ in range(1):
        again = torch.autograd.grad(out, (q, k, v), grad, retain_graph=True)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


def test_offsets_past_2_to_the_31(tmp_path):
    """Row x token stride beyond 2^31 elements (one 524k-token sequence at H * D = 4096) is read right.

    q/k/v are views with a 2^26-element token stride into a sparse memory-mapped file, so rows
    32..39 of the sequence sit past 2^31 elements while only the touched pages take memory. The
    result must equal, bit for bit, the same computation on contiguous copies.
    """
    rows, heads, dim, stride = 40, 2, 16, 2**26
    path = tmp_path / "sparse.bin"
    numel = (rows - 1) * stride + 3 * heads * dim
    with open(path, "wb") as f:
        f.truncate(numel * 2)  # a hole: no disk or memory until written
    storage = torch.from_file(str(path), shared=False, size=numel, dtype=torch.float16)
    q, k, v = (storage.as_strided((rows, heads, dim), (stride, dim, 1), i * heads * dim) for i in range(3))
    gen = torch.Generator().manual_seed(0)
    for t in (q, k, v):
        t.copy_(torch.randn(t.shape, generator=gen).half())
    assert (rows - 1) * q.stride(0) >= 2**31
    cu = seqlens_to_cu([rows])
    grad = torch.randn(rows, heads, dim, generator=gen).half()
    results = []
    for inputs in ((q, k, v), (q.contiguous(), k.contiguous(), v.contiguous())):
        leaves = [t.detach().requires_grad_() for t in inputs]
        out = packed_attention(*leaves, cu, cu, rows, rows, deterministic=True)
        results.append((out, *torch.autograd.grad(out, leaves, grad)))
    for strided, dense in zip(*results):
        assert torch.equal(strided, dense)
    ref = packed_attention_reference(q, k, v, cu, cu)
    assert max_err(results[0][0], ref) < 2e-3


def test_softmax_scale_and_max_seqlen_as_tensor():
    lens = [12, 31]
    q, k, v, cu, _ = make_inputs(lens, lens, 2, 2, 32, torch.float32, seed=2)
    out = packed_attention(q, k, v, cu, cu, torch.tensor(31), torch.tensor(31), softmax_scale=0.05)
    ref = packed_attention_reference(q, k, v, cu, cu, softmax_scale=0.05)
    assert max_err(out, ref) < 1e-5
    # a different scale gives a different answer (the argument is not ignored)
    assert max_err(packed_attention(q, k, v, cu, cu, 31, 31), ref) > 1e-3


def test_all_sequences_empty_and_trailing_tokens():
    q, k, v, _, _ = make_inputs([5], [5], 2, 1, 32, torch.float32)
    cu = torch.tensor([0, 0, 0], dtype=torch.int32)
    out, lse = packed_attention(q, k, v, cu, cu, 0, 0, return_lse=True)
    assert torch.all(out == 0) and torch.isinf(lse).all()
    (dq,) = torch.autograd.grad(out.sum(), (q,))
    assert torch.all(dq == 0)
    # tokens after cu_seqlens[-1] belong to no sequence: zero output, zero grads
    cu = torch.tensor([0, 3], dtype=torch.int32)
    out = packed_attention(q, k, v, cu, cu, 3, 3)
    assert torch.all(out[3:] == 0) and torch.any(out[:3] != 0)
    dq, dk = torch.autograd.grad(out.sum(), (q, k))
    assert torch.all(dq[3:] == 0) and torch.all(dk[3:] == 0)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda a: {**a, "q": a["q"][None]}, ValueError),
        (lambda a: {**a, "k": a["k"][:, :, :16], "v": a["v"][:, :, :16]}, ValueError),
        (lambda a: {**a, "q": torch.randn(a["q"].shape[0], 3, 32)}, ValueError),  # 3 heads over 2
        (lambda a: {**a, "cu_seqlens_q": a["cu_seqlens_q"].long()}, ValueError),
        (lambda a: {**a, "k": a["k"].double(), "v": a["v"].double()}, TypeError),
        (
            lambda a: {
                **a,
                "q": torch.randn(4, 2, 300),
                "k": torch.randn(4, 2, 300),
                "v": torch.randn(4, 2, 300),
            },
            ValueError,
        ),
        (lambda a: {**a, "max_seqlen_q": -1}, ValueError),
        (lambda a: {**a, "softmax_scale": -0.1}, ValueError),  # the running max assumes a positive scale
        (lambda a: {**a, "softmax_scale": 2.0**-91}, ValueError),  # masked scores would not flush to 0
        (lambda a: {**a, "softmax_scale": 2.0**17}, ValueError),  # nor stay finite
        (lambda a: {**a, "causal": False, "window_size": (4, 4)}, NotImplementedError),  # bidirectional band
        (lambda a: {**a, "window_size": (4, 2)}, NotImplementedError),  # keys past the diagonal
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(change, error):
    q, k, v, cu, _ = make_inputs([4], [4], 2, 2, 32, torch.float32)
    args = {
        "softmax_scale": None,
        "q": q,
        "k": k,
        "v": v,
        "cu_seqlens_q": cu,
        "cu_seqlens_k": cu,
        "max_seqlen_q": 4,
        "max_seqlen_k": 4,
    }
    with pytest.raises(error):
        packed_attention(**change(args))


@pytest.mark.slow
@pytest.mark.parametrize("head_dim", [32, 59, 64, 80, 96, 128, 256])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize(("heads", "kv_heads"), [(6, 6), (6, 2), (6, 1)], ids=["mha", "gqa", "mqa"])
def test_sweep(head_dim, dtype, causal, heads, kv_heads):
    """Wide sweep (not in CI): every head dim incl. 80/96/256, all head layouts, longer sequences."""
    lens = [*EDGE_LENS, 255, 256, 257, 300, *_random_lens(4, 400, seed=head_dim)]
    lens_k = [max(0, n + d) for n, d in zip(lens, [3, 0, -1, 20, -30, 0, 1, 0, 0, 9, -50, 5, 0, 0, 7])]
    run_and_compare(lens, lens, heads, kv_heads, head_dim, dtype, causal, seed=head_dim)
    run_and_compare(lens, lens_k, heads, kv_heads, head_dim, dtype, causal, scale=3.0, seed=head_dim + 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 needs a GPU (the interpreter mis-loads bf16)")
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_bf16_on_gpu(head_dim, causal):
    lens = [*EDGE_LENS, 1000, 2048, 3001]
    q, k, v, cu, _ = make_inputs(lens, lens, 8, 2, head_dim, torch.float32, seed=1)
    q, k, v = (t.detach().cuda().bfloat16().requires_grad_() for t in (q, k, v))
    cu = cu.cuda()
    out = packed_attention(q, k, v, cu, cu, max(lens), max(lens), causal=causal)
    grad = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    ref = packed_attention_reference(q, k, v, cu, cu, causal=causal)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad.float())
    pt = packed_attention_reference(q, k, v, cu, cu, causal=causal, upcast=False)
    pt_grads = torch.autograd.grad(pt, (q, k, v), grad)
    assert max_err(out, ref) <= 2 * max_err(pt, ref) + 1e-3
    for g, rg, pg in zip(grads, ref_grads, pt_grads):
        assert max_err(g, rg) <= 3 * max_err(pg, rg) + 1e-3


@pytest.mark.parametrize("head_dim", [64, 48], ids=["d64", "d48-zero-filled-columns"])
def test_tensor_descriptor_forward(monkeypatch, head_dim):
    """The Hopper path (Q/K/V through tensor descriptors bounded by each sequence) in the interpreter.

    Descriptor loads zero-fill rows past a sequence and columns past the head dim instead of
    masking; the output must equal the pointer path's bit for bit, and meet the accuracy rule.
    """
    from gmaivl.kernels import varlen

    lens = [5, 0, 40, 1, 33]
    q, k, v, cu, _ = make_inputs(lens, lens, 4, 2, head_dim, torch.float16, seed=13)
    calls = []
    real = varlen._tma_usable
    monkeypatch.setattr(varlen, "_tma_usable", lambda *t: calls.append(real(*t)) or calls[-1])
    monkeypatch.setattr(varlen, "TMA_MODE", "on")
    with torch.no_grad():
        tma = packed_attention(q, k, v, cu, cu, 40, 40)
        monkeypatch.setattr(varlen, "TMA_MODE", "off")
        pointers = packed_attention(q, k, v, cu, cu, 40, 40)
    assert calls == [True, False]
    assert torch.equal(tma, pointers)
    ref = packed_attention_reference(q, k, v, cu, cu)
    same = packed_attention_reference(q, k, v, cu, cu, upcast=False)
    assert max_err(tma, ref) <= 2 * max_err(same, ref) + 1e-3
    # misaligned views (a token stride of 59 halves) fall back to pointer loads
    odd = torch.randn(10, 59, dtype=torch.float16)[:, :48].reshape(10, 1, 48)
    monkeypatch.setattr(varlen, "TMA_MODE", "on")
    assert not real(odd, odd, odd)


@pytest.mark.parametrize(
    ("dtype", "head_dim", "deterministic"),
    [(torch.float32, 32, False), (torch.float16, 48, True)],
    ids=["fp32-d32-atomic-dq", "fp16-d48-deterministic-zero-filled-columns"],
)
def test_tensor_descriptor_backward(monkeypatch, dtype, head_dim, deterministic):
    """The Hopper backward (Q/dO/K/V through tensor descriptors, in the dK/dV kernel's GQA loop and
    the dQ kernel) in the interpreter: gradients equal the pointer path's bit for bit. A dO whose
    token stride is not 16-byte aligned sends the backward (not the forward) back to pointers."""
    from gmaivl.kernels import varlen

    lens = [5, 0, 37, 1]
    q, k, v, cu, _ = make_inputs(lens, lens, 2, 1, head_dim, dtype, seed=17)
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    calls = []
    real = varlen._tma_usable
    monkeypatch.setattr(varlen, "_tma_usable", lambda *t: calls.append(real(*t)) or calls[-1])

    def grads(mode, grad_out):
        monkeypatch.setattr(varlen, "TMA_MODE", mode)
        out = packed_attention(q, k, v, cu, cu, 37, 37, deterministic=deterministic)
        return torch.autograd.grad(out, (q, k, v), grad_out)

    tma = grads("on", grad)
    pointers = grads("off", grad)
    assert calls == [True, True, False, False]  # forward, then backward, of each run
    for a, b in zip(tma, pointers):
        assert torch.equal(a, b)
    ref = torch.autograd.grad(packed_attention_reference(q, k, v, cu, cu), (q, k, v), grad.float())
    same = torch.autograd.grad(packed_attention_reference(q, k, v, cu, cu, upcast=False), (q, k, v), grad)
    for g, r, s in zip(tma, ref, same):
        assert max_err(g, r) <= 3 * max_err(s, r) + 1e-3
    if dtype == torch.float16:  # dO as a view with a token stride of 2 x 59 halves: not aligned
        odd = torch.zeros(grad.shape[0], grad.shape[1], 59, dtype=dtype)[..., :head_dim].copy_(grad)
        calls.clear()
        fallback = grads("on", odd)
        assert calls == [True, False]
        for a, b in zip(fallback, pointers):
            assert torch.equal(a, b)


@pytest.mark.parametrize("scale", [2.0**-90, 2.0**16], ids=["smallest", "largest"])
def test_masked_blocks_at_the_ends_of_the_scale_range(scale):
    """Masked blocks clamp hidden scores to -2^99 (not -inf): at the smallest accepted scale they
    must still get weight 0 (uniform attention over the visible keys only), at the largest they
    must stay finite; rows before the first key (more queries than keys) still give 0 and +inf."""
    lens_q, lens_k = [37, 5, 20], [21, 5, 33]  # diag -16, 0, +13: empty rows, diagonal, sequence ends
    q, k, v, cu_q, cu_k = make_inputs(lens_q, lens_k, 2, 1, 32, torch.float32, seed=5)
    out, lse = packed_attention(
        q, k, v, cu_q, cu_k, 37, 33, causal=True, softmax_scale=scale, return_lse=True
    )
    ref, ref_lse = packed_attention_reference(
        q.double(), k.double(), v.double(), cu_q, cu_k, causal=True, softmax_scale=scale, return_lse=True
    )
    assert torch.isfinite(out).all()
    assert torch.all(out[:16] == 0) and torch.all(lse[:, :16] == float("inf"))  # rows 0..15 see no key
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-4)
    seen = torch.isfinite(ref_lse)
    assert torch.equal(seen, torch.isfinite(lse))
    torch.testing.assert_close(lse.double()[seen], ref_lse.double()[seen], rtol=1e-5, atol=1e-4)
