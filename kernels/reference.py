"""Plain PyTorch packed attention with flash-attn varlen semantics, for tests and benchmarks.

It loops over sequences and materialises each score matrix, so it is only for checking the Triton
kernels. ``upcast=True`` computes in a wider dtype (fp32 for fp16/bf16 inputs, fp64 for fp32
inputs): the accuracy reference. ``upcast=False`` computes in the input dtype, which measures how
much error that dtype alone costs (flash-attn's test method).
"""

from __future__ import annotations

import torch

__all__ = ["packed_attention_reference", "seqlens_to_cu"]


def seqlens_to_cu(seqlens: list[int] | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Cumulative int32 offsets ``[0, l0, l0+l1, ...]`` for a list of sequence lengths."""
    lens = torch.as_tensor(seqlens, dtype=torch.int32, device=device)
    return torch.nn.functional.pad(torch.cumsum(lens, 0, dtype=torch.int32), (1, 0))


def packed_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    causal: bool = True,
    softmax_scale: float | None = None,
    upcast: bool = True,
    return_lse: bool = False,
    window_left: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference attention; rows that see no key give 0 output (and lse ``+inf``).

    ``window_left`` (causal only): query ``i`` also needs ``j >= i + seqlen_k - seqlen_q - window_left``.
    """
    dtype = q.dtype
    if upcast:
        wide = torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32
        q, k, v = q.to(wide), k.to(wide), v.to(wide)
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    group = q.shape[1] // k.shape[1]
    cu_q = cu_seqlens_q.tolist()
    cu_k = cu_seqlens_k.tolist()
    outs, lses = [], []
    for b in range(len(cu_q) - 1):
        qs = q[cu_q[b] : cu_q[b + 1]]
        ks = k[cu_k[b] : cu_k[b + 1]].repeat_interleave(group, dim=1)
        vs = v[cu_k[b] : cu_k[b + 1]].repeat_interleave(group, dim=1)
        sq, sk = qs.shape[0], ks.shape[0]
        scores = torch.einsum("qhd,khd->hqk", qs * scale, ks)
        visible = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
        if causal:
            rows = torch.arange(sq, device=q.device)[:, None]
            cols = torch.arange(sk, device=q.device)[None, :]
            visible = cols <= rows + (sk - sq)
            if window_left is not None:
                visible &= cols >= rows + (sk - sq) - window_left
        scores = scores.masked_fill(~visible, float("-inf"))
        acc_dtype = torch.promote_types(scores.dtype, torch.float32)
        lse = torch.logsumexp(scores.to(acc_dtype), dim=-1)
        probs = torch.softmax(scores.to(acc_dtype), dim=-1)
        empty = ~visible.any(dim=-1)
        probs = probs.masked_fill(empty[None, :, None], 0.0).to(vs.dtype)
        outs.append(torch.einsum("hqk,khd->qhd", probs, vs))
        lses.append(lse.masked_fill(empty[None, :], float("inf")))
    total_q = q.shape[0]
    out = torch.zeros(total_q, q.shape[1], v.shape[2], dtype=v.dtype, device=q.device)
    lse_all = torch.full((q.shape[1], total_q), float("inf"), device=q.device, dtype=torch.float32)
    if outs:
        out[cu_q[0] : cu_q[-1]] = torch.cat(outs, 0)
        lse_all[:, cu_q[0] : cu_q[-1]] = torch.cat(lses, 1).float()
    out = out.to(dtype)
    return (out, lse_all) if return_lse else out
