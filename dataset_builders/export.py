"""Export a built config as LLaVA-style JSON (for LLaVA / xtuner tooling) with the images as files."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from gmaivl.core.files import atomic_write, atomic_write_bytes


def export_llava(
    folder: str | Path,
    config: str,
    out_json: str | Path,
    image_dir: str | Path | None = None,
    split: str = "train",
) -> int:
    """Write `[{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}]}]`; returns rows.

    Images are written once each (named by content md5) under `image_dir` (default: next to the
    JSON, `images/`), and the first human turn gets the `<image>` placeholder, as LLaVA expects.
    Multi-image rows list their files under `image`.
    """
    folder, out_json = Path(folder), Path(out_json)
    shards = sorted((folder / config).glob(f"{split}-*.parquet"))
    if not shards:
        raise FileNotFoundError(
            f"no Parquet shards for config {config!r} split {split!r} under {folder / config}"
        )
    image_dir = Path(image_dir) if image_dir else out_json.parent / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    count = 0

    def write(raw) -> None:
        nonlocal count
        handle = io.TextIOWrapper(raw, encoding="utf-8")
        handle.write("[")
        for path in shards:
            parquet = pq.ParquetFile(path)
            for group in range(parquet.num_row_groups):
                for row in parquet.read_row_group(group).to_pylist():
                    entry = _llava_entry(row, image_dir, out_json.parent)
                    handle.write(("," if count else "") + "\n" + json.dumps(entry, ensure_ascii=False))
                    count += 1
        handle.write("\n]\n")
        handle.detach()  # flushes into `raw`, which atomic_write closes

    atomic_write(out_json, write)
    return count


def _llava_entry(row: dict[str, Any], image_dir: Path, base: Path) -> dict[str, Any]:
    names = []
    for image in row.get("images") or []:
        data = image["bytes"]
        name = hashlib.md5(data).hexdigest() + ".png"
        target = image_dir / name
        if not target.exists():
            atomic_write_bytes(target, data)
        names.append(os.path.relpath(target, base))
    conversations = []
    placed = not names
    for message in row["messages"]:
        if message["role"] == "system":
            continue
        value = message["content"]
        if message["role"] == "user" and not placed:
            value = "\n".join(["<image>"] * len(names)) + "\n" + value
            placed = True
        conversations.append({"from": "human" if message["role"] == "user" else "gpt", "value": value})
    entry: dict[str, Any] = {"id": row["row_id"]}
    if names:
        entry["image"] = names[0] if len(names) == 1 else names
    entry["conversations"] = conversations
    return entry
