"""VLMEvalKit TSV files: records streamed one at a time with their byte offsets, in the dialect
pandas writes and VLMEvalKit reads (tab-separated, `"` quoting), and their base64 image fields.

Shared by the evaluator (benchmarks) and the dataset builders (decontamination against them).

Images are checked before they are decoded (`ImageLimits`): the size of the encoded cell or file,
then the width x height its header declares (`PIL.Image.open` parses the header only; pixels are
decoded by `load()`). A decompression bomb (a 389 KB PNG declaring 20000x20000) is refused with an
`ImageTooLargeError` naming the row, without its pixels ever being allocated.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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


# PIL's own decompression-bomb threshold (it warns above it and fails above twice it): refused here
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_MAX_BYTES = 64 * 2**20  # encoded: base64 text of a TSV cell, or bytes of an image file


class ImageDecodeError(ValueError):
    """An image cannot be decoded; the message names the file and row."""


class ImageTooLargeError(ImageDecodeError):
    """An image is over `ImageLimits` (encoded size or declared pixels); it was not decoded."""


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be before it is decoded.

    `max_bytes`: its encoded size (the base64 text of a cell, the bytes of a file); `max_pixels`:
    width x height as its header declares. Defaults: `GMAIVL_MAX_IMAGE_BYTES` and
    `GMAIVL_MAX_IMAGE_PIXELS` from the environment, else 64 MiB and 89,478,485 pixels (PIL's
    `MAX_IMAGE_PIXELS`; raising ours above it needs PIL's raised too).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_env(cls) -> ImageLimits:
        def read(name: str, default: int) -> int:
            value = os.environ.get(name, "").strip().replace("_", "")
            if not value:
                return default
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {os.environ[name]!r}")
            return int(value)

        return cls(
            max_pixels=read("GMAIVL_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS),
            max_bytes=read("GMAIVL_MAX_IMAGE_BYTES", DEFAULT_MAX_BYTES),
        )

    def check_encoded(self, size: int, where: str, what: str = "image") -> None:
        if size > self.max_bytes:
            raise ImageTooLargeError(
                f"{where}: {what} of {size:,} bytes is over the limit of {self.max_bytes:,} bytes "
                "(GMAIVL_MAX_IMAGE_BYTES); not decoded"
            )

    def check_pixels(self, width: int, height: int, where: str) -> None:
        if width * height > self.max_pixels:
            raise ImageTooLargeError(
                f"{where}: image declares {width}x{height} = {width * height:,} pixels, over the limit "
                f"of {self.max_pixels:,} (GMAIVL_MAX_IMAGE_PIXELS); not decoded"
            )


def _bomb(where: str, exc: Exception, limits: ImageLimits) -> ImageTooLargeError:
    hint = ""
    if Image.MAX_IMAGE_PIXELS and limits.max_pixels > Image.MAX_IMAGE_PIXELS:
        hint = " (GMAIVL_MAX_IMAGE_PIXELS is above PIL.Image.MAX_IMAGE_PIXELS: raise that too)"
    return ImageTooLargeError(f"{where}: image over the pixel limit, not decoded (PIL: {exc}){hint}")


def open_image_bytes(raw: bytes, where: str, limits: ImageLimits | None = None) -> Image.Image:
    """An encoded image as RGB, after checking its encoded size and declared pixels (`limits`,
    default `ImageLimits.from_env()`). Raises `ImageTooLargeError` / `ImageDecodeError`."""
    limits = limits or ImageLimits.from_env()
    limits.check_encoded(len(raw), where)
    try:
        img = Image.open(io.BytesIO(raw))  # parses the header only: no pixel is decoded yet
    except Image.DecompressionBombError as exc:  # PIL refuses over twice its own limit, in open()
        raise _bomb(where, exc, limits) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"{where}: image cannot be decoded ({exc})") from exc
    with img:
        limits.check_pixels(*img.size, where)
        try:
            img.load()
            return img.convert("RGB")
        except Image.DecompressionBombError as exc:
            raise _bomb(where, exc, limits) from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageDecodeError(f"{where}: image cannot be decoded ({exc})") from exc


def open_image_file(path: str | os.PathLike, where: str, limits: ImageLimits | None = None) -> Image.Image:
    """An image file as RGB, checked as `open_image_bytes` checks (its size before it is read)."""
    limits = limits or ImageLimits.from_env()
    try:
        limits.check_encoded(os.path.getsize(path), where, f"image file {path}")
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{where}: cannot open image {path} ({exc})") from exc
    return open_image_bytes(raw, where, limits)


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


def decode_base64_image(data: str, where: str, limits: ImageLimits | None = None) -> Image.Image:
    """A base64 image as RGB; the cell's length is checked before base64 decoding, the declared
    pixels before PIL decodes (`open_image_bytes`)."""
    limits = limits or ImageLimits.from_env()
    limits.check_encoded(len(data), where, "base64 image cell")
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(f"{where}: image is not a decodable base64 image ({exc})") from exc
    return open_image_bytes(raw, where, limits)


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
