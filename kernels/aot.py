"""Compile the GPU kernels ahead of time for an NVIDIA architecture, on a machine without a GPU.

Triton lowers a kernel to PTX and ptxas assembles it into a cubin without touching a device, so
every tile the autotuner may pick can be checked for what only a real compile shows, and the
interpreter never does: that it lowers at all (dot layouts, tile shapes), how many registers it
takes, whether ptxas spills, and how much shared memory it needs against the target's limit (the
autotuner skips a tile that does not fit; a shape with no fitting tile could not run). The cubin's
SASS (nvdisasm) gives the instruction mix: Hopper warpgroup MMAs (HGMMA) against Ampere-style ones
(HMMA), and the instructions of one iteration of each innermost loop, hence what masking costs.

    gmaivl kernels compile-report --arch 90 --dtypes bf16 --head-dims 64 128 --output report.json

Each compile takes seconds on a CPU; `--max-configs` keeps a quick check quick.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import triton_packed_attention as _k
from .varlen import MAX_HEAD_DIM, kernel_meta, tuned_configs

KERNELS = {
    "fwd": _k.packed_attn_fwd_kernel,
    "fwd_tma": _k.packed_attn_fwd_kernel,  # Q/K/V through tensor descriptors (Hopper+)
    "fwd_window": _k.packed_attn_fwd_kernel,  # a causal sliding window (band)
    "dkdv": _k.packed_attn_bwd_dkdv_kernel,  # default backward: dQ by atomics (5 GEMMs)
    "dkdv_tma": _k.packed_attn_bwd_dkdv_kernel,  # the same, Q/dO/K/V through tensor descriptors
    "dkdv_det": _k.packed_attn_bwd_dkdv_kernel,  # deterministic=True: dK/dV only, then "dq"
    "dkdv_det_tma": _k.packed_attn_bwd_dkdv_kernel,
    "dkdv_window": _k.packed_attn_bwd_dkdv_kernel,  # atomic dQ with a causal sliding window
    "dq": _k.packed_attn_bwd_dq_kernel,
    "dq_tma": _k.packed_attn_bwd_dq_kernel,
}
#: Compile-time arguments that tell the kernels' variants apart, and whose autotune list each uses.
KERNEL_CONSTANTS = {
    "fwd": {"USE_TMA": False},
    "fwd_tma": {"USE_TMA": True},
    "fwd_window": {"USE_TMA": False, "WINDOW": True},
    "dkdv": {"ATOMIC_DQ": True, "USE_TMA": False},
    "dkdv_tma": {"ATOMIC_DQ": True, "USE_TMA": True},
    "dkdv_det": {"ATOMIC_DQ": False, "USE_TMA": False},
    "dkdv_det_tma": {"ATOMIC_DQ": False, "USE_TMA": True},
    "dkdv_window": {"ATOMIC_DQ": True, "WINDOW": True, "USE_TMA": False},
    "dq": {"USE_TMA": False},
    "dq_tma": {"USE_TMA": True},
}
TUNE_LIST = {"dkdv_det": "dkdv", "fwd_window": "fwd", "dkdv_window": "dkdv"}
#: Opt-in shared memory per block (bytes), from NVIDIA's CUDA C++ Programming Guide, Table 23.
SHARED_MEMORY_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}
_TORCH_DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# what each argument is, by name (see the kernels' signatures)
_TENSORS = {"Q", "K", "V", "Out", "DO", "DQ", "DK", "DV"}
_FP32_POINTERS = {"Lse", "Delta", "DQacc"}
_INT_POINTERS = {"cu_seqlens_q", "cu_seqlens_k", "Tiles"}
_FLOAT_SCALARS = {"qk_scale", "sm_scale"}
# integers a real launch does not see as multiples of 16 (the others are strides of (T, H, D) tensors)
_UNALIGNED_INTS = {"stride_lh", "SEQ_BUCKET", "stride_tile_row", "num_heads", "window_left"}


@dataclass(frozen=True)
class CompileResult:
    kernel: str
    arch: int
    dtype: str
    head_dim: int
    causal: bool
    group: int
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    registers: int | None = None
    spill_bytes: int | None = None  # spill stores + loads reported by ptxas
    shared_bytes: int | None = None
    fits: bool | None = None  # shared memory within the architecture's limit
    error: str | None = None
    # SASS (nvdisasm of the cubin): Hopper warpgroup MMAs, Ampere-style MMAs, and the instructions
    # of each innermost loop body (one iteration, NOPs excluded) in program order
    hgmma: int | None = None
    hmma: int | None = None
    loop_instructions: list[int] | None = None
    masked_overhead: float | None = None  # largest masked loop / unmasked loop - 1


#: Innermost loops of each kernel variant in program order, masked (True) or not: the unmasked
#: loop is the reference a masked one is compared with (`masked_overhead`).
LOOP_KINDS = {
    "fwd": (False, True),
    "fwd_tma": (False, True),
    "fwd_window": (True, False, True),
    "dkdv": (True, False, True),
    "dkdv_tma": (True, False, True),
    "dkdv_det": (True, False, True),
    "dkdv_det_tma": (True, False, True),
    "dkdv_window": (True, False, True),
    "dq": (False, True),
    "dq_tma": (False, True),
}
_SASS_INSN = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;")
_SASS_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_SASS_BRANCH = re.compile(r"\bBRA\s+`?\(?(\.L_x_\d+)")


def _opcode(insn: str) -> str:
    """``@!P0 HGMMA.64x128x16.F32.BF16 ...`` -> ``HGMMA``."""
    words = re.sub(r"^@!?U?P\w+\s+", "", insn).split()
    return words[0].split(".")[0] if words else ""


def sass_summary(sass: str) -> tuple[int, int, list[int]]:
    """(HGMMA count, HMMA count, instructions per iteration of each innermost loop) of nvdisasm text.

    A loop is a predicated branch back to an earlier label; the unpredicated branch back that ends
    a barrier-wait stub (``TRYWAIT; @!P BRA self; BRA back``) is not one, nor is the stub's own
    two-instruction spin. Only loops that contain no other loop are kept, in program order.
    """
    insns: list[str] = []
    labels: dict[str, int] = {}
    for line in sass.splitlines():
        label = _SASS_LABEL.match(line)
        if label:
            labels[label.group(1)] = len(insns)
            continue
        insn = _SASS_INSN.search(line)
        if insn:
            insns.append(insn.group(1))
    loops = []
    for end, insn in enumerate(insns):
        target = _SASS_BRANCH.search(insn)
        if target and insn.startswith("@") and labels.get(target.group(1), end) < end:
            loops.append((labels[target.group(1)], end))
    inner = [a for a in loops if not any(b != a and a[0] <= b[0] and b[1] <= a[1] for b in loops)]
    ops = [_opcode(i) for i in insns]
    sizes = [sum(1 for op in ops[start : end + 1] if op != "NOP") for start, end in inner]
    # a barrier wait spins in a two-instruction loop of its own (TRYWAIT; @!P BRA): not a loop body
    return ops.count("HGMMA"), ops.count("HMMA"), [n for n in sizes if n > 2]


def _masked_overhead(name: str, sizes: list[int]) -> float | None:
    kinds = LOOP_KINDS.get(name)
    if kinds is None or len(sizes) != len(kinds):
        return None  # a loop the compiler removed or split: no reliable pairing
    plain = [n for n, masked in zip(sizes, kinds) if not masked]
    masked = [n for n, is_masked in zip(sizes, kinds) if is_masked]
    return round(max(masked) / plain[0] - 1, 4)


def _sass(cubin: bytes, arch: int) -> str | None:
    from triton.backends.nvidia.compiler import get_ptxas

    nvdisasm = Path(get_ptxas(arch).path).with_name("nvdisasm")
    if not nvdisasm.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        proc = subprocess.run([str(nvdisasm), "-c", str(path)], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def _signature(kernel, dtype: str, constants: dict) -> tuple[dict, dict]:
    signature, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constants:
            signature[name] = "constexpr"
        elif name in _TENSORS:
            signature[name] = "*" + dtype  # Triton spells fp16/bf16/fp32 the same way
        elif name in _FP32_POINTERS:
            signature[name] = "*fp32"
        elif name in _INT_POINTERS:
            signature[name] = "*i32"
        elif name in _FLOAT_SCALARS:
            signature[name] = "fp32"
        elif name.startswith("stride_") or name in _UNALIGNED_INTS:
            signature[name] = "i32"
        else:
            raise ValueError(f"{kernel.__name__}: no type known for argument {name!r}")
        # torch allocations are 256-byte aligned and (T, H, D) strides are multiples of 16 for
        # the usual head dims: tell Triton what a launch would (it vectorises on it)
        if signature[name].startswith("*") or (signature[name] == "i32" and name not in _UNALIGNED_INTS):
            attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, attrs


def _ptxas_usage(ptx: str, arch: int) -> tuple[int, int]:
    """(registers, spill bytes) as ptxas reports them for this PTX."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        cmd = [
            get_ptxas(arch).path,
            "-v",
            "--regAllocOptLevel=2",
            f"--gpu-name={sm_arch_from_capability(arch)}",
        ]
        proc = subprocess.run(
            [*cmd, str(src), "-o", str(src.with_suffix(".cubin"))], capture_output=True, text=True
        )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())
    registers = re.search(r"Used (\d+) registers", proc.stderr)
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", proc.stderr)]
    return (int(registers.group(1)) if registers else 0), sum(spills)


