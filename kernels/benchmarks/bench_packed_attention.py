"""Throughput of packed attention: this project's Triton kernel against its peers, in one run.

For each workload (a pack of ``--total-tokens`` tokens split into realistic mixed lengths, or into
equal lengths 512 ... 16k), head dim and masking mode, it times forward and forward+backward of

* ``gmaivl``: :func:`gmaivl.kernels.packed_attention` (``gmaivl_det``: ``deterministic=True``);
* ``flex``: ``torch.nn.attention.flex_attention`` (compiled) with a document block mask;
* ``sdpa_padded``: what training without packing does: the sequences padded to the longest into
  a ``(batch, H, max_len, D)`` batch, ``scaled_dot_product_attention`` with ``is_causal`` (causal)
  or a key-padding mask (bidirectional); the padding is wasted work, FLOPs count real tokens only;
* ``sdpa_blockdiag``: sdpa on the whole pack with a dense block-diagonal mask;
* ``torch_varlen``: ``torch.nn.attention.varlen.varlen_attn`` (CUDA only);
* ``fa2`` / ``fa3``: FlashAttention's ``flash_attn_varlen_func`` when importable.

Before any provider is timed on a case its output (and, for ``fwd_bwd``, its gradients) are
checked against the fp32 reference with flash-attn's rule (2x / 3x the error of the same math in
the input dtype) on the first key/value head group; a provider that fails is reported, not timed.
Times are the median with the interquartile range (``triton.testing.do_bench`` quantiles 0.25,
0.5, 0.75). It prints TFLOP/s (forward ``4 * sum(s_i^2) * H * D``, halved when causal; backward
2.5x the forward) and the ratio of ``gmaivl`` to each peer. On a GPU, one case per command (each
well under 10 minutes; ``--list-cases`` prints them)::

    python -m gmaivl.kernels.benchmarks.bench_packed_attention --case 16k-d128 --json bench-16k-d128.json

Without a GPU, ``--tiny`` runs a small fp32 case through the Triton interpreter: it proves the
script works, its timings mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
from collections.abc import Callable

import torch

from gmaivl.app.commands.kernels_bench import CASES, PROVIDERS
from gmaivl.app.commands.kernels_bench import add_arguments as add_bench_arguments

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
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
# Providers: each gives (leaves, forward) where forward() returns the packed (T, H, D) output
# ----------------------------------------------------------------------------------------------
def _cu(lens: list[int], device) -> torch.Tensor:
    return torch.nn.functional.pad(torch.tensor(lens, device=device).cumsum(0), (1, 0)).to(torch.int32)


def provider_forward(
    name: str, q, k, v, lens: list[int], causal: bool
) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
    """Inputs the provider differentiates and a forward giving the packed ``(T, H, D)`` output.

    q ``(T, H, D)``, k/v ``(T, H_kv, D)`` leaf tensors requiring grad. Layout changes a model
    would not do per call (padding a batch, head-major views) happen here, outside the timing,
    except for the final view back to ``(T, H, D)`` which is free.
    """
    total, heads, _ = q.shape
    kv_heads = k.shape[1]
    gqa = kv_heads != heads
    cu, max_len = _cu(lens, q.device), max(lens)
    if name in ("gmaivl", "gmaivl_det"):
        from gmaivl.kernels import packed_attention

        det = name == "gmaivl_det"
        return [q, k, v], lambda: packed_attention(
            q, k, v, cu, cu, max_len, max_len, causal=causal, deterministic=det
        )
    if name in ("fa2", "fa3"):
        if name == "fa2":
            from flash_attn import flash_attn_varlen_func
        else:
            from flash_attn_interface import flash_attn_varlen_func

        def fa():
            out = flash_attn_varlen_func(q, k, v, cu, cu, max_len, max_len, causal=causal)
            return out[0] if isinstance(out, tuple) else out

        return [q, k, v], fa
    if name == "torch_varlen":
        if q.device.type != "cuda":
            raise RuntimeError("varlen_attn needs CUDA")
        from torch.nn.attention.varlen import varlen_attn

        window = (-1, 0) if causal else (-1, -1)
        return [q, k, v], lambda: varlen_attn(
            q, k, v, cu, cu, max_len, max_len, window_size=window, enable_gqa=gqa
        )
    if name == "sdpa_padded":
        return _padded_sdpa(q, k, v, lens, causal)
    doc = torch.repeat_interleave(
        torch.arange(len(lens), device=q.device), torch.tensor(lens, device=q.device)
    )
    qt, kt, vt = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, H, T, D) views

    def packed(out: torch.Tensor) -> torch.Tensor:
        return out[0].transpose(0, 1)

    if name == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def document_mask(b, h, q_idx, kv_idx):
            same = doc[q_idx] == doc[kv_idx]
            return same & (q_idx >= kv_idx) if causal else same

        block_mask = create_block_mask(document_mask, 1, None, total, total, device=q.device)
        flex = torch.compile(flex_attention, dynamic=False) if q.device.type == "cuda" else flex_attention
        return [q, k, v], lambda: packed(flex(qt, kt, vt, block_mask=block_mask, enable_gqa=gqa))
    if name == "sdpa_blockdiag":
        mask = doc[:, None] == doc[None, :]
        if causal:
            mask &= torch.ones(total, total, dtype=torch.bool, device=q.device).tril()
        return [q, k, v], lambda: packed(
            torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, enable_gqa=gqa)
        )
    raise ValueError(f"unknown provider {name!r}; choose from {', '.join(PROVIDERS)}")


def _padded_sdpa(q, k, v, lens: list[int], causal: bool):
    """sdpa on a padded (batch, H, max_len, D) batch: the layout without packing, built once."""
    heads, kv_heads = q.shape[1], k.shape[1]
    batch, max_len = len(lens), max(lens)

    def pad(t: torch.Tensor) -> torch.Tensor:
        out = t.new_zeros(batch, max_len, *t.shape[1:])
        for i, piece in enumerate(t.detach().split(lens)):
            out[i, : len(piece)] = piece
        return out.transpose(1, 2).contiguous().requires_grad_()  # (B, H, L, D), as a model has it

    qp, kp, vp = pad(q), pad(k), pad(v)
    key_ok = torch.arange(max_len, device=q.device)[None, :] < torch.tensor(lens, device=q.device)[:, None]
    mask = None if causal else key_ok[:, None, None, :]  # right padding: causal rows need no mask
    real = key_ok.reshape(-1)

    def forward() -> torch.Tensor:
        out = torch.nn.functional.scaled_dot_product_attention(
            qp, kp, vp, attn_mask=mask, is_causal=causal, enable_gqa=kv_heads != heads
        )
        return out.transpose(1, 2).reshape(batch * max_len, heads, -1)[real]  # real tokens, packed

    return [qp, kp, vp], forward


def build_provider(name: str, q, k, v, lens: list[int], causal: bool, mode: str) -> Callable[[], None]:
    """A zero-argument callable running one forward (``fwd``) or forward+backward (``fwd_bwd``) pass."""
    leaves, forward = provider_forward(name, q, k, v, lens, causal)
    if mode == "fwd":

        def run() -> None:
            with torch.no_grad():
                forward()

        return run
    grad: list[torch.Tensor] = []

    def run_bwd() -> None:
        out = forward()
        if not grad:
            grad.append(torch.randn_like(out))
        torch.autograd.grad(out, leaves, grad[0])

    return run_bwd


# ----------------------------------------------------------------------------------------------
# Correctness before timing
# ----------------------------------------------------------------------------------------------
def check_provider(name: str, q, k, v, lens: list[int], causal: bool, mode: str) -> str | None:
    """None if ``name`` meets flash-attn's accuracy rule, else what is wrong.

    Compared: query heads ``0 .. H/H_kv - 1`` and key/value head 0 (they depend on nothing else,
    which keeps the materialised fp32 reference small at 16k tokens): the output (2x the error of
    the same math in the input dtype) and, for ``fwd_bwd``, dq/dk/dv (3x). The padded sdpa
    baseline is checked on its output only (its gradients live in the padded layout).
    """
    from gmaivl.kernels.reference import packed_attention_reference

    group = q.shape[1] // k.shape[1]
    cu = _cu(lens, q.device)
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    leaves, forward = provider_forward(name, q, k, v, lens, causal)
    out = forward()
    sub = [q.detach()[:, :group], k.detach()[:, :1], v.detach()[:, :1]]
    sub = [t.clone().requires_grad_() for t in sub]
    ref = packed_attention_reference(*sub, cu, cu, causal=causal)
    same = packed_attention_reference(*sub, cu, cu, causal=causal, upcast=False)
    rows = [("out", out[:, :group], ref, same, 2)]
    if mode == "fwd_bwd" and name != "sdpa_padded":
        gen = torch.Generator().manual_seed(1)
        grad_out = torch.randn(out.shape, generator=gen).to(out.device, out.dtype)
        dq, dk, dv = torch.autograd.grad(out, leaves, grad_out)
        g = grad_out[:, :group]
        ref_g = torch.autograd.grad(ref, sub, g.to(ref.dtype))
        same_g = torch.autograd.grad(same, sub, g)
        ours = (dq[:, :group], dk[:, :1], dv[:, :1])
        rows += [(f"d{n}", o, r, s_, 3) for n, o, r, s_ in zip("qkv", ours, ref_g, same_g)]
    floor = 1e-5 if q.dtype == torch.float32 else 1e-3
    for what, ours_, wide, narrow, factor in rows:
        err = (ours_.double() - wide.double()).abs().max().item()
        base = (narrow.double() - wide.double()).abs().max().item()
        if not err <= factor * base + floor:
            return f"{what} error {err:.3g} > {factor} x {base:.3g} (same math in {q.dtype}) + {floor:g}"
    return None


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------
def time_ms(
    fn: Callable[[], None], device: torch.device, warmup: int, rep: int
) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile) of the run time in ms."""
    if device.type == "cuda":
        import triton.testing

        q25, q50, q75 = triton.testing.do_bench(fn, warmup=warmup, rep=rep, quantiles=[0.25, 0.5, 0.75])
        return float(q25), float(q50), float(q75)
    if warmup > 0:
        fn()  # first-call costs
    times = []
    for _ in range(max(1, rep)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    q = torch.tensor(times, dtype=torch.float64).quantile(
        torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    )
    return tuple(float(x) for x in q)


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
    add_bench_arguments(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict]:
    if args.list_cases:
        for name, (workload, head_dim) in CASES.items():
            print(f"{name}: --workloads {workload} --head-dims {head_dim}")
        return []
    if args.case:
        workload, head_dim = CASES[args.case]
        args.workloads, args.head_dims = [workload], [head_dim]
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
                # correctness first, once per provider and mode (gradients when a pass needs them)
                check_mode = "fwd_bwd" if "fwd_bwd" in args.passes else "fwd"
                checked: dict[str, str | None] = {}
                unavailable: dict[str, str] = {}
                for name in args.providers:
                    try:
                        checked[name] = check_provider(name, q, k, v, lens, causal, check_mode)
                    except Exception as exc:  # a peer missing here is reported, not fatal
                        if name == "gmaivl":
                            raise
                        unavailable[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
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
                        "checked": {n: "ok" if p is None else p for n, p in checked.items()},
                        "ms_quartiles": {},
                        "tflops": {},
                        "tflops_iqr": {},
                        "skipped": dict(unavailable),
                        "wrong": {n: p for n, p in checked.items() if p is not None},
                    }
                    for name in args.providers:
                        if name in row["skipped"] or name in row["wrong"]:
                            continue
                        try:
                            fn = build_provider(name, q, k, v, lens, causal, pass_)
                            q25, q50, q75 = time_ms(fn, device, args.warmup, args.rep)
                        except Exception as exc:  # e.g. out of memory for the dense mask
                            if name == "gmaivl":
                                raise
                            row["skipped"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                            continue
                        row["ms_quartiles"][name] = [q25, q50, q75]
                        row["tflops"][name] = flops / (q50 * 1e-3) / 1e12
                        row["tflops_iqr"][name] = [flops / (q75 * 1e-3) / 1e12, flops / (q25 * 1e-3) / 1e12]
                    ours = row["tflops"].get("gmaivl")
                    row["ratio_vs"] = {
                        n: ours / t
                        for n, t in row["tflops"].items()
                        if n != "gmaivl" and ours is not None and t > 0
                    }
                    results.append(row)
                    print(format_row(row), flush=True)
    if args.output:
        from gmaivl.core.files import atomic_write_json

        atomic_write_json(args.output, {"environment": env, "reference": PEAK_REFERENCE, "results": results})
    return results


def format_row(row: dict) -> str:
    """TFLOP/s at the median time, with the interquartile range in brackets."""
    parts = [
        f"{row['workload']:>6} n={row['num_seqs']:<3} d={row['head_dim']:<3} {row['mode']:<6} {row['pass']:<7}",
        " ".join(
            f"{n}={t:.3g} [{row['tflops_iqr'][n][0]:.3g}-{row['tflops_iqr'][n][1]:.3g}]"
            for n, t in row["tflops"].items()
        ),
    ]
    if row["ratio_vs"]:
        parts.append("| gmaivl/" + " ".join(f"{n}={r:.2f}x" for n, r in row["ratio_vs"].items()))
    if row["skipped"]:
        parts.append("| n/a: " + ", ".join(sorted(row["skipped"])))
    if row["wrong"]:
        parts.append("| FAILED the accuracy check, not timed: " + ", ".join(sorted(row["wrong"])))
    return "  ".join(parts) + "  (TFLOP/s)"


def main(argv: list[str] | None = None) -> int:
    results = run(parse_args(argv))
    return 1 if any("gmaivl" in r["wrong"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
