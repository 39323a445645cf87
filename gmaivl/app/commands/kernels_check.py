"""`gmaivl kernels check`: accuracy of the packed-attention kernels against PyTorch on this device
(fp16/bf16 on a GPU; fp32/fp16 through the Triton interpreter with `TRITON_INTERPRET=1`)."""

from __future__ import annotations

import argparse

from ._flags import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--head-dims",
        type=positive_int,
        nargs="+",
        default=None,
        help="head dims to check (default: 64 128 80 on a GPU, 32 in the interpreter)",
    )


def run(args: argparse.Namespace) -> int:
    from gmaivl.kernels.check import check_kernels

    return check_kernels(args.head_dims)
