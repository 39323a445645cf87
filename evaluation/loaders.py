"""Benchmark loaders: VLMEvalKit TSV files and Hugging Face datasets, into `EvalSample` lists.

VLMEvalKit TSV (GMAI-MMBench, OmniMedVQA): one row per question with `index`, `question`, option
columns `A`..`E` (empty when a question has fewer), `answer`, base64 `image` (or the index of the
row holding the same image, or a list of base64 strings, or an `image_path` column), plus
category columns that are kept as metadata.

Hugging Face datasets (VQA-RAD, SLAKE, PathVQA, PMC-VQA, MMMU, report sets): a local folder
(`save_to_disk` output or data files) or a Hub id, with column names given by a preset or found
by looking for the usual names.

The benchmarks' own published layouts (VQA-RAD's `VQA_RAD Dataset Public.json`, SLAKE's
`test.json` + `imgs/`, OmniMedVQA's `QA_information/`, PMC-VQA's CSV + `figures/`) are read by
`layouts.py`; `load_benchmark` recognises them.

A row whose image cell cannot be read (not an image, or over `ImageLimits.max_bytes`) is not
refused at load time: its image is an `UnreadableImage`, and the run records that question as
failed with the reason and asks the others.
"""

from __future__ import annotations

import ast
import csv
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from gmaivl.core.tsv import (
    IMAGE_REFERENCE_MAX_LEN,
    ImageLimits,
    ImageTooLargeError,
    as_list,
    decode_base64_image,
    iter_tsv_records,
    looks_like_image,
)

from .errors import BenchmarkFormatError
from .images import (
    DatasetImage,
    LazyImage,
    UnreadableImage,
    undecoded,
)
from .question_types import infer_question_type
from .samples import Benchmark, EvalSample

__all__ = [
    "CATEGORY_COLUMNS",
    "PRESETS",
    "BenchmarkFormatError",
    "HFColumns",
    "decode_base64_image",
    "load_benchmark",
    "load_hf_benchmark",
    "load_vlmevalkit_tsv",
]

OPTION_LETTERS: tuple[str, ...] = tuple("ABCDEFGHIJ")
TSV_REQUIRED = ("index", "question")  # `answer` is absent from test splits (prediction-only runs)
# Category columns of GMAI-MMBench (spelled as its TSV spells them), OmniMedVQA, SLAKE and others:
# always kept as metadata and broken down by.
CATEGORY_COLUMNS: tuple[str, ...] = (
    "modality",
    "clinical vqa task",
    "department",
    "perceptual granularity",
    "category",
    "l2-category",
    "question_type",
    "modality_type",
    "answer_type",
    "content_type",
    "q_lang",
    "dataset",
    "split",
)
# Columns that are not categories: the question itself, identifiers, per-row text, hashes.
NON_CATEGORY_COLUMNS = frozenset(
    {"index", "question", "answer", "image", "image_path", "hint", "prediction", "label", "id", "qid",
     "record_id", "source_id", "source_md5", "source_phash", "image_name", "img_name", "img_id",
     "comment", "options", *OPTION_LETTERS}
)  # fmt: skip


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() in {"", "nan"}


def _category_columns(header: list[str], rows: list[dict[str, str]]) -> list[str]:
    """Known category columns, plus any other column that looks like one (not an id, not free text)."""
    out = []
    for col in header:
        if col in CATEGORY_COLUMNS:
            out.append(col)
            continue
        if col in NON_CATEGORY_COLUMNS or col.startswith("Unnamed"):
            continue
        values = [r.get(col, "") for r in rows if not _is_missing(r.get(col, ""))]
        if not values or max(len(v) for v in values) > 100:
            continue
        if len(rows) > 1 and len(set(values)) == len(rows):
            continue  # unique per row: an identifier or free text
        out.append(col)
    return out


