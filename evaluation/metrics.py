"""Scoring of single predictions and aggregation into benchmark metrics.

- Single-answer multiple choice and closed (yes/no) questions: accuracy. An unanswerable reply is
  wrong and counted under `unanswerable`.
- Multi-answer multiple choice (GMAI-MMBench): ACC_mcq = |pred & ref| / |pred| and
  Recall_mcq = |pred & ref| / |ref| per case, averaged over cases (0 for an empty prediction).
- Closed questions: yes/no references are read with `extract_yes_no`; other closed references
  (SLAKE's closed questions such as "Which is bigger, the liver or the spleen?") count when the
  normalised reference appears as a whole phrase in the normalised reply (the LLaVA-Med convention).
  Which questions are closed follows the benchmark's own `answer_type` where it has one (SLAKE).
- Open answers: token recall (the share of the reference's tokens found in the reply, after
  normalisation: the "open recall" of the VQA-RAD / SLAKE / PathVQA literature), exact match and
  token F1 after SQuAD-style normalisation, BLEU (sacrebleu) and ROUGE-L (rouge-score). An open
  answer counts as correct for `accuracy` when it matches exactly. Chinese is tokenised by character.
- Every reply is read from its answer span (`<answer>`, `\\boxed{}`, think block removed) first.
- Reports: ROUGE-L, BLEU and CIDEr (pycocoevalcap).
- Breakdowns: accuracy per value of each category column, and the macro average over values
  (GMAI-MMBench's ACC per clinical VQA task, department, modality, perceptual granularity).

Accuracy-like numbers are percentages (0-100), as the papers report them; CIDEr is on its usual scale.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from .extraction import (
    Extraction,
    Judge,
    answer_tokens,
    extract_choice,
    extract_yes_no,
    normalize_answer,
    strip_reply,
)
from .question_types import yes_no_reference
from .samples import EvalSample

LEADERBOARD_NOTE = (
    "`accuracy` is the plain per-question accuracy: the figure leaderboards publish (GMAI-MMBench "
    "'Overall', OmniMedVQA, PMC-VQA, MMMU). `macro_accuracy/<column>` is the unweighted mean over "
    "that column's values and does not compare with it."
)
PREDICTION_ONLY_NOTE = (
    "no reference answers (prediction-only benchmark, e.g. GMAI-MMBench TEST): scoring skipped; "
    "submit the submission file to the benchmark's evaluation server"
)


def token_recall(prediction: str, reference: str) -> float:
    """Share of the reference's normalised tokens that occur in the prediction (open recall)."""
    pred, ref = Counter(answer_tokens(strip_reply(prediction))), Counter(answer_tokens(reference))
    if not ref:
        return float(not pred)
    return sum((pred & ref).values()) / sum(ref.values())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = answer_tokens(strip_reply(prediction)), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def mcq_scores(predicted: Iterable[str], reference: Iterable[str]) -> tuple[float, float]:
    """(ACC_mcq, Recall_mcq) of one multi-answer case."""
    p, r = set(predicted), set(reference)
    hit = len(p & r)
    return (hit / len(p) if p else 0.0), (hit / len(r) if r else 0.0)


def score_sample(sample: EvalSample, reply: str, judge: Judge | None = None) -> dict[str, Any]:
    """Everything the aggregation needs about one answered question.

    A prediction-only question (no reference) gets its extraction recorded and no score.
    """
    rec: dict[str, Any] = {"index": sample.index, "question_type": sample.question_type}
    if not sample.has_answer:
        rec["scored"] = False
        if sample.question_type == "mcq":
            ext = extract_choice(reply, sample.options, question=sample.question, judge=judge)
            rec.update(extracted=list(ext.letters), method=ext.method, evidence=ext.evidence)
        return rec
    if sample.question_type == "mcq":
        multi = sample.is_multi_answer
        ext: Extraction = extract_choice(
            reply, sample.options, multi=multi, question=sample.question, judge=judge
        )
        rec.update(
            extracted=list(ext.letters),
            method=ext.method,
            evidence=ext.evidence,
            answered=ext.answered,
            multi=multi,
        )
        if multi:
            acc, rec_ = mcq_scores(ext.letters, sample.answer_letters)
            rec.update(acc_mcq=acc, recall_mcq=rec_, correct=set(ext.letters) == set(sample.answer_letters))
        else:
            rec["correct"] = list(ext.letters) == sample.answer_letters
    elif sample.question_type == "closed":
        reference = yes_no_reference(sample.answer)
        if reference is not None:
            got = extract_yes_no(reply)
            rec.update(extracted=got, answered=got is not None, method="yes-no" if got else "none")
            rec["correct"] = got == reference
        else:
            span = normalize_answer(strip_reply(reply))
            ref = normalize_answer(sample.answer)
            rec.update(extracted=span, answered=bool(span), method="contains" if span else "none")
            rec["correct"] = bool(ref) and f" {ref} " in f" {span} "
    elif sample.question_type == "open":
        span = strip_reply(reply)
        rec["exact_match"] = normalize_answer(span) == normalize_answer(sample.answer)
        rec["token_f1"] = token_f1(span, sample.answer)
        rec["recall"] = token_recall(span, sample.answer)
        rec["correct"] = rec["exact_match"]
        rec["answered"] = bool(span.strip())
    else:
        rec["answered"] = bool(strip_reply(reply).strip())
    return rec


