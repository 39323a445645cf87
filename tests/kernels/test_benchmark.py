"""The benchmark script runs (tiny, CPU interpreter) and its FLOP convention is right."""

from __future__ import annotations

import json

import pytest

from gmaivl.cli import main
from gmaivl.kernels.benchmarks.bench_packed_attention import attention_flops, equal_lengths, mixed_lengths


def test_flop_convention():
    # forward 4 * sum(s^2) * H * D, halved when causal; backward 2.5x forward
    assert attention_flops([2, 3], heads=4, head_dim=8, causal=False, mode="fwd") == 4 * 13 * 4 * 8
    assert attention_flops([2, 3], 4, 8, causal=True, mode="fwd") == 2 * 13 * 4 * 8
    assert attention_flops([2, 3], 4, 8, causal=True, mode="fwd_bwd") == 3.5 * 2 * 13 * 4 * 8


def test_workloads_fill_the_pack():
    lens = mixed_lengths(16384, seed=0)
    assert sum(lens) == 16384 and len(lens) > 5 and min(lens) >= 1
    assert len(set(lens)) > 3  # mixed, not equal
    assert mixed_lengths(16384, seed=0) == lens  # seeded
    assert equal_lengths(16384, 4096) == [4096] * 4
    with pytest.raises(ValueError, match="exceeds"):
        equal_lengths(512, 1024)


def test_tiny_benchmark_runs_through_the_cli(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        ["kernels", "bench", "--tiny", "--workloads", "mixed", "--modes", "causal", "--passes", "fwd_bwd",
         "--providers", "gmaivl", "sdpa", "fa2", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "gmaivl/sdpa=" in printed and "n/a: fa2" in printed
    data = json.loads(out.read_text())
    assert data["environment"]["triton_interpret"] == "1"
    (row,) = data["results"]
    assert row["pass"] == "fwd_bwd" and row["mode"] == "causal" and row["num_seqs"] > 1
    assert row["tflops"]["gmaivl"] > 0 and row["tflops"]["sdpa"] > 0
    assert row["ratio_vs"]["sdpa"] == pytest.approx(row["tflops"]["gmaivl"] / row["tflops"]["sdpa"])
    assert "fa2" in row["skipped"]
