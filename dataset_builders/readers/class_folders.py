"""`type: class_folders`: `root/<class>/<image>` (PNG / JPEG / TIFF / DICOM / NIfTI), the label
being the class folder's name (`label_depth` levels under the root)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..adapters import Item, SourceReader, list_files, register_source


@register_source
class ClassFolders(SourceReader):
    """`root/<class>/<image>` (PNG/JPG/TIFF/DICOM/NIfTI); the label is the folder name."""

    type_name = "class_folders"
    label_from_default = "folder"

    def list_items(self) -> list[str]:
        root, depth = self.source.base_dir, self.source.label_depth
        return [self.rel(p) for p in list_files(root, self.what) if len(p.parts) - len(root.parts) > depth]

    def raw_label_space(self) -> list[str]:
        declared = super().raw_label_space()
        if declared or not self.source.base_dir.is_dir():
            return declared
        level = [self.source.base_dir]
        for _ in range(self.source.label_depth):
            level = [child for folder in level for child in folder.iterdir() if child.is_dir()]
        return sorted({folder.name for folder in level})

    def shared_files(self) -> list[Path]:
        return [self.source.base_dir]  # a new class folder changes the label space

    def read_item(self, rel: str) -> Iterator[Item]:
        yield from self.image_records(rel, self.raw_label(rel))
