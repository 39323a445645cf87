"""A benchmark built from real medical images, evaluated end to end with a tiny GMAI-VL;
resume of an interrupted run; refusal of foreign predictions files and of processors without a
chat template."""

import json

import pandas as pd
import pytest
from PIL import Image

from gmaivl.evaluation.loaders import load_vlmevalkit_tsv
from gmaivl.evaluation.predictions import PredictionsMismatchError
from gmaivl.evaluation.prompts import MissingChatTemplateError, render_prompt
from gmaivl.evaluation.report import load_results, write_reports
from gmaivl.evaluation.runner import run_benchmark

from ._spy import spy_generate

BUDGET = {"mcq": 4, "closed": 4, "open": 4, "report": 4}


@pytest.fixture(scope="module")
def samples(bench_tsv):
    return load_vlmevalkit_tsv(bench_tsv)


@pytest.fixture(scope="module")
def full_run(tiny_shared, answer_b, samples, tmp_path_factory, bench_tsv):
    model, processor = tiny_shared
    out = tmp_path_factory.mktemp("run")
    result = run_benchmark(
        model, processor, samples, out / "predictions.jsonl", benchmark="tiny-mmbench", batch_size=4,
        max_new_tokens=BUDGET, generation_kwargs=answer_b, progress=False,
    )  # fmt: skip
    return result, out


def test_prompt_goes_through_the_chat_template(tiny_shared, samples):
    _, processor = tiny_shared
    prompt = render_prompt(processor, samples[0])
    assert prompt.startswith("<|im_start|>user\n<image>\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "Options:\nA. " in prompt and "Reply with the letter" in prompt


def test_end_to_end_scores_match_the_benchmark(full_run, bench_tsv):
    result, out = full_run
    df = pd.read_csv(bench_tsv, sep="\t", dtype=str, keep_default_na=False)
    # The model answers "B" to everything, so its accuracy is the share of questions whose key is B,
    # overall and per category: computed here straight from the TSV.
    df["hit"] = (df["answer"] == "B").astype(float) * 100
    m = result["metrics"]
    assert result["n"] == len(df)
    assert m["accuracy"] == pytest.approx(df["hit"].mean(), abs=1e-3)
    for key in ("modality", "clinical vqa task", "department", "perceptual granularity"):
        per = df.groupby(key)["hit"].mean()
        assert {k: v["accuracy"] for k, v in result["breakdowns"][key].items()} == pytest.approx(
            per.to_dict(), abs=1e-3
        )
        assert m[f"macro_accuracy/{key}"] == pytest.approx(per.mean(), abs=1e-3)
    assert result["unanswerable"]["count"] == 0
    assert result["extraction_methods"] == {"letter-only": len(df)}
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(df) + 1 and all(json.loads(x)["prediction"] == "B" for x in lines[1:])


def test_reports_written(full_run, tmp_path):
    result, _ = full_run
    files = write_reports(result, tmp_path / "reports", print_tables=False)
    assert load_results(files["json"])["metrics"] == result["metrics"]
    md = files["markdown"].read_text()
    assert "## Accuracy by perceptual granularity" in md and "macro average" in md
    charts = [k for k in files if k.startswith("chart:")]
    assert {
        "chart:modality",
        "chart:clinical vqa task",
        "chart:department",
        "chart:perceptual granularity",
    } <= set(charts)
    for k in charts:
        with Image.open(files[k]) as img:
            assert img.format == "PNG" and img.size[0] > 100


def test_interrupted_run_resumes_where_it_stopped(tiny_shared, answer_b, samples, full_run, tmp_path):
    model, processor = tiny_shared
    pred = tmp_path / "predictions.jsonl"
    kwargs = dict(benchmark="tiny-mmbench", batch_size=4, max_new_tokens=BUDGET,
                  generation_kwargs=answer_b, progress=False)  # fmt: skip
    with spy_generate(model, fail_on_call=3), pytest.raises(KeyboardInterrupt):
        run_benchmark(model, processor, samples, pred, **kwargs)
    done = len(pred.read_text().splitlines()) - 1
    assert done == 8  # two finished batches of 4 were kept
    with pred.open("a") as fh:
        fh.write('{"index": "torn')  # a write cut off by the crash
    with spy_generate(model) as counter:
        result = run_benchmark(model, processor, samples, pred, **kwargs)
    remaining = len(samples) - done
    assert counter.call_count == -(-remaining // 4)  # only the missing questions were generated
    indices = [json.loads(x)["index"] for x in pred.read_text().splitlines()[1:]]
    assert sorted(indices, key=int) == [s.index for s in samples]  # each exactly once
    full, _ = full_run
    assert result["metrics"] == full["metrics"] and result["breakdowns"] == full["breakdowns"]


def test_predictions_from_another_run_are_refused(tiny_shared, answer_b, samples, full_run):
    model, processor = tiny_shared
    _, out = full_run
    with pytest.raises(
        PredictionsMismatchError, match=r"predictions\.jsonl was written by another run \(.*model"
    ):
        run_benchmark(model, processor, samples, out / "predictions.jsonl", benchmark="tiny-mmbench",
                      model_id="some/other-model", max_new_tokens=BUDGET,
                      generation_kwargs=answer_b, progress=False)  # fmt: skip
    with pytest.raises(PredictionsMismatchError, match="benchmark_fingerprint"):
        run_benchmark(model, processor, samples[:5], out / "predictions.jsonl", benchmark="tiny-mmbench",
                      max_new_tokens=BUDGET, generation_kwargs=answer_b, progress=False)  # fmt: skip


def test_repeated_question_indices_are_refused(tiny_shared, samples, tmp_path):
    import dataclasses

    model, processor = tiny_shared
    twins = [samples[0], dataclasses.replace(samples[1], index=samples[0].index)]
    with pytest.raises(ValueError, match=r"indices must be unique.*repeated: \['0'\]"):
        run_benchmark(model, processor, twins, tmp_path / "p.jsonl", benchmark="x", progress=False)
    assert not (tmp_path / "p.jsonl").exists()


def test_not_a_predictions_file(tiny_shared, samples, tmp_path):
    model, processor = tiny_shared
    bad = tmp_path / "preds.jsonl"
    bad.write_text('{"index": "0", "prediction": "A"}\n')
    with pytest.raises(PredictionsMismatchError, match=r"preds\.jsonl: not a gmaivl predictions file"):
        run_benchmark(model, processor, samples, bad, benchmark="x", progress=False)


def test_processor_without_chat_template(tiny_shared, samples, tmp_path):
    model, processor = tiny_shared
    saved = processor.chat_template
    processor.chat_template = None
    try:
        with pytest.raises(MissingChatTemplateError, match="GMAIVLProcessor\\) has no chat template"):
            run_benchmark(model, processor, samples, tmp_path / "p.jsonl", benchmark="x", progress=False)
    finally:
        processor.chat_template = saved
    assert not (tmp_path / "p.jsonl").exists()
