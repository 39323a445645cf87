"""Prepare verifiable medical QA rows for GRPO (Lingshu, Sec. 3.1.4).

Input rows hold `images`, `question`, `answer` and optionally `options` (a list, or a mapping
letter -> text) and `question_type`: the closed-form rows the dataset builders publish (other
rows of a published config, captions or dialogue, are skipped). Multiple-choice questions whose right option is a word or a
short phrase become open questions (harder, still verifiable); yes/no questions are down-sampled
to about 5% of the result. Output rows are what TRL's `GRPOTrainer` reads: a conversational
`prompt` with an image placeholder per image, `images`, and the columns the rewards need
(`answer`, `question_type`, `options`).
"""

from __future__ import annotations

import logging
import random
from typing import Any

from datasets import Dataset

from ..evaluation.extraction import normalize_answer
from .rewards import infer_question_type, options_as_dict

logger = logging.getLogger(__name__)

#: The instruction appended to every question (our wording).
REASONING_INSTRUCTION = (
    "First reason about the image and the question inside <think> </think>, "
    "then write only the final answer inside <answer> </answer>."
)
MAX_PHRASE_WORDS = 4


def _is_phrase(text: str) -> bool:
    """A word or short phrase (not a sentence, number or yes/no): what can be asked open-ended."""
    norm = normalize_answer(text)
    words = norm.split()
    if not words or len(words) > MAX_PHRASE_WORDS or norm in {"yes", "no"}:
        return False
    if any(ch in text for ch in ".;!?") and len(words) > 1:
        return False
    return not all(w.replace(".", "").isdigit() for w in words)


def convert_row(row: dict[str, Any], open_from_mcq: bool = True) -> dict[str, Any]:
    """Normalise one QA row: resolve the answer letter, maybe turn the MCQ into an open question."""
    question, answer = str(row["question"]).strip(), str(row["answer"]).strip()
    options = options_as_dict(row.get("options"))
    qtype = row.get("question_type") or infer_question_type(answer, options)
    if qtype == "mcq":
        if not options:
            raise ValueError(f"mcq row without options: {question[:60]!r}")
        letter = answer.upper().strip("() .:")
        if letter not in options:  # the reference may be the option text
            matches = [k for k, v in options.items() if normalize_answer(v) == normalize_answer(answer)]
            if len(matches) != 1:
                raise ValueError(f"mcq answer {answer!r} is neither a letter nor one option of {options}")
            letter = matches[0]
        if open_from_mcq and _is_phrase(options[letter]):
            return {"question": question, "answer": options[letter], "question_type": "open", "options": None}
        return {"question": question, "answer": letter, "question_type": "mcq", "options": options}
    return {"question": question, "answer": answer, "question_type": qtype, "options": None}


def build_prompt(question: str, options: dict[str, str] | None, n_images: int) -> list[dict[str, Any]]:
    text = question
    if options:
        text += "\n" + "\n".join(f"{k}. {v}" for k, v in options.items())
        text += "\nAnswer with the option letter."
    text += "\n" + REASONING_INSTRUCTION
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def downsample_yes_no(rows: list[dict[str, Any]], ratio: float, seed: int) -> list[dict[str, Any]]:
    """Keep closed (yes/no) rows at about `ratio` of the output; the other rows all stay."""
    closed = [r for r in rows if r["question_type"] == "closed"]
    other = [r for r in rows if r["question_type"] != "closed"]
    if not 0 <= ratio < 1:
        raise ValueError(f"yes/no ratio must be in [0, 1), got {ratio}")
    keep = min(len(closed), round(ratio / (1 - ratio) * len(other))) if other else len(closed)
    rng = random.Random(seed)
    kept = set(rng.sample(range(len(closed)), keep))
    out = other + [r for i, r in enumerate(closed) if i in kept]
    rng.shuffle(out)
    return out


CLOSED_FORM_TYPES: frozenset[str] = frozenset({"mcq", "closed", "open"})


def is_closed_form(row: dict[str, Any]) -> bool:
    """A verifiable row: a question and a reference answer, typed mcq / closed / open (or untyped).

    The published corpus mixes these with captions and dialogue, whose `question_type` is another
    word (`caption`, `dialogue`...) and whose `question` / `answer` are empty.
    """
    qtype = row.get("question_type")
    has_qa = bool(str(row.get("question") or "").strip()) and bool(str(row.get("answer") or "").strip())
    return has_qa and (not qtype or qtype in CLOSED_FORM_TYPES)


def prepare_grpo_dataset(
    dataset: Dataset, open_from_mcq: bool = True, yes_no_ratio: float = 0.05, seed: int = 0
) -> Dataset:
    """QA rows -> GRPO rows (`prompt`, `images`, `answer`, `question_type`, `options`)."""
    missing = {"question", "answer"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"GRPO data needs columns {sorted(missing)}; has {dataset.column_names}")
    rows = []
    skipped = 0
    for i, row in enumerate(dataset):
        if not is_closed_form(row):
            skipped += 1
            continue
        try:
            converted = convert_row(row, open_from_mcq=open_from_mcq)
        except ValueError as err:
            raise ValueError(f"GRPO data row {i}: {err}") from err
        images = list(row.get("images") or ([row["image"]] if row.get("image") is not None else []))
        converted["images"] = images
        converted["prompt"] = build_prompt(converted["question"], converted["options"], len(images))
        # options stored as "A. text" lines so that the column has one Arrow type across rows
        converted["options"] = [f"{k}. {v}" for k, v in (converted["options"] or {}).items()]
        rows.append(converted)
    if skipped:
        logger.info(
            "GRPO data: %d of %d rows are not closed-form questions (captions, dialogue): skipped",
            skipped,
            i + 1,
        )
    rows = downsample_yes_no(rows, yes_no_ratio, seed)
    if not rows:
        raise ValueError(
            "GRPO data has no closed-form question (question, answer, question_type mcq/closed/open)"
        )
    columns = ["prompt", "images", "answer", "question_type", "options", "question"]
    return Dataset.from_dict({c: [r[c] for r in rows] for c in columns})
