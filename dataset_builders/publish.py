"""Publish as distributed stages: QC signatures, duplicate buckets, resolution, writers, assembly.

Each stage is a datatrove step (`steps.py`) that the executors of `engine` run as tasks, so the
engine's completion files and kill-and-resume apply to each one. What each task holds in memory:

A. `signature_task` (N tasks; task r takes every N-th unit, the round robin of ingest). For each of
   its units: the checks that need no other row (`qc.QCRules`: image size, benchmark
   decontamination, token limits; the benchmark index is small and loaded by every task), then the
   signatures of the rows that pass into bucket files `sig/<bucket>/<rank>.{records,texts}.parquet`:
   each record under the bucket of its pixel md5 and under one bucket per pHash band
   (`qc.HammingIndex`'s pigeonhole bands), each text row of a `minhash_configs` config under one
   bucket per MinHash LSH band key. Held: a bounded buffer of signatures (flushed every
   `FLUSH_ENTRIES`) and, with the judge on, its top `samples` rows per source.
B. `bucket_task` (B tasks; task b reads bucket b of every rank). Held: that bucket's signatures.
   Written: the records that have a possible duplicate (md5 or pHash shared by two images, or pHash
   values within `phash_distance`, each pair of values once, from the first band they share), the
   near pairs of pHash values, and the groups of text rows that share an LSH band key.
C. `resolve_task` (1 task). Held: only what B wrote (items that have a possible duplicate, not the
   corpus) and the judge's samples. It scores the judge's samples (LLM backend only), then walks
   those items in the global order (unit position in the plan, row index in the unit) and drops an
   item exactly when the sequential QC of earlier builds (`qc.QualityControl`, which streamed every
   unit in that order) dropped it: a record when an earlier *kept* record of another image has its
   md5 or (then) a pHash within the distance (the first such kept pHash in `HammingIndex.find`'s
   order decides, as it did), a text row when an earlier kept, eligible row of its config shares an
   LSH band key (what `MinHashLSH.query` answered). It is a first-kept walk, not union-find: in a
   chain A~B~C where C is not near A, A is kept, B dropped and C kept, as before; union-find would
   drop C. Items never near another are neither read nor dropped. The result (the drops with their
   reason, the judge's verdicts) does not depend on N or B.
D. `write_task` (W tasks, W <= 6; task w writes the configs `CONFIGS[w::W]`). Each (config, split)
   is one sequential stream of rows in unit order whose row groups and shards are cut by size as
   they come, so a split of that stream by unit ranges would put cuts where the task boundaries
   fall and the bytes would depend on W; a split by config keeps every stream in one task and the
   bytes of the single-writer build. Held: the drops of C and one unit's table at a time. Each task
   reads the QC columns of every unit's records (a row of a dropped record goes too) and the rows of
   its configs, applies the checks in the sequential order (rows of a dropped image, judge, token
   limits, near-duplicate text) and counts each drop by reason.
E. `assemble_task` (1 task): the per-unit manifests (failures, ingest drops), the counts of D, the
   swap of the staged configs into place, `build_report.json`, `_work/failures.jsonl` and the card.

Why not datatrove's `dedup.minhash` stages for the text part: they cluster candidates with
union-find (the chain above resolves differently), hash their own shingles (another set of drops
than the `datasketch` index of earlier builds) and read the documents of their own readers; here a
text row's eligibility also depends on the image dedup and the judge, decided in C. The same
bucket / cluster / filter cut is used, with the sequential semantics kept.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gmaivl.core.files import atomic_write_text

from .build import (
    CONFIGS,
    BuildReport,
    ClientFactory,
    StaleUnits,
    _collect_unit,
    _json_line,
    _missing_units_message,
    _remove_stale_units,
    default_client_factory,
    finish_ingest_scope,
    judge_options,
    judge_rank,
    judge_sources,
    plan,
    unit_done,
    work_dir,
)
from .generate import row_features
from .ids import resolve_id_key
from .qc import HammingIndex, QCRules, hash_int, owner_key, row_text
from .records import record_features
from .spec import BuildSpec
from .writer import (
    ShardWriter,
    atomic_write_json,
    default_limits,
    parquet_limits_report,
    size_to_bytes,
    write_table_atomic,
)

#: the columns publish reads as Python values (QC, counts, statistics); images stay in Arrow
RECORD_QC_COLUMNS = ("record_id", "split", "width", "height", "image_md5", "phash")
ROW_QC_COLUMNS = ("config", "row_id", "record_id", "source_dataset", "split", "messages")
STAT_DIMENSIONS = ("modality", "department", "task_type", "clinical_task", "language")
#: drop reasons in the order of the checks (the report and the card list them in this order)
QC_REASONS = (
    "image_too_small",
    "benchmark_contamination",
    "duplicate_image_md5",
    "near_duplicate_image_phash",
    "rows_of_dropped_image",
    "judge_rejected_source",
    "text_too_long",
    "caption_too_short",
    "near_duplicate_text",
)
STAGES = ("signatures", "buckets", "resolve", "write", "assemble")
FLUSH_ENTRIES = 200_000

_RECORD_SIG = pa.schema(
    [
        ("kind", pa.int16()),  # 0: md5, k + 1: pHash band k
        ("band_value", pa.uint64()),
        ("order", pa.int64()),
        ("record_id", pa.string()),
        ("owner", pa.uint64()),
        ("md5", pa.string()),
        ("phash", pa.uint64()),
    ]
)
_TEXT_SIG = pa.schema(
    [
        ("config", pa.string()),
        ("band", pa.int16()),
        ("key", pa.binary(16)),
        ("order", pa.int64()),
        ("record_id", pa.string()),
        ("source", pa.string()),
    ]
)
_CANDIDATE = pa.schema(
    [(n, _RECORD_SIG.field(n).type) for n in ("order", "record_id", "owner", "md5", "phash")]
)
_EDGE = pa.schema([("a", pa.uint64()), ("b", pa.uint64()), ("band", pa.int16())])
_JUDGE = pa.schema(
    [("source", pa.string()), ("rank", pa.int64()), ("row_id", pa.string()), ("order", pa.int64())]
)


def order_key(position: int, index: int) -> int:
    """The global order of a row: its unit's position in the plan, then its index in the unit."""
    return position << 32 | index


