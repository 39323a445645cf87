"""`packed_attention`: FlashAttention-varlen-compatible attention over packed sequences.

The public function mirrors ``flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k,
max_seqlen_q, max_seqlen_k, softmax_scale=..., causal=...)`` and is differentiable through the
Triton backward kernels in :mod:`gmaivl.kernels.triton_packed_attention`.
"""

from __future__ import annotations

import math

import torch
import triton
from triton import knobs

from . import triton_packed_attention as _k
from .tiles import tile_capacity, tile_table

__all__ = ["interpreter_active", "packed_attention"]

_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256


def interpreter_active() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    return bool(knobs.runtime.interpret)


# --------------------------------------------------------------------------------------------
# Launch configurations. On a GPU the kernels are autotuned (per head dim, GQA group, causality,
# dtype and a power-of-two bucket of the longest sequence); in the interpreter a small fixed
# configuration keeps CPU tests fast while still giving several blocks per sequence.
# --------------------------------------------------------------------------------------------
INTERPRETER_BLOCKS: dict[str, tuple[int, int]] = {
    "fwd": (32, 16),  # (BLOCK_M queries, BLOCK_N keys)
    "dkdv": (16, 32),
    "dq": (32, 16),
}
_PREPROCESS_BLOCK_M = 64 if not interpreter_active() else 128
#: Columns past ``total_q`` in each head's row of the lse and delta buffers: a masked dK/dV query
#: block loads lse and delta for all its BLOCK_M rows unmasked (rows past the sequence end read the
#: next sequence's or this padding's finite values and are then given lse = +inf), so up to
#: ``max(TABLE_BLOCKS) - 1`` columns past the last token must be allocated and finite.
LSE_PAD = max(_k.TABLE_BLOCKS)
_TUNE_KEY = ["SEQ_BUCKET", "HEAD_DIM", "GROUP", "CAUSAL", "DOT_PREC", "WINDOW"]


def _tile(bm: int, bn: int, warps: int, stages: int = 2) -> triton.Config:
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


