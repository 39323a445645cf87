"""`type: dicom`: DICOM files recognised by content (any suffix); one image per frame, or with
`series: true` one volume per series."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..adapters import Dropped, Item, SourceReader, WorkUnit, list_files, register_source
from ..imaging import is_dicom, read_dicom_series
from ..source_spec import ReaderOptions, SourceSpec


@dataclass
class DicomOptions(ReaderOptions):
    series: bool = False  # stack the files of each series into a volume (ordered by position)


@register_source
class Dicom(SourceReader):
    """DICOM files, recognised by content whatever their suffix; each frame is one image, or with
    `series: true` one volume per SeriesInstanceUID (the UID itself is never stored)."""

    type_name = "dicom"
    Options = DicomOptions

    @classmethod
    def check_spec(cls, source: SourceSpec) -> str | None:
        return cls._needs_label(source)

    @cached_property
    def files(self) -> list[Path]:
        return list_files(self.source.base_dir, self.what, lambda p: p.is_file())

    def list_items(self) -> list[Any]:
        if not self.options.series:
            return [self.rel(p) for p in self.files]
        return self._group_series([p for p in self.files if is_dicom(p)])

    def plan(self) -> list[WorkUnit]:
        if not self.options.series:
            return super().plan()
        return [WorkUnit(self.source.name, i, [group]) for i, group in enumerate(self.list_items())]

    def _group_series(self, files: list[Path]) -> list[list[str]]:
        import pydicom

        groups: dict[str, list[str]] = {}
        for path in files:
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
                uid = str(header.get("SeriesInstanceUID", path.parent))
            except Exception:
                uid = f"unreadable:{path}"
            groups.setdefault(uid, []).append(self.rel(path))
        return [groups[key] for key in sorted(groups, key=lambda k: groups[k][0])]

    def item_files(self, item: Any) -> list[Path]:
        return [self.source.path(f) for f in item] if isinstance(item, list) else [self.source.path(item)]

    def item_name(self, item: Any) -> str:
        return f"series {self.file_id(item[0])}" if isinstance(item, list) else super().item_name(item)

    def item_paths(self, item: Any) -> list[str]:
        return [*(str(p) for p in self.item_files(item)), *(item if isinstance(item, list) else [item])]

    def shared_files(self) -> list[Path]:
        return []

    def read_item(self, item: Any) -> Iterator[Item]:
        if isinstance(item, list):
            volume, _ = read_dicom_series(
                [self.inside_root(self.source.path(f)) for f in item],
                self.source.limits,
                self.source.publish_burned_in,
            )
            yield from self.volume_records(
                volume, None, item[0], self.record_id(item[0]), self.raw_label(item[0])
            )
            return
        if not is_dicom(self.source.path(item)):
            yield Dropped(self.source.name, "not_dicom")
            return
        yield from self.image_records(item, self.raw_label(item))