@dataclass(frozen=True)
class Layout:
    """Task counts of one publish and where its stages keep their files (in the ingest scope, so a
    resumed publish with the same counts finds them and the next build starts afresh)."""

    out: str
    signatures: int
    buckets: int
    writers: int
    folder: str

    @classmethod
    def create(cls, out: str | Path, signatures: int = 1, buckets: int = 1, writers: int = 1) -> Layout:
        """`writers` is at most the number of configs (one stream per config and split)."""
        from .build import ingest_scope

        if min(signatures, buckets, writers) < 1:
            raise ValueError(f"publish tasks must be >= 1, got {signatures}, {buckets}, {writers}")
        writers = min(writers, len(CONFIGS))
        folder = ingest_scope(Path(out)) / f"publish-{signatures}x{buckets}x{writers}"
        return cls(str(out), signatures, buckets, writers, str(folder))

    @property
    def root(self) -> Path:
        return Path(self.folder)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def logs(self, stage: str) -> Path:
        return self.root / stage

    def tasks(self, stage: str) -> int:
        return {"signatures": self.signatures, "buckets": self.buckets, "write": self.writers}.get(stage, 1)

    @property
    def staging(self) -> Path:
        return Path(self.out) / ".staging-publish"


def _units(spec: BuildSpec, out: Path):
    key = resolve_id_key(spec, work_dir(out))
    units, failures = plan(spec, key, None)
    return units, failures, key


def _base_dir(spec: BuildSpec) -> Path | None:
    return Path(spec.spec_file).parent if spec.spec_file else None


def _read(path: Path, columns: list[str] | tuple[str, ...] | None = None) -> pa.Table | None:
    return pq.read_table(path, columns=list(columns) if columns else None) if path.is_file() else None