def load_vlmevalkit_tsv(path: str | os.PathLike, limit: int | None = None) -> Benchmark:
    """Read a VLMEvalKit-style TSV without decoding its images (they are `LazyImage`s).

    Without an `answer` column the benchmark is prediction-only (GMAI-MMBench TEST). Rows without
    an image are skipped and counted (`Benchmark.skipped`), as VLMEvalKit skips them. Raises
    `BenchmarkFormatError` naming the file and row for missing columns, bad answers, images that
    are not images, and references to an index that does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    records = iter_tsv_records(path)
    try:
        _, _, header = next(records)
    except StopIteration:
        raise BenchmarkFormatError(f"{path}: no rows") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise BenchmarkFormatError(f"{path}: cannot be read as a TSV ({exc})") from exc
    missing = [c for c in TSV_REQUIRED if c not in header]
    has_image = "image" in header or "image_path" in header
    if missing or not has_image:
        if not has_image:
            missing.append("image (or image_path)")
        raise BenchmarkFormatError(f"{path}: missing required column(s) {missing}; found {header}")
    prediction_only = "answer" not in header
    image_col = header.index("image") if "image" in header else None
    option_cols = [c for c in OPTION_LETTERS if c in header]

    # pass 1: every row's text columns and where its image is; images are not kept
    rows: list[dict[str, str]] = []
    image_at: dict[str, tuple[int, int]] = {}  # index -> (offset, number of images)
    refs: dict[int, str] = {}  # position in rows -> referenced index
    first_row: dict[str, int] = {}
    unreadable: dict[str, UnreadableImage] = {}  # index -> its image cell, unreadable (that row fails)
    limits = ImageLimits.from_env()
    try:
        for number, offset, fields in records:
            if len(fields) != len(header):
                raise BenchmarkFormatError(
                    f"{path} row {number + 1}: {len(fields)} fields, the header has {len(header)}"
                )
            row = {c: v for c, v in zip(header, fields) if c != "image"}
            idx = row["index"].strip()
            where = f"{path} row {number + 1} (index {idx})"
            if idx in first_row:  # predictions are keyed by index: a repeat would share one answer
                raise BenchmarkFormatError(f"{where}: index {idx} already used by row {first_row[idx]}")
            first_row[idx] = number + 1
            row["_where"], row["_offset"] = where, str(offset)
            value = fields[image_col] if image_col is not None else ""
            if not _is_missing(value) and len(value.strip()) <= IMAGE_REFERENCE_MAX_LEN:
                refs[len(rows)] = value.strip()
            elif not _is_missing(value):
                try:  # the cell's size first: nothing of an oversize cell is parsed or kept
                    limits.check_encoded(len(value), where, "image cell")
                except ImageTooLargeError as exc:
                    unreadable[idx] = UnreadableImage(str(exc), too_large=True)
                else:
                    items = as_list(value)
                    if all(looks_like_image(item) for item in items):
                        image_at[idx] = (offset, len(items))
                    else:
                        unreadable[idx] = UnreadableImage(f"{where}: image is not a decodable base64 image")
            rows.append(row)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise BenchmarkFormatError(f"{path}: cannot be read as a TSV ({exc})") from exc

    categories = _category_columns([c for c in header if c != "image"], rows)
    samples: list[EvalSample] = []
    skipped: Counter[str] = Counter()
    for position, row in enumerate(rows):
        if limit is not None and len(samples) >= limit:
            break
        idx, where = row["index"].strip(), row["_where"]
        images = _row_images(path, row, position, refs, image_at, image_col, first_row, skipped, unreadable)
        if images is None:
            continue
        options = {c: row[c].strip() for c in option_cols if not _is_missing(row[c])}
        answer = "" if prediction_only else row["answer"].strip()
        if not prediction_only and _is_missing(answer):
            raise BenchmarkFormatError(f"{where}: empty answer")
        meta = {c: row[c] for c in categories if not _is_missing(row.get(c, ""))}
        if "hint" in row and not _is_missing(row["hint"]):
            meta["hint"] = row["hint"]
        qtype = infer_question_type(answer, options)
        if qtype == "mcq" and answer:
            letters = [ch for ch in answer.upper() if ch.isalpha()]
            if not letters or any(ch not in options for ch in letters):
                raise BenchmarkFormatError(
                    f"{where}: answer {answer!r} is not among the option letters {sorted(options)}"
                )
        samples.append(
            EvalSample(
                index=idx,
                question=str(row["question"]),
                answer=answer,
                question_type=qtype,
                images=images,
                options=options,
                metadata=meta,
                source_row={k: v for k, v in row.items() if not k.startswith("_")},
            )
        )
    if not samples:
        raise BenchmarkFormatError(f"{path}: no rows with an image (skipped: {dict(skipped)})")
    if all(isinstance(im, UnreadableImage) for s in samples for im in s.images):
        raise BenchmarkFormatError(
            f"{path}: no row has a readable image; the first: {next(iter(unreadable.values())).reason}"
        )
    return Benchmark(
        samples,
        skipped=dict(skipped),
        prediction_only=prediction_only,
        columns=[c for c in header if c != "image"],
        source=str(path),
    )


def _row_images(
    path: Path,
    row: dict[str, str],
    position: int,
    refs: dict[int, str],
    image_at: dict[str, tuple[int, int]],
    image_col: int | None,
    indices: dict[str, int],
    skipped: Counter,
    unreadable: dict[str, UnreadableImage],
) -> list[LazyImage | UnreadableImage] | None:
    """Lazy images of a row; None (and counted in `skipped`) when the row has none; an
    `UnreadableImage` when its cell (or the cell it refers to) cannot be read."""
    idx, where = row["index"].strip(), row["_where"]
    if position in refs and refs[position] in unreadable:
        return [unreadable[refs[position]]]
    if idx in unreadable:
        return [unreadable[idx]]
    if position in refs:
        # VLMEvalKit stores a repeated image once; later rows hold the index of that row instead
        # (any short value, numeric or not)
        target = refs[position]
        if target not in indices:
            raise BenchmarkFormatError(f"{where}: image refers to index {target!r}, which is not in the file")
        if target not in image_at:
            skipped["row without an image"] += 1  # refers to a row that has none itself
            return None
        offset, count = image_at[target]
        return [
            LazyImage(str(path), offset, image_col or 0, k, f"{path} index {target}") for k in range(count)
        ]
    if idx in image_at:
        offset, count = image_at[idx]
        return [LazyImage(str(path), offset, image_col or 0, k, where) for k in range(count)]
    if "image_path" in row and not _is_missing(row["image_path"]):
        out = []
        for p in as_list(row["image_path"]):
            full = Path(p) if Path(p).is_absolute() else path.parent / p
            if not full.is_file():
                raise BenchmarkFormatError(f"{where}: image_path {full} does not exist")
            out.append(LazyImage(str(full), where=where))
        return out
    skipped["row without an image"] += 1
    return None


# --------------------------------------------------------------------------- Hugging Face datasets


@dataclass
class HFColumns:
    """Which columns of a Hugging Face dataset hold what; `None` means "find it"."""

    image: str | list[str] | None = None
    question: str | None = None
    answer: str | None = None
    options: str | list[str] | None = None  # one list/str column, or one column per option
    question_type: str | None = None  # column; its values are mapped by `type_values`
    type_values: dict[str, str] = field(default_factory=dict)
    force_type: str | None = None  # e.g. "report"
    answer_is_text: bool = False  # mcq answer stored as option text rather than a letter
    filters: dict[str, Any] = field(default_factory=dict)  # keep rows where column == value
    metadata: tuple[str, ...] = ()
    report_sections: tuple[str, ...] = ()  # e.g. ("findings", "impression")


# Presets for the benchmarks the papers report (column names of their public HF versions).
PRESETS: dict[str, HFColumns] = {
    "vqa-rad": HFColumns(image="image", question="question", answer="answer"),
    # SLAKE: both languages (English and Chinese), closed/open by SLAKE's own answer_type (as
    # MedEvalKit splits it), not by a yes/no guess; `slake-en` is the English half only.
    "slake": HFColumns(
        image="image",
        question="question",
        answer="answer",
        question_type="answer_type",
        type_values={"CLOSED": "closed", "OPEN": "open"},
        metadata=("q_lang", "answer_type", "content_type", "modality"),
    ),
    "slake-en": HFColumns(
        image="image",
        question="question",
        answer="answer",
        question_type="answer_type",
        type_values={"CLOSED": "closed", "OPEN": "open"},
        filters={"q_lang": "en"},
        metadata=("answer_type", "content_type", "modality"),
    ),
    "pathvqa": HFColumns(image="image", question="question", answer="answer"),
    "pmc-vqa": HFColumns(image="image", question="question", answer="answer", options=["A", "B", "C", "D"]),
    "mmmu": HFColumns(
        image=[f"image_{i}" for i in range(1, 8)],
        question="question",
        answer="answer",
        options="options",
        question_type="question_type",
        type_values={"multiple-choice": "mcq", "open": "open"},
        metadata=("subfield", "topic_difficulty", "img_type"),
    ),
    "report": HFColumns(
        image="image",
        force_type="report",
        report_sections=("findings", "impression"),
    ),
}
_IMAGE_NAMES = ("image", "images", "img", "image_1", "picture")
_QUESTION_NAMES = ("question", "Question", "query", "prompt")
_ANSWER_NAMES = ("answer", "Answer", "label", "gt_answer", "answer_label")


def _load_hf(path_or_id: str, name: str | None, split: str):
    from gmaivl.core.hf_datasets import open_dataset

    return open_dataset(path_or_id, name, split=split)


def _pick(columns: Iterable[str], wanted: str | None, names: tuple[str, ...], what: str, where: str) -> str:
    columns = list(columns)
    if wanted is not None:
        if wanted not in columns:
            raise BenchmarkFormatError(f"{where}: column {wanted!r} ({what}) not found; has {columns}")
        return wanted
    for n in names:
        if n in columns:
            return n
    raise BenchmarkFormatError(f"{where}: no {what} column (looked for {list(names)}); has {columns}")


def _options_from(row: dict, spec: str | list[str] | None, columns: list[str]) -> dict[str, str]:
    if spec is None:
        letter_cols = [c for c in OPTION_LETTERS if c in columns]
        choice_cols = [f"Choice {c}" for c in OPTION_LETTERS if f"Choice {c}" in columns]
        spec = letter_cols or choice_cols or ("options" if "options" in columns else None)
        if spec is None:
            return {}
    if isinstance(spec, str):
        value = row.get(spec)
        if _is_missing(value):
            return {}
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                value = [value]
        if isinstance(value, dict):
            return {str(k).upper(): str(v) for k, v in value.items()}
        return {OPTION_LETTERS[i]: str(v) for i, v in enumerate(value)}
    out = {}
    for i, col in enumerate(spec):
        value = row.get(col)
        if not _is_missing(value):
            # PMC-VQA stores "A:text"; strip a leading "A:" / "A." marker.
            text = re.sub(rf"^\s*{OPTION_LETTERS[i]}\s*[:.)]\s*", "", str(value))
            out[OPTION_LETTERS[i]] = text.strip()
    return out


def load_hf_benchmark(
    path_or_id: str,
    name: str | None = None,
    split: str = "test",
    preset: str | None = None,
    columns: HFColumns | None = None,
    limit: int | None = None,
) -> Benchmark:
    """Load a Hugging Face dataset with image + question + answer columns.

    `preset` picks known column names (see `PRESETS`); `columns` overrides them.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    spec = columns or (PRESETS[preset] if preset else HFColumns())
    ds = _load_hf(path_or_id, name, split)
    where = f"{path_or_id}" + (f" ({name})" if name else "") + f" split {split}"
    cols = list(ds.column_names)
    image_cols = (
        [c for c in spec.image if c in cols]
        if isinstance(spec.image, list)
        else [_pick(cols, spec.image, _IMAGE_NAMES, "image", where)]
    )
    if not image_cols:
        raise BenchmarkFormatError(f"{where}: none of the image columns {spec.image} found; has {cols}")
    q_col = (
        None
        if spec.force_type == "report" and spec.question is None
        else _pick(cols, spec.question, _QUESTION_NAMES, "question", where)
    )
    if spec.report_sections and all(s in cols for s in spec.report_sections):
        a_col = None
    else:
        a_col = _pick(cols, spec.answer, (*_ANSWER_NAMES, "report"), "answer", where)
    samples: list[EvalSample] = []
    skipped: Counter[str] = Counter()
    ds = undecoded(ds, image_cols)  # images stay in the (memory-mapped) dataset until a batch needs them
    for i, row in enumerate(ds):
        if limit is not None and len(samples) >= limit:
            break
        if any(row.get(k) != v for k, v in spec.filters.items() if k in cols):
            continue
        at = f"{where} row {i}"
        images: list[Any] = []
        for c in image_cols:
            value = row.get(c)
            if _is_missing(value) if not isinstance(value, (list, dict, Image.Image, bytes)) else False:
                continue
            values = value if isinstance(value, list) else [value]
            images.extend(
                DatasetImage(ds, i, c, k, at)
                for k, v in enumerate(values)
                if v is not None and not (isinstance(v, dict) and not v.get("bytes") and not v.get("path"))
            )
        if not images:
            skipped["row without an image"] += 1
            continue
        if a_col is None:
            parts = [f"{s.capitalize()}: {str(row.get(s) or '').strip()}" for s in spec.report_sections]
            answer = "\n".join(parts)
        else:
            answer = row.get(a_col)
            if isinstance(answer, list):
                answer = ", ".join(map(str, answer))
            answer = "" if answer is None else str(answer).strip()
        if not answer:
            raise BenchmarkFormatError(f"{at}: empty answer")
        options = _options_from(row, spec.options, cols)
        qtype = spec.force_type
        if qtype is None and spec.question_type and spec.question_type in cols:
            qtype = spec.type_values.get(str(row[spec.question_type]).strip())
        if qtype is None:
            qtype = infer_question_type(answer, options)
        if qtype != "mcq":
            options = {}
        elif not re.fullmatch(r"[A-J](\s*,\s*[A-J])*", answer.upper()) or spec.answer_is_text:
            match = [k for k, v in options.items() if v.strip().lower() == answer.lower()]
            if len(match) != 1:
                raise BenchmarkFormatError(
                    f"{at}: answer {answer!r} is neither an option letter nor exactly one option text"
                )
            answer = match[0]
        question = str(row[q_col]) if q_col else ""
        # MMMU writes "<image 1>" into the question; our prompt already places the images.
        question = re.sub(r"<image \d+>", "", question).strip()
        meta = {k: row[k] for k in spec.metadata if k in cols and not _is_missing(row[k])}
        samples.append(
            EvalSample(
                index=str(row.get("id", row.get("qid", i))),
                question=question,
                answer=answer,
                question_type=qtype,  # type: ignore[arg-type]
                images=images,
                options=options,
                metadata=meta,
            )
        )
    if not samples:
        raise BenchmarkFormatError(
            f"{where}: no rows with an image (after filters {spec.filters}; skipped {dict(skipped)})"
        )
    return Benchmark(samples, skipped=dict(skipped), source=str(path_or_id))


