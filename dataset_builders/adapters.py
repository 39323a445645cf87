"""Source adapters: the layouts annotated medical datasets come in -> `MedicalRecord`s.

Each adapter splits its source into work units (`plan_units`, cheap: file listing only) and turns
one unit into records (`read_unit`). A bad item yields a `Failure` naming the file and the reason;
the rest of the unit goes on. Supported `type`s:

- `class_folders`: `root/<class>/<image>` (PNG/JPG/TIFF/DICOM), label = folder name.
- `csv`: `file` with `image_column` and `label_column` (+ optional `split_column`).
- `coco`: COCO detection JSON (`annotations`, `images_dir`): one record per box.
- `mask_pairs`: `images_dir` + `masks_dir` matched by file stem (`mask_suffix`); boxes per label and
  connected component.
- `nifti`: `images_dir` (+ optional `labels_dir`) of 3D volumes (NIfTI via nibabel; MetaImage/NRRD
  via SimpleITK) -> 2D slices (+ boxes).
- `msd`: Medical Segmentation Decathlon `dataset.json` (`training` pairs, `labels`, `modality`).
- `dicom`: DICOM files (each frame one image) or `series: true` (volumes stacked by position).
- `text`: text-only corpora (JSONL/JSON/CSV/Parquet), single-turn QA or multi-turn dialogue.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .imaging import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    VOLUME_SUFFIXES,
    SourceError,
    Volume,
    mask_to_boxes,
    read_dicom,
    read_dicom_series,
    read_image,
    read_label_nifti,
    read_mask,
    read_nifti,
    read_volume,
    resize_mask,
    resize_rgb,
    to_rgb8,
)
from .labels import LabelStandardizer
from .records import MedicalRecord, encode_png, image_phash, pixel_md5
from .spec import SourceSpec


@dataclass
class WorkUnit:
    """A slice of one source small enough for one worker call; `items` are JSON-serialisable."""

    source: str
    index: int
    items: list[Any]

    @property
    def unit_id(self) -> str:
        return f"{self.source}-{self.index:06d}"


@dataclass
class Failure:
    """A bad input item: counted by `kind` in the build report, with the file named."""

    source: str
    file: str
    kind: str
    message: str


@dataclass
class Dropped:
    """An item skipped on purpose (empty mask, tiny component...), counted by reason."""

    source: str
    reason: str
    count: int = 1


@dataclass
class TextSample:
    """A text-only training row (GMAI-Text-Single / -Multi)."""

    sample_id: str
    source: str
    messages: list[dict[str, str]]
    split: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(IMAGE_SUFFIXES) or name.endswith(".dcm") or name.endswith(NIFTI_SUFFIXES)


def _rel(path: Path, source: SourceSpec) -> str:
    try:
        return path.resolve().relative_to(source.base_dir.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _files(root: Path, where: str, predicate=_is_image_file) -> list[Path]:
    if not root.is_dir():
        raise SourceError(f"{where}: folder {root} does not exist")
    return sorted((p for p in root.rglob("*") if p.is_file() and predicate(p)), key=lambda p: p.as_posix())


class UnitReader:
    """Reads one work unit of a source into records; shared image/label handling lives here."""

    def __init__(self, source: SourceSpec, standardizer: LabelStandardizer, label_space: list[str]) -> None:
        self.source = source
        self.standardize = standardizer
        self.label_space = label_space
        self._lower_map = {k.lower(): v for k, v in source.label_map.items()}

    # -- labels --------------------------------------------------------------------------------
    def label(self, raw: Any, file: str) -> str:
        """Source label map (strict: unknown labels are errors), then global standardisation."""
        text = str(raw).strip()
        if self.source.label_map:
            mapped = self.source.label_map.get(text, self._lower_map.get(text.lower()))
            if mapped is None:
                if self.source.strict_labels:
                    raise _ItemError(
                        "unknown_label",
                        f"label {text!r} is not in the label_map of source {self.source.name!r}",
                    )
                mapped = text
            text = mapped
        if not text:
            raise _ItemError("missing_label", "empty label")
        return self.standardize(text)

    # -- images --------------------------------------------------------------------------------
    def planes(self, path: Path) -> list[tuple[np.ndarray, dict[str, Any], str]]:
        """A 2D file as RGB planes: (rgb, meta, modality) per frame."""
        name = path.name.lower()
        if name.endswith(".dcm") or (not path.suffix and name.endswith(DICOM_SUFFIXES)):
            frames, meta = read_dicom(path)
            modality = meta.get("Modality") or self.source.modality
            out = []
            step = int(self.source.slices.get("step", 1))
            for index in range(0, len(frames), step):
                frame_meta = {**meta, "frame": index} if len(frames) > 1 else dict(meta)
                out.append((self.rgb(frames[index], modality), frame_meta, modality))
            return out
        if name.endswith(NIFTI_SUFFIXES):
            volume = read_nifti(path)
            return [
                (self.rgb(plane, self.source.modality), {"slice": i}, self.source.modality)
                for i, plane in enumerate(volume.data)
            ]
        return [(self.rgb(read_image(path), self.source.modality), {}, self.source.modality)]

    def rgb(self, plane: np.ndarray, modality: str) -> np.ndarray:
        return to_rgb8(plane, modality, self.source.window, tuple(self.source.percentiles))

    def record(
        self,
        record_id: str,
        rgb: np.ndarray,
        label: str,
        file: str,
        split: str | None = None,
        bbox: list[float] | None = None,
        meta: dict[str, Any] | None = None,
        granularity: str | None = None,
    ) -> MedicalRecord:
        split = (split or self.source.split).strip()
        if not re.fullmatch(r"\w+", split):  # Hub split names: letters, digits, underscores
            raise _ItemError(
                "bad_split", f"split name {split!r} must match \\w+ (e.g. train, validation, test)"
            )
        rgb, sx, sy = resize_rgb(rgb, self.source.min_side, self.source.max_side)
        if bbox is not None:
            bbox = [
                round(bbox[0] * sx, 1),
                round(bbox[1] * sy, 1),
                round(bbox[2] * sx, 1),
                round(bbox[3] * sy, 1),
            ]
        default_granularity = {"detection": "box", "segmentation": "mask"}.get(self.source.task_type, "image")
        return MedicalRecord(
            record_id=record_id,
            image_png=encode_png(rgb),
            modality=self.source.modality,
            label=label,
            department=self.source.department,
            source_dataset=self.source.name,
            split=split or self.source.split,
            task_type=self.source.task_type,
            clinical_task=self.source.clinical_task,
            granularity=granularity or self.source.options.get("granularity", default_granularity),
            bbox=bbox,
            label_space=self.label_space,
            source_file=file,
            width=int(rgb.shape[1]),
            height=int(rgb.shape[0]),
            image_md5=pixel_md5(rgb),
            phash=image_phash(rgb),
            meta=meta or {},
        )

    def boxes_from_mask(
        self,
        rgb: np.ndarray,
        mask: np.ndarray,
        record_id: str,
        file: str,
        split: str | None,
        meta: dict[str, Any],
    ) -> Iterator[MedicalRecord | Dropped | Failure]:
        """Segmentation -> detection: one record per (label value, connected component)."""
        values = self.mask_values()
        options = self.source.mask
        boxes, dropped = mask_to_boxes(
            mask,
            values=sorted(values) if values else None,
            min_area=int(options.get("min_area", 16)),
            min_area_fraction=float(options.get("min_area_fraction", 0.0)),
            max_per_label=int(options.get("max_per_label", 0)),
        )
        for reason, count in dropped.items():
            if reason != "empty_label":  # a label absent from one slice is normal, not a drop
                yield Dropped(self.source.name, reason, count)
        if not boxes:
            yield Dropped(self.source.name, "empty_mask")
            return
        for k, box in enumerate(boxes):
            raw = values.get(box.value, str(box.value)) if values else str(box.value)
            try:
                label = self.label(raw, file)
            except _ItemError as error:
                yield Failure(self.source.name, file, error.kind, f"{file}: {error}")
                continue
            yield self.record(
                f"{record_id}#b{k}",
                rgb,
                label,
                file,
                split,
                box.bbox,
                {**meta, "mask_value": box.value, "area": box.area},
            )

    def mask_values(self) -> dict[int, str]:
        values = self.source.mask.get("values") or {}
        return {int(k): str(v) for k, v in values.items() if int(k) != 0}


class _ItemError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _slice_indices(count: int, slices: dict[str, Any], has_labels: bool) -> list[int]:
    step = max(1, int(slices.get("step", 1)))
    keep = slices.get("keep", "foreground" if has_labels else "middle")
    if keep == "middle":
        return [count // 2]
    return list(range(0, count, step))


def _volume_slices(volume: Volume, axis: int) -> np.ndarray:
    data = volume.data
    return np.moveaxis(data, axis, 0) if axis else data


# ---------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------
def plan_units(source: SourceSpec) -> list[WorkUnit]:
    """List a source's items and chunk them into work units (deterministic order)."""
    where = source.where()
    opts = source.options
    size = source.unit_size
    if source.type == "class_folders":
        root = source.base_dir
        items = [_rel(p, source) for p in _files(root, where) if p.parent != root]
    elif source.type == "csv":
        items = list(range(_csv_row_count(source.path(opts.get("file", "labels.csv")), where)))
    elif source.type == "coco":
        data = _read_json(source.path(opts.get("annotations", "annotations.json")), where)
        items = sorted(int(image["id"]) for image in data.get("images", []))
    elif source.type == "mask_pairs":
        items = [_rel(p, source) for p in _files(source.path(opts.get("images_dir", "images")), where)]
    elif source.type == "nifti":
        items = [
            _rel(p, source)
            for p in _files(
                source.path(opts.get("images_dir", "images")),
                where,
                lambda p: p.name.lower().endswith(VOLUME_SUFFIXES),
            )
        ]
        size = 1
    elif source.type == "msd":
        data = _read_json(source.path(opts.get("dataset_json", "dataset.json")), where)
        items = list(range(len(data.get("training", []))))
        size = 1
    elif source.type == "dicom":
        files = _files(
            source.base_dir, where, lambda p: p.suffix.lower() in (".dcm", ".dicom") or not p.suffix
        )
        if opts.get("series"):
            items = _group_series(files, source)
            size = 1
        else:
            items = [_rel(p, source) for p in files]
    elif source.type == "text":
        items = list(range(_text_row_count(source.path(opts.get("file", "data.jsonl")), where)))
        size = int(opts.get("unit_rows", 1000))
    else:  # pragma: no cover - validated in spec
        raise SourceError(f"{where}: unknown type {source.type}")
    return [WorkUnit(source.name, i, chunk) for i, chunk in enumerate(_chunks(items, size))]


