"""Decontamination check: which benchmark images also occur in a training corpus.

Two tests per image pair, as the papers do it: an exact one (md5 of the decoded RGB pixels and
their shape, so a PNG and a re-saved copy of the same pixels match; the GMAI-VL paper) and a
perceptual one (64-bit DCT pHash within a Hamming distance, 2 by default, the same distance a
build uses to drop benchmark images; the Lingshu paper's strict setting is 0). Near matches are found without comparing all pairs: the 64 bits are cut into
`max_distance + 1` bands, and two hashes within the distance agree exactly on at least one band
(pigeonhole), so only hashes sharing a band are compared.

Sources: a VLMEvalKit TSV, a dataset-builder output folder (its `records/`), a folder or file of
Parquet shards (image columns as `{bytes, path}` structs or lists of them), a folder of image
files, or a Hugging Face dataset (`load_from_disk` folder or Hub id). Training hashes are cached
in a JSONL file as they are computed, so an interrupted check resumes.
"""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from gmaivl.core.files import atomic_write_text
from gmaivl.dataset_builders.qc import DECONTAMINATION_DISTANCE, HammingIndex

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


@dataclass(frozen=True)
class ImageHash:
    id: str
    md5: str
    phash: int
    via: str = "image"  # "source": the unannotated source of a benchmark image (bench-build rows)


def hash_image(image: Image.Image) -> tuple[str, int]:
    from gmaivl.dataset_builders.records import image_phash, pixel_md5

    rgb = np.asarray(image.convert("RGB"))
    return pixel_md5(rgb), int(image_phash(rgb), 16)


def _open(data: Any, where: str) -> Image.Image:
    try:
        if isinstance(data, Image.Image):
            return data
        if isinstance(data, dict):
            data = data.get("bytes") or data.get("path")
        if isinstance(data, (bytes, bytearray)):
            return Image.open(io.BytesIO(data))
        return Image.open(data)
    except (OSError, UnidentifiedImageError, TypeError) as exc:
        raise ValueError(f"{where}: image cannot be decoded ({exc})") from exc


def iter_source_images(source: str | os.PathLike, split: str | None = None) -> Iterator[tuple[str, Any]]:
    """(id, image-like) pairs of a source, streamed."""
    path = Path(source)
    if path.suffix.lower() == ".tsv":
        yield from _iter_tsv(path)
    elif path.is_dir() and (path / "records").is_dir():
        from gmaivl.dataset_builders.records import iter_records

        for rec in iter_records(path, split=split):
            yield rec.record_id, rec.image_png
    elif path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        yield from _iter_hf(str(path), split)
    elif (path.is_file() and path.suffix == ".parquet") or (path.is_dir() and any(path.rglob("*.parquet"))):
        yield from _iter_parquet(path)
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no images, Parquet shards or records found")
        for p in files:
            yield str(p.relative_to(path)), p
    elif path.exists():
        raise ValueError(f"{path}: unsupported source (expected .tsv, .parquet, a folder or a dataset id)")
    else:
        yield from _iter_hf(str(source), split)


def _iter_tsv(path: Path) -> Iterator[tuple[str, Any]]:
    from gmaivl.core.tsv import iter_tsv_rows, tsv_images

    from .loaders import BenchmarkFormatError

    for line, row in iter_tsv_rows(path):
        if "image" not in row or "index" not in row:
            raise BenchmarkFormatError(f"{path}: needs 'index' and 'image' columns; has {list(row)}")
        idx = row["index"]
        md5, ph = row.get("source_md5", "").strip(), row.get("source_phash", "").strip()
        if md5 and ph:  # bench-build rows carry the hashes of the image before a region was drawn on it
            yield idx, ImageHash(idx, md5, int(ph, 16), via="source")
        for k, image in enumerate(tsv_images(row["image"], f"{path} line {line} (index {idx})")):
            yield (idx if k == 0 else f"{idx}#{k}"), image


def _iter_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    for f in files:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        id_col = next((c for c in ("record_id", "id", "index") if c in names), None)
        img_cols = [c for c in ("image", "images") if c in names]
        if not img_cols:
            raise ValueError(f"{f}: no 'image' or 'images' column; has {names}")
        row_number = 0
        for g in range(pf.num_row_groups):
            table = pf.read_row_group(g, columns=img_cols + ([id_col] if id_col else []))
            for row in table.to_pylist():
                base = str(row[id_col]) if id_col else f"{f.name}:{row_number}"
                k = 0
                for col in img_cols:
                    values = row[col] if isinstance(row[col], list) else [row[col]]
                    for v in values:
                        if v is not None:
                            yield (base if k == 0 else f"{base}#{k}"), v
                            k += 1
                row_number += 1


