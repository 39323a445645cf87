"""`gmaivl kernels ...`: check, benchmark and compile-check the packed-attention kernels."""

from __future__ import annotations

import argparse

import torch


def _check(args: argparse.Namespace) -> int:
    """Compare the kernel with the PyTorch reference using flash-attn's 2x / 3x error rule."""
    from .reference import packed_attention_reference, seqlens_to_cu
    from .varlen import interpreter_active, packed_attention

    cuda = torch.cuda.is_available()
    if not cuda and not interpreter_active():
        print("no CUDA device: set TRITON_INTERPRET=1 to check the kernels on CPU (slow)")
        return 2
    device = "cuda" if cuda else "cpu"
    dtypes = [torch.float16, torch.bfloat16] if cuda else [torch.float32, torch.float16]
    lens = [0, 1, 2, 113, 127, 128, 129, 300] if cuda else [0, 1, 2, 31, 33, 50]
    head_dims = args.head_dims or ([64, 128, 80] if cuda else [32])
    cu = seqlens_to_cu(lens, device)
    failures = 0
    gen = torch.Generator().manual_seed(0)
    for dtype in dtypes:
        for head_dim in head_dims:
            for causal in (True, False):
                q, k, v = (
                    torch.randn(sum(lens), h, head_dim, generator=gen).to(device, dtype).requires_grad_()
                    for h in (4, 2, 2)
                )
                out = packed_attention(q, k, v, cu, cu, max(lens), max(lens), causal=causal)
                grad = torch.randn_like(out)
                grads = torch.autograd.grad(out, (q, k, v), grad)
                ref = packed_attention_reference(q, k, v, cu, cu, causal=causal)
                ref_grads = torch.autograd.grad(ref, (q, k, v), grad.to(ref.dtype))
                pt = packed_attention_reference(q, k, v, cu, cu, causal=causal, upcast=False)
                pt_grads = torch.autograd.grad(pt, (q, k, v), grad)
                rows = [("out", out, ref, pt, 2)] + [
                    (f"d{n}", g, r, p, 3) for n, g, r, p in zip("qkv", grads, ref_grads, pt_grads)
                ]
                for name, ours, wide, same, factor in rows:
                    err = (ours.double() - wide.double()).abs().max().item()
                    base = (same.double() - wide.double()).abs().max().item()
                    ok = err <= factor * base + 1e-6
                    failures += not ok
                    print(
                        f"{str(dtype).removeprefix('torch.'):8} d={head_dim:<3} {'causal' if causal else 'bidir':6} "
                        f"{name:3} err={err:.2e} pytorch={base:.2e} {'ok' if ok else 'FAIL'}"
                    )
    print("all checks passed" if not failures else f"{failures} checks failed")
    return 1 if failures else 0


def _bench(args: argparse.Namespace) -> int:
    from .benchmarks.bench_packed_attention import run

    results = run(args)
    return 1 if any("gmaivl" in r["wrong"] for r in results) else 0


def _compile_report(args: argparse.Namespace) -> int:
    from .aot import run

    return run(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    from .aot import add_arguments as add_aot_arguments
    from .benchmarks.bench_packed_attention import add_arguments

    parser = subparsers.add_parser("kernels", help="check or benchmark the Triton packed-attention kernels")
    sub = parser.add_subparsers(dest="kernels_command", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="accuracy of the kernels against PyTorch on this device")
    check.add_argument("--head-dims", type=int, nargs="+", default=None)
    check.set_defaults(func=_check)
    bench = sub.add_parser("bench", help="TFLOP/s against flex_attention, sdpa, FlashAttention")
    add_arguments(bench)
    bench.set_defaults(func=_bench)
    aot = sub.add_parser(
        "compile-report",
        help="compile every autotune tile for an NVIDIA arch without a GPU: registers, spills, shared memory",
    )
    add_aot_arguments(aot)
    aot.set_defaults(func=_compile_report)