def _read_json(path: Path, where: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise SourceError(f"{where}: cannot read {path} ({error})") from error


def _csv_row_count(path: Path, where: str) -> int:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return sum(1 for _ in csv.DictReader(handle))
    except OSError as error:
        raise SourceError(f"{where}: cannot read {path} ({error})") from error


def _text_row_count(path: Path, where: str) -> int:
    return sum(1 for _ in _iter_text_rows(path, where))


def _iter_text_rows(path: Path, where: str) -> Iterator[dict[str, Any]]:
    name = path.name.lower()
    try:
        if name.endswith(".jsonl"):
            with open(path, encoding="utf-8") as handle:
                for line_number, line in enumerate(handle, 1):
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError as error:
                            yield {"__error__": f"{path}:{line_number}: invalid JSON ({error.msg})"}
        elif name.endswith(".json"):
            with open(path, encoding="utf-8") as handle:
                yield from json.load(handle)
        elif name.endswith(".csv"):
            with open(path, newline="", encoding="utf-8") as handle:
                yield from csv.DictReader(handle)
        elif name.endswith(".parquet"):
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            for index in range(parquet.num_row_groups):
                yield from parquet.read_row_group(index).to_pylist()
        else:
            raise SourceError(f"{where}: unsupported text corpus format {path.name} (jsonl/json/csv/parquet)")
    except OSError as error:
        raise SourceError(f"{where}: cannot read {path} ({error})") from error


def _group_series(files: list[Path], source: SourceSpec) -> list[list[str]]:
    """Group DICOM files by series (read from headers only; the UID itself is never stored)."""
    import pydicom

    groups: dict[str, list[str]] = {}
    for path in files:
        try:
            uid = str(
                pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).get(
                    "SeriesInstanceUID", path.parent
                )
            )
        except Exception:
            uid = f"unreadable:{path}"
        groups.setdefault(uid, []).append(_rel(path, source))
    return [groups[key] for key in sorted(groups, key=lambda k: groups[k][0])]


