"""The evaluator's unit of work: one benchmark question with its images and reference answer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

QuestionType = Literal["mcq", "closed", "open", "report"]
QUESTION_TYPES: tuple[str, ...] = ("mcq", "closed", "open", "report")
YES_NO = {"yes", "no"}


@dataclass
class EvalSample:
    """One question of a benchmark.

    `options` maps option letters ("A".."E") to option texts for multiple-choice questions; the
    reference `answer` is then a letter, or several letters ("A,C") for multi-answer questions.
    `metadata` keeps the benchmark's category columns (modality, department, ...), which the
    metrics break accuracy down along.
    """

    index: str
    question: str
    answer: str
    question_type: QuestionType
    images: list[Image.Image] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def answer_letters(self) -> list[str]:
        """Reference letters of a multiple-choice question (sorted, deduplicated)."""
        return parse_answer_letters(self.answer, self.options)

    @property
    def is_multi_answer(self) -> bool:
        return self.question_type == "mcq" and len(self.answer_letters) > 1

    def fingerprint(self) -> str:
        """Digest of the text of the question, used to tie a predictions file to its benchmark."""
        payload = json.dumps(
            [self.index, self.question, self.options, self.answer, self.question_type], sort_keys=True
        )
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()


def parse_answer_letters(answer: str, options: dict[str, str]) -> list[str]:
    """Split a reference such as "A", "A,C", "A, C" or "AC" into option letters."""
    text = str(answer).strip().upper()
    letters = [ch for ch in text if ch.isalpha()]
    valid = {k.upper() for k in options}
    if letters and all(ch in valid for ch in letters):
        return sorted(set(letters))
    # The reference may be the option text itself (some HF datasets store it that way).
    for key, value in options.items():
        if str(value).strip().lower() == str(answer).strip().lower():
            return [key.upper()]
    return []


def infer_question_type(answer: str, options: dict[str, str]) -> QuestionType:
    """mcq when there are options, closed for yes/no references, open otherwise."""
    if options:
        return "mcq"
    if str(answer).strip().lower() in YES_NO:
        return "closed"
    return "open"


def benchmark_fingerprint(samples: list[EvalSample]) -> str:
    h = hashlib.sha1()
    for s in samples:
        h.update(s.fingerprint().encode())
    return h.hexdigest()
