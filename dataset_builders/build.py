"""The build: spec -> work units -> unit shards (parallel, resumable) -> QC -> published folder.

Stage `ingest` turns every work unit (a chunk of one source) into `_work/units/<unit_id>/` holding
`records.parquet`, `rows.parquet` and `manifest.json`. A unit directory is written under a temporary
name and renamed when complete, so a crash never leaves a half unit; a rerun skips the units whose
manifest carries the current spec fingerprint. `num_shards` / `shard_index` split the units across
machines (copy the `_work/units` folders together before `finalize`).

Stage `finalize` streams the units in a fixed order through quality control and the quality judge
and writes the sub-dataset configs as viewer-ready Parquet (staged, then swapped into place), the
`records/` config, `build_report.json` and the dataset card. It is a pure function of the unit
shards: resumed and uninterrupted builds give identical rows.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .adapters import Dropped, Failure, TextSample, WorkUnit, label_space, plan_units, read_unit
from .generate import RowGenerator, row_features, text_row
from .imaging import SourceError
from .labels import LabelStandardizer
from .llm import LLMClient, LLMError, ReplyCache, backend_from_config, validate_score
from .prompts import judge_prompt
from .qc import QualityControl
from .records import MedicalRecord, record_features
from .spec import BuildSpec, load_build_spec
from .writer import (
    ShardWriter,
    atomic_write_json,
    default_limits,
    parquet_limits_report,
    row_bytes,
    size_to_bytes,
    write_table_atomic,
)

ClientFactory = Callable[[Path], LLMClient | None]
MAX_LISTED_FAILURES = 10_000


class SimulatedCrash(RuntimeError):
    """Raised by `crash_after_units` (tests and benchmarks of resume)."""


def work_dir(out: Path) -> Path:
    return Path(out) / "_work"


def default_client_factory(spec: BuildSpec) -> ClientFactory:
    """Client from the spec's `generation` block, with the shared reply cache in `_work/`."""

    def factory(out: Path) -> LLMClient | None:
        backend = backend_from_config(spec.generation)
        if backend is None:
            return None
        cache = ReplyCache(work_dir(out) / "llm_cache.sqlite")
        return LLMClient(backend, cache, max_attempts=int(spec.generation.get("max_attempts", 3)))

    return factory


# -------------------------------------------------------------------------------------------------
# planning
# -------------------------------------------------------------------------------------------------
def plan(spec: BuildSpec) -> tuple[list[WorkUnit], list[Failure]]:
    """All work units of a spec in build order; sources that cannot be listed become failures."""
    units: list[WorkUnit] = []
    failures: list[Failure] = []
    for source in spec.sources:
        try:
            units.extend(plan_units(source))
        except SourceError as error:
            failures.append(Failure(source.name, str(source.base_dir), "source_unreadable", str(error)))
    return units, failures


# -------------------------------------------------------------------------------------------------
# ingest: one work unit -> unit shard (runs in worker processes)
# -------------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(spec: BuildSpec, out: str, client_factory: ClientFactory | None) -> None:
    standardizer = LabelStandardizer(spec.label_standardization)
    spaces = {}
    for source in spec.sources:
        try:
            spaces[source.name] = sorted({standardizer(label) for label in label_space(source)})
        except SourceError:
            spaces[source.name] = []
    factory = client_factory or default_client_factory(spec)
    client = factory(Path(out))
    _WORKER.update(
        spec=spec,
        out=Path(out),
        standardizer=standardizer,
        spaces=spaces,
        sources={s.name: s for s in spec.sources},
        client=client,
        generator=RowGenerator(spec.generation, spec.seed, client),
        fingerprint=spec.fingerprint(),
    )