def label_space(source: SourceSpec) -> list[str]:
    """The raw label space of a source as declared or listed cheaply (standardised later)."""
    if source.label_map:
        return sorted(set(source.label_map.values()))
    if source.label:
        return [source.label]
    if source.type == "class_folders" and source.base_dir.is_dir():
        return sorted(p.name for p in source.base_dir.iterdir() if p.is_dir())
    values = source.mask.get("values") or {}
    if values:
        return sorted({str(v) for k, v in values.items() if int(k) != 0})
    if source.type == "coco":
        data = _read_json(source.path(source.options.get("annotations", "annotations.json")), source.where())
        return sorted({str(c["name"]) for c in data.get("categories", [])})
    if source.type == "msd":
        data = _read_json(source.path(source.options.get("dataset_json", "dataset.json")), source.where())
        return sorted({str(v) for k, v in (data.get("labels") or {}).items() if str(k) != "0"})
    return []


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
Item = MedicalRecord | Failure | Dropped | TextSample


def read_unit(
    source: SourceSpec, unit: WorkUnit, standardizer: LabelStandardizer, space: list[str]
) -> Iterator[Item]:
    """Turn one work unit into records; every failure is yielded, never raised."""
    reader = UnitReader(source, standardizer, space)
    handler = _HANDLERS[source.type]
    yield from handler(reader, unit)


