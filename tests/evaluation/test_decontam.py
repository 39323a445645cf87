"""Decontamination between a training corpus and a benchmark (md5 + perceptual hash)."""

import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from gmaivl.app.cli import main
from gmaivl.evaluation import decontam
from gmaivl.evaluation.decontam import ImageHash, decontamination_report, find_overlaps, hash_source
from gmaivl.evaluation.loaders import load_vlmevalkit_tsv


@pytest.fixture()
def train_folder(bench_tsv, tmp_path):
    samples = load_vlmevalkit_tsv(bench_tsv)
    folder = tmp_path / "train"
    folder.mkdir()
    samples[0].load_images()[0].save(folder / "exact_copy.png")  # same pixels, new file
    buf = io.BytesIO()
    samples[5].load_images()[0].save(buf, format="JPEG", quality=90)  # re-encoded: md5 differs, pHash close
    Image.open(buf).save(folder / "recompressed.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / "unrelated.png")
    return folder, samples


def test_exact_and_near_duplicates_found(bench_tsv, train_folder, tmp_path):
    folder, samples = train_folder
    report = decontamination_report(
        str(bench_tsv), str(folder), tmp_path / "r.json", max_distance=6, progress=False
    )
    pairs = {(o["benchmark_id"], o["train_id"]): o for o in report["overlaps"]}
    assert pairs[(samples[0].index, "exact_copy.png")]["match"] == "md5"
    near = pairs[(samples[5].index, "recompressed.png")]
    assert near["match"] == "phash" and near["distance"] <= 6
    assert not any(t == "unrelated.png" for _, t in pairs)
    assert report["n_train_images"] == 3 and report["n_benchmark_images"] == len(samples)
    assert json.loads((tmp_path / "r.json").read_text())["overlaps"] == report["overlaps"]


def test_banded_search_equals_brute_force():
    rng = random.Random(0)
    bench = [ImageHash(f"b{i}", f"m{i}", rng.getrandbits(64)) for i in range(200)]
    train = []
    for i in range(300):
        if i % 3 == 0:  # plant near copies with 0..5 flipped bits
            src = bench[rng.randrange(len(bench))].phash
            for bit in rng.sample(range(64), rng.randrange(6)):
                src ^= 1 << bit
            train.append(ImageHash(f"t{i}", f"x{i}", src))
        else:
            train.append(ImageHash(f"t{i}", f"x{i}", rng.getrandbits(64)))
    for dist in (0, 3, 5):
        got = {(o["benchmark_id"], o["train_id"]) for o in find_overlaps(bench, train, dist)}
        brute = {(b.id, t.id) for b in bench for t in train if (b.phash ^ t.phash).bit_count() <= dist}
        assert got == brute and (dist == 0 or got)


def test_hash_cache_resumes(train_folder, tmp_path, monkeypatch):
    folder, _ = train_folder
    cache = tmp_path / "hashes.jsonl"
    first = hash_source(str(folder), cache=cache, progress=False)
    monkeypatch.setattr(decontam, "hash_image", lambda img: pytest.fail("re-hashed a cached image"))
    assert hash_source(str(folder), cache=cache, progress=False) == first


def test_records_folder_source(records, tmp_path):
    import datasets

    from gmaivl.dataset_builders.records import record_features

    (tmp_path / "built" / "records").mkdir(parents=True)
    rows = [r.to_row() for r in records[:3]]
    datasets.Dataset.from_list(rows, features=record_features()).to_parquet(
        tmp_path / "built" / "records" / "x.parquet"
    )
    hashes = hash_source(str(tmp_path / "built"), progress=False)
    assert [h.id for h in hashes] == [r.record_id for r in records[:3]]
    assert [h.md5 for h in hashes] == [r.image_md5 for r in records[:3]]  # same md5 as the dataset builders


def test_cli_exit_status(bench_tsv, train_folder, tmp_path, capsys):
    folder, _ = train_folder
    out = tmp_path / "report.json"
    assert (
        main(
            ["decontam", "--benchmark", str(bench_tsv), "--train", str(folder), "--out", str(out), "--quiet"]
        )
        == 0
    )
    code = main(["decontam", "--benchmark", str(bench_tsv), "--train", str(folder), "--out", str(out),
                 "--fail-on-overlap", "--quiet"])  # fmt: skip
    assert code == 1
    assert "exact_copy.png (md5" in capsys.readouterr().out


def test_training_image_under_a_drawn_region_is_found(bench_tsv, records, tmp_path):
    """bench-build draws boxes over region-level images, which hides them from both hashes;
    the rows carry the unannotated source's hashes, so every question built from a training
    image is flagged, exactly."""
    import pandas as pd

    train = tmp_path / "train"
    train.mkdir()
    from gmaivl.evaluation.bench_build import source_id

    for rec in records:
        rec.image().save(train / f"{source_id(rec.record_id)}.png")
    df = pd.read_csv(bench_tsv, sep="\t", dtype=str, keep_default_na=False)
    boxed = df["perceptual granularity"].eq("box")
    assert boxed.any() and (~boxed).any()

    report = decontamination_report(str(bench_tsv), str(train), tmp_path / "r.json", progress=False)
    flagged = {o["benchmark_id"] for o in report["overlaps"]}
    assert flagged == set(df["index"])  # every question comes from a training image
    by_question = {o["benchmark_id"]: o for o in report["overlaps"]}
    for idx, rid in zip(df.loc[boxed, "index"], df.loc[boxed, "source_id"]):
        assert by_question[idx]["train_id"] == f"{rid}.png" and by_question[idx]["via"] == "source"
        assert by_question[idx]["match"] == "md5"

    # without the recorded source hashes (an external TSV), the drawn boxes hide those copies
    df.drop(columns=["source_md5", "source_phash"]).to_csv(tmp_path / "plain.tsv", sep="\t", index=False)
    plain = decontamination_report(
        str(tmp_path / "plain.tsv"), str(train), tmp_path / "p.json", progress=False
    )
    hidden = set(df.loc[boxed, "index"]) - {o["benchmark_id"] for o in plain["overlaps"]}
    assert hidden  # what the source hashes recover