#: The tiles each kernel is autotuned over on a GPU for fp16/bf16, per head-dim tile BLOCK_D
#: <= 64, <= 128, <= 256: (BLOCK_M, BLOCK_N, warps, stages). Built from the sm_90 bf16 causal
#: compile report of these kernels (benchmarks/results/compile_report_sm90_bf16_causal.md,
#: 2026-11-30): only tiles that compile there without register spills. Dropped for spilling:
#: fwd 128x128 w8 s2 at d=128 (24 B), fwd 128x64 w4 s3 at d=64 (24 B), dK/dV 32x128 w8 s2
#: (80 B), 64x64 w8 s3 (208 B) and 32x64 w4 s3 (152 B) at d=128 and 64x64 w4 s3 at d=64 (32 B).
#: 128 x 128 forward tiles are in where they do not spill (d <= 64). Head dims above 128 were not
#: compiled in that report: their small tiles are the earlier list's.
#: Triton 3.6 (the GPU images) spills on four more listed tiles, dropped for both versions
#: (compile_report_sm90_bf16_causal_triton36.md, 2026-12-07): dkdv 64x128 w8 s2 at d=64 (84 B),
#: dkdv_tma 32x128 w8 s2 (256 B), dkdv_det_tma 64x64 w8 s2 (84 B), dq_tma 128x128 w8 s2 (112 B) at d=128.
#: The transposed atomic dQ product (every product a Hopper wgmma, 2026-12-07) makes dkdv_tma
#: 64x128 w8 s2 at d=64 spill on 3.6 (132 B): dropped too.
_TILE_TABLE: dict[str, tuple[list[tuple[int, int, int, int]], ...]] = {
    "fwd": (
        [(128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 4, 3)],
        [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 64, 8, 3)],
        [(64, 64, 8, 2), (64, 32, 4, 2), (64, 32, 8, 2), (32, 32, 4, 2)],
    ),
    # the forward with tensor descriptors (sm_90+) needs ~40 fewer registers per tile (139 vs 181
    # at 128 x 64 w8, d=128): 128 x 128 at d=128 compiles there without spills (189 registers)
    "fwd_tma": (
        [(128, 128, 8, 2), (128, 64, 8, 3), (64, 64, 4, 3)],
        [(128, 128, 8, 2), (128, 64, 8, 2), (128, 64, 8, 3), (64, 64, 8, 3)],
        [(64, 64, 8, 2), (64, 32, 4, 2), (64, 32, 8, 2), (32, 32, 4, 2)],
    ),
    "dkdv": (  # BLOCK_M queries walked per key block of BLOCK_N
        [(32, 128, 8, 2), (64, 64, 8, 3), (32, 64, 4, 3)],
        [(32, 64, 8, 2), (32, 64, 8, 3), (16, 64, 8, 3)],
        [(16, 64, 8, 2), (32, 32, 8, 2), (16, 32, 4, 2)],
    ),
    "dq": (
        [(128, 64, 8, 2), (64, 128, 4, 2), (64, 128, 8, 2), (64, 64, 4, 3), (128, 32, 8, 3)],
        [(128, 64, 8, 2), (64, 64, 8, 3), (64, 32, 4, 3), (64, 32, 8, 3), (128, 32, 8, 3)],
        [(64, 32, 8, 2), (32, 32, 4, 2)],
    ),
    # the backward with tensor descriptors for Q/dO/K/V (sm_90+), from the same compile report.
    # Against the pointer kernels: the dQ kernel needs ~70 fewer registers (172 vs 242 at 128 x 64
    # w8, d=128), so 128 x 128 is in at d=128 (219); the deterministic dK/dV kernel fits 64 x 64 at
    # d=128 (231); the atomic dK/dV kernel saves almost nothing (219 vs 220 at 32 x 64 w8 s3) and
    # still spills at 64 x 64 (344 B, dropped) but fits 32 x 128 w8 s2 (255, no spill; 80 B with
    # pointers). Dropped for spilling: dkdv_tma 64x64 w8 s3 / s2 at d=128 (344 / 416 B).
    "dkdv_tma": (
        [(64, 128, 8, 3), (32, 128, 8, 2), (64, 64, 8, 3), (32, 64, 4, 3)],
        [(32, 64, 8, 2), (32, 64, 8, 3), (16, 64, 8, 3)],
        [(16, 64, 8, 2), (32, 32, 8, 2), (16, 32, 4, 2)],
    ),
    "dkdv_det_tma": (  # deterministic=True: no dQ tile held in the dK/dV kernel
        [(64, 128, 8, 3), (32, 128, 8, 2), (64, 128, 8, 2), (64, 64, 8, 3), (32, 64, 4, 3)],
        [(64, 64, 8, 3), (32, 128, 8, 2), (32, 64, 8, 3), (16, 64, 8, 3)],
        [(16, 64, 8, 2), (32, 32, 8, 2), (16, 32, 4, 2)],
    ),
    "dq_tma": (
        [(128, 128, 8, 2), (128, 64, 8, 2), (64, 128, 4, 2), (64, 64, 4, 3), (128, 32, 8, 3)],
        [(128, 64, 8, 2), (128, 64, 8, 3), (64, 64, 8, 3), (64, 32, 8, 3)],
        [(64, 32, 8, 2), (32, 32, 4, 2)],
    ),
}
TUNED_TILES: dict[str, tuple[list[triton.Config], ...]] = {
    name: tuple([_tile(*t) for t in bucket] for bucket in buckets) for name, buckets in _TILE_TABLE.items()
}
#: Every 16-bit tile of a kernel (the autotuner's full list; `tuned_configs` picks by head dim).
AUTOTUNE_CONFIGS: dict[str, list[triton.Config]] = {
    name: [c for bucket in buckets for c in bucket] for name, buckets in TUNED_TILES.items()
}
#: fp32 inputs take IEEE fp32 dot products (FMA, not tensor cores): their operands and
#: accumulators need about twice the registers, and the 16-bit tiles spill kilobytes on sm_90
#: (ahead-of-time compile report, kernels/README.md). Small tiles, with 8 warps for larger head dims.
FP32_AUTOTUNE_CONFIGS: dict[str, list[triton.Config]] = {
    "fwd": [_tile(64, 32, 8), _tile(32, 32, 4), _tile(32, 32, 8), _tile(32, 16, 4), _tile(32, 16, 8)],
    "dkdv": [
        _tile(16, 32, 4),
        _tile(32, 32, 8),
        _tile(32, 16, 4),
        _tile(16, 16, 4),
        _tile(16, 32, 8),
        _tile(16, 16, 8),
    ],
    "dq": [_tile(32, 32, 4), _tile(64, 32, 8), _tile(32, 32, 8), _tile(32, 16, 4), _tile(32, 16, 8)],
}


