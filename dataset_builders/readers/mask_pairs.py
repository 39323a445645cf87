"""`type: mask_pairs`: 2D images and label masks matched by file stem; one box per label value and
connected component of the mask."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..adapters import Item, ItemError, SourceReader, file_stem, list_files, register_source
from ..imaging import read_mask
from ..source_spec import ReaderOptions


@dataclass
class MaskPairsOptions(ReaderOptions):
    images_dir: str = "images"
    masks_dir: str = "masks"
    mask_suffix: str = ""  # mask file = <image stem><mask_suffix>.<any extension>


@register_source
class MaskPairs(SourceReader):
    """2D image + label mask matched by file stem: one box per label and connected component."""

    type_name = "mask_pairs"
    Options = MaskPairsOptions
    task_type = "segmentation"

    def list_items(self) -> list[str]:
        return [self.rel(p) for p in list_files(self.source.path(self.options.images_dir), self.what)]

    def mask_path(self, rel: str) -> Path | None:
        masks_dir = self.source.path(self.options.masks_dir)
        stem = file_stem(Path(rel).name)
        if not masks_dir.is_dir():
            return None
        wanted = f"{stem}{self.options.mask_suffix}"
        candidates = sorted(p for p in masks_dir.iterdir() if p.is_file() and file_stem(p.name) == wanted)
        return candidates[0] if candidates else None

    def item_files(self, rel: str) -> list[Path]:
        mask = self.mask_path(rel)
        return [self.source.path(rel), *([mask] if mask else [])]

    def read_item(self, rel: str) -> Iterator[Item]:
        mask_path = self.mask_path(rel)
        if mask_path is None:
            raise ItemError("missing_mask", f"no mask with the image's stem in {self.options.masks_dir}")
        plane, meta, modality = self.frames(self.source.path(rel))[0]
        yield from self.notices(meta, modality)
        mask = read_mask(mask_path, self.source.limits)
        if mask.shape != plane.shape[:2]:
            raise ItemError("shape_mismatch", f"mask has shape {mask.shape}, image has {plane.shape[:2]}")
        yield from self.boxes_from_mask(self.pixels(plane, modality), mask, self.record_id(rel), rel, meta)
