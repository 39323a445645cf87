"""Helpers shared by the layout readers of this package: per-process caches of the files a source
depends on, image paths checked against their root, images decoded from bytes (zip members) and
one image with several labels."""

from __future__ import annotations

import io
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from ..adapters import Dropped, Item, ItemError, SourceReader
from ..imaging import BadPixels, InputLimits, Oversize, SourceError

T = TypeVar("T")
_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_CACHE_ENTRIES = 8


def cached(kind: str, paths: Sequence[Path], load: Callable[[], T], per_process: bool = False) -> T:
    """`load()`, kept while the files keep their size and mtime: the build makes one reader per work
    unit, so a CSV, an annotation JSON or a zip index is read once per process, not once per unit.
    `per_process` keys on the process id too (open file handles must not cross a fork)."""
    key: list[Any] = [kind, os.getpid() if per_process else 0]
    for path in paths:
        try:
            info = path.stat()
        except OSError as error:
            raise SourceError(f"cannot read {path} ({error})") from error
        key.append((str(path.resolve()), info.st_size, info.st_mtime_ns))
    entry = tuple(key)
    if entry in _CACHE:
        _CACHE.move_to_end(entry)
        return _CACHE[entry]
    value = load()
    _CACHE[entry] = value
    while len(_CACHE) > _CACHE_ENTRIES:
        _CACHE.popitem(last=False)
    return value


def safe_relative(value: str, what: str = "image") -> str:
    """`value` as a relative POSIX path that stays in its folder; absolute paths and `..` are refused
    (an `ItemError` of kind `outside_root`, counted for the row)."""
    text = str(value).strip()
    posix, windows = PurePosixPath(text.replace("\\", "/")), PureWindowsPath(text)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts:
        raise ItemError("outside_root", f"the {what} path is absolute or leaves its folder ('..')")
    return posix.as_posix()


def within(path: Path, root: Path, what: str = "image") -> Path:
    """`path` if it resolves (symlinks followed) inside `root`, else an `outside_root` row error."""
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise ItemError("outside_root", f"the {what} path resolves outside its image folder")
    return path


def decode_image(data: bytes, limits: InputLimits, what: str) -> np.ndarray:
    """Image file bytes (a zip member) as an array, like `imaging.read_image` does for files: the
    header's size is checked against `limits` before the pixels are decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # `limits` decide
            with Image.open(io.BytesIO(data)) as image:
                pixels = image.width * image.height * len(image.getbands())
                if pixels > limits.max_pixels:
                    raise Oversize(f"{what}: declares {pixels:,} pixels, over limits.max_pixels")
                decoded = pixels * (1 if image.mode in ("L", "RGB", "P", "1") else 4)
                if decoded > limits.max_decoded_bytes:
                    raise Oversize(f"{what}: decoding needs {decoded:,} bytes, over limits.max_decoded_bytes")
                if (
                    decoded > limits.ratio_floor_bytes
                    and decoded / max(len(data), 1) > limits.max_compression_ratio
                ):
                    raise Oversize(f"{what}: compression ratio over limits.max_compression_ratio")
                image.load()
                if image.mode in ("L", "RGB") or image.mode.startswith("I") or image.mode == "F":
                    return np.array(image)  # 16/32-bit data is scaled by the reader's `pixels`
                return np.array(image.convert("RGB"))
    except SourceError:
        raise
    except Image.DecompressionBombError as error:
        raise Oversize(f"{what}: {error}") from error
    except Exception as error:
        raise SourceError(f"{what}: unreadable image ({type(error).__name__}: {error})") from error


def labelled_records(
    reader: SourceReader,
    rel: str,
    raw_labels: Sequence[Any],
    split: str | None = None,
    key: str | None = None,
    planes: list[tuple[np.ndarray, dict[str, Any], str]] | None = None,
) -> Iterator[Item]:
    """Records of one image with one or more labels (multi-label rows, one-hot rows).

    One label gives one record, as `SourceReader.image_records` does. Several labels give one
    record per label (sorted), with ids `<id>#a<k>` (so QC sees one image, not duplicates), the
    full sorted label list in `meta["labels"]`, and a `label_space` without the image's other
    labels: a question's distractors are never findings the image also has.
    `key` is what the id hashes (default `rel`); `planes` are (pixels, meta, modality) given by the
    reader (e.g. from an array file), else the frames of the file `rel`.
    """
    labels = sorted({reader.label(raw) for raw in raw_labels})
    if not labels:
        raise ItemError("missing_label", "no positive label")
    if planes is None:
        planes = reader.frames(reader.source.path(rel))
        if planes:
            yield from reader.notices(planes[0][1], planes[0][2])
    for index, (plane, meta, modality) in enumerate(planes):
        try:
            pixels = reader.pixels(plane, modality)
        except BadPixels as error:
            yield Dropped(reader.source.name, error.reason)
            continue
        base = reader.record_id(key or rel, f"#f{index}" if len(planes) > 1 else "")
        if len(labels) == 1:
            yield reader.record(base, pixels, labels[0], rel, split, meta=meta)
            continue
        first = reader.record(f"{base}#a0", pixels, labels[0], rel, split, meta={**meta, "labels": labels})
        others = set(labels)
        for k, label in enumerate(labels):
            space = [name for name in first.label_space if name == label or name not in others]
            yield replace(first, record_id=f"{base}#a{k}", label=label, label_space=space)
