"""`type: msd`: the Medical Segmentation Decathlon layout, `dataset.json` with its `training`
image / label pairs and `labels` names."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from ..adapters import Item, SourceReader, read_json, register_source
from ..imaging import SourceError, read_label_nifti, read_nifti
from ..source_spec import ReaderOptions, SourceSpec


@dataclass
class MsdOptions(ReaderOptions):
    dataset_json: str = "dataset.json"
    channel: int = 0


@register_source
class Msd(SourceReader):
    """Medical Segmentation Decathlon: `dataset.json` with `training` pairs and `labels`."""

    type_name = "msd"
    Options = MsdOptions
    task_type = "segmentation"
    fixed_unit_size = 1

    def __init__(self, source: SourceSpec, *args: Any) -> None:
        super().__init__(source, *args)
        if not source.mask.values:  # the label names of dataset.json (a copy: the spec stays as written)
            try:
                names = {int(k): str(v) for k, v in (self.data.get("labels") or {}).items() if int(k) != 0}
            except SourceError:
                names = {}
            self.source = replace(source, mask=replace(source.mask, values=names))

    @cached_property
    def data(self) -> dict[str, Any]:
        return read_json(self.source.path(self.options.dataset_json), self.what)

    @property
    def base(self) -> Path:
        return self.source.path(self.options.dataset_json).parent

    def list_items(self) -> list[int]:
        return list(range(len(self.data.get("training", []))))

    def shared_files(self) -> list[Path]:
        return [self.source.path(self.options.dataset_json)]

    def item_files(self, index: int) -> list[Path]:
        entry = self.data["training"][index]
        return [self.base / entry["image"], *([self.base / entry["label"]] if entry.get("label") else [])]

    def item_name(self, index: int) -> str:
        return f"case {index}"

    def read_item(self, index: int) -> Iterator[Item]:
        entry = self.data["training"][index]
        image = self.inside_root(self.base / entry["image"])
        label = self.inside_root(self.base / entry["label"], "label") if entry.get("label") else None
        volume = read_nifti(image, self.options.channel, self.source.limits)
        labels = read_label_nifti(label, self.source.limits) if label else None
        rel = self.rel(self.base / entry["image"])
        raw = None if labels is not None else self.raw_label(rel)
        yield from self.volume_records(volume, labels, rel, self.record_id(rel), raw)
