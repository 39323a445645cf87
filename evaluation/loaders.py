"""Benchmark loaders: VLMEvalKit TSV files and Hugging Face datasets, into `EvalSample` lists.

VLMEvalKit TSV (GMAI-MMBench, OmniMedVQA): one row per question with `index`, `question`, option
columns `A`..`E` (empty when a question has fewer), `answer`, base64 `image` (or the index of the
row holding the same image, or a list of base64 strings, or an `image_path` column), plus
category columns that are kept as metadata.

Hugging Face datasets (VQA-RAD, SLAKE, PathVQA, PMC-VQA, MMMU, report sets): a local folder
(`save_to_disk` output or data files) or a Hub id, with column names given by a preset or found
by looking for the usual names.
"""

from __future__ import annotations

import ast
import base64
import binascii
import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .samples import EvalSample, infer_question_type

OPTION_LETTERS: tuple[str, ...] = tuple("ABCDEFGHIJ")
TSV_REQUIRED = ("index", "question", "answer")
# Category columns of GMAI-MMBench (spelled as its TSV spells them) and other common ones.
CATEGORY_COLUMNS: tuple[str, ...] = (
    "modality",
    "clinical vqa task",
    "department",
    "perceptual granularity",
    "category",
    "l2-category",
    "question_type",
    "dataset",
    "split",
)


class BenchmarkFormatError(ValueError):
    """A benchmark file or dataset does not have the expected shape; the message names where."""


def decode_base64_image(data: str, where: str) -> Image.Image:
    try:
        raw = base64.b64decode(data, validate=False)
        img = Image.open(io.BytesIO(raw))
        img.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise BenchmarkFormatError(f"{where}: image is not a decodable base64 image ({exc})") from exc
    return img.convert("RGB")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() in {"", "nan"}


