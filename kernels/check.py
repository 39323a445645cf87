"""`gmaivl kernels check`: the kernels against PyTorch on this device, flash-attn's 2x / 3x rule."""

from __future__ import annotations

import torch


def check_kernels(head_dims: list[int] | None = None) -> int:
    """Compare the kernel with the PyTorch reference using flash-attn's 2x / 3x error rule."""
    from .reference import packed_attention_reference, seqlens_to_cu
    from .varlen import interpreter_active, packed_attention

    cuda = torch.cuda.is_available()
    if not cuda and not interpreter_active():
        raise ValueError("no CUDA device: set TRITON_INTERPRET=1 to check the kernels on CPU (slow)")
    device = "cuda" if cuda else "cpu"
    dtypes = [torch.float16, torch.bfloat16] if cuda else [torch.float32, torch.float16]
    lens = [0, 1, 2, 113, 127, 128, 129, 300] if cuda else [0, 1, 2, 31, 33, 50]
    head_dims = head_dims or ([64, 128, 80] if cuda else [32])
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
