"""Benchmark images decoded only when a batch needs them.

A GMAI-MMBench TSV holds every image as base64 text in its rows (134 MiB for VAL, more for TEST);
decoding all of them up front holds all pixels at once. A `LazyImage` remembers where its
bytes are (the byte offset of its TSV record and the column, or an image file) and decodes on
`load()`, so memory stays flat in the number of questions (TSV records: `gmaivl.core.tsv`).

Every `load()` checks the encoded size and the declared pixels before decoding
(`gmaivl.core.tsv.ImageLimits`); a bad or oversize image raises `ImageDecodeError` (its subclass
`ImageTooLargeError` for the limits), which the runner records as that question's failure; an
`UnreadableImage` is one a loader already found bad (it raises the same on `load()`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from gmaivl.core.tsv import (
    ImageDecodeError,
    ImageLimits,
    ImageTooLargeError,
    as_list,
    decode_base64_image,
    open_image_bytes,
    open_image_file,
    read_tsv_field,
)


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

    def load(self, limits: ImageLimits | None = None) -> Image.Image:
        where = self.where or self.source
        if self.offset < 0:
            return open_image_file(self.source, where, limits)
        value = read_tsv_field(self.source, self.offset, self.column)
        return decode_base64_image(as_list(value)[self.item], where, limits)

    def raw_base64(self, limits: ImageLimits | None = None) -> str:
        """The base64 text of a TSV image (for sending it on unchanged), its size checked."""
        limits = limits or ImageLimits.from_env()
        where = self.where or self.source
        if self.offset < 0:
            limits.check_encoded(Path(self.source).stat().st_size, where, f"image file {self.source}")
            return base64.b64encode(Path(self.source).read_bytes()).decode("ascii")
        value = as_list(read_tsv_field(self.source, self.offset, self.column))[self.item]
        limits.check_encoded(len(value), where, "base64 image cell")
        return value


@dataclass(frozen=True)
class UnreadableImage:
    """An image a loader already knows cannot be read (a path outside the benchmark folder, a
    missing file, a cell that is not an image or is over the size limit): `load()` raises
    `ImageDecodeError` with `reason`, so that question fails alone and the others are asked."""

    reason: str
    too_large: bool = False  # raise `ImageTooLargeError` (over the limits) rather than its base

    def load(self, limits: ImageLimits | None = None) -> Image.Image:
        raise (ImageTooLargeError if self.too_large else ImageDecodeError)(self.reason)

    def raw_base64(self, limits: ImageLimits | None = None) -> str:
        return self.load(limits)  # type: ignore[return-value]  # always raises


def open_image_value(value: Any, where: str, limits: ImageLimits | None = None) -> Image.Image:
    """A PIL image from what a dataset cell holds: an image, `{bytes, path}`, bytes or a path;
    encoded ones checked against `limits` before decoding."""
    if isinstance(value, Image.Image):
        if limits is not None:
            limits.check_pixels(*value.size, where)
        return value.convert("RGB")
    if isinstance(value, dict):
        if value.get("bytes"):
            return open_image_bytes(bytes(value["bytes"]), where, limits)
        if value.get("path"):
            return open_image_file(value["path"], where, limits)
    if isinstance(value, (bytes, bytearray)):
        return open_image_bytes(bytes(value), where, limits)
    if isinstance(value, str):
        return open_image_file(value, where, limits)
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

    def load(self, limits: ImageLimits | None = None) -> Image.Image:
        value = self.dataset[self.row][self.column]
        if isinstance(value, list):
            value = value[self.item]
        return open_image_value(value, self.where, limits)


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
