"""`type: nifti`: 3D volumes (NIfTI, MetaImage, NRRD) with optional label volumes matched by stem,
read as 2D slices."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..adapters import Item, ItemError, SourceReader, list_files, register_source
from ..imaging import VOLUME_SUFFIXES, read_label_nifti, read_volume
from ..source_spec import ReaderOptions, SourceSpec


@dataclass
class NiftiOptions(ReaderOptions):
    images_dir: str = "images"
    labels_dir: str | None = None  # label volumes matched by stem
    label_suffix: str = ""
    channel: int = 0  # 4D images: which channel


@register_source
class Nifti(SourceReader):
    """3D volumes (+ label volumes): NIfTI via nibabel, MetaImage/NRRD via SimpleITK -> 2D slices."""

    type_name = "nifti"
    Options = NiftiOptions
    task_type = "segmentation"
    fixed_unit_size = 1

    @classmethod
    def check_spec(cls, source: SourceSpec) -> str | None:
        return None if source.options.labels_dir else cls._needs_label(source)

    def list_items(self) -> list[str]:
        volumes = lambda p: p.name.lower().endswith(VOLUME_SUFFIXES)  # noqa: E731
        return [
            self.rel(p) for p in list_files(self.source.path(self.options.images_dir), self.what, volumes)
        ]

    def label_path(self, rel: str) -> Path | None:
        if not self.options.labels_dir:
            return None
        name = Path(rel).name
        stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name.rsplit(".", 1)[0]
        folder = self.source.path(self.options.labels_dir)
        matches = sorted(
            p
            for p in folder.glob(f"{stem}{self.options.label_suffix}.*")
            if p.name.lower().endswith(VOLUME_SUFFIXES)
        )
        if not matches:
            raise ItemError(
                "missing_mask", f"no label volume with the image's stem in {self.options.labels_dir}"
            )
        return matches[0]

    def item_files(self, rel: str) -> list[Path]:
        try:
            label = self.label_path(rel)
        except ItemError:
            label = None
        return [self.source.path(rel), *([label] if label else [])]

    def read_item(self, rel: str) -> Iterator[Item]:
        volume = read_volume(
            self.inside_root(self.source.path(rel)), self.options.channel, self.source.limits
        )
        label_path = self.label_path(rel)
        labels = read_label_nifti(label_path, self.source.limits) if label_path else None
        raw = None if labels is not None else self.raw_label(rel)
        yield from self.volume_records(volume, labels, rel, self.record_id(rel), raw)