def compile_one(
    name: str, config: triton.Config, *, arch: int, dtype: str, head_dim: int, causal: bool, group: int
) -> CompileResult:
    """Compile one kernel for one tile on `sm_<arch>` and measure it; a failure is recorded, not raised."""
    block_m, block_n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    base = dict(
        kernel=name,
        arch=arch,
        dtype=dtype,
        head_dim=head_dim,
        causal=causal,
        group=group,
        block_m=block_m,
        block_n=block_n,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    kernel = KERNELS[name]
    constants = (
        kernel_meta(head_dim, group, causal, _TORCH_DTYPE[dtype])
        | KERNEL_CONSTANTS.get(name, {})
        | dict(BLOCK_M=block_m, BLOCK_N=block_n)
    )
    signature, attrs = _signature(kernel, dtype, constants)
    try:
        compiled = triton.compile(
            ASTSource(kernel, signature, constants, attrs),
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": config.num_warps, "num_stages": config.num_stages},
        )
        registers, spills = _ptxas_usage(compiled.asm["ptx"], arch)
    except Exception as error:  # a tile that does not lower is a finding, not a crash
        return CompileResult(
            **base, error=f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
        )
    shared = int(compiled.metadata.shared)
    limit = SHARED_MEMORY_LIMIT.get(arch)
    sass = _sass(compiled.asm["cubin"], arch)
    hgmma = hmma = sizes = None
    if sass is not None:
        hgmma, hmma, sizes = sass_summary(sass)
    return CompileResult(
        **base,
        registers=registers,
        spill_bytes=spills,
        shared_bytes=shared,
        fits=None if limit is None else shared <= limit,
        hgmma=hgmma,
        hmma=hmma,
        loop_instructions=sizes,
        masked_overhead=None if sizes is None else _masked_overhead(name, sizes),
    )


def compile_report(
    *,
    arch: int = 90,
    kernels: Sequence[str] = tuple(KERNELS),
    dtypes: Sequence[str] = ("bf16",),
    head_dims: Sequence[int] = (64, 128),
    causal: Sequence[bool] = (True, False),
    groups: Sequence[int] = (1,),
    max_configs: int | None = None,
    jobs: int = 1,
) -> Iterator[CompileResult]:
    """Compile every (kernel, dtype, head dim, causality, GQA group, autotune tile), in order.

    `jobs` > 1 compiles in that many processes (each compile is single-threaded).
    """
    for name in kernels:
        if name not in KERNELS:
            raise ValueError(f"unknown kernel {name!r}; choose from {sorted(KERNELS)}")
    for dtype in dtypes:
        if dtype not in _TORCH_DTYPE:
            raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(_TORCH_DTYPE)}")
    for head_dim in head_dims:
        if not 0 < head_dim <= MAX_HEAD_DIM:
            raise ValueError(f"head dim must be in 1..{MAX_HEAD_DIM}, got {head_dim}")
    tasks = [
        (name, config, dict(arch=arch, dtype=dtype, head_dim=head_dim, causal=is_causal, group=group))
        for name in kernels
        for dtype in dtypes
        for head_dim in head_dims
        for is_causal in causal
        for group in groups
        for config in tuned_configs(TUNE_LIST.get(name, name), head_dim, fp32=dtype == "fp32")[:max_configs]
    ]
    if jobs <= 1:
        yield from (compile_one(name, config, **kw) for name, config, kw in tasks)
        return
    with ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(_compile_task, tasks)


