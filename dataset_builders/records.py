"""The standardised record: one image (or one region of an image) with its annotations.

Every source adapter turns its native layout into `MedicalRecord`s, the
`<image, modality, label, department, bbox?>` tuple of GMAI-VL-5.5M (the GMAI-VL paper Sec. 3.1) plus the
GMAI-MMBench lexical-tree fields (clinical task, department, perceptual granularity). A built folder
keeps the records that passed image quality control under `records/` as Parquet with embedded
images; `iter_records(folder)` streams them back, e.g. for benchmark construction.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class MedicalRecord:
    """One standardised annotated medical image.

    `image_png` holds the 8-bit image as PNG bytes, greyscale kept greyscale (lossless, so
    `image_md5`, computed on the decoded RGB pixels, is reproducible). `bbox` is `[x_min, y_min, x_max, y_max]` in pixels of that
    image, or None for image-level labels. `meta` carries only non-identifying acquisition facts
    (spacing, slice index, axis, frame): never DICOM patient or study identifiers.
    """

    record_id: str
    image_png: bytes
    modality: str
    label: str
    department: str
    source_dataset: str
    split: str = "train"
    task_type: str = "classification"
    clinical_task: str = "Disease Diagnosis"
    granularity: str = "image"
    bbox: list[float] | None = None
    label_space: list[str] = field(default_factory=list)
    source_file: str = ""
    width: int = 0
    height: int = 0
    image_md5: str = ""
    phash: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def image(self) -> Image.Image:
        """Decode the stored image (RGB PIL image)."""
        return Image.open(io.BytesIO(self.image_png)).convert("RGB")

    def to_row(self) -> dict[str, Any]:
        """Row for the `records` Parquet schema (see `record_features`)."""
        row = {name: getattr(self, name) for name in _FIELDS}  # shallow: `asdict` deep-copies
        row["bbox"] = None if self.bbox is None else list(self.bbox)
        row["label_space"] = list(self.label_space)
        row["image"] = {"bytes": row.pop("image_png"), "path": None}
        row["meta"] = json.dumps(self.meta, sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MedicalRecord:
        row = dict(row)
        image = row.pop("image")
        if isinstance(image, dict):
            png = image["bytes"]
        elif isinstance(image, Image.Image):
            png = encode_png(np.asarray(image.convert("RGB")))
        else:
            png = image
        meta = row.pop("meta", "{}")
        names = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in row.items() if k in names}
        return cls(
            image_png=png, meta=json.loads(meta) if isinstance(meta, str) else dict(meta or {}), **kwargs
        )


_FIELDS = tuple(MedicalRecord.__dataclass_fields__)


def record_features():
    """`datasets.Features` of the `records` Parquet files (images decode to PIL on load)."""
    from datasets import Features, Image, List, Value

    return Features(
        {
            "record_id": Value("string"),
            "image": Image(),
            "modality": Value("string"),
            "label": Value("string"),
            "department": Value("string"),
            "source_dataset": Value("string"),
            "split": Value("string"),
            "task_type": Value("string"),
            "clinical_task": Value("string"),
            "granularity": Value("string"),
            "bbox": List(Value("float32")),
            "label_space": List(Value("string")),
            "source_file": Value("string"),
            "width": Value("int32"),
            "height": Value("int32"),
            "image_md5": Value("string"),
            "phash": Value("string"),
            "meta": Value("string"),
        }
    )


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode 8-bit pixels as PNG bytes: (H, W) as greyscale, (H, W, 3) as RGB, and an RGB image
    whose three channels are equal as greyscale too (the same pixels in a third of the bytes)."""
    if (
        pixels.ndim == 3
        and (pixels[..., 0] == pixels[..., 1]).all()
        and (pixels[..., 0] == pixels[..., 2]).all()
    ):
        pixels = pixels[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def pixel_md5(pixels: np.ndarray) -> str:
    """md5 of decoded 8-bit pixels and their shape: independent of the file encoding. A greyscale
    (H, W) image and its RGB copy (R = G = B) give the same digest, that of the (H, W) plane, so
    exact dedup across the two needs no 3-channel copy (a third of the bytes to hash)."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        red = pixels[..., 0]
        if (red == pixels[..., 1]).all() and (red == pixels[..., 2]).all():
            pixels = red
    pixels = np.ascontiguousarray(pixels)
    digest = hashlib.md5(f"{pixels.shape}".encode())
    digest.update(pixels)  # the array's own buffer (contiguous): no copy
    return digest.hexdigest()


def image_phash(rgb: np.ndarray | Image.Image) -> str:
    """64-bit perceptual hash (DCT pHash of imagehash) as 16 hex digits, the digits of
    `str(imagehash.phash(image))`. A greyscale (H, W) array gives the hash of its RGB copy
    (imagehash hashes the `L` conversion, which is the grey value itself when R = G = B)."""
    import imagehash

    image = rgb if isinstance(rgb, Image.Image) else Image.fromarray(np.ascontiguousarray(rgb))
    bits = imagehash.phash(image).hash  # 8 x 8 booleans, row-major: imagehash's own digit order
    return np.packbits(bits).tobytes().hex()


def iter_records(folder: str | Path, split: str | None = None) -> Iterator[MedicalRecord]:
    """Stream the standardised records of a built folder (its `records/*.parquet`), in order.

    Accepts the build folder itself or its `records/` sub-folder; reads one row group at a time so
    memory stays flat on large builds.
    """
    import pyarrow.parquet as pq

    folder = Path(folder)
    base = folder / "records" if (folder / "records").is_dir() else folder
    if base == folder and (folder / "build_report.json").is_file():
        raise FileNotFoundError(f"{folder}: built folder without a records/ config (no record passed QC?)")
    files = sorted(base.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no records Parquet files under {base}")
    for path in files:
        parquet = pq.ParquetFile(path)
        for index in range(parquet.num_row_groups):
            for row in parquet.read_row_group(index).to_pylist():
                if split is not None and row.get("split") != split:
                    continue
                yield MedicalRecord.from_row(row)