# fp32: largest tile area (BLOCK_M * BLOCK_N) per head-dim tile BLOCK_D <= 64, <= 128, <= 256.
_FP32_TILE_AREA_LIMITS = (64 * 32, 32 * 32, 16 * 32)


def _base_kernel(name: str) -> str:
    """The kernel a tile list belongs to: "dkdv_det_tma" -> "dkdv"."""
    return name.removesuffix("_tma").removesuffix("_det")


def tuned_configs(name: str, head_dim: int, fp32: bool = False) -> list[triton.Config]:
    """The tiles the autotuner tries for a kernel, by dtype and head dim."""
    block_d = _block_d(head_dim)
    bucket = 0 if block_d <= 64 else 1 if block_d <= 128 else 2
    if not fp32:
        return TUNED_TILES[name][bucket]
    pool = FP32_AUTOTUNE_CONFIGS[_base_kernel(name)]
    area = lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"]  # noqa: E731
    return [c for c in pool if area(c) <= _FP32_TILE_AREA_LIMITS[bucket]] or [min(pool, key=area)]


def _autotuned(name: str, kernel):
    def prune(configs, named_args, **kwargs):
        meta = {**named_args, **kwargs}
        tiles = name
        if meta.get("USE_TMA"):
            tiles = "dkdv_det_tma" if name == "dkdv" and not meta["ATOMIC_DQ"] else f"{name}_tma"
        return tuned_configs(tiles, meta["HEAD_DIM"], fp32=meta["DOT_PREC"] == "ieee")

    lists = [t for t in AUTOTUNE_CONFIGS if _base_kernel(t) == name]  # pointers, descriptors
    return triton.autotune(
        configs=[c for t in lists for c in AUTOTUNE_CONFIGS[t]] + FP32_AUTOTUNE_CONFIGS[name],
        key=_TUNE_KEY + ["USE_TMA"] + (["ATOMIC_DQ"] if name == "dkdv" else []),
        prune_configs_by={"early_config_prune": prune},
        # timing a tile runs the kernel repeatedly: the atomically summed dQ must restart at 0
        reset_to_zero=["DQacc"] if name == "dkdv" else None,
    )(kernel)


if interpreter_active():
    _fwd_kernel = _k.packed_attn_fwd_kernel
    _dkdv_kernel = _k.packed_attn_bwd_dkdv_kernel
    _dq_kernel = _k.packed_attn_bwd_dq_kernel
else:  # pragma: no cover - needs a GPU
    _fwd_kernel = _autotuned("fwd", _k.packed_attn_fwd_kernel)
    _dkdv_kernel = _autotuned("dkdv", _k.packed_attn_bwd_dkdv_kernel)
    _dq_kernel = _autotuned("dq", _k.packed_attn_bwd_dq_kernel)


#: Accepted ``softmax_scale`` values: masked blocks clamp hidden scores to ``-MASK_BIG / 2``
#: (-2^99) or lower instead of -inf, which ``exp2`` must flush to 0 after scaling (scale >= 2^-90)
#: while ``-(BLOCK_N + 1) * MASK_BIG`` times the scale stays finite (scale <= 2^16).
SOFTMAX_SCALE_RANGE = (2.0**-90, 2.0**16)

#: Tensor descriptors (TMA) for the Q/K/V loads of the forward and the Q/dO/K/V loads of the
#: backward: "auto" on compute capability >= 9 when the tensors are 16-byte aligned, "on" wherever
#: aligned (the CPU interpreter too: tests), "off".
TMA_MODE = "auto"


def _tma_usable(*tensors: torch.Tensor) -> bool:
    """Descriptors need 16-byte aligned bases, token and head strides (else pointer loads)."""
    if TMA_MODE == "off" or (TMA_MODE == "auto" and interpreter_active()):
        return False
    t0 = tensors[0]
    if TMA_MODE == "auto" and not (t0.is_cuda and torch.cuda.get_device_capability(t0.device)[0] >= 9):
        return False
    return all(
        t.data_ptr() % 16 == 0 and (t.stride(0) * t.element_size()) % 16 == 0
        and (t.stride(1) * t.element_size()) % 16 == 0 and t.stride(2) == 1
        for t in tensors
    )  # fmt: skip


def _tma_scratch(size: int, alignment: int, stream) -> torch.Tensor:
    return torch.empty(size, device="cuda", dtype=torch.int8)


