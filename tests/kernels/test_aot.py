"""Ahead-of-time compiles for a real GPU architecture, on this CPU machine (no GPU, no interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from gmaivl.kernels.aot import KERNELS, CompileResult, _signature, sass_summary, summarize
from gmaivl.kernels.varlen import AUTOTUNE_CONFIGS, FP32_AUTOTUNE_CONFIGS, _base_kernel, tuned_configs


def test_every_kernel_argument_has_a_type():
    for kernel in KERNELS.values():
        constants = dict.fromkeys(
            [
                "HEAD_DIM",
                "GROUP",
                "CAUSAL",
                "DOT_PREC",
                "LONG_OFFSETS",
                "USE_TMA",
                "WINDOW",
                "ATOMIC_DQ",
                "BLOCK_D",
                "BLOCK_M",
                "BLOCK_N",
            ],
            1,
        )
        signature, attrs = _signature(kernel, "bf16", constants)
        assert list(signature) == kernel.arg_names
        assert signature["Q"] == "*bf16" and signature["cu_seqlens_q"] == "*i32"
        assert (kernel.arg_names.index("stride_lh"),) not in attrs  # Lse rows are not padded to 16


def test_tuned_configs_depend_on_head_dim_and_dtype():
    for name in AUTOTUNE_CONFIGS:  # each head-dim bucket's list is part of the autotuner's list
        for head_dim in (32, 64, 80, 128, 256):
            tiles = tuned_configs(name, head_dim)
            assert tiles and all(any(c is t for t in AUTOTUNE_CONFIGS[name]) for c in tiles)
    big = tuned_configs("fwd", 256)
    assert big and all(c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 64 for c in big)
    # 128 x 128 forward tiles are re-admitted where they compile without spills (d <= 64 on sm_90)
    assert any(c.kwargs["BLOCK_M"] == c.kwargs["BLOCK_N"] == 128 for c in tuned_configs("fwd", 64))
    for name in AUTOTUNE_CONFIGS:  # fp32 (IEEE dot products) never gets a 16-bit tile
        fp32 = tuned_configs(name, 64, fp32=True)
        assert fp32 and all(any(c is t for t in FP32_AUTOTUNE_CONFIGS[_base_kernel(name)]) for c in fp32)
        assert tuned_configs(name, 256, fp32=True)  # always at least one tile


def _result(**kw) -> CompileResult:
    base = dict(
        kernel="fwd", arch=90, dtype="bf16", head_dim=128, causal=True, group=1, block_m=128, block_n=64
    )
    base |= dict(num_warps=4, num_stages=2, registers=200, spill_bytes=0, shared_bytes=65536, fits=True)
    return CompileResult(**(base | kw))


def test_summary_flags_only_what_needs_acting_on():
    assert summarize([_result(), _result(block_n=32, spill_bytes=128)]) == []  # one clean tile is enough
    assert summarize([_result(spill_bytes=64), _result(block_n=32, spill_bytes=8)]) == [
        "fwd bf16 128 causal g1: every tile spills registers"
    ]
    assert "no autotune tile compiles and fits sm_90" in summarize([_result(fits=False)])[0]
    failed = summarize([_result(), _result(block_n=32, error="CompilationError: bad")])
    assert failed == ["fwd bf16 d=128 128x32 w4 s2 causal g1: CompilationError: bad"]


_SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT ;
        /*0020*/                   FFMA R2, R3, R4, R5 ;
        /*0030*/                   NOP ;
        /*0040*/              @!P0 BRA `(.L_x_0) ;
.L_x_1:
        /*0050*/                   HMMA.16816.F32.BF16 R8, R12, R16, R8 ;
        /*0060*/                   FSEL R2, R3, -INF , P1 ;
        /*0070*/                   FMNMX R2, R2, R3, !PT ;
        /*0080*/                @P1 BRA `(.L_x_1) ;
        /*0090*/                   EXIT ;
.L_x_2:
        /*00a0*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR13], R8 ;
        /*00b0*/              @!P0 BRA `(.L_x_2) ;
        /*00c0*/                   BRA `(.L_x_1) ;
"""


def test_sass_summary_counts_mmas_and_loop_bodies():
    # two loops of 3 and 4 instructions (the NOP not counted); the barrier-wait stub's spin and its
    # unpredicated jump back are not loops
    assert sass_summary(_SASS) == (1, 1, [3, 4])


