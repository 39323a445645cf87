"""Open a dataset however the user names it: the one set of rules every part uses.

- a `save_to_disk` folder (`state.json` or `dataset_dict.json`): `load_from_disk`, then the split;
- a data file (`.parquet`, `.json`, `.jsonl`, `.csv`, `.arrow`): its rows, whatever split is asked
  (one file is one split);
- anything else, a folder in the Hub layout (Parquet shards, README `configs:`) or a Hub id:
  `load_dataset(path, name, split=...)`, exactly as on the Hub.

`datasets` caches a local folder under its *name* only (`corpus/cfg/...`): two folders of the same
name, or a folder rebuilt in place, would read each other's stale rows (seen with datasets 5.2).
So a local folder gets a cache of its own, keyed by its absolute path and the path, size and
modification time of every file in it: a rebuilt corpus is read anew.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}
_SAVED_MARKERS = ("state.json", "dataset_dict.json")


def _local_cache_dir(folder: Path) -> str:
    import datasets

    digest = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"\0{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return str(Path(datasets.config.HF_DATASETS_CACHE) / "gmaivl-local" / digest.hexdigest()[:16])


def open_dataset(
    path_or_id: str | os.PathLike, name: str | None = None, split: str = "train", data_files: Any = None
) -> Any:
    """A `datasets.Dataset`; a `ValueError` names the source, config and split when it fails."""
    import datasets

    local = Path(os.path.expanduser(str(path_or_id)))
    where = f"data source {str(path_or_id)!r} (config {name!r}, split {split!r})"
    if local.is_dir() and any((local / marker).exists() for marker in _SAVED_MARKERS):
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{where}: no split {split!r}; it has {sorted(ds)}")
            ds = ds[split]
        return ds
    if local.is_file():
        builder = FILE_BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise ValueError(
                f"{where}: unsupported file type {local.suffix!r} (use {', '.join(FILE_BUILDERS)})"
            )
        return datasets.load_dataset(builder, data_files=str(local), split="train")
    cache_dir = _local_cache_dir(local) if local.is_dir() else None
    try:
        return datasets.load_dataset(
            str(path_or_id), name, data_files=data_files, split=split, cache_dir=cache_dir
        )
    except Exception as err:  # not found, offline, bad config name...: the user's input, one line
        raise ValueError(f"{where}: {err}") from err
