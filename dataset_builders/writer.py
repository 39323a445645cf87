"""Viewer-ready Parquet: bounded row groups and shards, page index, embedded images, atomic files.

Limits default to `datasets.config.MAX_ROW_GROUP_SIZE` (100 MB uncompressed per row group) and
`datasets.config.MAX_SHARD_SIZE` (500 MB per file), the sizes the Hub's dataset viewer handles, and
row groups hold at most `row_group_rows` rows (100: an image page of the viewer). Files are written
as `*.tmp` and renamed to `{split}-{i:05d}-of-{n:05d}.parquet` when the writer closes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gmaivl.core import files


def size_to_bytes(value: int | str) -> int:
    from datasets.utils.py_utils import convert_file_size_to_int

    return int(convert_file_size_to_int(value))


def default_limits() -> dict[str, int]:
    import datasets

    return {
        "max_shard_bytes": size_to_bytes(datasets.config.MAX_SHARD_SIZE),
        "max_row_group_bytes": size_to_bytes(datasets.config.MAX_ROW_GROUP_SIZE),
        "row_group_rows": 100,
    }


def atomic_write_json(path: Path, data: Any) -> None:
    """Sorted keys: build outputs are compared byte for byte between builds."""
    files.atomic_write_json(path, data, sort_keys=True)


def write_table_atomic(table: pa.Table, path: Path, row_group_rows: int = 100) -> None:
    """One small Parquet file (unit outputs), written to a temp name then renamed. Snappy: these
    work files are read once, by publish; their images are compressed already and repeated images
    are stored once by Parquet's dictionary encoding, so zstd only added time (about 2x the write)."""
    files.atomic_write(
        path, lambda f: pq.write_table(table, f, row_group_size=row_group_rows, compression="snappy")
    )


class ShardWriter:
    """Streams rows of one (config, split) into size-bounded Parquet shards under `folder`."""

    def __init__(
        self,
        folder: Path,
        split: str,
        features,
        max_shard_bytes: int,
        max_row_group_bytes: int,
        row_group_rows: int = 100,
        compression: str = "zstd",
    ) -> None:
        self.folder = Path(folder)
        self.split = split
        self.features = features
        self.schema = features.arrow_schema
        self.max_shard_bytes = int(max_shard_bytes)
        self.max_row_group_bytes = int(max_row_group_bytes)
        self.row_group_rows = int(row_group_rows)
        self.compression = compression
        self._buffer: list[dict[str, Any] | pa.Table] = []  # rows, or slices of a table (`write_table`)
        self._buffer_rows = 0
        self._buffer_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._shard_bytes = 0
        self._tmp_files: list[Path] = []
        self.rows = 0
        self.files: list[Path] = []

    def _full(self, approx_bytes: int) -> bool:
        return bool(self._buffer_rows) and (
            self._buffer_rows >= self.row_group_rows
            or self._buffer_bytes + approx_bytes > self.max_row_group_bytes
        )

    def write(self, row: dict[str, Any], approx_bytes: int) -> None:
        if self._full(approx_bytes):
            self._flush()
        self._buffer.append(row)
        self._buffer_rows += 1
        self._buffer_bytes += approx_bytes
        self.rows += 1

    def write_table(self, table: pa.Table, sizes: list[int]) -> None:
        """The rows of `table` (this writer's columns, any order; extra columns are left out), with
        their `row_bytes` estimates: the row groups come out as `write` would cut them, and the
        values go from Arrow to Parquet without a Python object per row."""
        table = table.select(self.schema.names)
        if not table.schema.equals(self.schema, check_metadata=False):
            table = table.cast(self.schema)
        start = 0
        for index, size in enumerate(sizes):
            if self._full(size):
                if index > start:
                    self._buffer.append(table.slice(start, index - start))
                    start = index
                self._flush()
            self._buffer_rows += 1
            self._buffer_bytes += size
            self.rows += 1
        if len(sizes) > start:
            self._buffer.append(table.slice(start, len(sizes) - start))

    def _buffered_table(self) -> pa.Table:
        pieces: list[pa.Table] = []
        rows: list[dict[str, Any]] = []
        for piece in self._buffer:
            if isinstance(piece, dict):
                rows.append(piece)
                continue
            if rows:
                pieces.append(pa.Table.from_pylist(rows, schema=self.schema))
                rows = []
            pieces.append(piece.replace_schema_metadata(self.schema.metadata))
        if rows or not pieces:
            pieces.append(pa.Table.from_pylist(rows, schema=self.schema))
        table = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
        return table.combine_chunks()

    def _flush(self) -> None:
        if not self._buffer:
            return
        table = self._buffered_table()
        size = table.nbytes
        if self._writer is not None and self._shard_bytes + size > self.max_shard_bytes:
            self._writer.close()
            self._writer = None
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f".{self.split}-{len(self._tmp_files):05d}.parquet.tmp"
            self._tmp_files.append(path)
            self._writer = pq.ParquetWriter(
                path, self.schema, compression=self.compression, write_page_index=True
            )
            self._shard_bytes = 0
        self._writer.write_table(table, row_group_size=self._buffer_rows)
        self._shard_bytes += size
        self._buffer = []
        self._buffer_rows = 0
        self._buffer_bytes = 0

    def close(self) -> list[Path]:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        total = len(self._tmp_files)
        for index, tmp in enumerate(self._tmp_files):
            final = self.folder / f"{self.split}-{index:05d}-of-{total:05d}.parquet"
            os.replace(tmp, final)
            self.files.append(final)
        return self.files


def row_bytes(row: dict[str, Any]) -> int:
    """Cheap size estimate of a row: image bytes dominate."""
    size = 256
    for image in row.get("images") or ([row["image"]] if row.get("image") else []):
        if isinstance(image, dict) and image.get("bytes"):
            size += len(image["bytes"])
    for message in row.get("messages") or []:
        size += len(message.get("content", "")) * 2
    return size


def parquet_limits_report(files: list[Path]) -> dict[str, Any]:
    """Largest file / row group and page-index presence of a set of Parquet files."""
    largest_file = largest_group = 0
    page_index = True
    for path in files:
        largest_file = max(largest_file, path.stat().st_size)
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            largest_group = max(largest_group, row_group.total_byte_size)
            page_index = page_index and all(
                row_group.column(c).has_offset_index for c in range(row_group.num_columns)
            )
    return {
        "files": len(files),
        "largest_file_bytes": largest_file,
        "largest_row_group_bytes": largest_group,
        "page_index": page_index,
    }