def _guard(reader: UnitReader, file: str, produce) -> Iterator[Item]:
    try:
        yield from produce()
    except _ItemError as error:
        yield Failure(reader.source.name, file, error.kind, f"{file}: {error}")
    except SourceError as error:
        yield Failure(reader.source.name, file, "unreadable", str(error))
    except Exception as error:  # keep the build going; the report names the file
        yield Failure(reader.source.name, file, "error", f"{file}: {type(error).__name__}: {error}")


def _safe_id(source: SourceSpec, rel: str) -> str:
    """Record id for a file; DICOM paths are hashed (file names can carry patient names)."""
    if source.type == "dicom" or rel.lower().endswith(".dcm"):
        return f"{source.name}/{hashlib.sha1(rel.encode()).hexdigest()[:16]}"
    return f"{source.name}/{rel}"


def _image_records(reader: UnitReader, rel: str, raw_label: Any, split: str | None = None) -> Iterator[Item]:
    source = reader.source
    label = reader.label(raw_label, rel)
    planes = reader.planes(source.path(rel) if not Path(rel).is_absolute() else Path(rel))
    shown_file = rel if not rel.lower().endswith(".dcm") else _safe_id(source, rel).split("/", 1)[1] + ".dcm"
    for index, (rgb, meta, _modality) in enumerate(planes):
        suffix = f"#f{index}" if len(planes) > 1 else ""
        yield reader.record(_safe_id(source, rel) + suffix, rgb, label, shown_file, split, meta=meta)


def _class_folders(reader: UnitReader, unit: WorkUnit) -> Iterator[Item]:
    for rel in unit.items:
        raw = Path(rel).parent.name if reader.source.label is None else reader.source.label
        yield from _guard(reader, rel, lambda rel=rel, raw=raw: _image_records(reader, rel, raw))


