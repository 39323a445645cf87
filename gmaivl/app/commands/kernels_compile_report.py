"""`gmaivl kernels compile-report`: compile every autotune tile for an NVIDIA architecture on a
machine without a GPU and report registers, spills and shared memory (ptxas), and from the SASS
(nvdisasm) the HGMMA / HMMA counts and the instructions per iteration of each innermost loop.

The options live here, importable without torch or triton; `gmaivl.kernels.aot` does the work."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._flags import flag, positive_int

DTYPE_NAMES = ("bf16", "fp16", "fp32")
#: The kernel variants the report can build (`gmaivl.kernels.aot.KERNELS` maps them to kernels).
KERNEL_NAMES = (
    "fwd",
    "fwd_tma",
    "fwd_window",
    "dkdv",
    "dkdv_tma",
    "dkdv_det",
    "dkdv_det_tma",
    "dkdv_window",
    "dq",
    "dq_tma",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `gmaivl kernels compile-report`."""
    parser.add_argument(
        "--arch",
        type=positive_int,
        default=90,
        help="compute capability x10: 80 A100, 90 H100/H200 (default: %(default)s)",
    )
    parser.add_argument(
        "--kernels",
        nargs="+",
        default=list(KERNEL_NAMES),
        choices=KERNEL_NAMES,
        help="kernel variants to compile (default: all)",
    )
    parser.add_argument(
        "--dtypes", nargs="+", default=["bf16"], choices=DTYPE_NAMES, help="dtypes to compile (default: bf16)"
    )
    parser.add_argument(
        "--head-dims",
        nargs="+",
        type=positive_int,
        default=[64, 128],
        help="head dims to compile (default: 64 128)",
    )
    parser.add_argument(
        "--mask",
        choices=["both", "causal", "bidir"],
        default="both",
        help="attention masks to compile (default: %(default)s)",
    )
    parser.add_argument(
        "--groups",
        nargs="+",
        type=positive_int,
        default=[1],
        help="query heads per key/value head (default: 1)",
    )
    parser.add_argument(
        "--max-configs",
        type=positive_int,
        default=None,
        help="only the first N autotune tiles (default: all)",
    )
    parser.add_argument(
        "--jobs", type=positive_int, default=1, help="compile in this many processes (default: %(default)s)"
    )
    flag(
        parser,
        "--output",
        "--out",
        dest="output",
        type=Path,
        metavar="FILE",
        help="write the results as JSON (+ .md table)",
    )


def run(args: argparse.Namespace) -> int:
    from gmaivl.kernels.aot import run as run_report

    return run_report(args)
