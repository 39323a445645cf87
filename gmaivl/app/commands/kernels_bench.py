"""`gmaivl kernels bench`: TFLOP/s of the kernels against padded sdpa, flex_attention and
FlashAttention measured in the same run (each provider checked for accuracy before timing).

The options live here, importable without torch, and the benchmark script reuses them."""

from __future__ import annotations

import argparse

from ._flags import flag, non_negative_int, positive_int, positive_int_or

DTYPE_NAMES = ("bf16", "fp16", "fp32")
PROVIDERS = ("gmaivl", "gmaivl_det", "flex", "sdpa_padded", "sdpa_blockdiag", "torch_varlen", "fa2", "fa3")
#: Named cases of the issue's measurement, each one command on one GPU: (workload, head dim).
CASES = {
    f"{name}-d{d}": (workload, d)
    for name, workload in (("16k", "16384"), ("8x2k", "2048"), ("mixed", "mixed"))
    for d in (64, 128)
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `gmaivl kernels bench` and of the benchmark script."""
    parser.add_argument(
        "--dtype", choices=DTYPE_NAMES, default="bf16", help="dtype of q, k, v (default: %(default)s)"
    )
    parser.add_argument(
        "--head-dims",
        type=positive_int,
        nargs="+",
        default=[64, 128],
        help="head dims to time (default: 64 128)",
    )
    parser.add_argument(
        "--model-dim",
        type=positive_int,
        default=2048,
        help="heads = model_dim // head_dim (default: %(default)s)",
    )
    parser.add_argument(
        "--kv-heads", type=positive_int, default=None, help="key/value heads (default: = heads, MHA)"
    )
    parser.add_argument(
        "--total-tokens", type=positive_int, default=16384, help="tokens in one pack (default: %(default)s)"
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        type=positive_int_or("mixed"),
        default=["16384", "2048", "mixed"],
        help="'mixed' (realistic lengths) or an equal sequence length (a pack of total/length of them); "
        "default: 16384 2048 mixed",
    )
    parser.add_argument(
        "--case",
        choices=sorted(CASES),
        default=None,
        help="one workload and head dim of the issue's table (overrides --workloads/--head-dims): "
        "one command each, well under 10 minutes on one GPU",
    )
    parser.add_argument("--list-cases", action="store_true", help="print the named cases and exit")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["causal", "bidir"],
        default=["causal", "bidir"],
        help="attention masks: causal and/or bidirectional (default: both)",
    )
    parser.add_argument(
        "--passes",
        nargs="+",
        choices=["fwd", "fwd_bwd"],
        default=["fwd", "fwd_bwd"],
        help="forward only and/or forward + backward (default: both)",
    )
    parser.add_argument(
        "--providers",
        nargs="+",
        choices=PROVIDERS,
        default=list(PROVIDERS),
        help="implementations to time; unavailable ones are skipped (default: all)",
    )
    parser.add_argument(
        "--warmup", type=non_negative_int, default=25, help="ms of warm-up (GPU; default: %(default)s)"
    )
    parser.add_argument(
        "--rep",
        type=positive_int,
        default=100,
        help="ms of timing (GPU) or repetitions (CPU) (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the inputs and mixed lengths (default: %(default)s)",
    )
    flag(
        parser,
        "--output",
        "--json",
        dest="output",
        metavar="FILE",
        help="also write all results to this JSON file",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="CPU proof run through the Triton interpreter: fp32, 192 tokens, hdim 32, 2 heads",
    )


def run(args: argparse.Namespace) -> int:
    from gmaivl.kernels.benchmarks.bench_packed_attention import run as run_benchmark

    results = run_benchmark(args)
    return 1 if any("gmaivl" in r["wrong"] for r in results) else 0