def _csv_rows(reader: UnitReader, unit: WorkUnit) -> Iterator[Item]:
    source = reader.source
    opts = source.options
    path = source.path(opts.get("file", "labels.csv"))
    wanted = set(unit.items)
    image_column = opts.get("image_column", "image")
    label_column = opts.get("label_column", "label")
    split_column = opts.get("split_column")
    with open(path, newline="", encoding="utf-8") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            if index not in wanted:
                continue
            where = f"{path.name} row {index + 2}"
            if not row.get(image_column):
                yield Failure(source.name, where, "missing_image", f"{where}: empty column {image_column!r}")
                continue
            rel = row[image_column]
            raw = row.get(label_column) if source.label is None else source.label
            if raw is None:
                yield Failure(source.name, where, "missing_label", f"{where}: no column {label_column!r}")
                continue
            split = row.get(split_column) if split_column else None
            yield from _guard(
                reader,
                f"{where} ({rel})",
                lambda rel=rel, raw=raw, split=split: _image_records(reader, rel, raw, split),
            )


def _coco(reader: UnitReader, unit: WorkUnit) -> Iterator[Item]:
    source = reader.source
    opts = source.options
    annotation_file = source.path(opts.get("annotations", "annotations.json"))
    data = _read_json(annotation_file, source.where())
    images = {int(image["id"]): image for image in data.get("images", [])}
    categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in data.get("annotations", []):
        by_image.setdefault(int(annotation["image_id"]), []).append(annotation)
    images_dir = opts.get("images_dir", "images")
    min_area = float(source.mask.get("min_area", 16))

    def produce(image_id: int) -> Iterator[Item]:
        entry = images[image_id]
        rel = str(Path(images_dir) / entry["file_name"])
        planes = reader.planes(source.path(rel))
        rgb, meta, _ = planes[0]
        height, width = rgb.shape[:2]
        annotations = sorted(by_image.get(image_id, []), key=lambda a: int(a.get("id", 0)))
        if not annotations:
            yield Dropped(source.name, "no_annotation")
        for annotation in annotations:
            where = f"{annotation_file.name} annotation {annotation.get('id')} ({rel})"
            if int(annotation.get("category_id", -1)) not in categories:
                yield Failure(
                    source.name,
                    where,
                    "unknown_category",
                    f"{where}: category_id {annotation.get('category_id')} not in categories",
                )
                continue
            x, y, w, h = (float(v) for v in annotation["bbox"])
            if w <= 0 or h <= 0 or x >= width or y >= height:
                yield Failure(
                    source.name,
                    where,
                    "invalid_bbox",
                    f"{where}: bbox {annotation['bbox']} outside the {width}x{height} image",
                )
                continue
            box = [max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h)]
            if (box[2] - box[0]) * (box[3] - box[1]) < min_area:
                yield Dropped(source.name, "tiny_box")
                continue
            try:
                label = reader.label(categories[int(annotation["category_id"])], rel)
            except _ItemError as error:
                yield Failure(source.name, where, error.kind, f"{where}: {error}")
                continue
            yield reader.record(
                f"{source.name}/{rel}#a{annotation.get('id')}",
                rgb,
                label,
                rel,
                bbox=box,
                meta=meta,
                granularity="box",
            )

    for image_id in unit.items:
        yield from _guard(
            reader,
            str(images[image_id].get("file_name", image_id)),
            lambda image_id=image_id: produce(image_id),
        )


def _mask_pairs(reader: UnitReader, unit: WorkUnit) -> Iterator[Item]:
    source = reader.source
    opts = source.options
    masks_dir = source.path(opts.get("masks_dir", "masks"))
    suffix = opts.get("mask_suffix", "")

    def produce(rel: str) -> Iterator[Item]:
        image_path = source.path(rel)
        stem = image_path.name.split(".")[0]
        candidates = sorted(masks_dir.glob(f"{stem}{suffix}.*")) if masks_dir.is_dir() else []
        if not candidates:
            raise _ItemError("missing_mask", f"no mask {stem}{suffix}.* in {masks_dir}")
        planes = reader.planes(image_path)
        mask = read_mask(candidates[0])
        rgb, meta, _ = planes[0]
        native = (
            read_image(image_path)
            if not image_path.name.lower().endswith((".dcm", *NIFTI_SUFFIXES))
            else None
        )
        native_shape = native.shape[:2] if native is not None else rgb.shape[:2]
        if mask.shape != native_shape:
            raise _ItemError(
                "shape_mismatch",
                f"mask {candidates[0].name} has shape {mask.shape}, image {image_path.name} has {native_shape}",
            )
        yield from reader.boxes_from_mask(rgb, mask, f"{source.name}/{rel}", rel, None, meta)

    for rel in unit.items:
        yield from _guard(reader, rel, lambda rel=rel: produce(rel))


