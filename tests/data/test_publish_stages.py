"""Publish as distributed stages (`publish.py`): any task counts publish the same bytes, each drop
is the one the sequential QC of earlier builds made, and a killed stage resumes exactly."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from gmaivl.dataset_builders.build import SimulatedCrash, plan, work_dir
from gmaivl.dataset_builders.engine import run_build
from gmaivl.dataset_builders.ids import resolve_id_key
from gmaivl.dataset_builders.publish import (
    record_candidates,
    record_signatures,
    resolve_records,
)
from gmaivl.dataset_builders.qc import HammingIndex, QualityControl, owner_key
from gmaivl.dataset_builders.spec import load_build_spec

from .test_engine import published_bytes

SLOW = "a persistent cough in a smoker deserves a chest x-ray, a spirometry and a visit to the doctor within two weeks"


def texture(seed: int, size: int = 72) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def write_corpus(root: Path) -> Path:
    """Class folders with an exact copy, a pHash near copy and a benchmark image planted; a text
    corpus with near-duplicate dialogues; units of 2 items, so the tasks split many units."""
    for i in range(6):
        for label, offset in (("a_class", 0), ("b_class", 100)):
            path = root / "cls" / label / f"img_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(texture(offset + i)).save(path)
    shutil.copy(root / "cls" / "a_class" / "img_0.png", root / "cls" / "b_class" / "copy.png")
    near = texture(1).copy()
    near[0, 0, 0] ^= 1  # other pixels (md5), the same perceptual hash
    Image.fromarray(near).save(root / "cls" / "b_class" / "near.png")
    (root / "bench").mkdir()
    shutil.copy(root / "cls" / "a_class" / "img_2.png", root / "bench" / "leaked.png")
    (root / "text").mkdir()
    lines = [
        {"question": f"question {i}: what does the scan show?", "answer": f"{SLOW} ({i})."} for i in range(3)
    ]
    lines += [{"question": "what does the scan show?", "answer": SLOW + suffix} for suffix in (".", "!", ".")]
    lines += [
        {"question": f"unrelated question {i}", "answer": f"a different answer number {i} " * 3}
        for i in range(4)
    ]
    (root / "text" / "single.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (root / "id.key").write_text("k" * 32)
    common = {"department": "Radiology", "modality": "endoscopy", "unit_size": 2}
    spec = {
        "name": "stages",
        "sources": [
            {"name": "cls", "type": "class_folders", "root": "cls", **common},
            {
                "name": "txt",
                "type": "text",
                "root": "text",
                "file": "single.jsonl",
                "format": "single",
                "unit_rows": 2,
            },
        ],
        "qc": {"min_image_side": 32, "phash_distance": 2, "decontaminate": ["bench"]},
        "privacy": {"id_key_file": "id.key"},
    }
    path = root / "build.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sequential_drops(spec_path: Path, out: Path) -> Counter[str]:
    """The drops of the one-process QC of earlier builds (`QualityControl` over every unit in plan
    order), computed from the unit shards."""
    spec = load_build_spec(spec_path)
    units, _ = plan(spec, resolve_id_key(spec, work_dir(out)), None)
    qc = QualityControl(spec.qc, spec_path.parent)
    for unit in units:
        folder = work_dir(out) / "units" / unit.unit_id
        dropped = set()
        if (folder / "records.parquet").is_file():
            for record in pq.read_table(folder / "records.parquet").to_pylist():
                if qc.check_record(record):
                    dropped.add(record["record_id"])
        if (folder / "rows.parquet").is_file():
            for row in pq.read_table(folder / "rows.parquet").to_pylist():
                if row["record_id"] in dropped:
                    qc.dropped["rows_of_dropped_image"] += 1
                else:
                    qc.check_row(row)
    return qc.dropped


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("stages")
    spec = write_corpus(root)
    out = root / "one-task"
    report = run_build(spec, out, progress=False)
    return spec, out, report


def test_many_tasks_publish_the_bytes_of_one_task_with_the_sequential_drops(corpus, tmp_path):
    spec, reference, report = corpus
    qc = report["dropped"]["qc"]
    assert qc == dict(sequential_drops(spec, reference))
    for reason in ("duplicate_image_md5", "near_duplicate_image_phash", "benchmark_contamination"):
        assert qc[reason] == 1, reason
    assert qc["near_duplicate_text"] == 2 and qc["rows_of_dropped_image"] > 0
    out = tmp_path / "many"
    many = run_build(spec, out, tasks=4, signature_tasks=4, bucket_tasks=3, write_tasks=2, progress=False)
    assert published_bytes(out) == published_bytes(reference)
    assert many["dropped"]["qc"] == qc
    logs = next(out.glob("_work/engine/ingest-*/publish-4x3x2"))
    for stage, tasks in (("signatures", 4), ("buckets", 3), ("resolve", 1), ("write", 2), ("assemble", 1)):
        assert len(list((logs / stage / "completions").iterdir())) == tasks, stage
    # what the one-task stage holds: the records that have a possible duplicate, not the corpus
    pairs = (logs / "data" / "pairs").glob("*.candidates.parquet")
    candidates = {order for p in pairs for order in pq.read_table(p)["order"].to_pylist()}
    assert len(candidates) == 4  # the copy and its original, the near copy and its original


@pytest.mark.parametrize("stage", ["signatures", "write"])
def test_a_killed_publish_stage_resumes_to_the_same_bytes(corpus, tmp_path, stage):
    spec, reference, _ = corpus
    out = tmp_path / f"killed-{stage}"
    options = dict(tasks=2, bucket_tasks=3, write_tasks=2, progress=False)
    with pytest.raises(SimulatedCrash):
        run_build(spec, out, crash=(stage, 1), **options)
    assert not (out / "build_report.json").exists()
    run_build(spec, out, **options)
    assert published_bytes(out) == published_bytes(reference)


def test_resolution_equals_the_sequential_qc_on_random_records():
    """Random images (md5 and pHash collisions, pHashes a few bits apart, several records per
    image) through the buckets and the first-kept walk give exactly `QualityControl`'s drops."""
    rng = random.Random(7)
    distance, buckets = 3, 5
    bases = [rng.getrandbits(64) for _ in range(6)]
    records = []
    for image in range(300):
        phash = rng.choice(bases)
        for _ in range(rng.choice([0, 1, 1, 2, 4])):
            phash ^= 1 << rng.randrange(64)
        md5 = f"{rng.randrange(250):032x}"
        for box in range(rng.choice([1, 1, 2])):
            records.append({"record_id": f"img{image}#b{box}", "md5": md5, "phash": phash})
    sequential = QualityControl({"phash_distance": distance, "min_image_side": 0})
    expected = {}
    for order, r in enumerate(records):
        row = {
            "record_id": r["record_id"],
            "width": 1,
            "height": 1,
            "image_md5": r["md5"],
            "phash": f"{r['phash']:016x}",
        }
        if reason := sequential.check_record(row):
            expected[order] = reason
    bands = HammingIndex(distance)
    by_bucket: dict[int, list[dict]] = {}
    for order, r in enumerate(records):
        entry = {**r, "order": order, "owner": owner_key(r["record_id"])}
        for bucket, signature in record_signatures(entry, bands):
            by_bucket.setdefault(bucket % buckets, []).append(signature)
    candidates, edges = [], []
    for entries in by_bucket.values():
        found, pairs = record_candidates(entries, distance)
        candidates += found.values()
        edges += [{"a": a, "b": b, "band": band} for a, b, band in pairs]
    assert len(set(expected.values())) == 2 and len(expected) > 50
    assert resolve_records(candidates, edges) == expected


def test_a_chain_of_near_duplicates_keeps_its_ends():
    """A ~ B ~ C with C not near A: A is kept, B dropped, C kept (union-find would drop C)."""
    bands = HammingIndex(2)
    a, b, c = 0, 0b11, 0b1111
    entries = [
        signature
        for order, value in enumerate((a, b, c))
        for _, signature in record_signatures(
            {
                "order": order,
                "record_id": f"i{order}",
                "owner": order,
                "md5": f"{order:032x}",
                "phash": value,
            },
            bands,
        )
    ]
    candidates, edges = record_candidates(entries, 2)
    edges = [{"a": x, "b": y, "band": band} for x, y, band in edges]
    assert resolve_records(list(candidates.values()), edges) == {1: "near_duplicate_image_phash"}
