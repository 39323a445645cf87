"""Annotation-guided text generation: records -> training rows of the five sub-datasets.

Configs (the GMAI-VL paper Table 9): `caption` (GMAI-MM-Caption), `instruct` (GMAI-MM-Instruct), `percept`
(GMAI-MM-Percept), `text_single` / `text_multi` (GMAI-Text-Single / -Multi). With the `templates`
backend everything is offline and deterministic; with an LLM backend, captions, instruction pairs
and the Chinese translation of about `translate_fraction` of the English rows come from the model.
"""

from __future__ import annotations

import re
from typing import Any

from .adapters import Failure, TextSample
from .llm import (
    BackendUnavailable,
    LLMClient,
    LLMError,
    validate_caption,
    validate_pairs,
    validate_translation,
)
from .prompts import caption_prompt as llm_caption_prompt
from .prompts import instruction_prompt, translation_prompt
from .records import MedicalRecord
from .templates import (
    QA,
    caption_prompt,
    percept_questions,
    region_questions,
    rng_for,
    template_caption,
    template_instructions,
)

IMAGE_CONFIGS = ("caption", "instruct", "percept")
_CJK = re.compile(r"[\u4e00-\u9fff]")


def row_features():
    """`datasets.Features` shared by every sub-dataset config (text rows have no images)."""
    from datasets import Features, Image, List, Value

    return Features(
        {
            "row_id": Value("string"),
            "images": List(Image()),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "source_dataset": Value("string"),
            "split": Value("string"),
            "language": Value("string"),
            "modality": Value("string"),
            "department": Value("string"),
            "label": Value("string"),
            "task_type": Value("string"),
            "clinical_task": Value("string"),
            "granularity": Value("string"),
            "bbox": List(Value("float32")),
            "question_type": Value("string"),
            "question_kind": Value("string"),
            "question": Value("string"),
            "options": List(Value("string")),
            "answer": Value("string"),
            "prompt": List(
                {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
            ),
            "generator": Value("string"),
            "record_id": Value("string"),
        }
    )


def conversational_prompt(text: str, images: int = 1) -> list[dict[str, Any]]:
    """TRL's conversational prompt: one user turn, an image part per image, then the text."""
    return [
        {
            "role": "user",
            "content": [
                *({"type": "image", "text": None} for _ in range(images)),
                {"type": "text", "text": text},
            ],
        }
    ]


def language_of(text: str) -> str:
    return "zh" if len(_CJK.findall(text)) >= max(1, len(text) // 10) else "en"


def _row(
    record: MedicalRecord,
    config: str,
    kind: str,
    index: int,
    messages: list[dict[str, str]],
    generator: str,
    qa: QA | None = None,
) -> dict[str, Any]:
    closed = qa is not None and bool(qa.closed)
    return {
        "config": config,
        "row_id": f"{record.record_id}|{config}|{kind}|{index}",
        "images": [{"bytes": record.image_png, "path": None}],
        "messages": messages,
        "source_dataset": record.source_dataset,
        "split": record.split,
        "language": "en",
        "modality": record.modality,
        "department": record.department,
        "label": record.label,
        "task_type": record.task_type,
        "clinical_task": record.clinical_task,
        "granularity": record.granularity,
        "bbox": record.bbox,
        "question_type": qa.closed if closed else kind,
        "question_kind": kind,
        "question": qa.stem if closed else "",
        "options": (qa.options or []) if closed else [],
        "answer": qa.reference if closed else "",
        "prompt": conversational_prompt(qa.question) if closed else [],
        "generator": generator,
        "record_id": record.record_id,
    }


def _single_turn(qa: QA) -> list[dict[str, str]]:
    return [{"role": "user", "content": qa.question}, {"role": "assistant", "content": qa.answer}]


def text_row(sample: TextSample, config: str | None = None) -> dict[str, Any]:
    users = sum(1 for m in sample.messages if m["role"] == "user")
    config = config or ("text_single" if users <= 1 else "text_multi")
    text = " ".join(m["content"] for m in sample.messages)
    return {
        "config": config,
        "row_id": f"{sample.sample_id}|{config}",
        "images": [],
        "messages": sample.messages,
        "source_dataset": sample.source,
        "split": sample.split,
        "language": language_of(text),
        "modality": "",
        "department": "",
        "label": "",
        "task_type": "text",
        "clinical_task": "",
        "granularity": "",
        "bbox": None,
        "question_type": "dialogue",
        "question_kind": "dialogue",
        "question": "",
        "options": [],
        "answer": "",
        "prompt": [],
        "generator": "import",
        "record_id": sample.sample_id,
    }


def given_rows(record: MedicalRecord) -> list[dict[str, Any]]:
    """The `instruct` row of a record whose source gave its dialogue (`given_messages`, e.g. LLaVA
    JSON): the turns as given, with the record's image and its `extra_images`; nothing generated."""
    messages = record.given_messages
    kind = "instruct" if sum(m["role"] == "user" for m in messages) <= 1 else "dialogue"
    row = _row(record, "instruct", kind, 0, messages, "import")
    row["images"] += [{"bytes": png, "path": None} for png in getattr(record, "extra_images", [])]
    row["language"] = language_of(" ".join(m["content"] for m in messages))
    return [row]


class RowGenerator:
    """Turns one record into rows for the configured sub-datasets."""

    def __init__(self, generation: dict[str, Any], seed: int, client: LLMClient | None = None) -> None:
        self.configs = tuple(generation.get("configs", IMAGE_CONFIGS))
        unknown = set(self.configs) - set(IMAGE_CONFIGS)
        if unknown:
            raise ValueError(
                f"generation.configs: unknown image configs {sorted(unknown)} (use {IMAGE_CONFIGS})"
            )
        self.seed = seed
        self.client = client
        self.translate_fraction = float(generation.get("translate_fraction", 0.3))
        self.instruct_pairs = int(generation.get("instruct_pairs", 3))
        self.send_image = bool(generation.get("send_image", True))
        self.name = "template" if client is None else f"llm:{client.backend.identity}"

    def rows(self, record: MedicalRecord) -> tuple[list[dict[str, Any]], list[Failure]]:
        if getattr(record, "given_messages", None):  # the source gave the dialogue (readers/llava.py)
            return (given_rows(record) if "instruct" in self.configs else []), []
        rows: list[dict[str, Any]] = []
        failures: list[Failure] = []
        for config in self.configs:
            try:
                rows.extend(getattr(self, f"_{config}")(record))
            except BackendUnavailable:
                raise
            except LLMError as error:
                failures.append(
                    Failure(
                        record.source_dataset,
                        record.record_id,
                        "llm_invalid_reply",
                        f"{record.record_id} ({config}): {error}",
                    )
                )
        if self.client is not None and self.translate_fraction > 0:
            for row in list(rows):
                if row["config"] in ("caption", "instruct") and self._selected_for_translation(row["row_id"]):
                    try:
                        rows.append(self._translate(row, record))
                    except BackendUnavailable:
                        raise
                    except LLMError as error:
                        failures.append(
                            Failure(
                                record.source_dataset,
                                record.record_id,
                                "llm_invalid_reply",
                                f"{row['row_id']} (translation): {error}",
                            )
                        )
        return rows, failures

    def _selected_for_translation(self, row_id: str) -> bool:
        return rng_for(self.seed, row_id, "translate").random() < self.translate_fraction

    def _images(self, record: MedicalRecord):
        return ([record.image()], [record.image_md5]) if self.send_image else ([], [])

    def _caption(self, record: MedicalRecord) -> list[dict[str, Any]]:
        if self.client is None:
            qa = template_caption(record, self.seed)
            return [_row(record, "caption", qa.question_type, 0, _single_turn(qa), self.name)]
        images, keys = self._images(record)
        region = record.bbox is not None
        caption = self.client.request_json(
            "caption", llm_caption_prompt(record), images, keys, lambda data: validate_caption(data, region)
        )
        qa = QA(caption_prompt(record, self.seed), caption, "region_caption" if region else "caption")
        return [_row(record, "caption", qa.question_type, 0, _single_turn(qa), self.name)]

    def _instruct(self, record: MedicalRecord) -> list[dict[str, Any]]:
        if self.client is None:
            qas = template_instructions(record, self.seed)
        else:
            images, keys = self._images(record)
            pairs = self.client.request_json(
                "instruct", instruction_prompt(record, self.instruct_pairs), images, keys, validate_pairs
            )
            qas = [QA(p["question"], p["answer"], "instruct") for p in pairs]
        messages = [turn for qa in qas for turn in _single_turn(qa)]
        return [_row(record, "instruct", "instruct", 0, messages, self.name)]

    def _percept(self, record: MedicalRecord) -> list[dict[str, Any]]:
        rows = []
        for index, qa in enumerate(
            [*percept_questions(record, self.seed), *region_questions(record, self.seed)]
        ):
            rows.append(_row(record, "percept", qa.question_type, index, _single_turn(qa), "template", qa))
        return rows

    def _translate(self, row: dict[str, Any], record: MedicalRecord) -> dict[str, Any]:
        assert self.client is not None
        original = row["messages"]
        translated = self.client.request_json(
            "translate",
            translation_prompt(original),
            [],
            [],
            lambda data: validate_translation(data, original),
        )
        return {
            **row,
            "row_id": row["row_id"] + "|zh",
            "messages": translated,
            "language": "zh",
            "generator": self.name,
        }
