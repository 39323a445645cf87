"""The shared base of the source readers: what they produce (`WorkUnit`, `MedicalRecord`s, `Failure`,
`Dropped`, `Notice`, `TextSample`), the registry decorator `register_source`, the file helpers
(`list_files`, `file_stem`, `read_json`, `is_image_file`) and `SourceReader`.

The readers themselves, one layout each, are the modules of `readers/`, registered under their
YAML `type` with `@register_source`. A reader declares its typed `Options` dataclass (the layout's
own spec keys), lists its items (`list_items`, cheap: file listing only), names the files an item
reads (`item_files`, for the rebuild fingerprints), its raw label space, and turns one item into
records (`read_item`). Everything shared (labels, pixels, ids, masks -> boxes, volumes -> slices,
the per-item error guard) lives in `SourceReader`, so adding a layout is one class in one module
of `readers/`:

    @dataclass
    class MyOptions(ReaderOptions):
        list_file: str = "list.txt"

    @register_source
    class MyLayout(SourceReader):
        type_name = "my_layout"
        Options = MyOptions

        def list_items(self):
            return self.source.path(self.source.options.list_file).read_text().split()

        def read_item(self, rel):
            yield from self.image_records(rel, self.raw_label(rel))

Privacy: a published id never holds a path (`ids.IdHasher`), labels come from a path only where the
spec says so (`label_from: folder`, the default of `class_folders`), and failure messages are
scrubbed of the item's paths; the full paths go to the local `detail` (kept under `_work/`).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .ids import IdHasher, scrub
from .image_bytes import STREAM_SUFFIXES, metadata_free_stream
from .imaging import (
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    VOLUME_SUFFIXES,
    BadPixels,
    BurnedIn,
    Oversize,
    SourceError,
    Volume,
    is_dicom,
    mask_to_boxes,
    read_dicom,
    read_image,
    read_nifti,
    resize_mask,
    resize_rgb,
    to_uint8,
)
from .labels import LabelStandardizer
from .records import MedicalRecord, encode_png, image_phash, pixel_md5
from .source_spec import ReaderOptions, SourceSpec


# -------------------------------------------------------------------------------------------------
# what readers produce
# -------------------------------------------------------------------------------------------------
@dataclass
class WorkUnit:
    """A slice of one source small enough for one worker call; `items` are JSON-serialisable."""

    source: str
    index: int
    items: list[Any]
    fingerprint: str = ""  # spec + source files of the unit (set by `build.plan`)

    @property
    def unit_id(self) -> str:
        return f"{self.source}-{self.index:06d}"


@dataclass
class Failure:
    """A bad input item, counted by `kind`. `item` and `message` are publishable (no path or file
    name); `detail` holds the local paths and the raw error and stays in the work area."""

    source: str
    item: str
    kind: str
    message: str
    detail: str = ""

    def public(self) -> dict[str, str]:
        return {"source": self.source, "item": self.item, "kind": self.kind, "message": self.message}


@dataclass
class Dropped:
    """An item skipped on purpose (empty mask, tiny component, blank image...), counted by reason."""

    source: str
    reason: str
    count: int = 1


@dataclass
class Notice:
    """A published item the report should point at for review (e.g. an ultrasound image whose DICOM
    has no `BurnedInAnnotation` tag), counted by reason."""

    source: str
    reason: str


@dataclass
class TextSample:
    """A text-only training row (GMAI-Text-Single / -Multi)."""

    sample_id: str
    source: str
    messages: list[dict[str, str]]
    split: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)


Item = MedicalRecord | Failure | Dropped | Notice | TextSample


class ItemError(Exception):
    """A bad item: becomes a `Failure` of `kind`; the message must not hold paths (it is scrubbed)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# -------------------------------------------------------------------------------------------------
# the registry
# -------------------------------------------------------------------------------------------------
_READERS: dict[str, type[SourceReader]] = {}


def register_source(cls: type[SourceReader]) -> type[SourceReader]:
    """Class decorator: make a reader available as `type: <cls.type_name>` in build specs (looked up
    through `registry`, which imports every module that registers readers)."""
    if cls.type_name in _READERS and _READERS[cls.type_name] is not cls:
        raise ValueError(f"source type {cls.type_name!r} is registered twice")
    _READERS[cls.type_name] = cls
    return cls


# -------------------------------------------------------------------------------------------------
# the base reader
# -------------------------------------------------------------------------------------------------
#: DICOM modalities whose images often carry text drawn into the pixels (ultrasound, secondary
#: capture / other, external camera, endoscopy): an image of one without a `BurnedInAnnotation`
#: tag is counted in the report for review.
BURNED_IN_PRONE = frozenset({"US", "OT", "SC", "XC", "ES"})


