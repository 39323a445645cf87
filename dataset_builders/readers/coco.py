"""`type: coco`: a COCO detection JSON (`images`, `annotations`, `categories`); one record per box."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..adapters import Dropped, Failure, Item, ItemError, SourceReader, read_json, register_source
from ..imaging import SourceError
from ..source_spec import ReaderOptions


@dataclass
class CocoOptions(ReaderOptions):
    annotations: str = "annotations.json"
    images_dir: str = "images"


@register_source
class Coco(SourceReader):
    """COCO detection JSON: one record per box (`mask.min_area` drops tiny boxes)."""

    type_name = "coco"
    Options = CocoOptions
    task_type = "detection"

    @cached_property
    def data(self) -> dict[str, Any]:
        data = read_json(self.source.path(self.options.annotations), self.what)
        if not isinstance(data, dict):
            raise SourceError(f"{self.what}: {self.options.annotations} is not a COCO object")
        return data

    @cached_property
    def images(self) -> dict[int, dict[str, Any]]:
        return {int(image["id"]): image for image in self.data.get("images", [])}

    @cached_property
    def by_image(self) -> dict[int, list[dict[str, Any]]]:
        by_image: dict[int, list[dict[str, Any]]] = {}
        for annotation in self.data.get("annotations", []):
            by_image.setdefault(int(annotation.get("image_id", -1)), []).append(annotation)
        return by_image

    @cached_property
    def categories(self) -> dict[int, str]:
        return {int(c["id"]): str(c["name"]) for c in self.data.get("categories", [])}

    def list_items(self) -> list[int]:
        return sorted(self.images)

    def shared_files(self) -> list[Path]:
        return [self.source.path(self.options.annotations)]

    def image_rel(self, image_id: int) -> str:
        return (Path(self.options.images_dir) / str(self.images[image_id]["file_name"])).as_posix()

    def item_files(self, image_id: int) -> list[Path]:
        return [self.source.path(self.image_rel(image_id))]

    def item_name(self, image_id: int) -> str:
        return f"image {image_id}"

    def raw_label_space(self) -> list[str]:
        return super().raw_label_space() or sorted(set(self.categories.values()))

    def read_item(self, image_id: int) -> Iterator[Item]:
        rel = self.image_rel(image_id)
        plane, meta, modality = self.frames(self.source.path(rel))[0]
        yield from self.notices(meta, modality)
        pixels = self.pixels(plane, modality)
        height, width = pixels.shape[:2]
        annotations = sorted(self.by_image.get(image_id, []), key=lambda a: int(a.get("id", 0)))
        if not annotations:
            yield Dropped(self.source.name, "no_annotation")
        for annotation in annotations:
            name = f"image {image_id} annotation {annotation.get('id')}"
            try:
                box, label = self._box(annotation, width, height)
            except ItemError as error:
                yield Failure(self.source.name, name, error.kind, str(error), f"{rel}: {error}")
                continue
            if box is None:
                yield Dropped(self.source.name, "tiny_box")
                continue
            yield self.record(
                self.record_id(rel, f"#a{annotation.get('id')}"),
                pixels,
                label,
                rel,
                bbox=box,
                meta=meta,
                granularity="box",
            )

    def _box(self, annotation: dict[str, Any], width: int, height: int) -> tuple[list[float] | None, str]:
        """One annotation's box (None when tiny) and label; a bad annotation is an `ItemError`."""
        if int(annotation.get("category_id", -1)) not in self.categories:
            raise ItemError(
                "unknown_category", f"category_id {annotation.get('category_id')} not in categories"
            )
        raw = annotation.get("bbox")
        try:
            x, y, w, h = (float(v) for v in raw)
        except (TypeError, ValueError):
            raise ItemError("missing_bbox", f"no [x, y, width, height] bbox (got {raw!r})") from None
        if w <= 0 or h <= 0 or x >= width or y >= height:
            raise ItemError("invalid_bbox", f"bbox {raw} outside the {width}x{height} image")
        box = [max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)]
        if (box[2] - box[0]) * (box[3] - box[1]) < self.source.mask.min_area:
            return None, ""
        return box, self.label(self.categories[int(annotation["category_id"])])