def _compile_task(task: tuple) -> CompileResult:
    name, config, kwargs = task
    return compile_one(name, config, **kwargs)


def summarize(results: Sequence[CompileResult]) -> list[str]:
    """Problems worth acting on: failed compiles, and shapes for which no tile compiles, fits the
    shared memory and runs without spilling (single spilling tiles just lose the autotuning)."""
    problems = [f"{r.kernel} {r.dtype} d={r.head_dim} {_tile(r)}: {r.error}" for r in results if r.error]
    shapes: dict[tuple, list[CompileResult]] = {}
    for r in results:
        shapes.setdefault(
            (r.kernel, r.dtype, r.head_dim, "causal" if r.causal else "bidir", f"g{r.group}"), []
        ).append(r)
    for key, rows in shapes.items():
        good = [r for r in rows if r.error is None and r.fits is not False]
        if not good:
            problems.append(
                f"{' '.join(map(str, key))}: no autotune tile compiles and fits sm_{rows[0].arch}"
            )
        elif not any(r.spill_bytes == 0 for r in good):
            problems.append(f"{' '.join(map(str, key))}: every tile spills registers")
    return problems


def _tile(r: CompileResult) -> str:
    return f"{r.block_m}x{r.block_n} w{r.num_warps} s{r.num_stages} {'causal' if r.causal else 'bidir'} g{r.group}"


