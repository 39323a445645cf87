"""Verifiable rewards on hand-made completions, and GRPO data preparation."""

from __future__ import annotations

import pytest
from datasets import Dataset

from gmaivl.trainers.grpo_data import prepare_grpo_dataset
from gmaivl.trainers.rewards import accuracy_reward, format_reward, is_well_formed


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


WELL_FORMED = [
    "<think>The lesion is hypodense.</think><answer>B</answer>",
    "  <think>\nreasoning\n</think>\n<answer> yes </answer>\n",
]
MALFORMED = [
    "<answer>B</answer>",  # no think block
    "<think>x</think>",  # no answer block
    "B",  # plain answer
    "<answer>B</answer><think>x</think>",  # wrong order
    "<think>x</think><answer>B</answer> trailing text",
    "intro <think>x</think><answer>B</answer>",
    "<think>x</think><answer></answer>",  # empty answer
    "<think>x</think><answer>A</answer><answer>B</answer>",  # two answers
    "<think><think>x</think><answer>B</answer>",  # nested tag
]


def test_format_reward_is_strict():
    assert format_reward([chat(t) for t in WELL_FORMED]) == [1.0, 1.0]
    assert format_reward([chat(t) for t in MALFORMED]) == [0.0] * len(MALFORMED)
    assert format_reward(WELL_FORMED) == [1.0, 1.0]  # plain-string completions too
    assert not is_well_formed("")


@pytest.mark.parametrize(
    ("completion", "answer", "qtype", "options", "expected"),
    [
        ("<think>.</think><answer>B</answer>", "B", "mcq", None, 1.0),
        ("<think>.</think><answer>(b) effusion</answer>", "B", "mcq", None, 1.0),
        ("<think>.</think><answer>The answer is C</answer>", "B", "mcq", None, 0.0),
        ("<think>.</think><answer>effusion</answer>", "B", "mcq", ["A. normal", "B. effusion"], 1.0),
        ("<think>.</think><answer>A large mass</answer>", "A", "mcq", None, 0.0),
        ("<think>.</think><answer>The answer is a small nodule</answer>", "A", "mcq", None, 0.0),  # article
        ("<think>.</think><answer>The answer is b.</answer>", "B", "mcq", None, 1.0),
        ("<think>.</think><answer>Option (c)</answer>", "C", "mcq", None, 1.0),
        ("<think>.</think><answer>Yes.</answer>", "yes", "closed", None, 1.0),
        ("<think>.</think><answer>no, it is not</answer>", "yes", "closed", None, 0.0),
        ("<think>.</think><answer>unclear</answer>", "no", "closed", None, 0.0),
        ("<think>.</think><answer>The Liver.</answer>", "liver", "open", None, 1.0),
        ("<think>.</think><answer>left kidney</answer>", "right kidney", "open", None, 0.0),
        ("liver", "liver", "open", None, 0.0),  # no <answer> block: nothing to score
    ],
)
def test_accuracy_reward(completion, answer, qtype, options, expected):
    got = accuracy_reward([chat(completion)], answer=[answer], question_type=[qtype], options=[options])
    assert got == [expected]


def test_accuracy_reward_infers_the_question_type_from_options():
    completions = [
        chat("<think>.</think><answer>effusion</answer>"),
        chat("<think>.</think><answer>No</answer>"),
    ]
    options = [["A. normal", "B. effusion"], []]
    assert accuracy_reward(completions, answer=["B", "no"], options=options) == [1.0, 1.0]


def test_accuracy_reward_reads_answers_as_the_evaluator_does():
    from gmaivl.evaluation.extraction import extract_choice

    options = {"A": "normal", "B": "effusion", "C": "pneumothorax"}
    replies = ["B", "(b)", "The answer is b.", "effusion", "A or B", "a normal study", "It is C."]
    completions = [chat(f"<think>.</think><answer>{reply}</answer>") for reply in replies]
    rewards = accuracy_reward(completions, answer=["B"] * len(replies), options=[options] * len(replies))
    assert rewards == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert rewards == [float(extract_choice(r, options).letters == ("B",)) for r in replies]


def test_accuracy_reward_with_struct_options_from_arrow():
    # a mapping column comes back from Arrow with every row's keys; absent ones are None
    options = {"A": "normal", "B": "effusion", "C": None, "D": None}
    completion = chat("<think>.</think><answer>effusion</answer>")
    assert accuracy_reward([completion], answer=["B"], options=[options]) == [1.0]
    no_options = {"A": None, "B": None}
    assert accuracy_reward(
        [chat("<think>.</think><answer>yes</answer>")], answer=["yes"], options=[no_options]
    ) == [1.0]


def test_accuracy_reward_rejects_unknown_types():
    with pytest.raises(ValueError, match="question_type"):
        accuracy_reward([chat("<answer>x</answer>")], answer=["x"], question_type=["essay"])


def _qa_rows(n_closed: int, n_open: int) -> Dataset:
    rows = {"images": [], "question": [], "answer": [], "options": [], "question_type": []}
    for i in range(n_closed):
        rows["images"].append([])
        rows["question"].append(f"Is there an effusion {i}?")
        rows["answer"].append("yes" if i % 2 else "no")
        rows["options"].append([])
        rows["question_type"].append("closed")
    for i in range(n_open):
        rows["images"].append([])
        if i % 2:  # MCQ with word options -> open
            rows["question"].append("Which organ is shown?")
            rows["options"].append(["liver", "spleen", "kidney"])
            rows["answer"].append("B")
        else:  # MCQ with sentence options stays an MCQ
            rows["question"].append("What does the image show?")
            rows["options"].append(["A normal chest radiograph.", "A large effusion on the left side."])
            rows["answer"].append("B")
        rows["question_type"].append("mcq")
    return Dataset.from_dict(rows)


def test_grpo_data_turns_word_mcqs_into_open_questions_and_downsamples_yes_no():
    ds = prepare_grpo_dataset(_qa_rows(n_closed=200, n_open=100), yes_no_ratio=0.05, seed=0)
    types = ds["question_type"]
    assert types.count("open") == 50 and types.count("mcq") == 50
    assert abs(types.count("closed") / len(ds) - 0.05) < 0.01
    opened = [r for r in ds if r["question_type"] == "open"]
    assert {r["answer"] for r in opened} == {"spleen"} and all(r["options"] == [] for r in opened)
    mcq = next(r for r in ds if r["question_type"] == "mcq")
    assert mcq["answer"] == "B" and len(mcq["options"]) == 2
    text = mcq["prompt"][0]["content"][-1]["text"]
    assert "B. A large effusion" in text and "<answer>" in text


def test_grpo_data_names_the_bad_row():
    bad = Dataset.from_dict(
        {"question": ["q", "q2"], "answer": ["A", "Z"], "options": [["x", "y"], ["x", "y"]]}
    )
    with pytest.raises(ValueError, match="row 1"):
        prepare_grpo_dataset(bad)
