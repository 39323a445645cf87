"""`type: multilabel_csv`: a CSV with several labels per image in one column, as NIH ChestX-ray14
ships it: `Data_Entry_2017.csv` (`Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,
Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]`), labels
joined by `|` (`No Finding` when there is none), images in `images_001/images/*.png`,
`images_002/images/`, ... found by file name anywhere under `images_dir`, and the official split
lists `train_val_list.txt` / `test_list.txt` (`split_files`).

`Effusion|Atelectasis` gives one record per label (see `_common.labelled_records`), never a class
named `Atelectasis|Effusion`. Only the image name and the labels column are read: `Patient ID`,
age, gender, follow-up and view columns never reach a record, and the image name (which starts
with the patient id) is only hashed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..adapters import Item, ItemError, SourceReader, list_files, register_source
from ..imaging import SourceError
from ..source_spec import ReaderOptions
from ._common import cached, labelled_records


@dataclass
class MultiLabelCsvOptions(ReaderOptions):
    file: str = "Data_Entry_2017.csv"
    image_column: str = "Image Index"  # a file name, looked up anywhere under `images_dir`
    labels_column: str = "Finding Labels"
    separator: str = "|"
    none_label: str | None = "No Finding"  # the "no finding" value: a label that must stand alone
    images_dir: str = "."
    # split -> a file listing image names, one a line (ChestX-ray14: train_val_list.txt, test_list.txt);
    # images in none of them get the source's `split`
    split_files: dict[str, str] = field(default_factory=dict)
    split_column: str | None = None


def read_csv_rows(path: Path, what: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SourceError(f"{what}: cannot read {path} ({error})") from error


@register_source
class MultiLabelCsv(SourceReader):
    """A CSV of image names with `|`-joined labels (NIH ChestX-ray14 `Data_Entry_2017.csv`); the
    images are found by file name anywhere under `images_dir`."""

    type_name = "multilabel_csv"
    Options = MultiLabelCsvOptions

    @cached_property
    def rows(self) -> list[dict[str, str]]:
        path = self.source.path(self.options.file)
        return cached("csv-rows", [path], lambda: read_csv_rows(path, self.what))

    def splits(self) -> dict[str, str]:
        """Image name -> split, from the `split_files` lists (the first list naming it wins)."""
        paths = [self.source.path(p) for p in self.options.split_files.values()]

        def load() -> dict[str, str]:
            names: dict[str, str] = {}
            for split, path in zip(self.options.split_files, paths):
                try:
                    lines = path.read_text(encoding="utf-8").split()
                except (OSError, UnicodeDecodeError) as error:
                    raise SourceError(f"{self.what}: cannot read {path} ({error})") from error
                for name in lines:
                    names.setdefault(Path(name).name, split)
            return names

        return cached("split-lists", paths, load) if paths else {}

    def labels_of(self, row: dict[str, str]) -> list[str]:
        value = row.get(self.options.labels_column)
        if value is None:
            raise ItemError("missing_label", f"no column {self.options.labels_column!r}")
        labels = [part.strip() for part in value.split(self.options.separator) if part.strip()]
        none = self.options.none_label
        if none is not None and none in labels and len(labels) > 1:
            raise ItemError("contradictory_labels", f"{none!r} together with other labels")
        return labels

    # -- planning ------------------------------------------------------------------------------
    def list_items(self) -> list[list]:
        """`[row index, [matching image paths]]`: the root is listed once, at planning."""
        root = self.source.path(self.options.images_dir)
        by_name: dict[str, list[str]] = {}
        for path in list_files(root, self.what):
            by_name.setdefault(path.name, []).append(self.rel(path))
        column = self.options.image_column
        return [
            [index, by_name.get(Path((row.get(column) or "").strip()).name, [])]
            for index, row in enumerate(self.rows)
        ]

    def shared_files(self) -> list[Path]:
        return [
            self.source.path(self.options.file),
            *(self.source.path(p) for p in self.options.split_files.values()),
        ]

    def item_files(self, item: list) -> list[Path]:
        return [self.source.path(rel) for rel in item[1]]

    def item_name(self, item: list) -> str:
        return f"row {item[0] + 2}"

    def raw_label_space(self) -> list[str]:
        declared = super().raw_label_space()
        if declared:
            return declared
        labels: set[str] = set()
        for row in self.rows:
            try:
                labels.update(self.labels_of(row))
            except ItemError:
                continue
        return sorted(labels)

    # -- reading -------------------------------------------------------------------------------
    def read_item(self, item: list) -> Iterator[Item]:
        index, matches = item
        row = self.rows[index]
        name = Path((row.get(self.options.image_column) or "").strip()).name
        if not name:
            raise ItemError("missing_image", f"empty column {self.options.image_column!r}")
        if not matches:
            raise ItemError(
                "missing_image", f"no image file with the row's name under {self.options.images_dir!r}"
            )
        if len(matches) > 1:
            raise ItemError("ambiguous_image", f"{len(matches)} image files have the row's name")
        labels = self.labels_of(row)
        split = row.get(self.options.split_column) if self.options.split_column else None
        split = split or self.splits().get(name)
        yield from labelled_records(self, matches[0], labels, split)