def load_benchmark(
    source: str,
    *,
    name: str | None = None,
    split: str = "test",
    preset: str | None = None,
    limit: int | None = None,
) -> Benchmark:
    """A `.tsv` file is read as VLMEvalKit TSV; a folder or file in one of the layouts the
    benchmarks' authors publish (VQA-RAD, SLAKE, OmniMedVQA, PMC-VQA: `layouts.py`) by its own
    loader; anything else as a Hugging Face dataset.

    `preset` means the same on either path (`vqa-rad`, `slake`, `slake-en`, `pmc-vqa`); the
    layout-only presets (`vqa-rad-answer-type`, `omnimedvqa`) need a folder in that layout.
    """
    from .layouts import LAYOUT_PRESETS, detect_layout, load_layout

    if str(source).lower().endswith(".tsv"):
        return load_vlmevalkit_tsv(source, limit=limit)
    found = detect_layout(source)
    if found is not None or (preset is not None and preset in LAYOUT_PRESETS and preset not in PRESETS):
        if preset is not None and preset not in LAYOUT_PRESETS:
            layout = found[0] if found else "?"
            raise BenchmarkFormatError(
                f"{source}: preset {preset!r} does not apply to the {layout} layout; "
                f"choose one of {sorted(p for p, (lay, _) in LAYOUT_PRESETS.items() if lay == layout)}"
            )
        return load_layout(source, split=split, preset=preset, limit=limit)
    return load_hf_benchmark(source, name=name, split=split, preset=preset, limit=limit)