def markdown_table(results: Sequence[CompileResult], header: str | None = None) -> str:
    lines = [header, ""] if header else []
    lines += [
        "| kernel | dtype | hdim | mask | group | tile (M x N) | warps | stages | registers | spills (B) | shared (KiB) | fits "
        "| HGMMA | HMMA | loop instructions | masked overhead |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    blank = lambda x: "" if x is None else x  # noqa: E731
    for r in results:
        shared = "" if r.shared_bytes is None else f"{r.shared_bytes / 1024:.0f}"
        status = r.error or ("yes" if r.fits else "no" if r.fits is not None else "?")
        loops = " / ".join(map(str, r.loop_instructions or []))
        overhead = "" if r.masked_overhead is None else f"{r.masked_overhead:+.1%}"
        lines.append(
            f"| {r.kernel} | {r.dtype} | {r.head_dim} | {'causal' if r.causal else 'bidir'} | {r.group} | "
            f"{r.block_m} x {r.block_n} | {r.num_warps} | {r.num_stages} | {blank(r.registers)} | "
            f"{blank(r.spill_bytes)} | {shared} | {status} | {blank(r.hgmma)} | {blank(r.hmma)} | {loops} | {overhead} |"
        )
    return "\n".join(lines)


def report_header(args: argparse.Namespace) -> str:
    """What produced a report: Triton and ptxas versions, the command's options, the environment."""
    from triton.backends.nvidia.compiler import get_ptxas

    options = " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in sorted(vars(args).items())
        if k in {"arch", "kernels", "dtypes", "head_dims", "mask", "groups", "max_configs"} and v is not None
    )
    ptxas = getattr(get_ptxas(args.arch), "version", "?")
    return (
        f"Compile-only report (no GPU ran): `gmaivl kernels compile-report {options}`, triton "
        f"{triton.__version__}, ptxas {ptxas}, torch {torch.__version__}, TRITON_DEFAULT_FP_FUSION="
        f"{os.environ.get('TRITON_DEFAULT_FP_FUSION', '(unset)')}. Loop instructions: SASS instructions of "
        "one iteration of each innermost loop in program order (fwd/dq: unmasked, masked; window variants "
        "and dK/dV: masked, unmasked, masked); masked overhead: the largest masked loop over the unmasked one."
    )


def run(args: argparse.Namespace) -> int:
    """Print one line per compile, then the problems; exit 1 when a tile fails to compile."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise ValueError("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    causal = {"both": (True, False), "causal": (True,), "bidir": (False,)}[args.mask]
    results = []
    for r in compile_report(
        arch=args.arch,
        kernels=args.kernels,
        dtypes=args.dtypes,
        head_dims=args.head_dims,
        causal=causal,
        groups=args.groups,
        max_configs=args.max_configs,
        jobs=args.jobs,
    ):
        results.append(r)
        usage = r.error or f"{r.registers} regs, {r.spill_bytes} B spilled, {r.shared_bytes} B shared"
        if r.hgmma is not None:
            usage += f", {r.hgmma} HGMMA, {r.hmma} HMMA, loops {r.loop_instructions}"
        print(f"sm_{r.arch} {r.kernel:4} {r.dtype} d={r.head_dim:<3} {_tile(r):28} {usage}", flush=True)
    problems = summarize(results)
    print(f"{len(results)} compiles for sm_{args.arch}")
    print(
        "\n".join(["problems:", *problems])
        if problems
        else "every tile compiles; every shape has a tile that fits and does not spill"
    )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps([asdict(r) for r in results], indent=1))
        args.output.with_suffix(".md").write_text(markdown_table(results, report_header(args)) + "\n")
    return 1 if any(r.error for r in results) else 0
