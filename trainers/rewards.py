"""Verifiable rewards for medical GRPO (Lingshu, Sec. 3.1.4): strict format + answer accuracy.

A completion is well-formed when it is exactly `<think>...</think>` then `<answer>...</answer>`
(whitespace between and around allowed, nothing else). Accuracy compares the content of
`<answer>` with the reference by question type: `mcq` (option letter), `closed` (yes/no) or
`open` (normalised short answer). The recipe weighs them 0.5 (format) and 1.0 (accuracy) through
TRL's `reward_weights`. Each function follows TRL's reward signature: it receives the batch's
`completions` and the dataset columns as keyword lists, and returns one float per completion.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import Any

FORMAT_RE = re.compile(r"^\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*$", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_YES = {"yes", "y", "true", "correct", "present", "positive"}
_NO = {"no", "n", "false", "incorrect", "absent", "negative"}


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


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style)."""
    text = text.lower()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def extract_choice(answer: str, options: Sequence[str] | dict[str, str] | None = None) -> str | None:
    """The option letter a free-form answer picks: "B", "(B)", "B.", "Option B: ...", or the option's text."""
    text = answer.strip()
    m = re.match(r"^\(([A-Za-z])\)", text) or re.match(r"^([A-Za-z])\s*(?:[.:)]|$)", text)
    if m:
        return m.group(1).upper()
    # "answer is C", "option (c)", "answer is b." -- but not the article in "the answer is a nodule"
    m = re.search(
        r"\b(?i:option|answer(?: is)?)\s*:?\s*(?:\(([A-Za-z])\)|([A-Z])\b|([a-z])(?=[.:]?\s*$))", text
    )
    if m:
        return next(g for g in m.groups() if g).upper()
    if options:
        norm = normalize_text(text)
        hits = [letter for letter, option in option_items(options) if normalize_text(option) == norm]
        if len(hits) == 1:
            return hits[0]
    return None


def option_items(options: Sequence[str] | dict[str, str]) -> list[tuple[str, str]]:
    """(letter, text) pairs from a mapping, a plain list, or "A. text" lines."""
    if isinstance(options, dict):
        return [(str(k).upper(), str(v)) for k, v in options.items() if v is not None]
    items = []
    for letter, option in zip(string.ascii_uppercase, options):
        m = re.match(r"^\(?([A-Z])[.):]\s*(.*)$", str(option))
        items.append((m.group(1), m.group(2)) if m else (letter, str(option)))
    return items


def yes_no(answer: str) -> str | None:
    words = normalize_text(answer).split()
    if not words:
        return None
    if words[0] in _YES:
        return "yes"
    if words[0] in _NO:
        return "no"
    return None


def score_answer(
    predicted: str | None,
    reference: str,
    question_type: str,
    options: Sequence[str] | dict[str, str] | None = None,
) -> float:
    """1.0 if the predicted answer matches the reference for this question type, else 0.0."""
    if predicted is None or not predicted.strip():
        return 0.0
    if question_type == "mcq":
        ref = extract_choice(str(reference), options) or str(reference).strip().upper()
        return float(extract_choice(predicted, options) == ref)
    if question_type == "closed":
        ref = yes_no(str(reference))
        if ref is None:
            raise ValueError(f"closed question with a reference that is not yes/no: {reference!r}")
        return float(yes_no(predicted) == ref)
    if question_type == "open":
        return float(normalize_text(predicted) == normalize_text(str(reference)))
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
) -> list[float]:
    """1.0 when the `<answer>` block matches the reference answer, else 0.0 (weight 1.0)."""
    out = []
    for i, completion in enumerate(completions):
        opts = options[i] if options is not None else None
        qtype = question_type[i] if question_type is not None else infer_question_type(answer[i], opts)
        out.append(score_answer(extract_answer(completion_text(completion)), answer[i], qtype, opts))
    return out


def infer_question_type(answer: str, options: Any) -> str:
    """mcq when there are options, closed for yes/no references, open otherwise."""
    if options:
        return "mcq"
    if normalize_text(str(answer)) in {"yes", "no"}:
        return "closed"
    return "open"


REWARD_FUNCTIONS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
}


def get_reward_functions(names: Sequence[str]) -> list[Callable[..., list[float]]]:
    unknown = [n for n in names if n not in REWARD_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown reward functions {unknown}; known: {sorted(REWARD_FUNCTIONS)}")
    return [REWARD_FUNCTIONS[n] for n in names]
