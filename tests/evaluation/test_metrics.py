"""Metrics against hand-computed values."""

import math

import pytest

from gmaivl.evaluation.metrics import aggregate, bleu, cider, mcq_scores, rouge_l, score_sample, token_f1
from gmaivl.evaluation.samples import EvalSample

OPTS = {"A": "liver", "B": "kidney", "C": "spleen"}


def _mcq(i, answer, modality, department):
    return EvalSample(
        str(i), "Which organ?", answer, "mcq", [], OPTS, {"modality": modality, "department": department}
    )


def _run(samples, replies):
    records = [score_sample(s, r) for s, r in zip(samples, replies)]
    preds = {s.index: r for s, r in zip(samples, replies)}
    return aggregate(samples, records, preds, breakdown_keys=["modality", "department"])


def test_macro_accuracy_hand_computed():
    samples = [
        _mcq(0, "A", "CT", "Radiology"),
        _mcq(1, "B", "CT", "Radiology"),
        _mcq(2, "C", "CT", "Oncology"),
        _mcq(3, "A", "MR", "Oncology"),
        _mcq(4, "B", "US", "Radiology"),
        _mcq(5, "C", "US", "Radiology"),
    ]
    # CT: right, right, wrong (unanswerable); MR: wrong; US: right, right (by option text)
    replies = ["A", "The answer is B", "no idea", "C", "kidney", "it is the spleen"]
    res = _run(samples, replies)
    m = res["metrics"]
    assert m["accuracy"] == pytest.approx(100 * 4 / 6, abs=1e-3)
    by_mod = res["breakdowns"]["modality"]
    assert by_mod["CT"] == {"accuracy": pytest.approx(200 / 3, abs=1e-3), "n": 3}
    assert by_mod["MR"]["accuracy"] == 0.0 and by_mod["US"]["accuracy"] == 100.0
    # macro over modalities: (66.67 + 0 + 100) / 3 = 55.56, unlike the micro 66.67
    assert m["macro_accuracy/modality"] == pytest.approx((200 / 3 + 0 + 100) / 3, abs=1e-3)
    # departments: Radiology 4/4 = 100, Oncology 0/2 = 0 -> macro 50
    assert m["macro_accuracy/department"] == pytest.approx(50.0)
    assert res["unanswerable"] == {"count": 1, "indices": ["2"]}
    assert res["extraction_methods"] == {"letter-only": 2, "none": 1, "option-text": 2, "statement": 1}


def test_multi_answer_acc_and_recall():
    assert mcq_scores(["A", "B"], ["A", "C"]) == (0.5, 0.5)
    assert mcq_scores(["A", "C", "B"], ["A", "C"]) == (pytest.approx(2 / 3), 1.0)
    assert mcq_scores([], ["A"]) == (0.0, 0.0)
    samples = [EvalSample(str(i), "Which?", "A,C", "mcq", [], OPTS) for i in range(3)]
    assert samples[0].is_multi_answer
    res = _run(samples, ["A, B", "A, B and C", "unsure"])
    assert res["metrics"]["acc_mcq"] == pytest.approx(100 * (0.5 + 2 / 3 + 0) / 3, abs=1e-3)
    assert res["metrics"]["recall_mcq"] == pytest.approx(100 * (0.5 + 1 + 0) / 3, abs=1e-3)
    assert "accuracy" not in res["metrics"]  # multi-answer cases are not single-choice accuracy


def test_open_and_closed_metrics():
    samples = [
        EvalSample("o1", "Which organ?", "liver", "open", []),
        EvalSample("o2", "Which side?", "right lung", "open", []),
        EvalSample("c1", "Is it normal?", "yes", "closed", []),
        EvalSample("c2", "Is there a mass?", "no", "closed", []),
    ]
    res = _run(samples, ["The liver.", "left lung", "Yes.", "Yes, there is."])
    m = res["metrics"]
    assert m["open_exact_match"] == 50.0
    assert m["open_token_f1"] == pytest.approx(100 * (1 + 0.5) / 2)
    assert m["closed_accuracy"] == 50.0
    assert m["accuracy"] == 50.0  # (1 + 0 + 1 + 0) / 4
    assert 0 < m["open_rouge_l"] < 100
    assert token_f1("left lung", "right lung") == 0.5


