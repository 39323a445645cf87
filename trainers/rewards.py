"""Verifiable rewards for medical GRPO (Lingshu, Sec. 3.1.4): strict format + answer accuracy.

A completion is well-formed when it is exactly `<think>...</think>` then `<answer>...</answer>`
(whitespace between and around allowed, nothing else). Accuracy compares the content of
`<answer>` with the reference by question type: `mcq` (option letter), `closed` (yes/no) or
`open` (normalised short answer), read with the evaluator's rules. The recipe weighs them 0.5
(format) and 1.0 (accuracy) through TRL's `reward_weights`. Each function follows TRL's reward
signature: it receives the batch's `completions` and the dataset columns as keyword lists, and
returns one float per completion.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import Any

from ..evaluation.extraction import extract_choice, extract_yes_no, normalize_answer
from ..evaluation.question_types import infer_question_type

FORMAT_RE = re.compile(r"^\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*$", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
# an MCQ row without its options: any letter the evaluator knows may be the answer
_ANY_LETTER = dict.fromkeys("ABCDEFGHIJ", "")


def completion_text(completion: Any) -> str:
    """Text of a completion: a string, or TRL's conversational `[{"role": "assistant", "content": ...}]`."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        parts = []
        for message in completion:
            content = message.get("content") if isinstance(message, dict) else message
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
        return "".join(parts)
    if isinstance(completion, dict):
        return completion_text([completion])
    raise TypeError(f"cannot read a completion of type {type(completion).__name__}")


def is_well_formed(text: str) -> bool:
    """Strict: one think block, then one answer block, nothing outside, each tag exactly once, answer non-empty."""
    match = FORMAT_RE.match(text)
    if match is None:
        return False
    if any(text.count(tag) != 1 for tag in _TAGS):
        return False
    return bool(match.group("answer").strip())


def extract_answer(text: str) -> str | None:
    """The content of the last `<answer>` block, or None."""
    found = ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def options_as_dict(options: Any) -> dict[str, str] | None:
    """Letter -> text from a mapping, a plain list, or "A. text" lines; None when there are none.

    Arrow stores a mapping column as one struct for all rows, so keys absent from a row come back
    as None and are dropped here.
    """
    if not options:
        return None
    if isinstance(options, dict):
        out = {str(k).strip().upper(): str(v) for k, v in options.items() if v is not None}
        return out or None
    out = {}
    for letter, option in zip(string.ascii_uppercase, options):
        m = re.match(r"^\(?([A-Z])[.):]\s*(.*)$", str(option))
        key, text = (m.group(1), m.group(2)) if m else (letter, str(option))
        out[key] = text
    return out or None


def score_answer(
    predicted: str | None,
    reference: str,
    question_type: str,
    options: Any = None,
) -> float:
    """1.0 if the predicted answer matches the reference for this question type, else 0.0.

    The answer is read with the evaluator's rules (`gmaivl.evaluation.extraction`), so a policy
    is rewarded for exactly what the benchmarks will count as right.
    """
    if predicted is None or not predicted.strip():
        return 0.0
    if question_type == "mcq":
        opts = options_as_dict(options) or _ANY_LETTER
        ref = extract_choice(str(reference), opts).letters
        if not ref:
            raise ValueError(f"mcq question with a reference that names no option: {reference!r}")
        return float(extract_choice(predicted, opts, multi=len(ref) > 1).letters == ref)
    if question_type == "closed":
        ref = extract_yes_no(str(reference))
        if ref is None:
            raise ValueError(f"closed question with a reference that is not yes/no: {reference!r}")
        return float(extract_yes_no(predicted) == ref)
    if question_type == "open":
        return float(normalize_answer(predicted) == normalize_answer(str(reference)))
    raise ValueError(f"unknown question_type {question_type!r}; use mcq, closed or open")


def format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 for a strictly well-formed completion, else 0.0 (weight 0.5 in the recipe)."""
    return [float(is_well_formed(completion_text(c))) for c in completions]


def accuracy_reward(
    completions: list[Any],
    answer: list[str],
    question_type: list[str] | None = None,
    options: list[Any] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """1.0 when the `<answer>` block matches the reference answer, else 0.0 (weight 1.0).

    None (TRL: "does not apply") for a row without a reference answer, such as the captions and
    dialogue rows a published corpus config mixes with its closed-form questions.
    """
    out: list[float | None] = []
    for i, completion in enumerate(completions):
        if not str(answer[i] or "").strip():
            out.append(None)
            continue
        opts = options[i] if options is not None else None
        qtype = question_type[i] if question_type is not None else infer_question_type(answer[i], opts)
        out.append(score_answer(extract_answer(completion_text(completion)), answer[i], qtype, opts))
    return out


REWARD_FUNCTIONS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
}


def get_reward_functions(names: Sequence[str]) -> list[Callable[..., list[float]]]:
    unknown = [n for n in names if n not in REWARD_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown reward functions {unknown}; known: {sorted(REWARD_FUNCTIONS)}")
    return [REWARD_FUNCTIONS[n] for n in names]