def _undecodable(name: str) -> bool:
    """A path from the file system whose bytes are not UTF-8 (Python keeps them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def is_image_file(path: Path) -> bool:
    """A 2D/3D image file by suffix, or a DICOM file by content (any suffix, UID names included)."""
    name = path.name.lower()
    return name.endswith(IMAGE_SUFFIXES) or name.endswith(NIFTI_SUFFIXES) or is_dicom(path)


def file_stem(name: str) -> str:
    """A file name without its image/volume suffix (`a.nii.gz` -> `a`); DICOM UID names
    (`1.2.840.113619.2.55`) and names without a known suffix stay whole."""
    lower = name.lower()
    for suffix in sorted((*IMAGE_SUFFIXES, *VOLUME_SUFFIXES, ".dcm", ".dicom"), key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def list_files(root: Path, what: str, predicate=is_image_file) -> list[Path]:
    if not root.is_dir():
        raise SourceError(f"{what}: folder {root} does not exist")
    return sorted((p for p in root.rglob("*") if p.is_file() and predicate(p)), key=lambda p: p.as_posix())


def read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise SourceError(f"{what}: cannot read {path} ({error})") from error


class SourceReader:
    """One source layout. Subclasses set `type_name`, `Options`, and implement `list_items` and
    `read_item` (plus `item_files` / `shared_files` / `raw_label_space` where the defaults do not fit)."""

    type_name: ClassVar[str] = ""
    Options: ClassVar[type] = ReaderOptions
    task_type: ClassVar[str] = "classification"  # default `task_type` of the source's records
    needs_image_fields: ClassVar[bool] = True  # `modality` and `department` are required
    fixed_unit_size: ClassVar[int | None] = None  # e.g. 1 for volumes (one volume per unit)
    label_from_default: ClassVar[str | None] = None

    def __init__(
        self,
        source: SourceSpec,
        standardizer: LabelStandardizer | None = None,
        label_space: list[str] | None = None,
        ids: IdHasher | None = None,
    ) -> None:
        self.source = source
        self.options = source.options
        self.standardize = standardizer or (lambda text: text)
        self.label_space = label_space or []
        self.ids = ids or IdHasher(b"")
        self._lower_map = {k.lower(): v for k, v in source.label_map.items()}

    # -- spec checks ---------------------------------------------------------------------------
    @classmethod
    def check_spec(cls, source: SourceSpec) -> str | None:
        """A problem of the spec that would make every item fail (checked at load time)."""
        return None

    @classmethod
    def _needs_label(cls, source: SourceSpec) -> str | None:
        if source.label is None and (source.label_from or cls.label_from_default) is None:
            return (
                f"a {cls.type_name} source without labels in its files needs `label` (one label "
                "for all items) or `label_from: folder` (folder names are class names and are published)"
            )
        return None

    # -- planning ------------------------------------------------------------------------------
    @property
    def what(self) -> str:
        return self.source.where()

    def list_items(self) -> list[Any]:
        raise NotImplementedError

    def item_files(self, item: Any) -> list[Path]:
        """The files one item reads (their path, size and mtime enter the unit fingerprint)."""
        return [self.source.path(item)]

    def shared_files(self) -> list[Path]:
        """Files every item depends on (a CSV, a COCO JSON...)."""
        return []

    def plan(self) -> list[WorkUnit]:
        size = self.fixed_unit_size or self.source.unit_size
        return [
            WorkUnit(self.source.name, i, chunk) for i, chunk in enumerate(chunks(self.list_items(), size))
        ]

    def raw_label_space(self) -> list[str]:
        """The raw label space as declared or listed cheaply (standardised by the build)."""
        if self.source.label_map:
            return sorted(set(self.source.label_map.values()))
        if self.source.label:
            return [self.source.label]
        values = self.source.mask.values
        if values:
            return sorted({str(v) for k, v in values.items() if int(k) != 0})
        return []

    @functools.cached_property
    def resolved_root(self) -> Path:
        """The source root with symlinks resolved (once per reader: `resolve` is a syscall per part)."""
        return self.source.base_dir.resolve()

    @functools.cached_property
    def _folder_prefixes(self) -> dict[Path, str | None]:
        return {}

    def _folder_prefix(self, folder: Path) -> str | None:
        """`folder` resolved, relative to the resolved root, as a POSIX prefix ("" for the root
        itself, "a/b/" below it), None outside it; computed once per folder and reader (`resolve`
        is a syscall per part, `relative_to` a dozen `Path` objects: per file they were a third of
        a small image's planning)."""
        prefixes = self._folder_prefixes
        if folder not in prefixes:
            resolved = folder.resolve()
            try:
                inner = resolved.relative_to(self.resolved_root).as_posix()
            except ValueError:
                prefixes[folder] = None
            else:
                prefixes[folder] = "" if inner == "." else inner + "/"
        return prefixes[folder]

    def _rel_by_folder(self, path: Path) -> str | None:
        """`rel(path)` from its folder's cached prefix, for a file that is not a symbolic link and
        lies in a folder inside the root; None otherwise (the caller resolves the whole path)."""
        if path.name in ("", ".", "..") or os.path.islink(path):
            return None
        prefix = self._folder_prefix(path.parent)
        return None if prefix is None else prefix + path.name

    def rel(self, path: Path) -> str:
        """The POSIX path of `path` (symlinks resolved) relative to the resolved source root, or
        `path` itself when it resolves outside the root."""
        if (inner := self._rel_by_folder(path)) is not None:
            return inner
        try:  # a link, or a folder outside the root (the root itself, or a file outside it)
            return path.resolve().relative_to(self.resolved_root).as_posix()
        except ValueError:
            return path.as_posix()

    # -- ids and privacy -----------------------------------------------------------------------
    def file_id(self, rel: str) -> str:
        return self.ids.file_id(self.source.name, rel, self.source.publish_paths)

    def record_id(self, rel: str, suffix: str = "") -> str:
        return f"{self.source.name}/{self.file_id(rel)}{suffix}"

    def item_name(self, item: Any) -> str:
        """The publishable name of an item in failure lists."""
        return f"file {self.file_id(str(item))}"

    def item_paths(self, item: Any) -> list[str]:
        """Local paths an error message about `item` may contain (scrubbed from public messages)."""
        try:
            files = [str(p) for p in [*self.item_files(item), *self.shared_files()]]
        except Exception:
            files = []
        return [*files, *([item] if isinstance(item, str) else [])]

    # -- reading -------------------------------------------------------------------------------
    def read_item(self, item: Any) -> Iterator[Item]:
        raise NotImplementedError

    def read_unit(self, unit: WorkUnit) -> Iterator[Item]:
        """Every item of the unit through the one error guard: failures are yielded, never raised."""
        for item in unit.items:
            yield from self.guarded(item, lambda item=item: self.read_item(item))

    def guarded(self, item: Any, produce) -> Iterator[Item]:
        if isinstance(item, str) and not item.isascii() and _undecodable(item):
            yield self.failure(item, "undecodable_name", "the file name is not valid UTF-8")
            return
        try:
            yield from produce()
        except ItemError as error:
            yield self.failure(item, error.kind, str(error))
        except BadPixels as error:
            yield Dropped(self.source.name, error.reason)
        except BurnedIn:
            yield Dropped(self.source.name, "burned_in_annotation")
        except Oversize as error:
            yield self.failure(item, "oversize", str(error))
        except SourceError as error:
            yield self.failure(item, "unreadable", str(error))
        except Exception as error:  # keep the build going; the report names the item
            yield self.failure(item, "error", f"{type(error).__name__}: {error}")

    def failure(self, item: Any, kind: str, raw: str) -> Failure:
        paths = self.item_paths(item)
        public = scrub(raw, [*paths, str(self.source.base_dir), str(self.source.base_dir.resolve())])[:300]
        return Failure(
            self.source.name, self.item_name(item), kind, public, f"{', '.join(paths) or item}: {raw}"
        )

    # -- labels --------------------------------------------------------------------------------
    def raw_label(self, rel: str) -> Any:
        """The source's constant label, else the class folder's name where the spec allows it:
        the folder `label_depth` levels under the root, never a deeper (patient, study) folder."""
        if self.source.label is not None:
            return self.source.label
        if (self.source.label_from or self.label_from_default) == "folder":
            folders = Path(rel).parts[:-1]
            if len(folders) < self.source.label_depth:
                raise ItemError("missing_label", f"no class folder at depth {self.source.label_depth}")
            return folders[self.source.label_depth - 1]
        raise ItemError("missing_label", "no label for this item")

    def label(self, raw: Any) -> str:
        """Source label map (strict: unknown labels are errors), then global standardisation."""
        text = "" if raw is None else str(raw).strip()
        if self.source.label_map:
            mapped = self.source.label_map.get(text, self._lower_map.get(text.lower()))
            if mapped is None:
                if self.source.strict_labels:
                    raise ItemError(
                        "unknown_label",
                        f"label {text!r} is not in the label_map of source {self.source.name!r}",
                    )
                mapped = text
            text = mapped
        if not text:
            raise ItemError("missing_label", "empty label")
        return self.standardize(text)

    # -- pixels --------------------------------------------------------------------------------
    def pixels(self, plane: np.ndarray, modality: str) -> np.ndarray:
        """uint8 gray (H, W) or colour (H, W, 3); blank and constant images raise `BadPixels`."""
        out = to_uint8(plane, modality, self.source.window, tuple(self.source.percentiles))
        low, high = int(out.min()), int(out.max())
        if low == high:
            raise BadPixels("blank_image" if high == 0 else "constant_image", "no contrast after windowing")
        return out

    def inside_root(self, path: Path, what: str = "image") -> Path:
        """`path` if it resolves (symlinks followed) inside the source root; else the item is
        refused: an annotation row may not publish a file from outside the dataset."""
        if self._rel_by_folder(path) is None:
            root, resolved = self.resolved_root, path.resolve()
            if resolved != root and root not in resolved.parents:
                raise ItemError("outside_root", f"the {what} path resolves outside the source root")
        return path

    def frames(self, path: Path) -> list[tuple[np.ndarray, dict[str, Any], str]]:
        """A 2D file inside the source root as raw planes: (plane, meta, modality) per frame / slice."""
        self.inside_root(path)
        name = path.name.lower()
        limits = self.source.limits
        if name.endswith(NIFTI_SUFFIXES):
            volume = read_nifti(path, limits=limits)
            return [(plane, {"slice": i}, self.source.modality) for i, plane in enumerate(volume.data)]
        if name.endswith(IMAGE_SUFFIXES) or not is_dicom(path):
            return [(read_image(path, limits), {}, self.source.modality)]
        frames, meta = read_dicom(path, limits, self.source.publish_burned_in)
        modality = meta.get("Modality") or self.source.modality
        return [
            (frames[i], {**meta, "frame": i} if len(frames) > 1 else dict(meta), modality)
            for i in range(0, len(frames), self.source.slices.step)
        ]

    def stream_frame(self, path: Path) -> tuple[bytes, np.ndarray] | None:
        """A PNG / JPEG inside the source root, read once: its metadata-free stream
        (`image_bytes.metadata_free_stream`) and the 8-bit greyscale or RGB plane decoded from
        exactly that stream; None when the file has no such stream (`frames` reads it instead)."""
        self.inside_root(path)
        try:
            stream = metadata_free_stream(path.read_bytes())
        except OSError as error:
            raise SourceError(f"{path}: unreadable image ({type(error).__name__}: {error})") from error
        if stream is None:
            return None
        try:
            plane = read_image(path, self.source.limits, data=stream, modes=("L", "RGB"))
        except Oversize:
            raise
        except SourceError:  # the original file decides (and names its own error)
            return None
        return None if plane is None else (stream, plane)

    def notices(self, meta: dict[str, Any], modality: str) -> Iterator[Notice]:
        """What the report should flag about a read file (`frames()`'s meta and modality)."""
        if meta.get("burned_in_annotation") == "" and str(modality).upper() in BURNED_IN_PRONE:
            yield Notice(self.source.name, "burned_in_tag_missing")

    def record(
        self,
        record_id: str,
        pixels: np.ndarray,
        label: str,
        rel: str,
        split: str | None = None,
        bbox: list[float] | None = None,
        meta: dict[str, Any] | None = None,
        granularity: str | None = None,
        source_stream: tuple[bytes, np.ndarray] | None = None,
    ) -> MedicalRecord:
        """`source_stream`: a metadata-free PNG / JPEG stream and the plane decoded from exactly
        those bytes (`stream_frame`); the stream is published when the pixels come out unchanged
        (not windowed, not resized), else the pixels are encoded as PNG."""
        split = (split or self.source.split).strip()
        if not re.fullmatch(r"\w+", split):  # Hub split names: letters, digits, underscores
            raise ItemError(
                "bad_split", f"split name {split!r} must match \\w+ (e.g. train, validation, test)"
            )
        resized, sx, sy = resize_rgb(pixels, self.source.min_side, self.source.max_side)
        stream = None
        if source_stream is not None and resized is pixels:
            kept, plane = source_stream
            if pixels.shape == plane.shape and np.array_equal(pixels, plane):
                stream = kept
        pixels = resized
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
            image_png=stream or encode_png(pixels),
            modality=self.source.modality,
            label=label,
            department=self.source.department,
            source_dataset=self.source.name,
            split=split,
            task_type=self.source.task_type,
            clinical_task=self.source.clinical_task,
            granularity=granularity or self.source.granularity or default_granularity,
            bbox=bbox,
            label_space=self.label_space,
            source_file=self.file_id(rel),
            width=int(pixels.shape[1]),
            height=int(pixels.shape[0]),
            image_md5=pixel_md5(pixels),
            phash=image_phash(pixels),  # greyscale: the same hash as its RGB copy, a third of the work
            meta={k: v for k, v in (meta or {}).items() if k != "burned_in_annotation"},
        )

    def image_records(self, rel: str, raw_label: Any, split: str | None = None) -> Iterator[Item]:
        """One record per frame of a 2D file (DICOM frames, or a single image)."""
        label = self.label(raw_label)
        path = self.source.path(rel)
        stream = self.stream_frame(path) if path.suffix.lower() in STREAM_SUFFIXES else None
        frames = self.frames(path) if stream is None else [(stream[1], {}, self.source.modality)]
        if frames:
            yield from self.notices(frames[0][1], frames[0][2])
        for index, (plane, meta, modality) in enumerate(frames):
            try:
                pixels = self.pixels(plane, modality)
            except BadPixels as error:
                yield Dropped(self.source.name, error.reason)
                continue
            suffix = f"#f{index}" if len(frames) > 1 else ""
            yield self.record(
                self.record_id(rel, suffix), pixels, label, rel, split, meta=meta, source_stream=stream
            )

    def mask_values(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.source.mask.values.items() if int(k) != 0}

    def boxes_from_mask(
        self,
        pixels: np.ndarray,
        mask: np.ndarray,
        record_base: str,
        rel: str,
        meta: dict[str, Any],
    ) -> Iterator[Item]:
        """Segmentation -> detection: one record per (label value, connected component)."""
        values = self.mask_values()
        options = self.source.mask
        boxes, dropped = mask_to_boxes(
            mask,
            values=sorted(values) if values else None,
            min_area=options.min_area,
            min_area_fraction=options.min_area_fraction,
            connectivity=options.connectivity,
            max_per_label=options.max_per_label,
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
                label = self.label(raw)
            except ItemError as error:
                yield self.failure(rel, error.kind, str(error))
                continue
            yield self.record(
                f"{record_base}#b{k}",
                pixels,
                label,
                rel,
                None,
                box.bbox,
                {**meta, "mask_value": box.value, "area": box.area},
            )

    def volume_records(
        self, volume: Volume, labels: np.ndarray | None, rel: str, record_base: str, raw_label: Any
    ) -> Iterator[Item]:
        """3D -> 2D slices; with a label volume, the annotated slices with their boxes."""
        slices = self.source.slices
        planes = _along(volume.data, slices.axis)
        label_planes = _along(labels, slices.axis) if labels is not None else None
        if label_planes is not None and label_planes.shape != planes.shape[: label_planes.ndim]:
            raise ItemError(
                "shape_mismatch",
                f"label volume shape {labels.shape} differs from image volume {volume.data.shape}",
            )
        keep = slices.keep or ("foreground" if labels is not None else "middle")
        indices = [len(planes) // 2] if keep == "middle" else list(range(0, len(planes), slices.step))
        label = self.label(raw_label) if label_planes is None else None
        modality = volume.modality or self.source.modality
        spacing = [round(float(s), 4) for s in volume.spacing]
        emitted = 0
        for z in indices:
            if slices.max_per_volume and emitted >= slices.max_per_volume:
                break
            meta = {"slice": int(z), "axis": slices.axis, "spacing": spacing}
            if label_planes is not None and not label_planes[z].any():
                continue  # background-only slices are not records (SA-Med2D keeps annotated slices)
            try:
                pixels = self.pixels(planes[z], modality)
            except BadPixels as error:
                yield Dropped(self.source.name, error.reason)
                continue
            if label_planes is None:
                yield self.record(f"{record_base}#z{z}", pixels, label, rel, meta=meta)
                emitted += 1
                continue
            resized, _, _ = resize_rgb(pixels, self.source.min_side, self.source.max_side)
            mask = label_planes[z]
            if resized.shape[:2] != pixels.shape[:2]:
                mask = resize_mask(mask, (resized.shape[1], resized.shape[0]))
            produced = False
            for item in self.boxes_from_mask(resized, mask, f"{record_base}#z{z}", rel, meta):
                produced = produced or isinstance(item, MedicalRecord)
                yield item
            emitted += int(produced)


def _along(data: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(data, axis, 0) if axis else data


def failure_dicts(failures: list[Failure]) -> list[dict[str, Any]]:
    return [asdict(f) for f in failures]
