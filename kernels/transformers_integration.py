"""Plug :func:`packed_attention` into transformers as the attention implementation "gmaivl_packed".

transformers calls an attention function as ``fn(module, query, key, value, attention_mask,
dropout, scaling, sliding_window, softcap, is_causal, **kwargs)`` with q ``(B, H, Sq, D)`` and
k/v ``(B, H_kv, Sk, D)`` (not repeated for GQA), and wants ``(out (B, Sq, H, D), None)`` back.

The mask function registered alongside is transformers' own ``flash_attention_mask``: it hands
us the 2-D padding mask (or ``None`` when nothing is padded), never a dense 4-D mask. Sequence
boundaries then come, in this order of preference, from:

1. a 2-D padding mask: padded rows are removed, attention runs on the unpadded tokens, the
   output is scattered back with zeros at padded positions;
2. ``cu_seq_lens_q/k`` with ``max_length_q/k`` (or ``max_seqlen_q/k``) in kwargs, as produced by
   padding-free collators (TRL's ``DataCollatorWithFlattening``, this project's packing collator):
   no host sync at all;
3. ``position_ids`` (no cache, ``Sq == Sk``): a new sequence starts wherever the position does not
   follow its predecessor by +1 (the rule transformers' sdpa/eager masks use), and at each row;
4. otherwise each batch row is one sequence (decoding with a KV cache included: causal masking
   is bottom-right aligned, so the new queries see the whole cache).

A static cache hands over its whole preallocated length, unfilled slots included. With a padding
mask those slots lie past the mask and are cut off; without one (no padding, so slot ``t`` holds
position ``t``) the filled length is the last query's position + 1, read from 2-D
``position_ids``. Keys and queries that cannot be matched up that way are refused, never guessed.

Sliding-window layers (``sliding_window`` passed in, a ``module.sliding_window`` as Qwen2-MoE
sets without passing it, or ``config.layer_types[layer_idx] == "sliding_attention"``) run with the
window as a band in the kernels: query ``i`` sees keys ``j`` with ``i - window < j <= i``
(transformers' convention, flash-attn's ``window_size=(window - 1, 0)``). A bidirectional layer
with a window is refused.
"""

from __future__ import annotations

import torch

from .varlen import packed_attention

ATTENTION_NAME = "gmaivl_packed"

__all__ = ["ATTENTION_NAME", "cu_seqlens_from_position_ids", "gmaivl_packed_attention_forward", "register"]