def _launch(kernel, name: str, heads: int, capacity, *args, **meta) -> None:
    """Launch over the flat tile table: ``capacity(block)`` tiles per head, heads fastest."""
    if interpreter_active():
        block_m, block_n = INTERPRETER_BLOCKS[name]
        block = block_n if name == "dkdv" else block_m
        kernel[(capacity(block) * heads,)](*args, **meta, BLOCK_M=block_m, BLOCK_N=block_n)
        return
    row_key = "BLOCK_N" if name == "dkdv" else "BLOCK_M"  # pragma: no cover - needs a GPU
    kernel[lambda m: (capacity(m[row_key]) * heads,)](*args, **meta)  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------
def _check_device(t: torch.Tensor) -> None:
    if t.device.type == "cpu" and not interpreter_active():
        raise RuntimeError(
            "gmaivl packed attention got CPU tensors but Triton is not in interpreter mode. Run on a CUDA "
            "device, or set TRITON_INTERPRET=1 before importing gmaivl.kernels (slow; meant for tests)."
        )


def _to_int(x: int | torch.Tensor, name: str) -> int:
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ValueError(f"{name} must be an int or a one-element tensor, got shape {tuple(x.shape)}")
        x = x.item()
    if int(x) != x or x < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {x!r}")
    return int(x)


def _validate(q, k, v, cu_q, cu_k) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(
            "packed_attention expects q (total_q, H, D) and k, v (total_k, H_kv, D); got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k head dims differ: {q.shape[2]} vs {k.shape[2]}")
    heads, kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    if kv_heads == 0 or heads % kv_heads != 0:
        raise ValueError(
            f"number of query heads ({heads}) must be a multiple of key/value heads ({kv_heads})"
        )
    if not 0 < head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head dim must be in 1..{MAX_HEAD_DIM}, got {head_dim}")
    if q.dtype not in _SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(
            f"q, k, v must share one dtype among fp16, bf16, fp32; got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    for name, cu in (("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_k)):
        if cu.dtype != torch.int32 or cu.dim() != 1 or cu.numel() < 1:
            raise ValueError(
                f"{name} must be a 1-D int32 tensor of length batch+1, got {cu.dtype} {tuple(cu.shape)}"
            )
        if cu.device != q.device:
            raise ValueError(f"{name} is on {cu.device} but q is on {q.device}")
    if cu_q.numel() != cu_k.numel():
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k differ in length: {cu_q.numel()} vs {cu_k.numel()}")
    for t in (q, k, v):
        if t.device != q.device:
            raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    _check_device(q)


NO_WINDOW = 2**29  # a left window no sequence reaches (kept small enough for int32 sums)


def _window_left(window_size: tuple[int, int], causal: bool) -> int:
    left, right = (int(x) for x in window_size)
    if left < 0 and right < 0:
        return NO_WINDOW
    if not causal or left < 0 or right not in (0, -1):
        raise NotImplementedError(
            f"packed_attention supports only causal sliding windows, window_size=(left >= 0, 0) with "
            f"causal=True; got window_size={tuple(window_size)}, causal={causal}"
        )
    return min(left, NO_WINDOW)


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs get true fp32 products (the accuracy rule is against an fp32 reference);
    # fp16/bf16 products are exact in fp32 accumulation whatever this says.
    return "ieee" if dtype == torch.float32 else "tf32"


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def kernel_meta(
    head_dim: int,
    group: int,
    causal: bool,
    dtype: torch.dtype,
    long_offsets: bool = False,
    window: bool = False,
) -> dict:
    """The compile-time arguments of the fwd / dK-dV / dQ kernels, tile sizes aside."""
    return dict(
        HEAD_DIM=head_dim,
        GROUP=group,
        CAUSAL=causal,
        DOT_PREC=_dot_precision(dtype),
        LONG_OFFSETS=long_offsets,
        WINDOW=window,
        BLOCK_D=_block_d(head_dim),
    )


