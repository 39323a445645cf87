"""The build: spec -> work units -> unit shards (parallel, resumable) -> QC -> published folder.

Stage `ingest` turns every work unit (a chunk of one source) into `_work/units/<unit_id>/` holding
`records.parquet`, `rows.parquet` and `manifest.json`. A unit directory is written under a temporary
name and renamed when complete, so a crash never leaves a half unit. A unit's fingerprint covers
the spec of its source, the id key, and the path, size and mtime of every file its items read (plus
the files the whole source depends on: a CSV, a COCO JSON, the class folders); a rerun skips only
the units whose manifest carries the current fingerprint and removes units that no longer exist,
so a rerun after the sources changed equals a fresh build. `ingest_task(rank, world_size)` is one
task of the engine's split (`steps.IngestUnits`, run by the executors in `engine`).

Stage `finalize` (publish) is a chain of distributed stages over the unit shards (`publish.py`):
QC signatures, duplicate buckets, the resolution of the drops, the writers, and the assembly of the
`BuildReport` (written as `build_report.json`, read by the card and the CLI) and the card. It is a
pure function of the unit shards: resumed, split and uninterrupted builds give identical files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from gmaivl.core.files import atomic_write_text

from .adapters import Dropped, Failure, Notice, TextSample, WorkUnit
from .generate import RowGenerator, row_features, text_row
from .ids import IdHasher, key_digest, resolve_id_key, scrub
from .imaging import SourceError
from .labels import LabelStandardizer
from .llm import BackendUnavailable, LLMClient, LLMError, ReplyCache, backend_from_config, validate_score
from .prompts import judge_prompt
from .records import MedicalRecord, record_features
from .registry import make_reader
from .spec import BuildSpec, SourceSpec, SpecError
from .writer import (
    atomic_write_json,
    write_table_atomic,
)

ClientFactory = Callable[[Path], LLMClient | None]
MAX_LISTED_FAILURES = 10_000
CONFIGS = ("records", "caption", "instruct", "percept", "text_single", "text_multi")


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
        return LLMClient(
            backend,
            cache,
            max_attempts=int(spec.generation.get("max_attempts", 3)),
            backoff=float(spec.generation.get("backoff", 0.5)),
            breaker_failures=int(spec.generation.get("breaker_failures", 5)),
        )

    return factory


# -------------------------------------------------------------------------------------------------
# planning: units and their fingerprints
# -------------------------------------------------------------------------------------------------
def _stat(path: Path, rel: Callable[[Path], str], content: bool = False) -> list[Any]:
    """What a unit's fingerprint knows of one file: its path relative to the source root (`rel`:
    the reader's `rel`), size and mtime, or (`fingerprint: content`) a digest of its bytes, for
    sources whose files can change without a new size or mtime."""
    rel = rel(path)
    try:
        info = path.stat()
    except OSError:
        return [rel, None, None]
    if stat.S_ISDIR(info.st_mode):  # a folder: its entries' names (new or removed class folders)
        return [rel, "dir", sorted(p.name for p in path.iterdir())]
    if content:
        with open(path, "rb") as handle:
            return [rel, info.st_size, hashlib.file_digest(handle, "blake2b").hexdigest()[:32]]
    return [rel, info.st_size, info.st_mtime_ns]


# a source's terms only reach the card (rewritten by every finalize): editing them re-ingests nothing
_CARD_ONLY_KEYS = frozenset({"spec_file", "license", "license_link", "citation", "homepage"})


def _source_fingerprint(spec: BuildSpec, source: SourceSpec, key: bytes, shared: list[Any]) -> str:
    data = {
        "source": {k: v for k, v in asdict(source).items() if k not in _CARD_ONLY_KEYS},
        "seed": spec.seed,
        "generation": spec.generation,
        "label_rules": spec.fingerprint_label_rules(),
        "key": key_digest(key),
        "shared": shared,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def plan(
    spec: BuildSpec, key: bytes = b"", rank: int | None = 0, world_size: int = 1
) -> tuple[list[WorkUnit], list[Failure]]:
    """All work units of a spec in build order; sources that cannot be listed become failures
    (named by source, the local path in `detail`). Only the units of task `rank` of `world_size`
    (every `world_size`-th, round robin) are fingerprinted, so a task stats only its own files;
    `mine(units, rank, world_size)` selects them. `rank=None` lists the units without
    fingerprinting any (the publish stages that only read finished units)."""
    units: list[WorkUnit] = []
    failures: list[Failure] = []
    for source in spec.sources:
        reader = make_reader(source)
        base = reader.resolved_root
        try:
            source_units = reader.plan()
            content = source.fingerprint == "content"
            shared = [_stat(p, reader.rel, content) for p in reader.shared_files()]
            source_print = _source_fingerprint(spec, source, key, shared)
            for position, unit in enumerate(source_units, start=len(units)):
                if rank is None or position % world_size != rank:
                    continue
                files = [
                    _stat(p, reader.rel, content) for item in unit.items for p in reader.item_files(item)
                ]
                payload = json.dumps([source_print, unit.items, files], default=str)
                unit.fingerprint = hashlib.sha256(payload.encode()).hexdigest()[:24]
            units.extend(source_units)
        except (SourceError, OSError, KeyError, TypeError, ValueError) as error:
            public = scrub(str(error), [str(source.base_dir), str(base), source.spec_file])
            failures.append(Failure(source.name, "source", "source_unreadable", public[:300], str(error)))
    return units, failures


def mine(units: list[WorkUnit], rank: int, world_size: int) -> list[WorkUnit]:
    """The units of task `rank` (the ones `plan(..., rank, world_size)` fingerprinted)."""
    return [u for i, u in enumerate(units) if i % world_size == rank]


# -------------------------------------------------------------------------------------------------
# ingest: one work unit -> unit shard (one task of the engine, `steps.IngestUnits`)
# -------------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(spec: BuildSpec, out: str, key: bytes, client_factory: ClientFactory | None) -> None:
    standardizer = LabelStandardizer(spec.label_standardization)
    spaces = {}
    for source in spec.sources:
        try:
            spaces[source.name] = sorted(
                {standardizer(label) for label in make_reader(source).raw_label_space()}
            )
        except (SourceError, OSError, ValueError):
            spaces[source.name] = []
    factory = client_factory or default_client_factory(spec)
    client = factory(Path(out))
    _WORKER.update(
        spec=spec,
        out=Path(out),
        standardizer=standardizer,
        spaces=spaces,
        ids=IdHasher(key),
        sources={s.name: s for s in spec.sources},
        client=client,
        generator=RowGenerator(spec.generation, spec.seed, client),
    )


def _process_unit(unit: WorkUnit) -> dict[str, Any]:
    state = _WORKER
    source = state["sources"][unit.source]
    reader = make_reader(source, state["standardizer"], state["spaces"][source.name], state["ids"])
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    failures: list[Failure] = []
    dropped: Counter[str] = Counter()
    notices: Counter[str] = Counter()
    client: LLMClient | None = state["client"]
    before = client.counters() if client else {}
    for item in reader.read_unit(unit):
        if isinstance(item, MedicalRecord):
            records.append(item.to_row())
            generated, problems = state["generator"].rows(item)
            rows.extend(generated)
            failures.extend(problems)
        elif isinstance(item, TextSample):
            rows.append(text_row(item, getattr(source.options, "config", None)))
        elif isinstance(item, Failure):
            failures.append(item)
        elif isinstance(item, Dropped):
            dropped[item.reason] += item.count
        elif isinstance(item, Notice):
            notices[item.reason] += 1
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
    after = client.counters() if client else {}
    manifest = {
        "unit_id": unit.unit_id,
        "source": unit.source,
        "fingerprint": unit.fingerprint,
        "key_digest": key_digest(state["ids"].key),
        "items": len(unit.items),
        "records": len(records),
        "rows": dict(Counter(r["config"] for r in rows)),
        "failures": [asdict(f) for f in failures],  # local: `detail` holds paths
        "dropped": dict(dropped),
        "notices": dict(notices),
        "llm": {k: after[k] - before.get(k, 0) for k in after},
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_json(tmp / "manifest.json", manifest)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return manifest


def unit_done(out: Path, unit: WorkUnit) -> bool:
    manifest = work_dir(out) / "units" / unit.unit_id / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("fingerprint") == unit.fingerprint
    except (OSError, json.JSONDecodeError):
        return False


def ingest_scope(out: Path) -> Path:
    """The engine's logging folder of the current build (its completion files, logs, stats).

    A build scope lasts until `finalize` succeeds: a killed ingest reruns only its unfinished tasks.
    The next build opens a new scope, whose tasks re-check every unit (current units are skipped),
    so a rebuild after sources changed sees the change."""
    base = work_dir(out) / "engine"
    marker = base / "scope"
    number = int(marker.read_text()) if marker.is_file() else 0
    return base / f"ingest-{number:04d}"


def finish_ingest_scope(out: Path) -> None:
    """Close the current scope (its logs stay for reading); the next ingest opens a new one."""
    number = int(ingest_scope(out).name.split("-")[1]) + 1
    atomic_write_text(work_dir(out) / "engine" / "scope", str(number))


def _remove_stale_units(out: Path, units: list[WorkUnit]) -> int:
    """Unit shards of items that no longer exist (a withdrawn file, a shrunk source) are deleted."""
    planned = {u.unit_id for u in units}
    removed = 0
    units_dir = work_dir(out) / "units"
    for path in sorted(units_dir.iterdir()) if units_dir.is_dir() else []:
        if path.is_dir() and not path.name.startswith(".") and path.name not in planned:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def ingest_task(
    spec: BuildSpec,
    out: str | Path,
    rank: int = 0,
    world_size: int = 1,
    client_factory: ClientFactory | None = None,
    crash_after_units: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Task `rank` of `world_size`: plan and fingerprint its own units, process the pending ones in
    this process; returns counts (units of the task, processed, skipped as already current)."""
    from tqdm.auto import tqdm

    out = Path(out)
    key = resolve_id_key(spec, work_dir(out))
    units, _ = plan(spec, key, rank, world_size)
    own = mine(units, rank, world_size)
    pending = [u for u in own if not unit_done(out, u)]
    (work_dir(out) / "units").mkdir(parents=True, exist_ok=True)
    done = 0
    bar = tqdm(
        total=len(pending), desc=f"ingest (task {rank + 1}/{world_size})", unit="unit", disable=not progress
    )
    try:
        if pending:
            _init_worker(spec, str(out), key, client_factory)
        for unit in pending:
            if crash_after_units is not None and done >= crash_after_units:
                raise SimulatedCrash(f"simulated crash after {done} units")
            _process_unit(unit)
            done += 1
            bar.update()
    except BackendUnavailable as error:
        raise BackendUnavailable(
            f"{error}; task {rank} stopped after {done} of {len(pending)} pending work units, which are "
            "kept: rerun the same command to resume"
        ) from None
    finally:
        bar.close()
    return {"units": len(own), "processed": done, "skipped": len(own) - len(pending)}


