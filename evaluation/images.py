"""Benchmark images decoded only when a batch needs them.

A GMAI-MMBench TSV holds every image as base64 text in its rows (134 MiB for VAL, more for TEST);
decoding all of them up front holds all pixels at once. A `LazyImage` remembers where its
bytes are (the byte offset of its TSV record and the column, or an image file) and decodes on
`load()`, so memory stays flat in the number of questions (TSV records: `gmaivl.core.tsv`).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from gmaivl.core.tsv import ImageDecodeError, as_list, decode_base64_image, read_tsv_field


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
