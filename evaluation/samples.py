"""The evaluator's unit of work: one benchmark question with its images and reference answer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .images import DatasetImage, LazyImage
from .question_types import QUESTION_TYPES, YES_NO, QuestionType, infer_question_type

__all__ = [
    "QUESTION_TYPES",
    "YES_NO",
    "Benchmark",
    "EvalSample",
    "QuestionType",
    "benchmark_fingerprint",
    "infer_question_type",
    "parse_answer_letters",
]


@dataclass
class EvalSample:
    """One question of a benchmark.

    `options` maps option letters ("A".."E") to option texts for multiple-choice questions; the
    reference `answer` is then a letter, or several letters ("A,C") for multi-answer questions.
    `metadata` keeps the benchmark's category columns (modality, department, ...), which the
    metrics break accuracy down along. `images` may hold `LazyImage`s, decoded only by
    `load_images()`, so a loaded benchmark does not hold its pixels. An empty `answer` marks a
    prediction-only question (a benchmark's test split without published answers).
    `source_row` keeps the row's other columns as read (for the submission file).
    """

    index: str
    question: str
    answer: str
    question_type: QuestionType
    images: list[Image.Image | LazyImage | DatasetImage] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    source_row: dict[str, str] = field(default_factory=dict)

    @property
    def has_answer(self) -> bool:
        return bool(str(self.answer).strip())

    def load_images(self) -> list[Image.Image]:
        """The images as RGB PIL images (lazy ones decoded now, not kept)."""
        return [im if isinstance(im, Image.Image) else im.load() for im in self.images]

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


class Benchmark(list):
    """The questions of a benchmark (a list of `EvalSample`) and what loading it found.

    `skipped` counts rows left out and why (e.g. rows without an image, as VLMEvalKit skips
    them); `prediction_only` is True for a file without reference answers; `columns` are the
    source's column names in order (the submission file keeps them).
    """

    def __init__(
        self,
        samples: list[EvalSample] = (),  # type: ignore[assignment]
        *,
        skipped: dict[str, int] | None = None,
        prediction_only: bool = False,
        columns: list[str] | None = None,
        source: str = "",
    ) -> None:
        super().__init__(samples)
        self.skipped = dict(skipped or {})
        self.prediction_only = prediction_only
        self.columns = list(columns or [])
        self.source = source


def benchmark_fingerprint(samples: list[EvalSample]) -> str:
    h = hashlib.sha1()
    for s in samples:
        h.update(s.fingerprint().encode())
    return h.hexdigest()