def _iter_hf(source: str, split: str | None) -> Iterator[tuple[str, Any]]:
    from gmaivl.core.hf_datasets import open_dataset

    ds = open_dataset(source, split=split or "test")
    cols = [c for c in ("image", "images", "img") if c in ds.column_names]
    if not cols:
        raise ValueError(f"{source}: no image column; has {ds.column_names}")
    for i, row in enumerate(ds):
        values = row[cols[0]] if isinstance(row[cols[0]], list) else [row[cols[0]]]
        for k, v in enumerate(values):
            yield (str(row.get("id", i)) if k == 0 else f"{row.get('id', i)}#{k}"), v


def hash_source(
    source: str | os.PathLike,
    split: str | None = None,
    cache: str | os.PathLike | None = None,
    desc: str = "hash",
    progress: bool = True,
) -> list[ImageHash]:
    """Hash every image of a source; with `cache`, resume from and append to a JSONL of hashes."""
    done: dict[str, ImageHash] = {}
    cache_path = Path(cache) if cache else None
    if cache_path and cache_path.exists():
        with cache_path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    break  # torn last line of an interrupted run
                done[d["id"]] = ImageHash(d["id"], d["md5"], int(d["phash"], 16))
    out: list[ImageHash] = []
    fh = cache_path.open("a", encoding="utf-8") if cache_path else None
    try:
        for n, (image_id, data) in enumerate(
            tqdm(iter_source_images(source, split), desc=desc, disable=not progress)
        ):
            if image_id in done:
                out.append(done[image_id])
                continue
            if isinstance(data, ImageHash):  # a hash recorded in the source itself
                out.append(data)
                continue
            md5, ph = hash_image(_open(data, f"{source} image {image_id}"))
            h = ImageHash(image_id, md5, ph)
            out.append(h)
            if fh:
                fh.write(json.dumps({"id": image_id, "md5": md5, "phash": f"{ph:016x}"}) + "\n")
                if n % 256 == 0:
                    fh.flush()
    finally:
        if fh:
            fh.close()
    return out


def find_overlaps(
    benchmark: list[ImageHash], train: list[ImageHash], max_distance: int = DECONTAMINATION_DISTANCE
) -> list[dict[str, Any]]:
    """Pairs (benchmark image, training image) that are exact (md5) or near (pHash) duplicates."""
    by_md5: dict[str, list[tuple[str, str]]] = defaultdict(list)
    index = HammingIndex(max_distance)
    for h in benchmark:
        by_md5[h.md5].append((h.id, h.via))
        index.add(h.phash, (h.id, h.via))
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for t in train:
        # exact matches first, then near ones; "via" says whether the benchmark image itself or
        # its unannotated source (recorded by bench-build) matched
        for (bid, via), distance, match in [
            *((o, 0, "md5") for o in by_md5.get(t.md5, ())),
            *((o, d, "phash") for o, d in index.find_all(t.phash)),
        ]:
            found.setdefault(
                (bid, t.id),
                {"benchmark_id": bid, "train_id": t.id, "match": match, "distance": distance, "via": via},
            )
    return sorted(found.values(), key=lambda r: (r["benchmark_id"], r["train_id"]))


def decontamination_report(
    benchmark_source: str,
    train_source: str,
    out_path: str | os.PathLike,
    *,
    max_distance: int = DECONTAMINATION_DISTANCE,
    benchmark_split: str | None = None,
    train_split: str | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    bench = hash_source(benchmark_source, benchmark_split, desc="hash benchmark", progress=progress)
    train = hash_source(
        train_source, train_split, cache=cache, desc="hash training corpus", progress=progress
    )
    overlaps = find_overlaps(bench, train, max_distance)
    contaminated = sorted({o["benchmark_id"] for o in overlaps})
    n_bench = len({h.id for h in bench})
    report = {
        "benchmark": str(benchmark_source),
        "train": str(train_source),
        "max_phash_distance": max_distance,
        "n_benchmark_images": n_bench,
        "n_source_hashes": sum(h.via == "source" for h in bench),
        "n_train_images": len(train),
        "n_overlapping_pairs": len(overlaps),
        "n_contaminated_benchmark_images": len(contaminated),
        "contaminated_fraction": round(len(contaminated) / n_bench, 6) if n_bench else 0.0,
        "exact_md5_pairs": sum(o["match"] == "md5" for o in overlaps),
        "overlaps": overlaps,
    }
    atomic_write_text(out_path, json.dumps(report, indent=2) + "\n")
    return report