def load_vlmevalkit_tsv(path: str | os.PathLike, limit: int | None = None) -> list[EvalSample]:
    """Read a VLMEvalKit-style TSV.

    Raises `BenchmarkFormatError` naming the file and the row index for missing columns, missing
    answers and undecodable images.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as exc:
        raise BenchmarkFormatError(f"{path}: cannot be read as a TSV ({exc})") from exc
    missing = [c for c in TSV_REQUIRED if c not in df.columns]
    has_image = "image" in df.columns or "image_path" in df.columns
    if missing or not has_image:
        if not has_image:
            missing.append("image (or image_path)")
        raise BenchmarkFormatError(f"{path}: missing required column(s) {missing}; found {list(df.columns)}")
    by_index = dict(zip(df["index"].astype(str), df["image"])) if "image" in df.columns else {}
    option_cols = [c for c in OPTION_LETTERS if c in df.columns]
    samples: list[EvalSample] = []
    first_row: dict[str, int] = {}
    for row_number, row in enumerate(df.to_dict(orient="records")):
        if limit is not None and len(samples) >= limit:
            break
        idx = str(row["index"])
        where = f"{path} row {row_number + 2} (index {idx})"
        if idx in first_row:  # predictions are keyed by index: a repeat would share one answer
            raise BenchmarkFormatError(f"{where}: index {idx} already used by row {first_row[idx]}")
        first_row[idx] = row_number + 2
        images = _tsv_images(row, by_index, path.parent, where)
        options = {c: str(row[c]).strip() for c in option_cols if not _is_missing(row[c])}
        answer = str(row["answer"]).strip()
        if _is_missing(answer):
            raise BenchmarkFormatError(f"{where}: empty answer")
        meta = {c: row[c] for c in df.columns if c in CATEGORY_COLUMNS and not _is_missing(row[c])}
        if "hint" in df.columns and not _is_missing(row["hint"]):
            meta["hint"] = row["hint"]
        qtype = infer_question_type(answer, options)
        if qtype == "mcq":
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
            )
        )
    if not samples:
        raise BenchmarkFormatError(f"{path}: no rows")
    return samples


def _tsv_images(row: dict, by_index: dict[str, str], root: Path, where: str) -> list[Image.Image]:
    value = row.get("image")
    if _is_missing(value) and "image_path" in row and not _is_missing(row["image_path"]):
        paths = _as_list(row["image_path"])
        out = []
        for p in paths:
            full = Path(p) if Path(p).is_absolute() else root / p
            try:
                out.append(Image.open(full).convert("RGB"))
            except (OSError, UnidentifiedImageError) as exc:
                raise BenchmarkFormatError(f"{where}: cannot open image_path {full} ({exc})") from exc
        return out
    if _is_missing(value):
        raise BenchmarkFormatError(f"{where}: empty image")
    value = str(value)
    # VLMEvalKit stores a repeated image once; later rows hold the index of that row instead.
    if len(value) <= 64 and value.strip().isdigit():
        ref = by_index.get(value.strip())
        if ref is None or (len(ref) <= 64 and ref.strip().isdigit()):
            raise BenchmarkFormatError(f"{where}: image refers to index {value} which holds no image")
        value = ref
    return [decode_base64_image(v, where) for v in _as_list(value)]


def _as_list(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return [value]
        return [str(v) for v in parsed]
    return [value]


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
    "slake": HFColumns(
        image="image",
        question="question",
        answer="answer",
        filters={"q_lang": "en"},
        metadata=("content_type", "modality", "answer_type"),
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
    import datasets

    p = Path(path_or_id)
    if p.is_dir() and ((p / "state.json").exists() or (p / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise BenchmarkFormatError(f"{p}: no split {split!r}; has {list(ds)}")
            ds = ds[split]
        return ds
    if p.is_file():
        kind = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}.get(p.suffix)
        if kind is None:
            raise BenchmarkFormatError(f"{p}: unsupported file type for a Hugging Face benchmark")
        return datasets.load_dataset(kind, data_files=str(p), split="train")
    return datasets.load_dataset(path_or_id, name, split=split)


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


def _to_pil(value: Any, where: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    try:
        if isinstance(value, dict):
            if value.get("bytes"):
                return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
            if value.get("path"):
                return Image.open(value["path"]).convert("RGB")
        if isinstance(value, (bytes, bytearray)):
            return Image.open(io.BytesIO(value)).convert("RGB")
        if isinstance(value, str):
            return Image.open(value).convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise BenchmarkFormatError(f"{where}: image cannot be decoded ({exc})") from exc
    raise BenchmarkFormatError(f"{where}: unsupported image value of type {type(value).__name__}")


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
) -> list[EvalSample]:
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
    for i, row in enumerate(ds):
        if limit is not None and len(samples) >= limit:
            break
        if any(row.get(k) != v for k, v in spec.filters.items() if k in cols):
            continue
        at = f"{where} row {i}"
        images = []
        for c in image_cols:
            value = row.get(c)
            if _is_missing(value) if not isinstance(value, (list, dict, Image.Image, bytes)) else False:
                continue
            values = value if isinstance(value, list) else [value]
            images.extend(_to_pil(v, at) for v in values if v is not None)
        if not images:
            raise BenchmarkFormatError(f"{at}: no image")
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
            qtype = spec.type_values.get(str(row[spec.question_type]))
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
        raise BenchmarkFormatError(f"{where}: no rows (after filters {spec.filters})")
    return samples


def load_benchmark(
    source: str,
    *,
    name: str | None = None,
    split: str = "test",
    preset: str | None = None,
    limit: int | None = None,
) -> list[EvalSample]:
    """A `.tsv` file is read as VLMEvalKit TSV; anything else as a Hugging Face dataset."""
    if str(source).lower().endswith(".tsv"):
        return load_vlmevalkit_tsv(source, limit=limit)
    return load_hf_benchmark(source, name=name, split=split, preset=preset, limit=limit)