def test_kernels_compile_for_hopper_without_a_gpu(tmp_path):
    """Real `triton.compile` to a sm_90 cubin and ptxas resource usage, in a process without the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env |= {"TRITON_CACHE_DIR": str(tmp_path / "cache"), "TRITON_DEFAULT_FP_FUSION": "1"}
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "gmaivl.app.cli", "kernels", "compile-report", "--arch", "90", "--kernels", "fwd",
           "dkdv", "--dtypes", "bf16", "--head-dims", "80", "--mask", "causal", "--groups", "2",
           "--max-configs", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())
    assert [r["kernel"] for r in rows] == ["fwd", "dkdv"]
    for r in rows:
        assert r["error"] is None and r["arch"] == 90 and r["head_dim"] == 80 and r["group"] == 2
        assert 0 < r["registers"] <= 255 and r["spill_bytes"] >= 0
        assert 0 < r["shared_bytes"] <= 232448 and r["fits"] is True
    assert "2 compiles for sm_90" in proc.stdout
    md = out.with_suffix(".md").read_text()
    assert md.count("| bf16 | 80 | causal | 2 |") == 2
    assert md.startswith("Compile-only report (no GPU ran): `gmaivl kernels compile-report --arch 90")
    fwd, dkdv = rows
    # the SASS: every product a Hopper warpgroup MMA (the dK/dV kernel's atomic dQ included), and
    # the innermost loops as the kernels write them (fwd: unmasked, masked; dK/dV: masked, plain, masked)
    assert fwd["hgmma"] > 0 and dkdv["hgmma"] > 0 and fwd["hmma"] == dkdv["hmma"] == 0
    assert len(fwd["loop_instructions"]) == 2 and len(dkdv["loop_instructions"]) == 3
    assert fwd["loop_instructions"][1] > fwd["loop_instructions"][0] > 100
    assert 0 < fwd["masked_overhead"] < 1 and dkdv["masked_overhead"] > 0
    assert any((tmp_path / "cache").rglob("*.cubin"))  # really assembled for the GPU


def test_the_autotuner_itself_prunes_by_dtype():
    from gmaivl.kernels import triton_packed_attention as k
    from gmaivl.kernels.varlen import _autotuned

    tuner = _autotuned("dkdv", k.packed_attn_bwd_dkdv_kernel)
    tuner.nargs = {}  # what a launch would set; the constexprs come as keyword arguments
    meta = dict(HEAD_DIM=64, GROUP=1, CAUSAL=True, BLOCK_D=64)
    assert tuner.prune_configs(meta | {"DOT_PREC": "ieee"}) == FP32_AUTOTUNE_CONFIGS["dkdv"]
    assert tuner.prune_configs(meta | {"DOT_PREC": "tf32"}) == tuned_configs("dkdv", 64)
    fwd = _autotuned("fwd", k.packed_attn_fwd_kernel)
    fwd.nargs = {}
    meta = dict(HEAD_DIM=128, GROUP=1, CAUSAL=True, BLOCK_D=128, DOT_PREC="tf32")
    assert fwd.prune_configs(meta | {"USE_TMA": True}) == tuned_configs("fwd_tma", 128)
    assert fwd.prune_configs(meta | {"USE_TMA": False}) == tuned_configs("fwd", 128)
    # the backward's descriptor variants have lists of their own (dK/dV: atomic or deterministic)
    meta = dict(HEAD_DIM=128, GROUP=1, CAUSAL=True, BLOCK_D=128, DOT_PREC="tf32")
    for atomic, tiles in ((True, "dkdv_tma"), (False, "dkdv_det_tma")):
        assert tuner.prune_configs(meta | {"USE_TMA": True, "ATOMIC_DQ": atomic}) == tuned_configs(tiles, 128)
        assert tuner.prune_configs(meta | {"USE_TMA": False, "ATOMIC_DQ": atomic}) == tuned_configs(
            "dkdv", 128
        )
    dq = _autotuned("dq", k.packed_attn_bwd_dq_kernel)
    dq.nargs = {}
    assert dq.prune_configs(meta | {"USE_TMA": True}) == tuned_configs("dq_tma", 128)
    assert dq.prune_configs(meta | {"USE_TMA": False}) == tuned_configs("dq", 128)


def test_autotune_lists_hold_no_tile_that_spills_in_the_committed_report():
    """The 16-bit lists at head dims 64/128 were built from the sm_90 compile report: every tile in
    them was compiled there (causal, bf16) and none spilled. Rerun the report when a kernel changes."""
    from pathlib import Path

    import gmaivl.kernels.aot as aot

    # Triton 3.9 (installed here) and 3.6 (the GPU images): no listed tile may spill on either
    results = Path(aot.__file__).parent / "benchmarks" / "results"
    for report in ("compile_report_sm90_bf16_causal.json", "compile_report_sm90_bf16_causal_triton36.json"):
        _assert_lists_clean(json.loads((results / report).read_text()), aot, report)


def _assert_lists_clean(rows, aot, report):
    seen = {
        (r["kernel"], r["head_dim"], r["block_m"], r["block_n"], r["num_warps"], r["num_stages"]): r
        for r in rows
    }
    for name in ("fwd", "fwd_tma", "dkdv", "dkdv_tma", "dkdv_det", "dkdv_det_tma", "dq", "dq_tma"):
        for head_dim in (64, 128):
            for c in tuned_configs(aot.TUNE_LIST.get(name, name), head_dim):
                key = (name, head_dim, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
                assert key in seen, f"{key} is not in {report}"
                assert seen[key]["error"] is None and seen[key]["spill_bytes"] == 0, (report, seen[key])
                assert seen[key]["fits"] is True


#: Listed tiles whose masked loop is still above issue 28's +30% in the committed reports
#: (kernel, head dim, BLOCK_M, BLOCK_N, warps, stages), per report; kernels/README.md says why.
_OVER_THE_BAR = {
    "compile_report_sm90_bf16_causal.json": {
        ("dq", 64, 64, 128, 8, 2),
        ("dq_tma", 64, 128, 128, 8, 2),
        ("dq_tma", 64, 64, 128, 4, 2),
    },
    "compile_report_sm90_bf16_causal_triton36.json": {
        ("fwd", 64, 128, 128, 8, 2),
        ("fwd", 64, 128, 128, 8, 3),
        ("fwd_tma", 64, 128, 128, 8, 2),
        ("dkdv_det_tma", 64, 64, 128, 8, 2),
        ("dq", 64, 128, 64, 8, 2),
        ("dq", 64, 64, 128, 4, 2),
        ("dq", 64, 64, 128, 8, 2),
        ("dq", 64, 64, 64, 4, 3),
        ("dq_tma", 64, 128, 128, 8, 2),
        ("dq_tma", 64, 64, 128, 4, 2),
    },
}


def test_masked_loop_overhead_of_the_listed_tiles_in_the_committed_reports():
    """Issue 28: a masked loop costs at most 30% more instructions than the unmasked one, on every
    listed tile of both reports, but for the named exceptions (which must really be over: the list
    cannot go stale when a kernel gets cheaper)."""
    from pathlib import Path

    import gmaivl.kernels.aot as aot

    results = Path(aot.__file__).parent / "benchmarks" / "results"
    for report, exceptions in _OVER_THE_BAR.items():
        rows = json.loads((results / report).read_text())
        seen = {
            (r["kernel"], r["head_dim"], r["block_m"], r["block_n"], r["num_warps"], r["num_stages"]): r
            for r in rows
        }
        over = set()
        for name in ("fwd", "fwd_tma", "dkdv", "dkdv_tma", "dkdv_det", "dkdv_det_tma", "dq", "dq_tma"):
            for head_dim in (64, 128):
                for c in tuned_configs(aot.TUNE_LIST.get(name, name), head_dim):
                    key = (
                        name,
                        head_dim,
                        c.kwargs["BLOCK_M"],
                        c.kwargs["BLOCK_N"],
                        c.num_warps,
                        c.num_stages,
                    )
                    overhead = seen[key]["masked_overhead"]
                    assert overhead is not None, (report, key)
                    if overhead > 0.30:
                        over.add(key)
        assert over == exceptions, (report, sorted(over ^ exceptions))


def test_the_command_line_offers_every_kernel_of_the_report():
    from gmaivl.app.commands.kernels_compile_report import KERNEL_NAMES
    from gmaivl.kernels.aot import KERNEL_CONSTANTS, KERNELS

    assert tuple(KERNELS) == KERNEL_NAMES and set(KERNEL_CONSTANTS) == set(KERNELS)
