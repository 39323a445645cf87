"""`type: onehot_csv`: one label column per class holding 0/1 (or probabilities), as ISIC 2019
ships it: `ISIC_2019_Training_GroundTruth.csv` with `image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK`
(floats `0.0` / `1.0`) and the images `ISIC_2019_Training_Input/<image>.jpg` (the CSV's `image` has
no suffix; `ISIC_2019_Training_Input/` also holds `ATTRIBUTION.txt` and `LICENSE.txt`). ISIC 2018
Task 3 (`image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`) reads the same way with its own `file` / `images_dir`.

Label names come from the column header. Without a `label_map` in the spec, the abbreviations get
the readable names of `ISIC_LABELS` (a column missing from it keeps its header). A row with several
positive columns gives one record per label (`_common.labelled_records`). `UNK` (no training image
has it) is in `drop_labels`: a row whose only positive column is dropped is skipped and counted.
`ISIC_2019_Training_Metadata.csv` (age, site, sex, lesion id) is not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..adapters import Dropped, Item, ItemError, SourceReader, register_source
from ..imaging import IMAGE_SUFFIXES
from ..source_spec import ReaderOptions
from ._common import cached, labelled_records, safe_relative
from .multilabel_csv import read_csv_rows

#: readable names of the ISIC 2019 (and 2018) diagnosis columns, used without a spec `label_map`
ISIC_LABELS = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "AKIEC": "actinic keratosis",  # 2018: actinic keratosis / Bowen's disease (intraepithelial carcinoma)
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
    "UNK": "unknown",
}


@dataclass
class OneHotCsvOptions(ReaderOptions):
    file: str = "ISIC_2019_Training_GroundTruth.csv"
    image_column: str = "image"  # an image id, relative to `images_dir`, without suffix
    images_dir: str = "ISIC_2019_Training_Input"
    image_suffix: str = ".jpg"  # added to ids without an image suffix
    label_columns: list[str] = field(default_factory=list)  # default: all but the image / split columns
    drop_labels: list[str] = field(default_factory=lambda: ["UNK"])  # columns whose rows are skipped
    threshold: float = 0.5  # a value >= threshold is a positive label
    split_column: str | None = None


@register_source
class OneHotCsv(SourceReader):
    """A CSV of image ids with one 0/1 column per class (ISIC 2019 ground truth); the label names
    are the column headers (readable ISIC names by default)."""

    type_name = "onehot_csv"
    Options = OneHotCsvOptions

    @cached_property
    def rows(self) -> list[dict[str, str]]:
        path = self.source.path(self.options.file)
        return cached("csv-rows", [path], lambda: read_csv_rows(path, self.what))

    @cached_property
    def columns(self) -> list[str]:
        if self.options.label_columns:
            return list(self.options.label_columns)
        skip = {self.options.image_column, self.options.split_column, ""}
        return [name for name in (self.rows[0] if self.rows else {}) if name not in skip and name is not None]

    def raw_name(self, column: str) -> str:
        return column if self.source.label_map else ISIC_LABELS.get(column, column)

    def image_rel(self, value: str) -> str:
        value = safe_relative(value)
        if not value.lower().endswith(IMAGE_SUFFIXES):
            value += self.options.image_suffix
        return (Path(self.options.images_dir) / value).as_posix()

    # -- planning ------------------------------------------------------------------------------
    def list_items(self) -> list[int]:
        return list(range(len(self.rows)))

    def shared_files(self) -> list[Path]:
        return [self.source.path(self.options.file)]

    def item_files(self, index: int) -> list[Path]:
        try:
            return [self.source.path(self.image_rel(self.rows[index].get(self.options.image_column) or ""))]
        except ItemError:
            return []

    def item_name(self, index: int) -> str:
        return f"row {index + 2}"

    def raw_label_space(self) -> list[str]:
        declared = super().raw_label_space()
        if declared:
            return declared
        drop = set(self.options.drop_labels)
        return sorted({self.raw_name(c) for c in self.columns if c not in drop})

    # -- reading -------------------------------------------------------------------------------
    def read_item(self, index: int) -> Iterator[Item]:
        row = self.rows[index]
        value = (row.get(self.options.image_column) or "").strip()
        if not value:
            raise ItemError("missing_image", f"empty column {self.options.image_column!r}")
        rel = self.image_rel(value)
        positive = []
        for column in self.columns:
            try:
                if float(row.get(column) or 0) >= self.options.threshold:
                    positive.append(column)
            except ValueError:
                raise ItemError("bad_label_value", f"column {column!r} is not a number") from None
        kept = [c for c in positive if c not in self.options.drop_labels]
        if positive and not kept:
            yield Dropped(self.source.name, "dropped_label")
            return
        if not kept:
            raise ItemError("missing_label", "no label column is positive")
        path = self.source.path(rel)
        self.inside_root(path)
        if not path.is_file():
            raise ItemError("missing_image", "no image file for the row's id")
        split = row.get(self.options.split_column) if self.options.split_column else None
        yield from labelled_records(self, rel, [self.raw_name(c) for c in kept], split)
