"""GMAI-MMBench TEST-shaped files (no `answer`): predictions and a submission file, no scores;
VAL-shaped files keep being scored. Non-numeric image references, rows without images, lazy
images that keep memory flat."""

import base64
import io
import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gmaivl.app.cli import main
from gmaivl.evaluation.images import LazyImage
from gmaivl.evaluation.loaders import BenchmarkFormatError, load_vlmevalkit_tsv


def _test_shaped(bench_tsv, path):
    """The built benchmark as GMAI-MMBench TEST ships: no answers, string indices, images stored
    once and referenced by index, one row whose image is missing."""
    df = pd.read_csv(bench_tsv, sep="\t", dtype=str, keep_default_na=False)
    df = df.drop(columns=["answer", "label", "source_id"])
    df["index"] = [f"GMAI_T{i:04d}" for i in range(len(df))]
    df.loc[1, "image"] = df.loc[0, "index"]  # a non-numeric reference to row 0's image
    df.loc[2, "image"] = ""  # no image: skipped and counted, as VLMEvalKit does
    df.to_csv(path, sep="\t", index=False)
    return df


def test_test_shaped_tsv_loads_without_answers(bench_tsv, tmp_path):
    df = _test_shaped(bench_tsv, tmp_path / "test.tsv")
    bench = load_vlmevalkit_tsv(tmp_path / "test.tsv")
    assert bench.prediction_only and bench.skipped == {"row without an image": 1}
    assert len(bench) == len(df) - 1
    assert all(s.answer == "" and not s.has_answer and s.question_type == "mcq" for s in bench)
    first, second = bench[0], bench[1]
    assert isinstance(second.images[0], LazyImage)  # nothing decoded at load time
    assert np.array_equal(np.asarray(first.load_images()[0]), np.asarray(second.load_images()[0]))
    assert first.metadata["clinical vqa task"] == df.loc[0, "clinical vqa task"]
    assert "answer" not in bench.columns and "image" not in bench.columns


def test_eval_on_test_split_writes_a_submission(tiny_checkpoint, bench_tsv, tmp_path, capsys):
    df = _test_shaped(bench_tsv, tmp_path / "test.tsv")
    args = ["eval", "--model", str(tiny_checkpoint), "--benchmark", str(tmp_path / "test.tsv"), "--out", str(tmp_path / "out"),
            "--benchmark-name", "gmai-test", "--max-new-tokens", "mcq=3", "--batch-size", "8", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert "scoring skipped" in capsys.readouterr().err
    out = tmp_path / "out" / "gmai-test"
    result = json.loads((out / "results.json").read_text())
    assert result["scored"] is False and result["metrics"] == {} and result["n"] == len(df) - 1
    assert result["skipped_rows"] == {"row without an image": 1}
    assert "Scoring skipped" in (out / "results.md").read_text()
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()[1:]]
    for sub in (
        pd.read_excel(out / "gmai-test_submission.xlsx", dtype=str, keep_default_na=False),
        pd.read_csv(out / "gmai-test_submission.tsv", sep="\t", dtype=str, keep_default_na=False),
    ):
        kept = df.drop(index=2).reset_index(drop=True).drop(columns=["image"])
        assert list(sub.columns) == [*kept.columns, "prediction"]
        # indices, options and category columns exactly as in the benchmark, in its order
        pd.testing.assert_frame_equal(sub[kept.columns], kept)
        assert list(sub["prediction"]) == [p["prediction"] for p in preds]


def test_val_shaped_tsv_is_scored_with_every_category_column(tiny_checkpoint, bench_tsv, tmp_path):
    df = pd.read_csv(bench_tsv, sep="\t", dtype=str, keep_default_na=False)
    df["question_type"] = np.where(
        df["perceptual granularity"] == "box", "Anatomy Identification", "Disease Diagnosis"
    )
    df["body part"] = np.where(df["modality"] == "MR", "head", "other")  # a category column nobody listed
    df.to_csv(tmp_path / "val.tsv", sep="\t", index=False)
    args = ["eval", "--model", str(tiny_checkpoint), "--benchmark", str(tmp_path / "val.tsv"), "--out", str(tmp_path / "out"),
            "--benchmark-name", "gmai-val", "--max-new-tokens", "mcq=3", "--quiet"]  # fmt: skip
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "gmai-val" / "results.json").read_text())
    assert result["scored"] is True and result["leaderboard_metric"] == "accuracy"
    # the benchmark's own question_type values, not the evaluator's internal "mcq"
    assert set(result["breakdowns"]["question_type"]) == {"Anatomy Identification", "Disease Diagnosis"}
    assert set(result["breakdowns"]["body part"]) == {"head", "other"}
    assert "source_id" not in result["breakdowns"] and "source_md5" not in result["breakdowns"]
    md = (tmp_path / "out" / "gmai-val" / "results.md").read_text()
    assert "Leaderboard figure: `accuracy`" in md


def _b64(seed, size=48):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_reference_to_a_missing_index_is_named(tmp_path):
    df = pd.DataFrame({"index": ["q1", "q2"], "question": ["?", "?"], "A": ["x", "x"], "B": ["y", "y"],
                       "image": [_b64(0), "q9"]})  # fmt: skip
    df.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    with pytest.raises(BenchmarkFormatError, match=r"t\.tsv row 3 \(index q2\): image refers to index 'q9'"):
        load_vlmevalkit_tsv(tmp_path / "t.tsv")


def test_loading_keeps_memory_flat_in_the_number_of_questions(tmp_path):
    # every row holds its own ~7 KB base64 image; holding them (or their pixels) would grow with n
    def peak(n):
        df = pd.DataFrame({"index": range(n), "question": ["Which?"] * n, "A": ["x"] * n, "B": ["y"] * n,
                           "answer": ["A"] * n, "image": [_b64(i) for i in range(n)]})  # fmt: skip
        path = tmp_path / f"b{n}.tsv"
        df.to_csv(path, sep="\t", index=False)
        del df
        tracemalloc.start()
        bench = load_vlmevalkit_tsv(path)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(bench) == n
        return top, path.stat().st_size

    small, _ = peak(100)
    large, size = peak(1000)
    # 900 more questions: their ~6 MB of base64 text must not be held; per question only a few
    # hundred bytes of metadata remain
    assert large - small < size / 5
