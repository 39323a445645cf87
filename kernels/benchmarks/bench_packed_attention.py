"""Throughput of packed attention: this project's Triton kernel against its peers, in one run.

For each workload (a pack of ``--total-tokens`` tokens split into realistic mixed lengths, or into
equal lengths 512 ... 16k), head dim and masking mode, it times forward and forward+backward of

* ``gmaivl``: :func:`gmaivl.kernels.packed_attention`;
* ``flex``: ``torch.nn.attention.flex_attention`` (compiled) with a document block mask;
* ``sdpa``: ``scaled_dot_product_attention`` with a dense block-diagonal mask;
* ``torch_varlen``: ``torch.nn.attention.varlen.varlen_attn`` (CUDA only);
* ``fa2`` / ``fa3``: FlashAttention's ``flash_attn_varlen_func`` when importable;

and prints TFLOP/s (forward ``4 * sum(s_i^2) * H * D``, halved when causal; backward 2.5x the
forward) and the ratio of ``gmaivl`` to each peer. On a GPU::

    python -m gmaivl.kernels.benchmarks.bench_packed_attention --json bench.json

Without a GPU, ``--tiny`` runs a small fp32 case through the Triton interpreter: it proves the
script works, its timings mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PROVIDERS = ("gmaivl", "flex", "sdpa", "torch_varlen", "fa2", "fa3")
PEAK_REFERENCE = {"fa3_paper_fwd_causal_h100_hdim128_16k": 616.0}


# ----------------------------------------------------------------------------------------------
# Workloads and FLOPs
# ----------------------------------------------------------------------------------------------
def mixed_lengths(total: int, seed: int = 0, median: int | None = None, sigma: float = 0.9) -> list[int]:
    """Lengths of a realistic SFT pack: log-normal around ``median`` tokens, summing to ``total``.

    Vision-language SFT samples are mostly a few hundred to a few thousand tokens (one image is
    576 tokens at 336 px) with a long tail; the last sample is cut to fill the pack exactly.
    The median defaults to ``total / 24`` (~680 tokens in a 16k pack).
    """
    median = median or max(8, total // 24)
    lo = max(1, median // 20)
    gen = torch.Generator().manual_seed(seed)
    lens: list[int] = []
    while sum(lens) < total:
        n = int(math.exp(math.log(median) + sigma * torch.randn((), generator=gen).item()))
        n = max(lo, min(n, total))
        lens.append(min(n, total - sum(lens)))
    return lens


def equal_lengths(total: int, seqlen: int) -> list[int]:
    if seqlen > total:
        raise ValueError(f"sequence length {seqlen} exceeds the pack of {total} tokens")
    return [seqlen] * (total // seqlen)


def attention_flops(lens: list[int], heads: int, head_dim: int, causal: bool, mode: str) -> float:
    fwd = 4.0 * sum(n * n for n in lens) * heads * head_dim
    if causal:
        fwd /= 2
    return {"fwd": fwd, "fwd_bwd": 3.5 * fwd}[mode]


# ----------------------------------------------------------------------------------------------
# Providers: each returns a zero-argument callable running one pass (or raises if unavailable)
# ----------------------------------------------------------------------------------------------
def _cu(lens: list[int], device) -> torch.Tensor:
    return torch.nn.functional.pad(torch.tensor(lens, device=device).cumsum(0), (1, 0)).to(torch.int32)


def _with_backward(
    fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor], mode: str
) -> Callable[[], None]:
    if mode == "fwd":

        def run() -> None:
            with torch.no_grad():
                fn()

        return run
    grad: list[torch.Tensor] = []

    def run_bwd() -> None:
        out = fn()
        if not grad:
            grad.append(torch.randn_like(out))
        torch.autograd.grad(out, inputs, grad[0])

    return run_bwd


def build_provider(name: str, q, k, v, lens: list[int], causal: bool, mode: str) -> Callable[[], None]:
    """q ``(T, H, D)``, k/v ``(T, H_kv, D)`` leaf tensors requiring grad."""
    total, heads, _ = q.shape
    kv_heads = k.shape[1]
    cu, max_len = _cu(lens, q.device), max(lens)
    inputs = [q, k, v]
    if name == "gmaivl":
        from gmaivl.kernels import packed_attention

        return _with_backward(
            lambda: packed_attention(q, k, v, cu, cu, max_len, max_len, causal=causal), inputs, mode
        )
    if name in ("fa2", "fa3"):
        if name == "fa2":
            from flash_attn import flash_attn_varlen_func
        else:
            from flash_attn_interface import flash_attn_varlen_func

        def fa():
            out = flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len, causal=causal)
            return out[0] if isinstance(out, tuple) else out

        return _with_backward(fa, inputs, mode)
    if name == "torch_varlen":
        if q.device.type != "cuda":
            raise RuntimeError("varlen_attn needs CUDA")
        from torch.nn.attention.varlen import varlen_attn

        window = (-1, 0) if causal else (-1, -1)
        return _with_backward(
            lambda: varlen_attn(
                q, k, v, cu, cu, max_len, max_len, window_size=window, enable_gqa=kv_heads != heads
            ),
            inputs,
            mode,
        )
    doc = torch.repeat_interleave(
        torch.arange(len(lens), device=q.device), torch.tensor(lens, device=q.device)
    )
    qt, kt, vt = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, H, T, D) views
    if name == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def document_mask(b, h, q_idx, kv_idx):
            same = doc[q_idx] == doc[kv_idx]
            return same & (q_idx >= kv_idx) if causal else same

        block_mask = create_block_mask(document_mask, 1, None, total, total, device=q.device)
        flex = torch.compile(flex_attention, dynamic=False) if q.device.type == "cuda" else flex_attention
        return _with_backward(
            lambda: flex(qt, kt, vt, block_mask=block_mask, enable_gqa=kv_heads != heads), inputs, mode
        )
    if name == "sdpa":
        mask = doc[:, None] == doc[None, :]
        if causal:
            mask &= torch.ones(total, total, dtype=torch.bool, device=q.device).tril()
        return _with_backward(
            lambda: torch.nn.functional.scaled_dot_product_attention(
                qt, kt, vt, attn_mask=mask, enable_gqa=kv_heads != heads
            ),
            inputs,
            mode,
        )
    raise ValueError(f"unknown provider {name!r}; choose from {', '.join(PROVIDERS)}")


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------
def time_ms(fn: Callable[[], None], device: torch.device, warmup: int, rep: int) -> float:
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep))
    if warmup > 0:
        fn()  # first-call costs
    times = []
    for _ in range(max(1, rep)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def environment(device: torch.device) -> dict:
    import triton

    env = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--model-dim", type=int, default=2048, help="heads = model_dim // head_dim")
    parser.add_argument("--kv-heads", type=int, default=None, help="key/value heads (default: = heads, MHA)")
    parser.add_argument("--total-tokens", type=int, default=16384)
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=["mixed", "512", "1024", "2048", "4096", "8192", "16384"],
        help="'mixed' (realistic lengths) or an equal sequence length",
    )
    parser.add_argument("--modes", nargs="+", choices=["causal", "bidir"], default=["causal", "bidir"])
    parser.add_argument("--passes", nargs="+", choices=["fwd", "fwd_bwd"], default=["fwd", "fwd_bwd"])
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument("--warmup", type=int, default=25, help="ms of warm-up (GPU)")
    parser.add_argument("--rep", type=int, default=100, help="ms of timing (GPU) or repetitions (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="CPU proof run through the Triton interpreter: fp32, 192 tokens, hdim 32, 2 heads",
    )


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.dtype, args.head_dims, args.model_dim, args.total_tokens = "fp32", [32], 64, 192
        args.workloads = [w for w in args.workloads if w == "mixed" or int(w) <= 64] or ["mixed"]
        args.rep, args.warmup = min(args.rep, 1), 0
    if device.type == "cpu":
        from gmaivl.kernels import interpreter_active

        if not interpreter_active():
            raise SystemExit(
                "no CUDA device: run with TRITON_INTERPRET=1 and --tiny to check the script on CPU"
            )
        if not args.tiny:
            print("warning: CPU interpreter timings are meaningless; use --tiny", file=sys.stderr)
    dtype = DTYPES[args.dtype]
    env = environment(device)
    print("# packed attention benchmark:", ", ".join(f"{k}={v}" for k, v in env.items()))
    results: list[dict] = []
    for workload in args.workloads:
        lens = (
            mixed_lengths(args.total_tokens, args.seed)
            if workload == "mixed"
            else equal_lengths(args.total_tokens, int(workload))
        )
        for head_dim in args.head_dims:
            heads = max(1, args.model_dim // head_dim)
            kv_heads = args.kv_heads or heads
            gen = torch.Generator(device="cpu").manual_seed(args.seed)
            total = sum(lens)
            q, k, v = (
                torch.randn(total, h, head_dim, generator=gen).to(device=device, dtype=dtype).requires_grad_()
                for h in (heads, kv_heads, kv_heads)
            )
            for mode in args.modes:
                causal = mode == "causal"
                for pass_ in args.passes:
                    flops = attention_flops(lens, heads, head_dim, causal, pass_)
                    row = {
                        "workload": workload,
                        "num_seqs": len(lens),
                        "max_seqlen": max(lens),
                        "head_dim": head_dim,
                        "heads": heads,
                        "kv_heads": kv_heads,
                        "mode": mode,
                        "pass": pass_,
                        "dtype": args.dtype,
                        "tflops": {},
                        "skipped": {},
                    }
                    for name in args.providers:
                        try:
                            fn = build_provider(name, q, k, v, lens, causal, pass_)
                            ms = time_ms(fn, device, args.warmup, args.rep)
                            row["tflops"][name] = flops / (ms * 1e-3) / 1e12
                        except Exception as exc:  # a peer missing here is reported, not fatal
                            if name == "gmaivl":
                                raise
                            row["skipped"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                    ours = row["tflops"].get("gmaivl")
                    row["ratio_vs"] = {
                        n: ours / t
                        for n, t in row["tflops"].items()
                        if n != "gmaivl" and ours is not None and t > 0
                    }
                    results.append(row)
                    print(format_row(row), flush=True)
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump({"environment": env, "reference": PEAK_REFERENCE, "results": results}, f, indent=2)
        os.replace(tmp, args.json)
    return results


def format_row(row: dict) -> str:
    parts = [
        f"{row['workload']:>6} n={row['num_seqs']:<3} d={row['head_dim']:<3} {row['mode']:<6} {row['pass']:<7}",
        " ".join(f"{n}={t:8.3g}" for n, t in row["tflops"].items()),
    ]
    if row["ratio_vs"]:
        parts.append("| gmaivl/" + " ".join(f"{n}={r:.2f}x" for n, r in row["ratio_vs"].items()))
    if row["skipped"]:
        parts.append("| n/a: " + ", ".join(sorted(row["skipped"])))
    return "  ".join(parts) + "  (TFLOP/s)"


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