def test_text_metrics_use_the_libraries_correctly():
    refs = [
        "the heart is enlarged with clear lungs",
        "small left pleural effusion is present",
        "no acute fracture",
    ]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert rouge_l(refs, refs) == pytest.approx(100.0)
    perfect, shuffled = cider(refs, refs), cider(refs[1:] + refs[:1], refs)
    assert perfect > 1.0 and shuffled < perfect
    assert bleu(["completely unrelated words"] * 3, refs) < 5


def test_report_metrics_in_aggregate():
    samples = [
        EvalSample("r1", "", "Findings: clear lungs. Impression: normal.", "report", []),
        EvalSample("r2", "", "Findings: left effusion. Impression: effusion.", "report", []),
    ]
    res = _run(
        samples, ["Findings: clear lungs. Impression: normal.", "Findings: nothing. Impression: normal."]
    )
    m = res["metrics"]
    assert set(m) >= {"report_rouge_l", "report_bleu", "report_cider"}
    assert 0 < m["report_rouge_l"] < 100 and not math.isnan(m["report_cider"])


def test_open_recall_is_token_recall_after_normalisation():
    from gmaivl.evaluation.metrics import token_recall

    assert token_recall("The left lung.", "left lung") == 1.0
    assert token_recall("<answer>right lung</answer>", "left lung") == 0.5
    assert token_recall("肝脏", "肝") == 1.0  # Chinese is read character by character
    samples = [
        EvalSample("0", "Which organ?", "left lung", "open"),
        EvalSample("1", "Which organ?", "liver", "open"),
    ]
    res = _run(samples, ["<answer>the left lung</answer>", "kidney"])
    assert res["metrics"]["open_recall"] == pytest.approx(50.0)
    assert res["metrics"]["open_exact_match"] == pytest.approx(50.0)  # tags stripped: "left lung" matches


def test_slake_closed_questions_follow_its_answer_type(tmp_path):
    import datasets
    from PIL import Image

    from gmaivl.evaluation.loaders import load_hf_benchmark

    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (4, 4))] * 4,
            "question": ["Is this a CT?", "Which is bigger, liver or spleen?", "这是CT吗?", "What organ?"],
            "answer": ["Yes", "Liver", "是", "Lung"],
            "answer_type": ["CLOSED", "CLOSED", "CLOSED", "OPEN"],
            "q_lang": ["en", "en", "zh", "en"],
        }
    )
    ds.save_to_disk(tmp_path / "slake")
    samples = load_hf_benchmark(str(tmp_path / "slake"), preset="slake")
    assert [s.question_type for s in samples] == ["closed", "closed", "closed", "open"]
    assert len(load_hf_benchmark(str(tmp_path / "slake"), preset="slake-en")) == 3
    records = [score_sample(s, r) for s, r in zip(samples, ["yes", "The liver is bigger.", "是的", "lung"])]
    assert [r["correct"] for r in records] == [True, True, True, True]
    res = aggregate(samples, records, dict(zip("0123", ["yes", "The liver", "是的", "lung"])))
    assert res["metrics"]["closed_accuracy"] == 100.0 and set(res["breakdowns"]["q_lang"]) == {"en", "zh"}
    assert res["leaderboard_metric"] == "accuracy"


def test_shared_question_type_inference():
    from gmaivl.evaluation.question_types import infer_question_type
    from gmaivl.trainers import rewards

    assert rewards.infer_question_type is infer_question_type  # one owner
    assert infer_question_type("Yes.", None) == "closed"
    assert infer_question_type("<answer>no</answer>", {}) == "closed"
    assert infer_question_type("否", []) == "closed"
    assert infer_question_type("B", {"A": "x", "B": None}) == "mcq"
    assert infer_question_type("yes", {"A": None}) == "closed"  # Arrow struct without options
    assert infer_question_type("liver", None) == "open"
