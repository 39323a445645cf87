"""Faithful rebuilds: after files are deleted, added and edited, a rerun in the same folder publishes
exactly the bytes a fresh build of the changed sources publishes, and reuses the untouched units."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from gmaivl.dataset_builders import iter_records
from gmaivl.dataset_builders.engine import run_build


def texture(seed: int, size: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def save(path: Path, seed: int, size: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(texture(seed, size)).save(path)


def write_spec(root: Path) -> Path:
    for i in range(4):
        save(root / "cls" / "a_class" / f"img_{i}.png", i)
        save(root / "cls" / "b_class" / f"img_{i}.png", 100 + i)
    rows = ["image,label"] + [f"pics/p{i}.png,{'polyp' if i % 2 else 'normal mucosa'}" for i in range(3)]
    for i in range(3):
        save(root / "tab" / "pics" / f"p{i}.png", 200 + i)
    (root / "tab" / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "id.key").write_text("k" * 32)
    common = {"department": "Radiology", "modality": "endoscopy", "unit_size": 2}
    spec = {
        "name": "rebuild",
        "sources": [
            {"name": "cls", "type": "class_folders", "root": "cls", **common},
            {"name": "tab", "type": "csv", "root": "tab", **common},
        ],
        "qc": {"min_image_side": 32},
        "privacy": {"id_key_file": "id.key"},
    }
    path = root / "build.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def change_sources(root: Path) -> None:
    (root / "cls" / "b_class" / "img_3.png").unlink()  # a withdrawn patient
    save(root / "cls" / "b_class" / "img_4.png", 104)  # new files
    save(root / "cls" / "b_class" / "img_5.png", 105)
    save(root / "cls" / "b_class" / "img_1.png", 999, size=88)  # an edited file
    lines = (root / "tab" / "labels.csv").read_text().splitlines()
    (root / "tab" / "labels.csv").write_text(
        "\n".join([lines[0], lines[2], lines[3]]) + "\n"
    )  # a row removed
    stat = (root / "tab" / "pics" / "p2.png").stat()
    save(root / "tab" / "pics" / "p2.png", 777)  # same size and name, new pixels: the mtime tells
    os.utime(root / "tab" / "pics" / "p2.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def published(folder: Path) -> dict[str, bytes]:
    files = {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "_work" not in p.parts and p.name not in ("README.md", "build_report.json")
    }
    report = json.loads((folder / "build_report.json").read_text())
    report.pop("finalize_seconds")
    files["build_report.json"] = json.dumps(report, sort_keys=True).encode()
    card = (folder / "README.md").read_text().splitlines()
    files["README.md"] = "\n".join(line for line in card if not line.startswith("- built: ")).encode()
    return files


def test_rerun_after_source_changes_equals_a_fresh_build(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    first = run_build(spec, out, progress=False)
    before = {r.record_id for r in iter_records(out)}
    removed_id = next(r.record_id for r in iter_records(out) if r.source_dataset == "tab")
    change_sources(tmp_path)

    again = run_build(spec, out, progress=False)
    fresh = run_build(spec, tmp_path / "fresh", progress=False)
    assert published(out) == published(tmp_path / "fresh")
    assert again.to_dict()["rows"] == fresh.to_dict()["rows"]
    # untouched units were reused: the two `a_class` units of the class folders
    assert again.ingest["skipped"] == 2 and again.ingest["processed"] == again.ingest["units"] - 2
    after = {r.record_id for r in iter_records(out)}
    assert removed_id not in after and len(after) == len(before)  # cls: -1 +2; tab: -1 row
    assert sum(r.source_dataset == "cls" for r in iter_records(out)) == 9
    assert first.rows_total != again.rows_total
    # a third run changes nothing and reprocesses nothing
    third = run_build(spec, out, progress=False)
    assert third.ingest["processed"] == 0 and published(out) == published(tmp_path / "fresh")
    # a new class folder changes the label space (the percept distractors) of every cls unit
    save(tmp_path / "cls" / "c_class" / "img_0.png", 300)
    fourth = run_build(spec, out, progress=False)
    cls_units = sum(1 for p in (out / "_work" / "units").iterdir() if p.name.startswith("cls-"))
    assert (
        fourth.ingest["processed"] == cls_units
        and fourth.ingest["skipped"] == fourth.ingest["units"] - cls_units
    )
    run_build(spec, tmp_path / "fresh2", progress=False)
    assert published(out) == published(tmp_path / "fresh2")
    assert {r.label_space[-1] for r in iter_records(out) if r.source_dataset == "cls"} == {"c class"}
