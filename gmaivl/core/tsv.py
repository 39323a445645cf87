"""VLMEvalKit TSV files: records streamed one at a time with their byte offsets, in the dialect
pandas writes and VLMEvalKit reads (tab-separated, `"` quoting), and their base64 image fields.

Shared by the evaluator (benchmarks) and the dataset builders (decontamination against them).
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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