def needs_long_offsets(*tensors: torch.Tensor) -> bool:
    """Whether some element of these tensors lies 2^31 or more elements past its base pointer."""
    return any(
        sum((n - 1) * s for n, s in zip(t.shape, t.stride())) >= 2**31 - 1 for t in tensors if t.numel()
    )


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------
def _forward(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, window):
    total_q, heads, head_dim = q.shape
    num_seqs = cu_q.numel() - 1
    out = torch.zeros_like(q)
    # log-sum-exp of the log2e-scaled scores (natural log * log2 e); tokens after cu_seqlens_q[-1]
    # (if any) belong to no sequence: their lse stays +inf. Each head's row is padded by
    # LSE_PAD columns (see LSE_PAD); callers get the (heads, total_q) view.
    lse = torch.full((heads, total_q + LSE_PAD), math.inf, device=q.device, dtype=torch.float32)[:, :total_q]
    if total_q == 0 or num_seqs == 0 or max_q == 0:
        return out, lse, None
    tiles_q = tile_table(cu_q, cu_k, total_q, max_q, causal)
    use_tma = _tma_usable(q, k, v)
    if use_tma and q.is_cuda:  # pragma: no cover - needs a GPU
        triton.set_allocator(_tma_scratch)  # device-side descriptors live in global scratch memory
    _launch(
        _fwd_kernel, "fwd", heads, lambda block: tile_capacity(total_q, num_seqs, max_q, block),
        q, k, v, out, lse, cu_q, cu_k, tiles_q, tiles_q.stride(0), heads,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), lse.stride(0),
        scale * _k.LOG2E, window, triton.next_power_of_2(max_q),
        **kernel_meta(
            head_dim, heads // k.shape[1], causal, q.dtype, needs_long_offsets(q, k, v, out), window < NO_WINDOW
        ),
        USE_TMA=use_tma,
    )  # fmt: skip
    return out, lse, tiles_q


def _backward(do, q, k, v, out, lse, cu_q, cu_k, tiles_q, max_q, max_k, causal, scale, window, deterministic):
    total_q, heads, head_dim = q.shape
    total_k, kv_heads = k.shape[0], k.shape[1]
    num_seqs = cu_q.numel() - 1
    dk = torch.zeros_like(k)
    dv = torch.zeros_like(v)
    if total_q == 0 or total_k == 0 or num_seqs == 0 or max_q == 0 or max_k == 0:
        return torch.zeros_like(q), dk, dv
    # 5-GEMM path: dQ summed in fp32 with atomics inside the dK/dV pass; deterministic: own pass
    dq = torch.zeros_like(q) if deterministic else torch.zeros(q.shape, device=q.device, dtype=torch.float32)
    long_offsets = needs_long_offsets(q, k, v, do, dq, dk, dv)
    common = kernel_meta(head_dim, heads // kv_heads, causal, q.dtype, long_offsets, window < NO_WINDOW)
    common["USE_TMA"] = _tma_usable(q, k, v, do)
    if common["USE_TMA"] and q.is_cuda:  # pragma: no cover - needs a GPU
        triton.set_allocator(_tma_scratch)
    # same padded layout as lse (the kernels take one head stride for both); the padding is 0
    delta = torch.zeros((heads, total_q + LSE_PAD), device=q.device, dtype=torch.float32)[:, :total_q]
    assert delta.stride(0) == lse.stride(0) == total_q + LSE_PAD
    _k.packed_attn_bwd_preprocess_kernel[(triton.cdiv(total_q, _PREPROCESS_BLOCK_M), heads)](
        out, do, delta, out.stride(0), out.stride(1), do.stride(0), do.stride(1), delta.stride(0), total_q,
        HEAD_DIM=head_dim, BLOCK_D=common["BLOCK_D"], BLOCK_M=_PREPROCESS_BLOCK_M,
    )  # fmt: skip
    tiles_k = tile_table(cu_k, cu_q, total_k, max_k, causal, rows_are_queries=False)
    _launch(
        _dkdv_kernel, "dkdv", kv_heads, lambda block: tile_capacity(total_k, num_seqs, max_k, block),
        q, k, v, do, lse, delta, dk, dv, dq, cu_q, cu_k, tiles_k, tiles_k.stride(0), kv_heads,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        do.stride(0), do.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
        dq.stride(0), dq.stride(1), lse.stride(0),
        scale, scale * _k.LOG2E, window, triton.next_power_of_2(max_q),
        **common, ATOMIC_DQ=not deterministic,
    )  # fmt: skip
    if not deterministic:
        return (dq * scale).to(q.dtype), dk, dv
    _launch(
        _dq_kernel, "dq", heads, lambda block: tile_capacity(total_q, num_seqs, max_q, block),
        q, k, v, do, lse, delta, dq, cu_q, cu_k, tiles_q, tiles_q.stride(0), heads,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        do.stride(0), do.stride(1), dq.stride(0), dq.stride(1), lse.stride(0),
        scale, scale * _k.LOG2E, window, triton.next_power_of_2(max_q),
        **common,
    )  # fmt: skip
    return dq, dk, dv


class _PackedAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, window, deterministic):
        out, lse, tiles_q = _forward(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, window)
        ctx.window = window
        ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k, tiles_q)
        ctx.max_q, ctx.max_k, ctx.causal, ctx.scale = max_q, max_k, causal, scale
        ctx.deterministic = deterministic
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, cu_q, cu_k, tiles_q = ctx.saved_tensors
        dout = _last_dim_contiguous(dout)
        dq, dk, dv = _backward(
            dout, q, k, v, out, lse, cu_q, cu_k, tiles_q, ctx.max_q, ctx.max_k, ctx.causal, ctx.scale,
            ctx.window, ctx.deterministic,
        )  # fmt: skip
        return dq, dk, dv, None, None, None, None, None, None, None, None


