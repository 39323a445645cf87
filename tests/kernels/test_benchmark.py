"""The benchmark script runs (tiny, CPU interpreter) and its FLOP convention is right."""

from __future__ import annotations

import json

import pytest

from gmaivl.app.cli import main
from gmaivl.kernels.benchmarks import bench_packed_attention as bench
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
    """--tiny: every provider is checked against the reference before it is timed."""
    out = tmp_path / "bench.json"
    code = main(
        ["kernels", "bench", "--tiny", "--workloads", "mixed", "--modes", "causal", "--passes", "fwd_bwd",
         "--providers", "gmaivl", "sdpa_padded", "fa2", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| gmaivl/sdpa_padded=" in printed and "n/a: fa2" in printed
    data = json.loads(out.read_text())
    assert data["environment"]["triton_interpret"] == "1"
    (row,) = data["results"]
    assert row["pass"] == "fwd_bwd" and row["mode"] == "causal" and row["num_seqs"] > 1
    for name in ("gmaivl", "sdpa_padded"):
        assert row["checked"][name] == "ok"
        q25, q50, q75 = row["ms_quartiles"][name]
        assert 0 < q25 <= q50 <= q75
        lo, hi = row["tflops_iqr"][name]
        assert lo <= row["tflops"][name] <= hi
    assert row["ratio_vs"]["sdpa_padded"] == pytest.approx(
        row["tflops"]["gmaivl"] / row["tflops"]["sdpa_padded"]
    )
    assert "fa2" in row["skipped"] and row["wrong"] == {}


def test_a_wrong_provider_is_reported_and_not_timed(monkeypatch, tmp_path):
    """The accuracy check runs before timing: a provider off by a little fails it and is not timed."""
    real = bench.provider_forward

    def off_by_a_bit(name, q, k, v, lens, causal):
        leaves, forward = real(name, q, k, v, lens, causal)
        return leaves, (lambda: forward() * 1.01) if name == "sdpa_blockdiag" else forward

    monkeypatch.setattr(bench, "provider_forward", off_by_a_bit)
    argv = ["--tiny", "--workloads", "mixed", "--modes", "bidir", "--passes", "fwd"]
    (row,) = bench.run(bench.parse_args([*argv, "--providers", "gmaivl", "sdpa_blockdiag"]))
    assert row["checked"]["gmaivl"] == "ok" and "out error" in row["wrong"]["sdpa_blockdiag"]
    assert "sdpa_blockdiag" not in row["tflops"] and "gmaivl" in row["tflops"]


def test_named_cases_cover_the_issue_table(capsys):
    assert {c: bench.CASES[c] for c in ("16k-d128", "8x2k-d64", "mixed-d128")} == {
        "16k-d128": ("16384", 128),
        "8x2k-d64": ("2048", 64),
        "mixed-d128": ("mixed", 128),
    }
    assert bench.run(bench.parse_args(["--list-cases"])) == []
    assert "16k-d128: --workloads 16384 --head-dims 128" in capsys.readouterr().out