def _write(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table_atomic(pa.Table.from_pylist(rows, schema=schema), path, row_group_rows=100_000)


def _read_all(paths: list[Path], schema: pa.Schema) -> list[dict[str, Any]]:
    tables = [pq.read_table(p) for p in paths]
    return pa.concat_tables(tables).to_pylist() if tables else []


# -------------------------------------------------------------------------------------------------
# A. signatures
# -------------------------------------------------------------------------------------------------
class _BucketFiles:
    """One Parquet stream per (bucket, kind) of a signature task, buffered and flushed in bounded
    batches; files are written under temporary names and renamed by `close`."""

    def __init__(self, folder: Path, rank: int, buckets: int) -> None:
        self.folder, self.rank, self.buckets = folder, rank, buckets
        self.buffers: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
        self.writers: dict[tuple[int, str], pq.ParquetWriter] = {}
        self.buffered = 0

    def _path(self, bucket: int, kind: str, tmp: bool = False) -> Path:
        name = f"{self.rank:05d}.{kind}.parquet"
        return self.folder / f"{bucket:05d}" / (f".{name}.tmp" if tmp else name)

    def add(self, bucket: int, kind: str, entry: dict[str, Any]) -> None:
        self.buffers[bucket % self.buckets, kind].append(entry)
        self.buffered += 1
        if self.buffered >= FLUSH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        for key, entries in sorted(self.buffers.items()):
            if not entries:
                continue
            if key not in self.writers:
                path = self._path(*key, tmp=True)
                path.parent.mkdir(parents=True, exist_ok=True)
                schema = _RECORD_SIG if key[1] == "records" else _TEXT_SIG
                self.writers[key] = pq.ParquetWriter(path, schema, compression="snappy")
            self.writers[key].write_table(pa.Table.from_pylist(entries, schema=self.writers[key].schema))
        self.buffers.clear()
        self.buffered = 0

    def close(self) -> int:
        self.flush()
        for key, writer in sorted(self.writers.items()):
            writer.close()
            os.replace(self._path(*key, tmp=True), self._path(*key))
        return len(self.writers)


def _md5_bucket(md5: str) -> int:
    return int(md5[:15], 16)


def _band_bucket(band: int, value: int) -> int:
    return hash_int(f"phash{band}:{value}")


def record_signatures(entry: dict[str, Any], bands: HammingIndex) -> list[tuple[int, dict[str, Any]]]:
    """(bucket hash, signature) of one record: under its md5, and under each of its pHash bands."""
    out = [(_md5_bucket(entry["md5"]), {**entry, "kind": 0, "band_value": 0})]
    for band, value in enumerate(bands._band_keys(entry["phash"])):
        out.append((_band_bucket(band, value), {**entry, "kind": band + 1, "band_value": value}))
    return out


def signature_task(
    spec: BuildSpec,
    layout: Layout,
    rank: int,
    world_size: int,
    judge: bool,
    crash_after_units: int | None = None,
) -> dict[str, int]:
    """Stage A, task `rank` of `world_size`: the signatures of its own units into the buckets."""
    from .build import SimulatedCrash

    out = Path(layout.out)
    key = resolve_id_key(spec, work_dir(out))
    units, _ = plan(spec, key, rank, world_size)
    own = [(p, u) for p, u in enumerate(units) if p % world_size == rank]
    missing = [u for _, u in own if not unit_done(out, u)]
    if missing:
        raise StaleUnits(_missing_units_message(out, units, missing, key))
    rules = QCRules(spec.qc, _base_dir(spec))
    bands = HammingIndex(rules.phash_distance)
    files = _BucketFiles(layout.data / "sig", rank, layout.buckets)
    options = judge_options(spec) if judge else None
    judged = set(options["configs"]) if options else set()
    heaps: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    counts = Counter(units=len(own))
    for done, (position, unit) in enumerate(own):
        if crash_after_units is not None and done >= crash_after_units:
            raise SimulatedCrash(f"simulated crash of signature task {rank} after {done} units")
        unit_dir = work_dir(out) / "units" / unit.unit_id
        local_drops: set[str] = set()
        records = _read(unit_dir / "records.parquet", RECORD_QC_COLUMNS)
        for index, record in enumerate(records.to_pylist() if records is not None else ()):
            if rules.record_reason(record):
                local_drops.add(record["record_id"])
                continue
            phash = int(record["phash"], 16)
            entry = {
                "order": order_key(position, index),
                "record_id": record["record_id"],
                "owner": owner_key(record["record_id"]),
                "md5": record["image_md5"],
                "phash": phash,
            }
            for bucket, signature in record_signatures(entry, bands):
                files.add(bucket, "records", signature)
            counts["records"] += 1
        path = unit_dir / "rows.parquet"
        if not path.is_file():
            continue
        configs = pq.read_table(path, columns=["config"])["config"].to_pylist()
        wanted = [i for i, c in enumerate(configs) if c in rules.minhash_configs or c in judged]
        if not wanted:
            continue
        rows = pq.read_table(path, columns=list(ROW_QC_COLUMNS)).take(wanted).to_pylist()
        for index, row in zip(wanted, rows):
            order = order_key(position, index)
            if row["config"] in judged:
                entry = (judge_rank(spec, row["row_id"]), row["row_id"], order)
                heap = heaps[row["source_dataset"]]
                if len(heap) < options["samples"]:
                    heapq.heappush(heap, entry)
                elif entry[0] > heap[0][0]:
                    heapq.heapreplace(heap, entry)
            if row["config"] not in rules.minhash_configs:
                continue
            if row["record_id"] in local_drops or rules.row_reason(row):
                continue
            for band, band_key in enumerate(rules.band_keys(row_text(row))):
                text = {
                    "config": row["config"],
                    "band": band,
                    "key": band_key,
                    "order": order,
                    "record_id": row["record_id"],
                    "source": row["source_dataset"],
                }
                files.add(int.from_bytes(band_key[:8], "big"), "texts", text)
            counts["texts"] += 1
    counts["files"] = files.close()
    if options:
        sampled = [
            {"source": source, "rank": r, "row_id": row_id, "order": order}
            for source in sorted(heaps)
            for r, row_id, order in heaps[source]
        ]
        _write(sampled, _JUDGE, layout.data / "judge" / f"{rank:05d}.parquet")
    return dict(counts)


# -------------------------------------------------------------------------------------------------
# B. buckets
# -------------------------------------------------------------------------------------------------
def record_candidates(
    entries: list[dict[str, Any]], distance: int
) -> tuple[dict[int, dict[str, Any]], set[tuple[int, int, int]]]:
    """The records of one bucket's signatures that have a possible duplicate, by order, and the
    pairs of pHash values within `distance` (a, b, the first band they share)."""
    bands = HammingIndex(distance)
    candidates: dict[int, dict[str, Any]] = {}
    edges: set[tuple[int, int, int]] = set()

    def take(group: list[dict[str, Any]]) -> None:
        for e in group:
            candidates[e["order"]] = {k: e[k] for k in _CANDIDATE.names}

    md5_groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    band_groups: dict[tuple[int, int], dict[int, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for e in entries:
        if e["kind"] == 0:
            md5_groups[e["md5"]].append(e)
        else:
            band_groups[e["kind"] - 1, e["band_value"]][e["phash"]].append(e)
    for group in md5_groups.values():
        if len({e["owner"] for e in group}) > 1:
            take(group)
    for (band, _value), by_hash in band_groups.items():
        if band == 0:  # all records of one pHash value share its band 0: the exact groups
            for group in by_hash.values():
                if len({e["owner"] for e in group}) > 1:
                    take(group)
        values = sorted(by_hash)
        for i, a in enumerate(values):
            for b in values[i + 1 :]:
                if (a ^ b).bit_count() > distance:
                    continue
                keys = zip(bands._band_keys(a), bands._band_keys(b))
                if next(k for k, (x, y) in enumerate(keys) if x == y) == band:  # each pair once
                    edges.add((a, b, band))
                    take(by_hash[a])
                    take(by_hash[b])
    return candidates, edges


def text_groups(texts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The text signatures of one bucket whose (config, band, key) another row shares."""
    groups: dict[tuple[str, int, bytes], list[dict[str, Any]]] = defaultdict(list)
    for t in texts:
        groups[t["config"], t["band"], t["key"]].append(t)
    grouped = [t for group in groups.values() if len(group) > 1 for t in group]
    return sorted(grouped, key=lambda t: (t["order"], t["band"]))


def bucket_task(spec: BuildSpec, layout: Layout, rank: int) -> dict[str, int]:
    """Stage B, bucket `rank`: possible duplicates among the signatures of this bucket."""
    folder = layout.data / "sig" / f"{rank:05d}"
    entries = _read_all(sorted(folder.glob("*.records.parquet")), _RECORD_SIG)
    candidates, edges = record_candidates(entries, int(spec.qc.get("phash_distance", 0)))
    grouped = text_groups(_read_all(sorted(folder.glob("*.texts.parquet")), _TEXT_SIG))
    target = layout.data / "pairs"
    _write([candidates[o] for o in sorted(candidates)], _CANDIDATE, target / f"{rank:05d}.candidates.parquet")
    _write(
        [dict(zip(("a", "b", "band"), e)) for e in sorted(edges)],
        _EDGE,
        target / f"{rank:05d}.edges.parquet",
    )
    _write(grouped, _TEXT_SIG, target / f"{rank:05d}.texts.parquet")
    return {
        "signatures": len(entries),
        "candidates": len(candidates),
        "edges": len(edges),
        "texts": len(grouped),
    }


# -------------------------------------------------------------------------------------------------
# C. resolve
# -------------------------------------------------------------------------------------------------
def resolve_records(candidates: list[dict[str, Any]], edges: list[dict[str, Any]]) -> dict[int, str]:
    """First-kept walk over the records that have a possible duplicate (see the module docstring);
    returns {order: reason} of the dropped ones."""
    near: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for e in edges:
        near[e["a"]].append((e["band"], e["b"]))
        near[e["b"]].append((e["band"], e["a"]))
    md5_owner: dict[str, int] = {}
    first: dict[int, tuple[int, int]] = {}  # pHash value -> (its place among kept values, first owner)
    drops: dict[int, str] = {}
    for c in sorted({c["order"]: c for c in candidates}.values(), key=lambda c: c["order"]):
        owner, md5, value = c["owner"], c["md5"], c["phash"]
        if md5_owner.get(md5, owner) != owner:
            drops[c["order"]] = "duplicate_image_md5"
            continue
        if value in first:
            found = first[value][1]
        else:  # `HammingIndex.find`: the first band they share, then the first stored value
            kept = [(band, first[other][0], first[other][1]) for band, other in near[value] if other in first]
            found = min(kept)[2] if kept else owner
        if found != owner:
            drops[c["order"]] = "near_duplicate_image_phash"
            continue
        md5_owner.setdefault(md5, owner)
        first.setdefault(value, (len(first), owner))
    return drops


def resolve_texts(
    members: list[dict[str, Any]], dropped_records: set[tuple[int, str]], rejected: set[str], judged: set[str]
) -> set[int]:
    """First-kept walk over the text rows that share an LSH band key with another; returns the
    orders of the near duplicates. A row of a dropped image or of a rejected source is not eligible
    (it is dropped for that reason and was never inserted in the sequential index)."""
    groups: dict[int, set[tuple[str, int, bytes]]] = defaultdict(set)
    eligible: dict[int, bool] = {}
    for m in members:
        groups[m["order"]].add((m["config"], m["band"], m["key"]))
        eligible[m["order"]] = (m["order"] >> 32, m["record_id"]) not in dropped_records and not (
            m["source"] in rejected and m["config"] in judged
        )
    kept: set[tuple[str, int, bytes]] = set()
    drops: set[int] = set()
    for order in sorted(groups):
        if not eligible[order]:
            continue
        if groups[order] & kept:
            drops.add(order)
        else:
            kept |= groups[order]
    return drops


def resolve_task(spec: BuildSpec, layout: Layout, client_factory: ClientFactory | None) -> dict[str, int]:
    """Stage C: the judge's verdicts, then the drops of the records and text rows."""
    out = Path(layout.out)
    pairs = layout.data / "pairs"
    candidates = _read_all(sorted(pairs.glob("*.candidates.parquet")), _CANDIDATE)
    edges = _read_all(sorted(pairs.glob("*.edges.parquet")), _EDGE)
    members = _read_all(sorted(pairs.glob("*.texts.parquet")), _TEXT_SIG)
    judge: dict[str, Any] = {"results": {}, "rejected": []}
    options = judge_options(spec)
    sampled = _read_all(sorted((layout.data / "judge").glob("*.parquet")), _JUDGE)
    if options and sampled:
        client = (client_factory or default_client_factory(spec))(out)
        if client is not None:
            samples = _judge_samples(spec, out, sampled, options)
            judge["results"], rejected = judge_sources(spec, samples, client)
            judge["rejected"] = sorted(rejected)
    record_drops = resolve_records(candidates, edges)
    by_order = {c["order"]: c["record_id"] for c in candidates}
    dropped = {(order >> 32, by_order[order]) for order in record_drops}
    judged = set(options["configs"]) if options else set()
    text_drops = resolve_texts(members, dropped, set(judge["rejected"]), judged)
    decisions = layout.data / "decisions"
    _write(
        [{"order": o, "reason": r} for o, r in sorted(record_drops.items())],
        pa.schema([("order", pa.int64()), ("reason", pa.string())]),
        decisions / "records.parquet",
    )
    _write(
        [{"order": o} for o in sorted(text_drops)],
        pa.schema([("order", pa.int64())]),
        decisions / "texts.parquet",
    )
    atomic_write_json(decisions / "judge.json", judge)
    return {
        "records_dropped": len(record_drops),
        "texts_dropped": len(text_drops),
        "candidates": len(by_order),
    }


def _judge_samples(
    spec: BuildSpec, out: Path, sampled: list[dict[str, Any]], options: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """The `samples` highest-ranked rows of each source over all tasks' samples, read in full."""
    best: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in sampled:
        best[s["source"]].append(s)
    unit_ids = [u.unit_id for u in _units(spec, out)[0]]
    rows: dict[str, list[dict[str, Any]]] = {}
    for source, entries in best.items():
        chosen = sorted(entries, key=lambda s: -s["rank"])[: options["samples"]]
        rows[source] = []
        for s in chosen:
            table = pq.read_table(work_dir(out) / "units" / unit_ids[s["order"] >> 32] / "rows.parquet")
            rows[source].append(table.slice(s["order"] & 0xFFFFFFFF, 1).to_pylist()[0])
    return rows


# -------------------------------------------------------------------------------------------------
# D. write
# -------------------------------------------------------------------------------------------------
def _limits(spec: BuildSpec) -> dict[str, int]:
    limits = default_limits()
    publish = spec.publish
    return {
        "max_shard_bytes": size_to_bytes(publish.get("max_shard_size", limits["max_shard_bytes"])),
        "max_row_group_bytes": size_to_bytes(
            publish.get("max_row_group_size", limits["max_row_group_bytes"])
        ),
        "row_group_rows": int(publish.get("row_group_rows", limits["row_group_rows"])),
    }


def _image_bytes_per_row(images: pa.ChunkedArray, nested: bool) -> list[int]:
    """Bytes of the images of each row (`images`: an `Image()` column, or a list of them)."""
    images = images.combine_chunks()
    if not nested:
        return pc.fill_null(pc.binary_length(images.field("bytes")), 0).to_numpy(False).tolist()
    lengths = pc.fill_null(pc.binary_length(images.flatten().field("bytes")), 0).to_numpy(False)
    total = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    offsets = images.offsets.to_numpy(False)
    return (total[offsets[1:]] - total[offsets[:-1]]).tolist()


class _Writers:
    """Parquet writers of one write task, one per (config, split), under the staging folder."""

    def __init__(self, spec: BuildSpec, staging: Path) -> None:
        self.staging = staging
        self.limits = _limits(spec)
        self.writers: dict[tuple[str, str], ShardWriter] = {}

    def write_table(
        self, config: str, table: pa.Table, keep: list[bool], splits: list[str], sizes: list[int]
    ) -> None:
        """The kept rows of a unit's table, split by split, in their order."""
        for split in dict.fromkeys(s for s, k in zip(splits, keep) if k):
            mask = [k and s == split for s, k in zip(splits, keep)]
            if (config, split) not in self.writers:
                features = record_features() if config == "records" else row_features()
                self.writers[config, split] = ShardWriter(
                    self.staging / config,
                    split,
                    features,
                    self.limits["max_shard_bytes"],
                    self.limits["max_row_group_bytes"],
                    self.limits["row_group_rows"],
                )
            chosen = [size for size, m in zip(sizes, mask) if m]
            self.writers[config, split].write_table(table.filter(pa.array(mask, pa.bool_())), chosen)

    def close(self) -> dict[str, list[str]]:
        files: dict[str, list[str]] = defaultdict(list)
        for (config, _split), writer in sorted(self.writers.items()):
            for path in writer.close():
                files[config].append(path.name)
        return dict(files)


def write_task(
    spec: BuildSpec, layout: Layout, rank: int, world_size: int, crash_after_units: int | None = None
) -> dict[str, Any]:
    """Stage D, task `rank`: every unit's kept rows of the configs `CONFIGS[rank::world_size]`."""
    from .build import SimulatedCrash

    out = Path(layout.out)
    mine = CONFIGS[rank::world_size]
    units, _, _ = _units(spec, out)
    rules = QCRules(spec.qc, _base_dir(spec))
    decisions = layout.data / "decisions"
    drops = pq.read_table(decisions / "records.parquet").to_pydict()
    record_drops = dict(zip(drops["order"], drops["reason"]))
    text_drops = set(pq.read_table(decisions / "texts.parquet")["order"].to_pylist())
    judge = json.loads((decisions / "judge.json").read_text())
    options = judge_options(spec)
    rejected, judged = set(judge["rejected"]), set(options["configs"]) if options else set()
    for config in mine:
        shutil.rmtree(layout.staging / config, ignore_errors=True)
    writers = _Writers(spec, layout.staging)
    counts: dict[str, Any] = {
        "records_ingested": 0,
        "records_kept": 0,
        "rows_generated": Counter(),
        "rows_published": Counter(),
        "dropped_qc": Counter(),
        "stats": defaultdict(Counter),
    }
    row_configs = [c for c in mine if c != "records"]
    for position, unit in enumerate(units):
        if crash_after_units is not None and position >= crash_after_units:
            raise SimulatedCrash(f"simulated crash of write task {rank} after {position} units")
        unit_dir = work_dir(out) / "units" / unit.unit_id
        dropped = _write_records(unit_dir, position, "records" in mine, rules, record_drops, writers, counts)
        if row_configs:
            _write_rows(
                unit_dir, position, row_configs, dropped, rejected, judged, rules, text_drops, writers, counts
            )
    files = writers.close()
    partial = {
        "records_ingested": counts["records_ingested"],
        "records_kept": counts["records_kept"],
        "rows_generated": dict(counts["rows_generated"]),
        "rows_published": dict(counts["rows_published"]),
        "dropped_qc": dict(counts["dropped_qc"]),
        "stats": {k: dict(v) for k, v in counts["stats"].items()},
        "files": files,
        "configs": list(mine),
    }
    atomic_write_json(layout.data / "written" / f"{rank:05d}.json", partial)
    return {"rows": sum(partial["rows_published"].values()), "records": partial["records_kept"]}


def _write_records(
    unit_dir: Path,
    position: int,
    publish: bool,
    rules: QCRules,
    record_drops: dict[int, str],
    writers: _Writers,
    counts: dict[str, Any],
) -> set[str]:
    """Record QC of one unit (written when this task has `records`); returns the ids of the
    dropped records (their rows go too)."""
    table = _read(unit_dir / "records.parquet", None if publish else RECORD_QC_COLUMNS)
    dropped: set[str] = set()
    if table is None:
        return dropped
    view = table.select(list(RECORD_QC_COLUMNS)).to_pylist()
    keep: list[bool] = []
    for index, record in enumerate(view):
        reason = rules.record_reason(record) or record_drops.get(order_key(position, index))
        keep.append(reason is None)
        if reason:
            dropped.add(record["record_id"])
            if publish:
                counts["dropped_qc"][reason] += 1
    if publish:
        counts["records_ingested"] += len(view)
        counts["records_kept"] += sum(keep)
        sizes = [256 + n for n in _image_bytes_per_row(table["image"], nested=False)]  # `row_bytes`
        writers.write_table("records", table, keep, [r["split"] for r in view], sizes)
    return dropped


def _write_rows(
    unit_dir: Path,
    position: int,
    configs: list[str],
    dropped_records: set[str],
    rejected: set[str],
    judged: set[str],
    rules: QCRules,
    text_drops: set[int],
    writers: _Writers,
    counts: dict[str, Any],
) -> None:
    """The rows of one unit in `configs`, through the checks in the order of the sequential QC."""
    path = unit_dir / "rows.parquet"
    if not path.is_file():
        return
    table = pq.read_table(path)
    indices = [i for i, c in enumerate(table["config"].to_pylist()) if c in configs]
    if not indices:
        return
    if len(indices) < table.num_rows:
        table = table.take(indices)
    view = table.select(list(dict.fromkeys((*ROW_QC_COLUMNS, *STAT_DIMENSIONS)))).to_pylist()
    keep: dict[str, list[bool]] = {}
    dropped_qc, stats = counts["dropped_qc"], counts["stats"]
    for slot, (index, row) in enumerate(zip(indices, view)):
        config = row["config"]
        counts["rows_generated"][config] += 1
        if row["record_id"] in dropped_records:
            reason = "rows_of_dropped_image"
        elif row["source_dataset"] in rejected and config in judged:
            reason = "judge_rejected_source"
        else:
            reason = rules.row_reason(row)
            if reason is None and order_key(position, index) in text_drops:
                reason = "near_duplicate_text"
        if reason:
            dropped_qc[reason] += 1
            continue
        keep.setdefault(config, [False] * len(view))[slot] = True
        counts["rows_published"][config] += 1
        for dimension in STAT_DIMENSIONS:
            if row[dimension]:
                stats[dimension][row[dimension]] += 1
        stats["config"][config] += 1
    if not keep:
        return
    text = [sum(len(m.get("content", "")) * 2 for m in row["messages"] or []) for row in view]
    images = _image_bytes_per_row(table["images"], nested=True)
    sizes = [256 + i + t for i, t in zip(images, text)]  # `row_bytes`
    splits = [row["split"] for row in view]
    for config, kept in keep.items():
        writers.write_table(config, table, kept, splits, sizes)


# -------------------------------------------------------------------------------------------------
# E. assemble
# -------------------------------------------------------------------------------------------------
def _ordered(counter: dict[str, int], order: tuple[str, ...] = ()) -> dict[str, int]:
    """Counts in a fixed order (the given keys first, then by count and name): the same whichever
    task counted what."""
    rank = {key: i for i, key in enumerate(order)}
    return dict(sorted(counter.items(), key=lambda kv: (rank.get(kv[0], len(rank)), -kv[1], kv[0])))


def assemble_task(spec: BuildSpec, layout: Layout) -> BuildReport:
    """Stage E: merge the counts, swap the staged configs into place, write report and card."""
    from .card import write_card

    out = Path(layout.out)
    units, plan_failures, _ = _units(spec, out)
    _remove_stale_units(out, units)
    report = BuildReport(name=spec.name, spec_fingerprint=spec.fingerprint(), units=len(units))
    local_failures: list[dict[str, Any]] = []
    _collect_unit({"failures": [asdict(f) for f in plan_failures], "dropped": {}}, report, local_failures)
    for unit in units:
        manifest = work_dir(out) / "units" / unit.unit_id / "manifest.json"
        _collect_unit(json.loads(manifest.read_text(encoding="utf-8")), report, local_failures)
    generated: Counter[str] = Counter()
    published: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    stats: dict[str, Counter[str]] = defaultdict(Counter)
    files: dict[str, list[str]] = {}
    for rank in range(layout.writers):
        partial = json.loads((layout.data / "written" / f"{rank:05d}.json").read_text())
        report.records_ingested += partial["records_ingested"]
        report.records_kept += partial["records_kept"]
        generated.update(partial["rows_generated"])
        published.update(partial["rows_published"])
        dropped.update(partial["dropped_qc"])
        for dimension, values in partial["stats"].items():
            stats[dimension].update(values)
        files.update(partial["files"])
    report.rows_generated = _ordered(generated, CONFIGS)
    report.rows_published = _ordered(published, CONFIGS)
    report.dropped_qc = _ordered(dropped, QC_REASONS)
    report.stats = {d: _ordered(stats[d]) for d in (*STAT_DIMENSIONS, "config") if stats.get(d)}
    judge = json.loads((layout.data / "decisions" / "judge.json").read_text())
    report.judge = judge["results"]
    staged = [layout.staging / config / name for config in CONFIGS for name in files.get(config, [])]
    report.parquet = parquet_limits_report(staged)
    report.limits = _limits(spec)
    report.splits = {c: sorted({n.split("-")[0] for n in files[c]}) for c in CONFIGS if files.get(c)}
    for config in CONFIGS:
        target = out / config
        if target.exists():
            shutil.rmtree(target)
        if files.get(config):
            os.replace(layout.staging / config, target)
    shutil.rmtree(layout.staging, ignore_errors=True)
    started = layout.root / "started"
    if started.is_file():
        report.finalize_seconds = round(time.time() - float(started.read_text()), 2)
    atomic_write_text(work_dir(out) / "failures.jsonl", "".join(_json_line(f) for f in local_failures))
    atomic_write_json(out / "build_report.json", report.to_dict())
    atomic_write_json(layout.data / "report.json", asdict(report))
    write_card(spec, out, report)
    finish_ingest_scope(out)
    return report


def load_report(layout: Layout) -> BuildReport:
    """The report `assemble_task` wrote (the executor runs the step in a copy of it)."""
    return BuildReport(**json.loads((layout.data / "report.json").read_text()))
