"""`type: text`: text-only corpora (JSONL / JSON / CSV / Parquet) as single-turn QA (Alpaca layout
included) or multi-turn dialogues, the GMAI-Text-Single / -Multi rows."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..adapters import Item, ItemError, SourceReader, TextSample, WorkUnit, chunks, register_source
from ..imaging import InputLimits, SourceError
from ..lines import iter_json_lines, load_json
from ..source_spec import ReaderOptions


@dataclass
class TextOptions(ReaderOptions):
    file: str = "data.jsonl"  # JSONL / JSON / CSV / Parquet
    format: Literal["single", "multi"] = "single"
    question_field: str = "question"
    answer_field: str = "answer"
    messages_field: str | None = None  # default: messages / conversations / conversation
    config: Literal["text_single", "text_multi"] | None = None  # default: by the number of user turns
    split_column: str | None = None
    unit_rows: int = 1000


@register_source
class Text(SourceReader):
    """Text-only corpora: single-turn QA (incl. Alpaca layout) or multi-turn dialogues."""

    type_name = "text"
    Options = TextOptions
    task_type = "text"
    needs_image_fields = False

    def stream(self) -> Iterator[dict[str, Any]]:
        """The corpus row by row (never held in memory as a whole)."""
        return _iter_text_rows(self.source.path(self.options.file), self.what, self.source.limits)

    def list_items(self) -> list[int]:
        return list(range(sum(1 for _ in self.stream())))

    def read_unit(self, unit: WorkUnit) -> Iterator[Item]:
        """One pass over the corpus up to the unit's last row, each row through the error guard."""
        wanted, last = set(unit.items), max(unit.items, default=-1)
        for index, row in enumerate(self.stream()):
            if index > last:
                break
            if index in wanted:
                yield from self.guarded(index, lambda index=index, row=row: self.sample(index, row))

    def plan(self) -> list[WorkUnit]:
        items = self.list_items()
        return [
            WorkUnit(self.source.name, i, chunk)
            for i, chunk in enumerate(chunks(items, self.options.unit_rows))
        ]

    def shared_files(self) -> list[Path]:
        return [self.source.path(self.options.file)]

    def item_files(self, index: int) -> list[Path]:
        return []

    def item_name(self, index: int) -> str:
        return f"row {index + 1}"

    def read_item(self, index: int) -> Iterator[Item]:
        row = next(row for i, row in enumerate(self.stream()) if i == index)
        yield from self.sample(index, row)

    def sample(self, index: int, row: dict[str, Any]) -> Iterator[Item]:
        if "__error__" in row:
            raise ItemError(row.get("__kind__", "invalid_json"), row["__error__"])
        try:
            messages = _text_messages(row, self.options)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ItemError("bad_text_row", str(error)) from None
        split = row.get(self.options.split_column) if self.options.split_column else None
        split = str(split or self.source.split).strip()
        if not re.fullmatch(r"\w+", split):
            raise ItemError("bad_split", f"split name {split!r} must match \\w+")
        yield TextSample(f"{self.source.name}/{index}", self.source.name, messages, split)


def _iter_text_rows(path: Path, what: str, limits: InputLimits) -> Iterator[dict[str, Any]]:
    name = path.name.lower()
    try:
        if name.endswith(".jsonl"):
            for _number, row in iter_json_lines(path, limits.max_line_bytes):
                yield row
        elif name.endswith(".json"):
            yield from load_json(path, limits)
        elif name.endswith(".csv"):
            with open(path, newline="", encoding="utf-8") as handle:
                yield from csv.DictReader(handle)
        elif name.endswith(".parquet"):
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            for index in range(parquet.num_row_groups):
                yield from parquet.read_row_group(index).to_pylist()
        else:
            raise SourceError(f"{what}: unsupported text corpus format {path.name} (jsonl/json/csv/parquet)")
    except (OSError, json.JSONDecodeError) as error:
        raise SourceError(f"{what}: cannot read {path} ({error})") from error


_ROLE_NAMES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "system": "system",
    "doctor": "assistant",
    "patient": "user",
}


def _text_messages(row: dict[str, Any], opts: TextOptions) -> list[dict[str, str]]:
    if opts.format == "single":
        if opts.question_field not in row and "instruction" in row:  # Alpaca layout
            question = "\n".join(x for x in (row.get("instruction"), row.get("input")) if x)
            answer = row.get("output")
        else:
            question, answer = row.get(opts.question_field), row.get(opts.answer_field)
        if not question or not answer:
            raise ValueError(f"empty {opts.question_field!r} or {opts.answer_field!r}")
        return [
            {"role": "user", "content": str(question).strip()},
            {"role": "assistant", "content": str(answer).strip()},
        ]
    field_name = opts.messages_field or next(
        (k for k in ("messages", "conversations", "conversation") if k in row), None
    )
    turns = row.get(field_name) if field_name else None
    if isinstance(turns, str):
        turns = json.loads(turns)
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"no conversation list in field {field_name!r}")
    messages = []
    for turn in turns:
        role = _ROLE_NAMES.get(str(turn.get("role", turn.get("from", ""))).lower())
        content = turn.get("content", turn.get("value"))
        if role is None or not content:
            raise ValueError(f"turn without a known role or content: {str(turn)[:80]}")
        messages.append({"role": role, "content": str(content).strip()})
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("conversation has no assistant turn")
    return messages