def packed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int | torch.Tensor,
    max_seqlen_k: int | torch.Tensor,
    causal: bool = True,
    softmax_scale: float | None = None,
    return_lse: bool = False,
    deterministic: bool = False,
    window_size: tuple[int, int] = (-1, -1),
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention over sequences packed along the first axis, like ``flash_attn_varlen_func``.

    Args:
        q: ``(total_q, H, D)``; k, v: ``(total_k, H_kv, D)`` with ``H % H_kv == 0`` (GQA/MQA: query
            head ``h`` reads key/value head ``h // (H // H_kv)``, nothing is repeated in memory).
        cu_seqlens_q, cu_seqlens_k: int32 ``(batch + 1,)`` cumulative lengths; sequence ``b`` is
            rows ``cu[b]:cu[b+1]``. Zero-length sequences are allowed.
        max_seqlen_q, max_seqlen_k: the longest query / key sequence (int or one-element tensor).
        causal: bottom-right aligned causal mask (flash-attn >= 2.1) when ``seqlen_q != seqlen_k``.
        softmax_scale: defaults to ``D ** -0.5``; must be within ``2^-90 .. 2^16``.
        return_lse: also return the log-sum-exp ``(H, total_q)`` fp32, natural log, ``+inf`` for
            rows that see no key (those rows output 0).
        deterministic: compute dQ in its own pass (bit-reproducible backward, two more matrix
            multiplies per tile) instead of summing it with fp32 atomics inside the dK/dV pass
            (flash-attn's default and ``deterministic`` flag).
        window_size: flash-attn's ``(left, right)`` local window; ``(-1, -1)`` is none. Only causal
            sliding windows: ``left >= 0`` with ``right`` 0 or -1 and ``causal=True``; query ``i``
            then sees keys ``i + diag - left .. i + diag`` (``diag = seqlen_k - seqlen_q``), a band
            the kernels skip outside of.

    Returns:
        ``out`` ``(total_q, H, D)`` in the input dtype, or ``(out, lse)``.
    """
    _validate(q, k, v, cu_seqlens_q, cu_seqlens_k)
    max_q = _to_int(max_seqlen_q, "max_seqlen_q")
    max_k = _to_int(max_seqlen_k, "max_seqlen_k")
    scale = float(softmax_scale) if softmax_scale is not None else q.shape[-1] ** -0.5
    if not scale > 0.0:  # the kernels take the running max of unscaled scores
        raise ValueError(f"softmax_scale must be positive, got {softmax_scale!r}")
    if not SOFTMAX_SCALE_RANGE[0] <= scale <= SOFTMAX_SCALE_RANGE[1]:
        # masked scores are clamped to -2^99 (not -inf): the scale must send them below exp2's
        # underflow and keep them finite
        raise ValueError(f"softmax_scale must be within 2^-90 .. 2^16, got {softmax_scale!r}")
    window = _window_left(window_size, causal)
    q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
    # the kernels index cu_seqlens as dense arrays; a strided view would be misread silently
    cu_seqlens_q, cu_seqlens_k = cu_seqlens_q.contiguous(), cu_seqlens_k.contiguous()
    out, lse_log2 = _PackedAttentionFn.apply(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_q, max_k, bool(causal), scale, window, bool(deterministic)
    )
    return (out, lse_log2 * _k.LN2) if return_lse else out
