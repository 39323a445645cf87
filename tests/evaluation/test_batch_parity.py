"""A question's reply does not depend on its batch: every `generate` call holds questions of one
token budget (no batch-wide maximum), and greedy predictions are identical at batch size 1 and
24 with a tiny random GMAI-VL; the batch size is in the predictions header."""

import json

import numpy as np
from PIL import Image

from gmaivl.evaluation.prompts import render_prompt
from gmaivl.evaluation.runner import _generate, run_benchmark
from gmaivl.evaluation.samples import EvalSample

from ._spy import spy_generate

# distinct budgets per type, so that a batch-wide maximum would show in the replies' lengths
BUDGET = {"mcq": 5, "closed": 2, "open": 9, "report": 12}


def _samples(records, n=24):
    """Closed, open and multiple-choice questions interleaved, on real medical images, with
    prompts of different lengths (so that batches are left-padded)."""
    out = []
    for i in range(n):
        rec = records[i % len(records)]
        image = Image.open(__import__("io").BytesIO(rec.image_png)).convert("RGB")
        kind = ("closed", "open", "mcq")[i % 3]
        question = f"Is there a lesion in the {rec.modality} image?" if kind == "closed" else (
            "Describe the " + "main " * (i % 5) + "finding."
        )  # fmt: skip
        options = {"A": rec.modality, "B": "normal", "C": "lesion " * (1 + i % 3)} if kind == "mcq" else {}
        answer = {"closed": "yes" if i % 2 else "no", "open": rec.label, "mcq": "A"}[kind]
        out.append(EvalSample(str(i), question, answer, kind, [image], options, {"modality": rec.modality}))
    return out


def _run(model, processor, samples, path, batch_size):
    with spy_generate(model) as generate:
        run_benchmark(model, processor, samples, path, benchmark="parity", batch_size=batch_size,
                      max_new_tokens=BUDGET, progress=False)  # fmt: skip
    lines = path.read_text().splitlines()
    preds = {r["index"]: r["prediction"] for r in map(json.loads, lines[1:])}
    calls = [(c.kwargs["input_ids"].shape[0], c.kwargs["max_new_tokens"]) for c in generate.call_args_list]
    return preds, json.loads(lines[0])["run"], calls


def test_greedy_predictions_identical_at_batch_size_1_and_24(tiny_shared, records, tmp_path):
    model, processor = tiny_shared
    samples = _samples(records)
    one, header_1, calls_1 = _run(model, processor, samples, tmp_path / "b1.jsonl", 1)
    many, header_24, calls_24 = _run(model, processor, samples, tmp_path / "b24.jsonl", 24)
    assert header_1["batch_size"] == 1 and header_24["batch_size"] == 24
    assert len(calls_1) == 24
    # batch size 24: one call per budget, each holding exactly that type's questions
    assert sorted(calls_24) == [(8, BUDGET["closed"]), (8, BUDGET["mcq"]), (8, BUDGET["open"])]
    assert many == one
    assert len({one[s.index] for s in samples}) > 3  # the replies are not one constant string
    # the test can fail: given the open questions' budget (the old batch-wide maximum), the
    # closed questions' replies change
    closed = [s for s in samples if s.question_type == "closed"]
    prompts = [render_prompt(processor, s) for s in closed]
    images = [im for s in closed for im in s.load_images()]
    longer = _generate(model, processor, prompts, images, BUDGET["open"], {})
    assert sum(a != one[s.index] for a, s in zip(longer, closed)) >= len(closed) // 2


def test_a_mixed_batch_is_split_by_budget(tiny_shared, records, tmp_path):
    """Batch size 4 over closed/open/mcq in benchmark order: the runner orders questions by
    budget, so no call mixes budgets; the batch boundary inside a group splits it further."""
    model, processor = tiny_shared
    samples = _samples(records, n=9)
    preds, _, calls = _run(model, processor, samples, tmp_path / "b4.jsonl", 4)
    by_budget = {}
    for rows, budget in calls:
        by_budget[budget] = by_budget.get(budget, 0) + rows
    assert by_budget == {BUDGET["closed"]: 3, BUDGET["mcq"]: 3, BUDGET["open"]: 3}
    single, _, _ = _run(model, processor, samples, tmp_path / "b1.jsonl", 1)
    assert preds == single
    # written in the order they were generated, all present once
    lines = (tmp_path / "b4.jsonl").read_text().splitlines()[1:]
    assert sorted(json.loads(x)["index"] for x in lines) == sorted(s.index for s in samples)
    assert np.all([s.index in preds for s in samples])