def _volume_records(
    reader: UnitReader,
    volume: Volume,
    labels: np.ndarray | None,
    rel: str,
    record_base: str,
    raw_label: str | None,
) -> Iterator[Item]:
    source = reader.source
    axis = int(source.slices.get("axis", 0))
    planes = _volume_slices(volume, axis)
    label_planes = _volume_slices(Volume(labels), axis) if labels is not None else None
    if label_planes is not None and label_planes.shape != planes.shape[: label_planes.ndim]:
        raise _ItemError(
            "shape_mismatch",
            f"label volume shape {labels.shape} differs from image volume {volume.data.shape}",
        )
    indices = _slice_indices(len(planes), source.slices, labels is not None)
    limit = int(source.slices.get("max_per_volume", 0))
    modality = volume.modality or source.modality
    spacing = [round(float(s), 4) for s in volume.spacing]
    emitted = 0
    for z in indices:
        if limit and emitted >= limit:
            break
        meta = {"slice": int(z), "axis": axis, "spacing": spacing}
        if label_planes is not None:
            mask = label_planes[z]
            if not mask.any():
                continue  # background-only slices are not records (SA-Med2D keeps annotated slices)
            rgb = reader.rgb(planes[z], modality)
            rgb_resized, _, _ = resize_rgb(rgb, source.min_side, source.max_side)
            if rgb_resized.shape[:2] != rgb.shape[:2]:
                mask = resize_mask(mask, (rgb_resized.shape[1], rgb_resized.shape[0]))
            produced = False
            for item in reader.boxes_from_mask(rgb_resized, mask, f"{record_base}#z{z}", rel, None, meta):
                produced = produced or isinstance(item, MedicalRecord)
                yield item
            emitted += int(produced)
        else:
            label = reader.label(raw_label, rel)
            yield reader.record(f"{record_base}#z{z}", reader.rgb(planes[z], modality), label, rel, meta=meta)
            emitted += 1


def _nifti(reader: UnitReader, unit: WorkUnit) -> Iterator[Item]:
    source = reader.source
    opts = source.options
    labels_dir = opts.get("labels_dir")
    suffix = opts.get("label_suffix", "")

    def produce(rel: str) -> Iterator[Item]:
        volume = read_volume(source.path(rel), int(opts.get("channel", 0)))
        labels = None
        if labels_dir:
            name = Path(rel).name
            stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name.rsplit(".", 1)[0]
            matches = sorted(
                p
                for p in source.path(labels_dir).glob(f"{stem}{suffix}.*")
                if p.name.lower().endswith(VOLUME_SUFFIXES)
            )
            if not matches:
                raise _ItemError(
                    "missing_mask", f"no label volume {stem}{suffix}.* in {source.path(labels_dir)}"
                )
            labels = read_label_nifti(matches[0])
        yield from _volume_records(reader, volume, labels, rel, f"{source.name}/{rel}", source.label)

    for rel in unit.items:
        yield from _guard(reader, rel, lambda rel=rel: produce(rel))


def _msd(reader: UnitReader, unit: WorkUnit) -> Iterator[Item]:
    source = reader.source
    dataset_json = source.path(source.options.get("dataset_json", "dataset.json"))
    data = _read_json(dataset_json, source.where())
    label_names = {int(k): str(v) for k, v in (data.get("labels") or {}).items()}
    if not source.mask.get("values"):  # a copy: the shared spec (and its fingerprint) stays untouched
        source = replace(
            source, mask={**source.mask, "values": {k: v for k, v in label_names.items() if k != 0}}
        )
        reader = UnitReader(source, reader.standardize, reader.label_space)
    base = dataset_json.parent

    def produce(index: int) -> Iterator[Item]:
        entry = data["training"][index]
        image_rel, label_rel = entry["image"], entry.get("label")
        volume = read_nifti(base / image_rel, int(source.options.get("channel", 0)))
        labels = read_label_nifti(base / label_rel) if label_rel else None
        yield from _volume_records(
            reader,
            volume,
            labels,
            str(image_rel).lstrip("./"),
            f"{source.name}/{Path(image_rel).name}",
            source.label,
        )

    for index in unit.items:
        entry = data["training"][index]
        yield from _guard(reader, str(entry.get("image", index)), lambda index=index: produce(index))