def _process_unit(unit: WorkUnit) -> dict[str, Any]:
    state = _WORKER
    source = state["sources"][unit.source]
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    failures: list[Failure] = []
    dropped: Counter[str] = Counter()
    client: LLMClient | None = state["client"]
    calls_before = (client.calls, client.cache_hits, client.invalid_replies) if client else (0, 0, 0)
    for item in read_unit(source, unit, state["standardizer"], state["spaces"][source.name]):
        if isinstance(item, MedicalRecord):
            records.append(item.to_row())
            generated, problems = state["generator"].rows(item)
            rows.extend(generated)
            failures.extend(problems)
        elif isinstance(item, TextSample):
            rows.append(text_row(item, source.options.get("config")))
        elif isinstance(item, Failure):
            failures.append(item)
        elif isinstance(item, Dropped):
            dropped[item.reason] += item.count
    units_dir = work_dir(state["out"]) / "units"
    final = units_dir / unit.unit_id
    tmp = units_dir / f".{unit.unit_id}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if records:
        write_table_atomic(
            pa.Table.from_pylist(records, schema=record_features().arrow_schema), tmp / "records.parquet"
        )
    if rows:
        schema = row_features().arrow_schema.insert(0, pa.field("config", pa.string()))
        write_table_atomic(pa.Table.from_pylist(rows, schema=schema), tmp / "rows.parquet")
    manifest = {
        "unit_id": unit.unit_id,
        "source": unit.source,
        "fingerprint": state["fingerprint"],
        "items": len(unit.items),
        "records": len(records),
        "rows": dict(Counter(r["config"] for r in rows)),
        "failures": [asdict(f) for f in failures],
        "dropped": dict(dropped),
        "llm": {
            "calls": (client.calls - calls_before[0]) if client else 0,
            "cache_hits": (client.cache_hits - calls_before[1]) if client else 0,
            "invalid_replies": (client.invalid_replies - calls_before[2]) if client else 0,
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_json(tmp / "manifest.json", manifest)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return manifest


def unit_done(out: Path, unit: WorkUnit, fingerprint: str) -> bool:
    manifest = work_dir(out) / "units" / unit.unit_id / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
    except (OSError, json.JSONDecodeError):
        return False


def ingest(
    spec: BuildSpec,
    out: str | Path,
    num_workers: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
    client_factory: ClientFactory | None = None,
    crash_after_units: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Process the pending work units of this shard; returns counts (done, skipped, planned)."""
    from tqdm.auto import tqdm

    out = Path(out)
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} must be in [0, {num_shards})")
    units, plan_failures = plan(spec)
    fingerprint = spec.fingerprint()
    mine = [u for i, u in enumerate(units) if i % num_shards == shard_index]
    pending = [u for u in mine if not unit_done(out, u, fingerprint)]
    (work_dir(out) / "units").mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        work_dir(out) / "plan.json",
        {
            "fingerprint": fingerprint,
            "units": [u.unit_id for u in units],
            "failures": [asdict(f) for f in plan_failures],
        },
    )
    done = 0
    bar = tqdm(
        total=len(pending),
        desc=f"ingest (shard {shard_index + 1}/{num_shards})",
        unit="unit",
        disable=not progress,
    )
    if num_workers <= 1:
        _init_worker(spec, str(out), client_factory)
        for unit in pending:
            if crash_after_units is not None and done >= crash_after_units:
                raise SimulatedCrash(f"simulated crash after {done} units")
            _process_unit(unit)
            done += 1
            bar.update()
    else:
        with ProcessPoolExecutor(
            num_workers, initializer=_init_worker, initargs=(spec, str(out), client_factory)
        ) as pool:
            futures = [pool.submit(_process_unit, unit) for unit in pending]
            for future in as_completed(futures):
                future.result()
                done += 1
                bar.update()
    bar.close()
    return {
        "planned": len(units),
        "this_shard": len(mine),
        "processed": done,
        "skipped": len(mine) - len(pending),
    }


# -------------------------------------------------------------------------------------------------
# finalize: QC + judge + publish
# -------------------------------------------------------------------------------------------------
def _judge(
    spec: BuildSpec, out: Path, unit_dirs: list[Path], client: LLMClient | None
) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Seed 000 Part 4: score `samples` random rows per source; accept when the mean <= threshold."""
    options = dict(spec.generation.get("judge") or {})
    if client is None or not options.get("enabled", True):
        return {}, set()
    samples = int(options.get("samples", 30))
    threshold = float(options.get("threshold", 3.0))
    configs = set(options.get("configs", ["caption", "instruct"]))
    heaps: dict[str, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)
    for unit in unit_dirs:
        path = unit / "rows.parquet"
        if not path.is_file():
            continue
        for row in pq.read_table(path).to_pylist():
            if row["config"] not in configs:
                continue
            rank = -int(hashlib.sha256(f"{spec.seed}|judge|{row['row_id']}".encode()).hexdigest()[:15], 16)
            heap = heaps[row["source_dataset"]]
            entry = (rank, row["row_id"], row)
            if len(heap) < samples:
                heapq.heappush(heap, entry)
            elif rank > heap[0][0]:
                heapq.heapreplace(heap, entry)
    results: dict[str, dict[str, Any]] = {}
    rejected: set[str] = set()
    import io

    from PIL import Image

    for source in sorted(heaps):
        scores, errors = [], 0
        for _, _row_id, row in sorted(heaps[source], key=lambda e: e[1]):
            images = [Image.open(io.BytesIO(i["bytes"])).convert("RGB") for i in row["images"]]
            keys = [hashlib.md5(i["bytes"]).hexdigest() for i in row["images"]]
            try:
                score, _ = client.request_json(
                    "judge", judge_prompt(row, row["messages"]), images, keys, validate_score
                )
                scores.append(score)
            except LLMError:
                errors += 1
        mean = sum(scores) / len(scores) if scores else None
        accepted = mean is not None and mean <= threshold
        results[source] = {
            "sampled": len(heaps[source]),
            "scored": len(scores),
            "errors": errors,
            "mean_score": mean,
            "accepted": accepted,
        }
        if not accepted:
            rejected.add(source)
    if not options.get("drop_rejected", True):
        rejected = set()
    return results, rejected


def finalize(
    spec: BuildSpec, out: str | Path, client_factory: ClientFactory | None = None, progress: bool = True
) -> dict[str, Any]:
    """QC, judge and publish every unit shard into the dataset folder; returns the build report."""
    from tqdm.auto import tqdm

    from .card import write_card

    out = Path(out)
    started = time.perf_counter()
    fingerprint = spec.fingerprint()
    units, plan_failures = plan(spec)
    units_dir = work_dir(out) / "units"
    missing = [u.unit_id for u in units if not unit_done(out, u, fingerprint)]
    if missing:
        raise RuntimeError(
            f"{out}: {len(missing)} of {len(units)} work units are not ingested yet (first: {missing[0]}); "
            "run `ingest` for every shard first"
        )
    unit_dirs = [units_dir / u.unit_id for u in units]
    client = (client_factory or default_client_factory(spec))(out)
    judge_results, rejected_sources = _judge(spec, out, unit_dirs, client)
    qc = QualityControl(spec.qc, Path(spec.spec_file).parent if spec.spec_file else None)
    limits = default_limits()
    publish = spec.publish
    max_shard = size_to_bytes(publish.get("max_shard_size", limits["max_shard_bytes"]))
    max_group = size_to_bytes(publish.get("max_row_group_size", limits["max_row_group_bytes"]))
    group_rows = int(publish.get("row_group_rows", limits["row_group_rows"]))
    staging = out / f".staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    for stale in out.glob(".staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    features = row_features()
    writers: dict[tuple[str, str], ShardWriter] = {}

    def writer_for(config: str, split: str, feats) -> ShardWriter:
        key = (config, split)
        if key not in writers:
            writers[key] = ShardWriter(staging / config, split, feats, max_shard, max_group, group_rows)
        return writers[key]

    failures: list[dict[str, Any]] = [asdict(f) for f in plan_failures]
    failure_counts: Counter[str] = Counter(f["kind"] for f in failures)
    dropped_ingest: Counter[str] = Counter()
    stats: dict[str, Counter[str]] = defaultdict(Counter)
    llm_totals: Counter[str] = Counter()
    records_in = records_kept = 0
    rows_in: Counter[str] = Counter()
    rows_out: Counter[str] = Counter()
    record_schema = record_features()
    for unit_dir in tqdm(unit_dirs, desc="finalize", unit="unit", disable=not progress):
        manifest = json.loads((unit_dir / "manifest.json").read_text(encoding="utf-8"))
        for failure in manifest["failures"]:
            failure_counts[failure["kind"]] += 1
            if len(failures) < MAX_LISTED_FAILURES:
                failures.append(failure)
        dropped_ingest.update(manifest["dropped"])
        llm_totals.update(manifest.get("llm", {}))
        dropped_records: set[str] = set()
        if (unit_dir / "records.parquet").is_file():
            for row in pq.read_table(unit_dir / "records.parquet").to_pylist():
                records_in += 1
                if qc.check_record(row) is not None:
                    dropped_records.add(row["record_id"])
                    continue
                records_kept += 1
                writer_for("records", row["split"], record_schema).write(row, row_bytes(row))
        if (unit_dir / "rows.parquet").is_file():
            for row in pq.read_table(unit_dir / "rows.parquet").to_pylist():
                config = row["config"]
                rows_in[config] += 1
                if row["record_id"] in dropped_records:
                    qc.dropped["rows_of_dropped_image"] += 1
                    continue
                if row["source_dataset"] in rejected_sources and config in set(
                    (spec.generation.get("judge") or {}).get("configs", ["caption", "instruct"])
                ):
                    qc.dropped["judge_rejected_source"] += 1
                    continue
                if qc.check_row(row) is not None:
                    continue
                row.pop("config")
                writer_for(config, row["split"], features).write(row, row_bytes(row))
                rows_out[config] += 1
                for dimension in ("modality", "department", "task_type", "clinical_task", "language"):
                    if row[dimension]:
                        stats[dimension][row[dimension]] += 1
                stats["config"][config] += 1
    files: dict[str, list[str]] = defaultdict(list)
    all_files: list[Path] = []
    for (config, _split), writer in sorted(writers.items()):
        for path in writer.close():
            files[config].append(path.relative_to(staging / config).as_posix())
            all_files.append(path)
    limits_report = parquet_limits_report(all_files)
    # swap the staged configs into place (old configs of a previous finalize are replaced)
    for config_dir in sorted(staging.iterdir()) if staging.exists() else []:
        target = out / config_dir.name
        if target.exists():
            shutil.rmtree(target)
        os.replace(config_dir, target)
    for config in ("records", "caption", "instruct", "percept", "text_single", "text_multi"):
        if config not in files and (out / config).exists():
            shutil.rmtree(out / config)
    shutil.rmtree(staging, ignore_errors=True)
    splits = {config: sorted({name.split("-")[0] for name in names}) for config, names in files.items()}
    report = {
        "name": spec.name,
        "spec_fingerprint": fingerprint,
        "spec_file": spec.spec_file,
        "units": len(units),
        "records": {"ingested": records_in, "kept": records_kept},
        "rows": {"generated": dict(rows_in), "published": dict(rows_out)},
        "splits": splits,
        "errors": {"total": sum(failure_counts.values()), "by_kind": dict(failure_counts), "items": failures},
        "dropped": {"ingest": dict(dropped_ingest), "qc": dict(qc.dropped)},
        "judge": judge_results,
        "llm": dict(llm_totals),
        "stats": {k: dict(v.most_common()) for k, v in stats.items()},
        "parquet": limits_report,
        "limits": {
            "max_shard_bytes": max_shard,
            "max_row_group_bytes": max_group,
            "row_group_rows": group_rows,
        },
        "finalize_seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(out / "build_report.json", report)
    write_card(spec, out, report)
    return report


def run_build(
    spec: BuildSpec | str | Path,
    out: str | Path,
    num_workers: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
    stages: tuple[str, ...] = ("ingest", "finalize"),
    client_factory: ClientFactory | None = None,
    crash_after_units: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the requested stages; returns the build report (or the ingest counts alone)."""
    if not isinstance(spec, BuildSpec):
        spec = load_build_spec(spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    if "ingest" in stages:
        result["ingest"] = ingest(
            spec, out, num_workers, num_shards, shard_index, client_factory, crash_after_units, progress
        )
    if "finalize" in stages:
        report = finalize(spec, out, client_factory, progress)
        report["ingest"] = result.get("ingest")
        return report
    return result
