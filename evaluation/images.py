"""Benchmark images decoded only when a batch needs them.

A GMAI-MMBench TSV holds every image as base64 text in its rows (134 MiB for VAL, more for TEST);
decoding all of them up front holds all pixels at once. A `LazyImage` remembers where its
bytes are (the byte offset of its TSV record and the column, or an image file) and decodes on
`load()`, so memory stays flat in the number of questions. TSV records are read with the `csv`
module in the dialect pandas writes and VLMEvalKit reads (tab-separated, `"` quoting), one record
at a time, which also gives each record's byte offset.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image, UnidentifiedImageError

# base64 image fields are far larger than csv's default 128 KiB field limit
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

IMAGE_REFERENCE_MAX_LEN = 64  # VLMEvalKit: an image field this short is the index of another row

# the first bytes of the image formats PIL reads from benchmark files
_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF",
)


class ImageDecodeError(ValueError):
    """An image cannot be decoded; the message names the file and row."""


def _lines(fh: BinaryIO) -> Iterator[str]:
    for raw in iter(fh.readline, b""):
        yield raw.decode("utf-8")


def iter_tsv_records(path: str | Path) -> Iterator[tuple[int, int, list[str]]]:
    """(record number from 0 for the header, byte offset, fields) of each non-blank TSV record."""
    with open(path, "rb") as fh:
        reader = csv.reader(_lines(fh), delimiter="\t", quotechar='"')
        number = 0
        while True:
            offset = fh.tell()
            try:
                fields = next(reader)
            except StopIteration:
                return
            if number == 0 and fields:
                fields[0] = fields[0].lstrip("\ufeff")
            if fields:
                yield number, offset, fields
                number += 1


def read_tsv_field(path: str | Path, offset: int, column: int) -> str:
    """One field of the TSV record starting at byte `offset`."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        fields = next(csv.reader(_lines(fh), delimiter="\t", quotechar='"'))
    return fields[column]


def as_list(value: str) -> list[str]:
    """A field holding one base64 image or a Python list of them."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return [value]
        return [str(v) for v in parsed]
    return [value]


def looks_like_image(data: str) -> bool:
    """Cheap check of a base64 field: do its first bytes start a known image format?"""
    try:
        head = base64.b64decode(data.strip()[:32] + "=" * (-len(data.strip()[:32]) % 4), validate=False)
    except (binascii.Error, ValueError):
        return False
    return head.startswith(_MAGIC)


def decode_base64_image(data: str, where: str) -> Image.Image:
    try:
        raw = base64.b64decode(data, validate=False)
        img = Image.open(io.BytesIO(raw))
        img.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageDecodeError(f"{where}: image is not a decodable base64 image ({exc})") from exc
    return img.convert("RGB")


def iter_tsv_rows(path: str | Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row keyed by the header) of each record of a VLMEvalKit TSV, streamed."""
    header: list[str] = []
    for number, _offset, fields in iter_tsv_records(path):
        if number == 0:
            header = fields
            continue
        yield number + 1, dict(zip(header, fields))


def tsv_images(value: str | None, where: str) -> list[Image.Image]:
    """The images of one TSV image field: none for an empty field or an index reference (VLMEvalKit
    stores a repeated image once and refers to its row), else the decoded image(s)."""
    value = (value or "").strip()
    if len(value) <= IMAGE_REFERENCE_MAX_LEN:
        return []
    return [decode_base64_image(item, where) for item in as_list(value)]


@dataclass(frozen=True)
class LazyImage:
    """Where an image's bytes are; `load()` decodes them.

    `offset >= 0`: field `column` (item `item` of a list field) of the TSV record at that byte
    offset of `source`; `offset < 0`: `source` is an image file.
    """

    source: str
    offset: int = -1
    column: int = 0
    item: int = 0
    where: str = ""

    def load(self) -> Image.Image:
        where = self.where or self.source
        if self.offset < 0:
            try:
                with Image.open(self.source) as img:
                    return img.convert("RGB")
            except (OSError, UnidentifiedImageError) as exc:
                raise ImageDecodeError(f"{where}: cannot open image {self.source} ({exc})") from exc
        value = read_tsv_field(self.source, self.offset, self.column)
        return decode_base64_image(as_list(value)[self.item], where)

    def raw_base64(self) -> str:
        """The base64 text of a TSV image (for sending it on unchanged)."""
        if self.offset < 0:
            return base64.b64encode(Path(self.source).read_bytes()).decode("ascii")
        return as_list(read_tsv_field(self.source, self.offset, self.column))[self.item]


def open_image_value(value: Any, where: str) -> Image.Image:
    """A PIL image from what a dataset cell holds: an image, `{bytes, path}`, bytes or a path."""
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
        raise ImageDecodeError(f"{where}: image cannot be decoded ({exc})") from exc
    raise ImageDecodeError(f"{where}: unsupported image value of type {type(value).__name__}")


@dataclass(frozen=True)
class DatasetImage:
    """Item `item` of column `column` in row `row` of a (memory-mapped) `datasets.Dataset` whose
    image columns are cast to `Image(decode=False)`: decoded on `load()`."""

    dataset: Any = field(repr=False, compare=False)
    row: int = 0
    column: str = "image"
    item: int = 0
    where: str = ""

    def load(self) -> Image.Image:
        value = self.dataset[self.row][self.column]
        if isinstance(value, list):
            value = value[self.item]
        return open_image_value(value, self.where)


def undecoded(dataset: Any, columns: list[str]) -> Any:
    """`dataset` with its image columns (and lists of images) cast to `Image(decode=False)`."""
    import datasets

    list_type = getattr(datasets, "List", datasets.Sequence)
    for col in columns:
        feature = dataset.features.get(col)
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(col, datasets.Image(decode=False))
        elif isinstance(getattr(feature, "feature", None), datasets.Image):
            dataset = dataset.cast_column(col, list_type(datasets.Image(decode=False)))
    return dataset
