"""Offline, deterministic text generators that need no model.

- Percept: single-choice questions (classification, modality, anatomy, lesion) whose distractors
  come from the source's label space, with the GMAI-MMBench paper's option-count rule: besides the
  answer, `n = randint(1, min(4, len(pool)))` options are drawn from the pool (the printed formula
  `randint(max(1, len), min(4, len))` only makes sense read this way: 1 to 4 distractors).
- Region questions for boxes: "what is in this box" (open) and grounding ("where is X": a box).
- Caption templates for whole images and regions (the region ones start with "This region").

Every choice is driven by a `random.Random` seeded from (build seed, record id, purpose), so the same
record always gets the same text, in any process and on any machine.
"""

from __future__ import annotations

import hashlib
import random
import string
from dataclasses import dataclass
from typing import Any

from .labels import lexicon, modality_name
from .records import MedicalRecord


def rng_for(seed: int, *parts: Any) -> random.Random:
    """A deterministic RNG for one purpose (independent of PYTHONHASHSEED and process)."""
    digest = hashlib.sha256("\x1f".join(map(str, (seed, *parts))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def box_text(bbox: list[float] | None) -> str:
    return "[" + ", ".join(str(round(v)) for v in bbox) + "]" if bbox else ""


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


@dataclass
class QA:
    """One generated question/answer.

    `question` is the user turn as shown (options and answer instruction included), `answer` the
    assistant turn. Closed-form questions also set `closed` ("mcq", "closed" for yes/no, "open"
    for a short answer), `stem` (the question alone), `options` and `reference` (the option letter,
    "yes"/"no", or the short answer): what a verifiable reward compares against.
    """

    question: str
    answer: str
    question_type: str
    options: list[str] | None = None
    answer_letter: str = ""
    closed: str = ""
    stem: str = ""
    reference: str = ""


def distractor_count(pool_size: int, rng: random.Random, max_distractors: int = 4) -> int:
    """The GMAI-MMBench paper's option-count rule: 1..min(4, pool) wrong options, uniformly."""
    if pool_size <= 0:
        return 0
    return rng.randint(1, min(max_distractors, pool_size))


def choose_options(answer: str, pool: list[str], rng: random.Random) -> tuple[list[str], str] | None:
    """Answer + 1..4 distractors from `pool` (GMAI-MMBench rule), shuffled; None without distractors."""
    candidates = sorted({p for p in pool if p and p.lower() != answer.lower()})
    if not candidates:
        return None
    count = distractor_count(len(candidates), rng)
    options = [*rng.sample(candidates, count), answer]
    rng.shuffle(options)
    return options, string.ascii_uppercase[options.index(answer)]


MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
YES_NO_INSTRUCTION = "Answer yes or no."
SHORT_INSTRUCTION = "Answer with a word or a short phrase."


def format_choices(question: str, options: list[str]) -> str:
    lines = [question, *(f"{string.ascii_uppercase[i]}. {o}" for i, o in enumerate(options))]
    lines.append(MCQ_INSTRUCTION)
    return "\n".join(lines)


def _mcq(stem: str, options: list[str], letter: str, answer_text: str, kind: str) -> QA:
    return QA(
        format_choices(stem, options), f"{letter}. {answer_text}", kind, options, letter, "mcq", stem, letter
    )


_CLASSIFICATION_QUESTIONS = {
    "Disease Diagnosis": [
        "This is {a_modality} image. Which diagnosis does it most likely show?",
        "Look at this {modality} image. Which of the following findings is present?",
        "Based on this {modality} image, what is the most appropriate diagnosis?",
    ],
    "Severity Grading": [
        "This is {a_modality} image. What is the severity grade shown?",
        "Which grade best describes the disease severity in this {modality} image?",
    ],
    "Image Quality Grading": ["How would you grade the quality of this {modality} image?"],
    "Attribute Recognition": ["This is {a_modality} image. Which attribute does it show?"],
    "Cell Recognition": ["This is {a_modality} image. Which cell type is shown?"],
    "Microorganism Recognition": ["Which microorganism is visible in this {modality} image?"],
    "Counting": ["This is {a_modality} image. Which count matches what is shown?"],
    "_default": [
        "This is {a_modality} image. Which of the following best describes it?",
        "Which option matches the content of this {modality} image?",
    ],
}
_ANATOMY_QUESTIONS = [
    "This is {a_modality} image. Which structure is enclosed by the box {box}?",
    "In this {modality} image, which organ or tissue lies inside the region {box}?",
]
_LESION_QUESTIONS = [
    "This is {a_modality} image. Which abnormality is found in the region {box}?",
    "What does the marked area {box} of this {modality} image most likely show?",
]
_MODALITY_QUESTIONS = [
    "Which imaging modality was used to acquire this image?",
    "What kind of medical image is this?",
]
_OPEN_REGION_QUESTIONS = [
    "What is shown in the region {box} of this {modality} image?",
    "Identify the structure or finding inside the box {box}.",
]
_GROUNDING_QUESTIONS = [
    "Where is the {label} in this {modality} image? Give its bounding box as [x_min, y_min, x_max, y_max].",
    "Locate the {label} and answer with its bounding box [x_min, y_min, x_max, y_max] in pixels.",
]
_CAPTIONS = [
    "{A_modality} image from {department}. The finding shown is {label}.",
    "This {modality} image, relevant to {department}, shows {label}.",
    "The {modality} image presents features consistent with {label} ({department}).",
]
_REGION_CAPTIONS = [
    "This region {box} of the {modality} image contains {label}.",
    "This region {box} corresponds to {label} on this {modality} image from {department}.",
]
_CAPTION_PROMPTS = [
    "Describe this medical image.",
    "Give a short description of this image.",
    "What does this image show?",
]
_REGION_CAPTION_PROMPTS = [
    "Describe the region {box} in this image.",
    "What can be seen in the area {box}?",
]


def is_anatomy(record: MedicalRecord) -> bool:
    task = record.clinical_task
    return task.startswith("Organ Recognition") or task in {
        "Bone",
        "Muscle",
        "Nervous Tissue",
        "Blood Vessels Recognition",
    }


def _fill(template: str, record: MedicalRecord) -> str:
    modality = modality_name(record.modality)
    return template.format(
        modality=modality,
        a_modality=f"{article(modality)} {modality}",
        A_modality=f"{article(modality).capitalize()} {modality}",
        department=record.department,
        label=record.label,
        box=box_text(record.bbox),
    )


def percept_questions(record: MedicalRecord, seed: int, modality_pool: list[str] | None = None) -> list[QA]:
    """Single-choice perception questions for a record (deterministic)."""
    questions: list[QA] = []
    pool = list(record.label_space)
    if record.bbox is not None:
        kind = "anatomy" if is_anatomy(record) else "lesion"
        templates = _ANATOMY_QUESTIONS if kind == "anatomy" else _LESION_QUESTIONS
    else:
        kind = "classification"
        templates = _CLASSIFICATION_QUESTIONS.get(record.clinical_task, _CLASSIFICATION_QUESTIONS["_default"])
    rng = rng_for(seed, record.record_id, "percept", kind)
    chosen = choose_options(record.label, pool, rng)
    if chosen is not None:
        options, letter = chosen
        questions.append(_mcq(_fill(rng.choice(templates), record), options, letter, record.label, kind))
    modality = modality_name(record.modality)
    names = modality_pool if modality_pool is not None else sorted(set(lexicon()["modalities"].values()))
    rng = rng_for(seed, record.record_id, "percept", "modality")
    chosen = choose_options(modality, names, rng)
    if chosen is not None and record.bbox is None:
        options, letter = chosen
        questions.append(_mcq(rng.choice(_MODALITY_QUESTIONS), options, letter, modality, "modality"))
    yes_no = yes_no_question(record, seed)
    if yes_no is not None:
        questions.append(yes_no)
    return questions


_YES_NO_QUESTIONS = [
    "Does this {modality} image show {candidate}?",
    "Is {candidate} present in this {modality} image?",
]
_YES_NO_REGION_QUESTIONS = [
    "Does the region {box} of this {modality} image contain {candidate}?",
    "Is the structure inside the box {box} {candidate}?",
]


def yes_no_question(record: MedicalRecord, seed: int) -> QA | None:
    """A closed yes/no question: about the true label or one distractor, by a seeded coin."""
    rng = rng_for(seed, record.record_id, "yes_no")
    distractors = sorted({p for p in record.label_space if p and p.lower() != record.label.lower()})
    if not distractors:
        return None
    truth = rng.random() < 0.5
    candidate = record.label if truth else rng.choice(distractors)
    templates = _YES_NO_REGION_QUESTIONS if record.bbox is not None else _YES_NO_QUESTIONS
    template = rng.choice(templates).replace("{candidate}", "{{candidate}}")
    stem = _fill(template, record).replace("{candidate}", candidate)
    reference = "yes" if truth else "no"
    answer = f"{reference.capitalize()}." if truth else f"No. It shows {record.label}."
    return QA(f"{stem}\n{YES_NO_INSTRUCTION}", answer, "yes_no", None, "", "closed", stem, reference)


def region_questions(record: MedicalRecord, seed: int) -> list[QA]:
    """Open region question and grounding question for a boxed record."""
    if record.bbox is None:
        return []
    rng = rng_for(seed, record.record_id, "region")
    stem = _fill(rng.choice(_OPEN_REGION_QUESTIONS), record)
    open_q = QA(
        f"{stem}\n{SHORT_INSTRUCTION}",
        record.label[:1].upper() + record.label[1:] + ".",
        "region",
        closed="open",
        stem=stem,
        reference=record.label,
    )
    stem = _fill(rng.choice(_GROUNDING_QUESTIONS), record)
    box = box_text(record.bbox)
    ground = QA(stem, box, "grounding", closed="open", stem=stem, reference=box)
    return [open_q, ground]


def template_caption(record: MedicalRecord, seed: int) -> QA:
    """A short caption from the annotation (whole image, or a region starting with "This region")."""
    rng = rng_for(seed, record.record_id, "caption")
    if record.bbox is not None:
        return QA(
            _fill(rng.choice(_REGION_CAPTION_PROMPTS), record),
            _fill(rng.choice(_REGION_CAPTIONS), record),
            "region_caption",
        )
    return QA(rng.choice(_CAPTION_PROMPTS), _fill(rng.choice(_CAPTIONS), record), "caption")


def caption_prompt(record: MedicalRecord, seed: int) -> str:
    """The user turn paired with an LLM-written caption."""
    rng = rng_for(seed, record.record_id, "caption")
    if record.bbox is not None:
        return _fill(rng.choice(_REGION_CAPTION_PROMPTS), record)
    return rng.choice(_CAPTION_PROMPTS)


def template_instructions(record: MedicalRecord, seed: int) -> list[QA]:
    """Annotation-grounded instruction turns when no LLM is used (modality, department, finding)."""
    modality = modality_name(record.modality)
    qas = [
        QA(
            "Which imaging modality is this, and which clinical department would read it?",
            f"This is {article(modality)} {modality} image, typically read in {record.department}.",
            "instruct",
        ),
    ]
    if record.bbox is not None:
        qas.append(
            QA(
                f"What is located in the region {box_text(record.bbox)}?",
                f"The region {box_text(record.bbox)} contains {record.label}.",
                "instruct",
            )
        )
    else:
        qas.append(
            QA("What is the main finding in this image?", f"The main finding is {record.label}.", "instruct")
        )
    rng = rng_for(seed, record.record_id, "instruct")
    rng.shuffle(qas)
    return qas
