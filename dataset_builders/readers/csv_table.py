"""`type: csv`: a CSV of image path, label and (optionally) split, one row per image."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..adapters import Item, ItemError, SourceReader, register_source
from ..imaging import SourceError
from ..source_spec import ReaderOptions


@dataclass
class CsvOptions(ReaderOptions):
    file: str = "labels.csv"  # relative to the source root
    image_column: str = "image"  # image path, relative to the source root
    label_column: str = "label"
    split_column: str | None = None


@register_source
class CsvTable(SourceReader):
    """A CSV of image path + label (+ split)."""

    type_name = "csv"
    Options = CsvOptions

    @cached_property
    def rows(self) -> list[dict[str, str]]:
        path = self.source.path(self.options.file)
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise SourceError(f"{self.what}: cannot read {path} ({error})") from error

    def list_items(self) -> list[int]:
        return list(range(len(self.rows)))

    def shared_files(self) -> list[Path]:
        return [self.source.path(self.options.file)]

    def item_files(self, index: int) -> list[Path]:
        value = self.rows[index].get(self.options.image_column)
        return [self.source.path(value)] if value else []

    def item_name(self, index: int) -> str:
        return f"row {index + 2}"

    def read_item(self, index: int) -> Iterator[Item]:
        row, opts = self.rows[index], self.options
        rel = row.get(opts.image_column)
        if not rel:
            raise ItemError("missing_image", f"empty column {opts.image_column!r}")
        raw = row.get(opts.label_column) if self.source.label is None else self.source.label
        if raw is None:
            raise ItemError("missing_label", f"no column {opts.label_column!r}")
        split = row.get(opts.split_column) if opts.split_column else None
        yield from self.image_records(rel, raw, split)