# -------------------------------------------------------------------------------------------------
# finalize: judge -> QC + staged writers -> swap -> report -> card
# -------------------------------------------------------------------------------------------------
@dataclass
class BuildReport:
    """What a build published and dropped; `build_report.json` and the card are written from it.

    It names failures by source, item id and reason only: the local paths of failed items are in
    `_work/failures.jsonl`, which `push` never uploads."""

    name: str
    spec_fingerprint: str
    units: int = 0
    records_ingested: int = 0
    records_kept: int = 0
    rows_generated: dict[str, int] = field(default_factory=dict)
    rows_published: dict[str, int] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    dropped_ingest: dict[str, int] = field(default_factory=dict)
    dropped_qc: dict[str, int] = field(default_factory=dict)
    #: published items to review, by reason (e.g. `burned_in_tag_missing`: ultrasound or secondary
    #: capture DICOM without a `BurnedInAnnotation` tag)
    notices: dict[str, int] = field(default_factory=dict)
    judge: dict[str, dict[str, Any]] = field(default_factory=dict)
    llm: dict[str, int] = field(default_factory=dict)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    parquet: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    finalize_seconds: float = 0.0
    ingest: dict[str, Any] | None = None

    @property
    def rows_total(self) -> int:
        return sum(self.rows_published.values())

    @property
    def usable(self) -> bool:
        """Something a trainer can load was published (rows of an image or text config)."""
        return self.rows_total > 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout of `build_report.json` (grouped by stage)."""
        return {
            "name": self.name,
            "spec_fingerprint": self.spec_fingerprint,
            "units": self.units,
            "records": {"ingested": self.records_ingested, "kept": self.records_kept},
            "rows": {"generated": self.rows_generated, "published": self.rows_published},
            "splits": self.splits,
            "errors": {
                "total": sum(self.errors_by_kind.values()),
                "by_kind": self.errors_by_kind,
                "items": self.errors,
                "local_details": "_work/failures.jsonl",
            },
            "dropped": {"ingest": self.dropped_ingest, "qc": self.dropped_qc},
            "notices": self.notices,
            "judge": self.judge,
            "llm": self.llm,
            "stats": self.stats,
            "parquet": self.parquet,
            "limits": self.limits,
            "finalize_seconds": self.finalize_seconds,
            "ingest": self.ingest,
        }

    def __getitem__(self, key: str) -> Any:  # read like the JSON file: report["rows"]["published"]
        return self.to_dict()[key]

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows_published,
            "records": {"ingested": self.records_ingested, "kept": self.records_kept},
            "errors": self.errors_by_kind,
            "dropped": {"ingest": self.dropped_ingest, "qc": self.dropped_qc},
            "parquet": self.parquet,
        }


def judge_options(spec: BuildSpec) -> dict[str, Any] | None:
    """The quality judge's settings, or None when it is off."""
    options = dict(spec.generation.get("judge") or {})
    if not options.get("enabled", True):
        return None
    return {
        "samples": int(options.get("samples", 30)),
        "threshold": float(options.get("threshold", 3.0)),
        "configs": sorted(set(options.get("configs", ["caption", "instruct"]))),
        "drop_rejected": bool(options.get("drop_rejected", True)),
    }