def _pct(values: Sequence[float]) -> float:
    return round(100.0 * sum(values) / len(values), 4) if values else float("nan")


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return round(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score, 4)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    vals = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
    return _pct(vals)


def _cider_tokens(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def cider(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus CIDEr-D (pycocoevalcap). Its idf comes from the references, so it needs a corpus."""
    from pycocoevalcap.cider.cider import Cider

    gts = {str(i): [_cider_tokens(r)] for i, r in enumerate(references)}
    res = {str(i): [_cider_tokens(p)] for i, p in enumerate(predictions)}
    score, _ = Cider().compute_score(gts, res)
    return round(float(score), 4)


def breakdown(
    records: Sequence[dict[str, Any]], samples_by_index: dict[str, EvalSample], key: str
) -> dict[str, dict[str, float]]:
    """Accuracy per value of category `key` over records that have a `correct` field."""
    groups: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        if "correct" not in rec or rec.get("multi"):
            continue
        # a benchmark's own `question_type` column keeps its values (OmniMedVQA's five types)
        value = samples_by_index[rec["index"]].metadata.get(key)
        if value is None or str(value).strip() == "":
            continue
        groups[str(value)].append(float(rec["correct"]))
    return {k: {"accuracy": _pct(v), "n": len(v)} for k, v in sorted(groups.items())}


def macro_accuracy(table: dict[str, dict[str, float]]) -> float:
    """Unweighted mean of per-category accuracies."""
    vals = [row["accuracy"] for row in table.values()]
    return round(sum(vals) / len(vals), 4) if vals else float("nan")


def aggregate(
    samples: Sequence[EvalSample],
    records: Sequence[dict[str, Any]],
    predictions: dict[str, str],
    breakdown_keys: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics, breakdowns and counts for one benchmark run (`scored: False` without references)."""
    by_index = {s.index: s for s in samples}
    metrics: dict[str, float] = {}
    if records and all(r.get("scored") is False for r in records):
        methods = Counter(r.get("method", "n/a") for r in records if r["question_type"] == "mcq")
        return {
            "n": len(records),
            "counts": dict(Counter(r["question_type"] for r in records)),
            "scored": False,
            "note": PREDICTION_ONLY_NOTE,
            "metrics": metrics,
            "breakdowns": {},
            "unanswerable": {"count": 0, "indices": []},
            "extraction_methods": dict(sorted(methods.items())),
        }
    single = [r for r in records if "correct" in r and not r.get("multi")]
    if single:
        metrics["accuracy"] = _pct([float(r["correct"]) for r in single])
    mcq = [r for r in records if r["question_type"] == "mcq" and not r.get("multi")]
    if mcq:
        metrics["mcq_accuracy"] = _pct([float(r["correct"]) for r in mcq])
    multi = [r for r in records if r.get("multi")]
    if multi:
        metrics["acc_mcq"] = _pct([r["acc_mcq"] for r in multi])
        metrics["recall_mcq"] = _pct([r["recall_mcq"] for r in multi])
    closed = [r for r in records if r["question_type"] == "closed"]
    if closed:
        metrics["closed_accuracy"] = _pct([float(r["correct"]) for r in closed])
    for qtype in ("open", "report"):
        recs = [r for r in records if r["question_type"] == qtype]
        if not recs:
            continue
        preds = [strip_reply(predictions[r["index"]]) for r in recs]
        refs = [by_index[r["index"]].answer for r in recs]
        if qtype == "open":
            metrics["open_recall"] = _pct([r["recall"] for r in recs])
            metrics["open_exact_match"] = _pct([float(r["exact_match"]) for r in recs])
            metrics["open_token_f1"] = _pct([r["token_f1"] for r in recs])
            metrics["open_bleu"] = bleu(preds, refs)
            metrics["open_rouge_l"] = rouge_l(preds, refs)
        else:
            metrics["report_rouge_l"] = rouge_l(preds, refs)
            metrics["report_bleu"] = bleu(preds, refs)
            metrics["report_cider"] = cider(preds, refs)
    if breakdown_keys is None:
        keys = sorted({k for s in samples for k in s.metadata if k not in {"hint"}})
        breakdown_keys = keys
    tables = {}
    for key in breakdown_keys:
        table = breakdown(records, by_index, key)
        if table:
            tables[key] = table
            metrics[f"macro_accuracy/{key}"] = macro_accuracy(table)
    unanswerable = [r["index"] for r in records if "answered" in r and not r["answered"]]
    methods = Counter(r.get("method", "n/a") for r in records if r["question_type"] == "mcq")
    return {
        "n": len(records),
        "counts": dict(Counter(r["question_type"] for r in records)),
        "scored": True,
        "leaderboard_metric": "accuracy" if "accuracy" in metrics else None,
        "note": LEADERBOARD_NOTE,
        "metrics": metrics,
        "breakdowns": tables,
        "unanswerable": {"count": len(unanswerable), "indices": unanswerable},
        "extraction_methods": dict(sorted(methods.items())),
    }