def cu_seqlens_from_position_ids(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sequence boundaries of a packed ``(B, S)`` position tensor, flattened over the batch.

    A sequence starts at every row start and wherever ``position_ids[t] != position_ids[t-1] + 1``.
    Returns int32 ``cu_seqlens`` over the ``B * S`` flattened tokens and the longest length.
    """
    if position_ids.dim() == 1:
        position_ids = position_ids[None]
    if position_ids.dim() != 2:
        raise ValueError(
            f"gmaivl_packed can derive packed sequences only from 2-D position_ids, got shape "
            f"{tuple(position_ids.shape)}; pass cu_seq_lens_q/k and max_length_q/k instead"
        )
    batch, seqlen = position_ids.shape
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    idx = starts.reshape(-1).nonzero().reshape(-1).to(torch.int32)
    end = torch.tensor([batch * seqlen], dtype=torch.int32, device=position_ids.device)
    cu = torch.cat([idx, end])
    max_len = int(cu.diff().max().item()) if cu.numel() > 1 else 0
    return cu, max_len


def _first_present(kwargs: dict, *names: str):
    for name in names:
        value = kwargs.get(name)
        if value is not None:
            return value
    return None


def _sliding_window(module: torch.nn.Module, sliding_window: int | None) -> int | None:
    """The layer's attention window in tokens (transformers: key j visible iff j > i - window)."""
    if sliding_window is None:
        sliding_window = getattr(module, "sliding_window", None)
    config = getattr(module, "config", None)
    layer_idx = getattr(module, "layer_idx", None)
    layer_types = getattr(config, "layer_types", None)
    is_sliding_layer = (
        layer_types is not None and layer_idx is not None and layer_idx < len(layer_types)
    ) and layer_types[layer_idx] == "sliding_attention"
    if sliding_window is None and is_sliding_layer:
        sliding_window = getattr(config, "sliding_window", None)
    return sliding_window or None  # 0 (Qwen2-MoE without use_sliding_window) means none


def _filled_cache_length(position_ids: torch.Tensor | None, q_len: int, kv_len: int) -> int:
    """Keys actually written when a cache (maybe static, preallocated) comes without a padding mask."""
    if position_ids is None or position_ids.dim() != 2:
        raise ValueError(
            f"gmaivl_packed attention got {q_len} queries over {kv_len} cached keys with neither an "
            "attention_mask nor 2-D position_ids, so it cannot tell written cache slots from unwritten "
            "ones (a static cache is preallocated); pass the 2-D attention_mask"
        )
    filled = int(position_ids[:, -1].max().item()) + 1
    if not q_len <= filled <= kv_len:
        raise ValueError(
            f"gmaivl_packed attention: the last query is at position {filled - 1} but the cache holds "
            f"{kv_len} keys for {q_len} queries, so positions do not index cache slots; pass the 2-D "
            "attention_mask"
        )
    return filled


def _unpad(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *x.shape[2:]).index_select(0, indices)


def gmaivl_packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention function backed by the Triton packed-attention kernels."""
    if dropout and dropout > 0.0:
        raise NotImplementedError(
            f"gmaivl_packed attention has no dropout (got attention dropout {dropout}); set the config's "
            "attention_dropout to 0.0"
        )
    if softcap is not None:
        raise NotImplementedError("gmaivl_packed attention does not support logit soft-capping (softcap)")
    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("gmaivl_packed attention does not support attention sinks (s_aux)")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    batch, heads, q_len, head_dim = query.shape
    kv_len = key.shape[2]
    if value.shape[-1] != head_dim:
        raise NotImplementedError(
            f"gmaivl_packed attention needs equal q/k and v head dims, got {head_dim} and {value.shape[-1]}"
        )
    window = _sliding_window(module, sliding_window)
    if window is not None and not is_causal:
        raise NotImplementedError(
            f"gmaivl_packed attention has sliding windows only for causal layers (window {window})"
        )
    window_size = (-1, -1) if window is None else (window - 1, 0)
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            "gmaivl_packed attention takes a 2-D padding mask (batch, keys), got shape "
            f"{tuple(attention_mask.shape)}: a custom 4-D mask cannot be expressed as packed sequences"
        )

    # (B, H, S, D) -> (B, S, H, D): the varlen layout, rows of one batch entry contiguous
    q = query.transpose(1, 2)
    k = key.transpose(1, 2)
    v = value.transpose(1, 2)

    if attention_mask is not None:
        mask = attention_mask.to(torch.bool)
        if key.shape[2] > mask.shape[-1]:  # static cache longer than the mask: ignore unused slots
            k, v = k[:, : mask.shape[-1]], v[:, : mask.shape[-1]]
            kv_len = mask.shape[-1]
        elif mask.shape[-1] != kv_len:
            raise ValueError(f"attention_mask covers {mask.shape[-1]} keys but there are {kv_len}")
        lens_k = mask.sum(-1, dtype=torch.int32)
        idx_k = mask.reshape(-1).nonzero().reshape(-1)
        cu_k = torch.nn.functional.pad(lens_k.cumsum(0, dtype=torch.int32), (1, 0))
        max_k = int(lens_k.max().item())
        if q_len == kv_len:
            idx_q, cu_q, max_q = idx_k, cu_k, max_k
        else:  # queries are the last q_len positions (left padding or decoding with a cache)
            mask_q = mask[:, -q_len:]
            lens_q = mask_q.sum(-1, dtype=torch.int32)
            idx_q = mask_q.reshape(-1).nonzero().reshape(-1)
            cu_q = torch.nn.functional.pad(lens_q.cumsum(0, dtype=torch.int32), (1, 0))
            max_q = int(lens_q.max().item())
        out = packed_attention(
            _unpad(q, idx_q), _unpad(k, idx_k), _unpad(v, idx_k), cu_q, cu_k, max_q, max_k,
            causal=is_causal, softmax_scale=scaling, window_size=window_size,
        )  # fmt: skip
        padded = out.new_zeros(batch * q_len, heads, head_dim)
        padded = padded.index_copy(0, idx_q, out)
        return padded.view(batch, q_len, heads, head_dim), None

    position_ids = kwargs.get("position_ids")
    if q_len < kv_len and kwargs.get("cu_seq_lens_k") is None:
        # decoding over a cache: a static cache also hands over its unwritten slots
        kv_len = _filled_cache_length(position_ids, q_len, kv_len)
        k, v = k[:, :kv_len], v[:, :kv_len]
    cu_q = kwargs.get("cu_seq_lens_q")
    cu_k = kwargs.get("cu_seq_lens_k")
    max_q = _first_present(kwargs, "max_length_q", "max_seqlen_q")
    max_k = _first_present(kwargs, "max_length_k", "max_seqlen_k")
    if cu_q is not None and cu_k is not None and max_q is not None and max_k is not None:
        cu_q, cu_k = cu_q.to(device=q.device, dtype=torch.int32), cu_k.to(device=q.device, dtype=torch.int32)
    else:
        if position_ids is not None and q_len == kv_len and q_len > 1:
            position_ids = position_ids.to(q.device)
            if position_ids.dim() == 2 and position_ids.shape[0] != batch:
                position_ids = position_ids.expand(batch, -1)
            cu_q, max_q = cu_seqlens_from_position_ids(position_ids)
            cu_k, max_k = cu_q, max_q
        else:
            cu_q = torch.arange(batch + 1, device=q.device, dtype=torch.int32) * q_len
            cu_k = torch.arange(batch + 1, device=q.device, dtype=torch.int32) * kv_len
            max_q, max_k = q_len, kv_len
    out = packed_attention(
        q.reshape(batch * q_len, heads, head_dim),
        k.reshape(batch * kv_len, k.shape[2], head_dim),
        v.reshape(batch * kv_len, v.shape[2], head_dim),
        cu_q, cu_k, max_q, max_k, causal=is_causal, softmax_scale=scaling, window_size=window_size,
    )  # fmt: skip
    return out.view(batch, q_len, heads, head_dim), None


def register() -> str:
    """Register "gmaivl_packed" with transformers' attention and mask interfaces (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(ATTENTION_NAME, gmaivl_packed_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, flash_attention_mask)
    return ATTENTION_NAME