def _dicom(reader: UnitReader, unit: WorkUnit) -> Iterator[Item]:
    source = reader.source
    if not source.options.get("series"):
        for rel in unit.items:
            raw = source.label if source.label is not None else Path(rel).parent.name
            yield from _guard(reader, rel, lambda rel=rel, raw=raw: _image_records(reader, rel, raw))
        return
    for files in unit.items:
        series_id = _safe_id(source, files[0])

        def produce(files=files, series_id=series_id) -> Iterator[Item]:
            volume, _ = read_dicom_series([source.path(f) for f in files])
            raw = source.label if source.label is not None else Path(files[0]).parent.name
            yield from _volume_records(reader, volume, None, series_id.split("/", 1)[1], series_id, raw)

        yield from _guard(reader, files[0], produce)


def _text(reader: UnitReader, unit: WorkUnit) -> Iterator[Item]:
    source = reader.source
    opts = source.options
    path = source.path(opts.get("file", "data.jsonl"))
    wanted = set(unit.items)
    fmt = opts.get("format", "single")
    for index, row in enumerate(_iter_text_rows(path, source.where())):
        if index not in wanted:
            continue
        where = f"{path.name} row {index + 1}"
        if "__error__" in row:
            yield Failure(source.name, where, "invalid_json", row["__error__"])
            continue
        try:
            messages = _text_messages(row, fmt, opts)
        except (KeyError, TypeError, ValueError) as error:
            yield Failure(source.name, where, "bad_text_row", f"{where}: {error}")
            continue
        split = row.get(opts["split_column"]) if opts.get("split_column") else source.split
        split = str(split or source.split).strip()
        if not re.fullmatch(r"\w+", split):
            yield Failure(source.name, where, "bad_split", f"{where}: split name {split!r} must match \\w+")
            continue
        yield TextSample(f"{source.name}/{index}", source.name, messages, split)


_ROLE_NAMES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "system": "system",
    "doctor": "assistant",
    "patient": "user",
}


def _text_messages(row: dict[str, Any], fmt: str, opts: dict[str, Any]) -> list[dict[str, str]]:
    if fmt == "single":
        question_field = opts.get("question_field", "question")
        answer_field = opts.get("answer_field", "answer")
        if question_field not in row and "instruction" in row:  # Alpaca layout
            question = "\n".join(x for x in (row.get("instruction"), row.get("input")) if x)
            answer = row.get("output")
        else:
            question, answer = row.get(question_field), row.get(answer_field)
        if not question or not answer:
            raise ValueError(f"empty {question_field!r} or {answer_field!r}")
        return [
            {"role": "user", "content": str(question).strip()},
            {"role": "assistant", "content": str(answer).strip()},
        ]
    if fmt == "multi":
        field_name = opts.get("messages_field") or next(
            (k for k in ("messages", "conversations", "conversation") if k in row), None
        )
        turns = row.get(field_name) if field_name else None
        if isinstance(turns, str):
            turns = json.loads(turns)
        if not isinstance(turns, list) or not turns:
            raise ValueError(f"no conversation list in field {field_name!r}")
        messages = []
        for turn in turns:
            role = _ROLE_NAMES.get(str(turn.get("role", turn.get("from", ""))).lower())
            content = turn.get("content", turn.get("value"))
            if role is None or not content:
                raise ValueError(f"turn without a known role or content: {str(turn)[:80]}")
            messages.append({"role": role, "content": str(content).strip()})
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError("conversation has no assistant turn")
        return messages
    raise ValueError(f"unknown text format {fmt!r} (single or multi)")


_HANDLERS = {
    "class_folders": _class_folders,
    "csv": _csv_rows,
    "coco": _coco,
    "mask_pairs": _mask_pairs,
    "nifti": _nifti,
    "msd": _msd,
    "dicom": _dicom,
    "text": _text,
}
