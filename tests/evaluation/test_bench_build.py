"""Benchmark construction from standardised records (the GMAI-MMBench paper's protocol)."""

import json
import random

import pandas as pd
import pytest

from gmaivl.dataset_builders.templates import distractor_count
from gmaivl.evaluation.bench_build import (
    build_benchmark,
    load_question_pools,
    mark_region,
    select_diverse,
    source_id,
)


def test_options_answers_and_lexical_tree(bench_tsv, records):
    df = pd.read_csv(bench_tsv, sep="\t", dtype=str, keep_default_na=False)
    assert {"index", "question", "A", "B", "C", "D", "E", "answer", "image", "modality", "clinical vqa task",
            "department", "perceptual granularity"} <= set(df.columns)  # fmt: skip
    by_id = {source_id(r.record_id): r for r in records}
    region_pool = {r.label for r in records if r.granularity == "box" and r.modality == "MR"}
    for row in df.to_dict(orient="records"):
        rec = by_id[row["source_id"]]
        options = [row[c] for c in "ABCDE" if row[c]]
        assert 2 <= len(options) <= 5 and len(set(options)) == len(options)
        assert row[row["answer"]] == rec.label  # the answer letter points at the record's label
        assert [row[c] for c in "ABCDE"][len(options) :] == [""] * (
            5 - len(options)
        )  # options are contiguous
        assert rec.modality in row["question"] or "MRI" in row["question"] or "ultrasound" in row["question"]
        if rec.granularity == "image":
            # distractors from the answer's own dataset label space only
            assert set(options) <= set(rec.label_space) | {rec.label}
        else:
            # region level: a pool shared by (modality, task, granularity), across datasets
            assert set(options) <= region_pool
    # N cases per answer: at most 2 here
    assert df.groupby(["source_dataset", "label"]).size().max() <= 2
    tree = json.loads(bench_tsv.with_suffix(".lexical_tree.json").read_text())
    assert tree["n_questions"] == len(df)
    assert sum(tree["perceptual granularity"].values()) == len(df)
    assert tree["perceptual granularity"]["box"] == (df["perceptual granularity"] == "box").sum()


def test_region_questions_pool_crosses_datasets(bench_tsv):
    df = pd.read_csv(bench_tsv, sep="\t", dtype=str, keep_default_na=False)
    box = df[df["perceptual granularity"] == "box"]
    # "skull" comes only from the phantom dataset, yet appears as a distractor for MR-volume answers
    mr_volume = box[box["source_dataset"] == "mr-volume-demo"]
    assert any("skull" in {r[c] for c in "ABCDE"} for r in mr_volume.to_dict(orient="records"))


def test_distractor_count_rule():
    rng = random.Random(0)
    assert distractor_count(0, rng) == 0
    seen = {distractor_count(10, rng) for _ in range(300)}
    assert seen == {1, 2, 3, 4}  # never more than 4: at most 5 options
    assert {distractor_count(2, rng) for _ in range(100)} == {1, 2}


def test_select_diverse_spreads_sources_and_prefers_different_images():
    class R:
        def __init__(self, src, phash):
            self.source_dataset, self.phash = src, phash

    near = [R("a", "0000000000000000"), R("a", "0000000000000001"), R("a", "ffffffffffffffff")]
    other = [R("b", "00000000ffffffff")]
    picked = select_diverse(near + other, 3, random.Random(0))
    assert sum(p.source_dataset == "b" for p in picked) == 1
    a_hashes = {p.phash for p in picked if p.source_dataset == "a"}
    assert "ffffffffffffffff" in a_hashes  # farthest-first keeps the different image


def test_region_marking_changes_pixels(records):
    rec = next(r for r in records if r.granularity == "box")
    img = rec.image()
    for level in ("box", "mask", "contour"):
        marked = mark_region(img, rec.bbox, level)
        assert marked.size == img.size and list(marked.getdata()) != list(img.getdata())


def test_question_pool_checks_placeholder(tmp_path):
    bad = tmp_path / "pools.yaml"
    bad.write_text("default:\n  image: ['What is shown?']\n")
    with pytest.raises(ValueError, match="lacks the <modality> placeholder"):
        load_question_pools(bad)
    assert "Disease Diagnosis" in load_question_pools()["tasks"]


def test_deterministic_for_a_seed(records, tmp_path):
    a = build_benchmark(records, tmp_path / "a.tsv", cases_per_answer=2, seed=3, progress=False)
    b = build_benchmark(records, tmp_path / "b.tsv", cases_per_answer=2, seed=3, progress=False)
    assert a.n_questions == b.n_questions
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()


def test_bench_build_command_on_a_records_folder(records, tmp_path, capsys):
    import datasets

    from gmaivl.app.cli import main
    from gmaivl.dataset_builders.records import record_features
    from gmaivl.evaluation.loaders import load_vlmevalkit_tsv

    folder = tmp_path / "built" / "records"
    folder.mkdir(parents=True)
    rows = [r.to_row() for r in records]
    rows[0]["split"] = "train"  # not part of a test-split benchmark
    datasets.Dataset.from_list(rows, features=record_features()).to_parquet(folder / "part-0.parquet")
    out = tmp_path / "bench.tsv"
    code = main(["bench-build", "--records", str(tmp_path / "built"), "--out", str(out), "--split", "test",
                 "--cases-per-answer", "1", "--quiet"])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    samples = load_vlmevalkit_tsv(out)
    assert summary["questions"] == len(samples) > 0
    df = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    assert source_id(records[0].record_id) not in set(df["source_id"])
    assert not any(r.record_id in df.to_csv(sep="\t") for r in records)  # no record id (file names) published
    assert df.groupby(["source_dataset", "label"]).size().max() == 1
