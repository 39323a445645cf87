"""Crash + resume gives the uninterrupted rows (the engine's tasks: tests/data/test_engine.py)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from gmaivl.dataset_builders.build import SimulatedCrash
from gmaivl.dataset_builders.engine import run_build
from gmaivl.dataset_builders.spec import load_build_spec

CONFIGS = ("records", "caption", "instruct", "percept", "text_single", "text_multi")


def published_rows(folder) -> dict[str, list[str]]:
    """Every published row of every config, serialised (images included as md5 of their bytes)."""
    import hashlib

    rows = {}
    for config in CONFIGS:
        out = []
        for path in sorted((folder / config).glob("*.parquet")):
            for row in pq.read_table(path).to_pylist():
                for key in ("image", "images"):
                    if key in row:
                        value = row[key]
                        items = value if isinstance(value, list) else [value]
                        row[key] = [hashlib.md5(i["bytes"]).hexdigest() for i in items if i]
                out.append(json.dumps(row, sort_keys=True, default=str))
        rows[config] = out
    return rows


def test_resume_after_crash_gives_identical_rows(built, demo_spec, tmp_path):
    reference, reference_report = built
    spec = load_build_spec(demo_spec)
    out = tmp_path / "crashy"
    with pytest.raises(SimulatedCrash):
        run_build(spec, out, crash_after_units=5, progress=False)
    done = sorted(p.name for p in (out / "_work" / "units").iterdir() if not p.name.startswith("."))
    assert len(done) == 5
    # a half-written unit from the crashed process: a temp dir without manifest, must be ignored
    stale = out / "_work" / "units" / f".{done[0][:-6]}999999.tmp-1"
    stale.mkdir()
    (stale / "rows.parquet").write_bytes(b"garbage")
    report = run_build(spec, out, progress=False)
    assert report["ingest"]["skipped"] == 5 and report["ingest"]["processed"] == report["units"] - 5
    assert published_rows(out) == published_rows(reference)
    assert report["rows"] == reference_report["rows"]
    # a third run re-does nothing in ingest and stays identical
    again = run_build(spec, out, progress=False)
    assert again["ingest"]["processed"] == 0
    assert published_rows(out) == published_rows(reference)