def judge_rank(spec: BuildSpec, row_id: str) -> int:
    """A row's place in its source's judge sample: the `samples` highest ranks are scored."""
    return -int(hashlib.sha256(f"{spec.seed}|judge|{row_id}".encode()).hexdigest()[:15], 16)


def judge_sources(
    spec: BuildSpec, samples: dict[str, list[dict[str, Any]]], client: LLMClient
) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """GMAI-VL's quality judge: score the sampled rows of each source (in row id order); a source
    is accepted when their mean score <= threshold."""
    from PIL import Image

    options = judge_options(spec) or {}
    threshold = options.get("threshold", 3.0)
    results: dict[str, dict[str, Any]] = {}
    rejected: set[str] = set()
    for source in sorted(samples):
        scores, errors = [], 0
        for row in sorted(samples[source], key=lambda r: r["row_id"]):
            images = [Image.open(io.BytesIO(i["bytes"])).convert("RGB") for i in row["images"]]
            keys = [hashlib.md5(i["bytes"]).hexdigest() for i in row["images"]]
            try:
                score, _ = client.request_json(
                    "judge", judge_prompt(row, row["messages"]), images, keys, validate_score
                )
                scores.append(score)
            except BackendUnavailable:
                raise
            except LLMError:
                errors += 1
        mean = sum(scores) / len(scores) if scores else None
        accepted = mean is not None and mean <= threshold
        results[source] = {
            "sampled": len(samples[source]),
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


def _json_line(value: Any) -> str:
    """One JSON Lines line, readable where it can be: escaped only when it holds text that is not
    UTF-8 (a file name with undecodable bytes)."""
    line = json.dumps(value, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(value)
    return line + "\n"


def _collect_unit(
    manifest: dict[str, Any], report: BuildReport, local_failures: list[dict[str, Any]]
) -> None:
    for failure in manifest["failures"]:
        failure = Failure(**failure)
        report.errors_by_kind[failure.kind] = report.errors_by_kind.get(failure.kind, 0) + 1
        if len(report.errors) < MAX_LISTED_FAILURES:
            report.errors.append(failure.public())
        local_failures.append(asdict(failure))
    for reason, count in manifest["dropped"].items():
        report.dropped_ingest[reason] = report.dropped_ingest.get(reason, 0) + count
    for reason, count in (manifest.get("notices") or {}).items():
        report.notices[reason] = report.notices.get(reason, 0) + count
    for key, count in (manifest.get("llm") or {}).items():
        report.llm[key] = report.llm.get(key, 0) + count


class StaleUnits(RuntimeError):
    """`engine.publish` found work units that are not ingested with the current sources and key."""


def _missing_units_message(out: Path, units: list[WorkUnit], missing: list[WorkUnit], key: bytes) -> str:
    """The real reason units are missing: another id key (machines that do not share one), or
    units never ingested / ingested before their sources changed."""
    digest = key_digest(key)
    other_keys: Counter[str] = Counter()
    for unit in missing:
        manifest = work_dir(out) / "units" / unit.unit_id / "manifest.json"
        try:
            found = json.loads(manifest.read_text(encoding="utf-8")).get("key_digest")
        except (OSError, json.JSONDecodeError):
            continue
        if found and found != digest:
            other_keys[found] += 1
    if other_keys:
        n = sum(other_keys.values())
        return (
            f"{out}: {n} of {len(units)} work units were ingested with a different id key (key digest "
            f"{', '.join(sorted(other_keys))}; this machine's key has digest {digest}): every machine of a "
            "build must use the same key (privacy.id_key_env or privacy.id_key_file in the spec)"
        )
    return (
        f"{out}: {len(missing)} of {len(units)} work units are not ingested yet, or their sources "
        f"changed since (first: {missing[0].unit_id}); run `ingest` for every task first"
    )


def check_output_dir(spec: BuildSpec, out: str | Path) -> None:
    """Refuse an output folder that is a source root or lies inside one (a rerun would read its
    own output, `_work/` and the id key as input): one line naming both folders."""
    target = Path(out).resolve()
    for source in spec.sources:
        root = source.base_dir.resolve()
        if target == root or root in target.parents:
            where = "is" if target == root else "lies inside"
            raise SpecError(
                f"{spec.spec_file or '<spec>'}: output folder {target} {where} the root {root} of source "
                f"{source.name!r}; choose an output folder outside every source root"
            )
