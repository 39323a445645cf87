"""The build as datatrove pipeline steps; `engine` picks the executor that runs them.

`IngestUnits` is one task of the ingest stage: task `rank` of `world_size` plans, fingerprints and
processes its own work units (every `world_size`-th, round robin) in its own process, whichever
executor runs it. Publish is five stages after it (`PUBLISH_STEPS`, `publish.py`): QC signatures
and duplicate buckets (many tasks), the resolution of the drops (one), the writers (one task per
group of configs) and the assembly of report and card (one). No step passes documents on: their
output is the `_work/units/` shards, the stage files and the published folder, and they record
their counts as the engine's task stats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep

from . import publish
from .build import ClientFactory, ingest_task
from .publish import Layout
from .spec import BuildSpec


class IngestUnits(PipelineStep):
    """Read the sources of task `rank` into work-unit shards (`build.ingest_task`)."""

    name = "ingest work units"
    type = "GMAI-VL"

    def __init__(
        self,
        spec: BuildSpec,
        out: str | Path,
        client_factory: ClientFactory | None = None,
        crash_after_units: int | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.out = str(out)
        self.client_factory = client_factory
        self.crash_after_units = crash_after_units
        self.progress = progress

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1):
        counts = ingest_task(
            self.spec,
            self.out,
            rank,
            world_size,
            client_factory=self.client_factory,
            crash_after_units=self.crash_after_units,
            progress=self.progress,
        )
        for key, value in counts.items():
            self.stat_update(key, value=value)
        yield from data or ()


class _PublishStep(PipelineStep):
    """One stage of publish (`publish.py`); `tasks` of it run, as the executor's world size."""

    type = "GMAI-VL"
    stage = ""

    def __init__(self, spec: BuildSpec, layout: Layout, **options: Any) -> None:
        super().__init__()
        self.spec = spec
        self.layout = layout
        self.options = options

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1):
        expected = self.layout.tasks(self.stage)
        if world_size != expected:
            raise ValueError(f"publish stage {self.stage!r} runs as {expected} tasks, not {world_size}")
        counts = self.task(rank, world_size)
        for key, value in counts.items():
            if isinstance(value, int):
                self.stat_update(key, value=value)
        yield from data or ()

    def task(self, rank: int, world_size: int) -> dict[str, Any]:
        raise NotImplementedError


class QCSignatures(_PublishStep):
    """A: per-row QC checks and the md5 / pHash band / LSH band signatures of this task's units."""

    name = "qc signatures"
    stage = "signatures"

    def task(self, rank: int, world_size: int) -> dict[str, Any]:
        return publish.signature_task(
            self.spec,
            self.layout,
            rank,
            world_size,
            self.options["judge"],
            self.options.get("crash_after_units"),
        )


class QCBuckets(_PublishStep):
    """B: the possible duplicates within one bucket of signatures."""

    name = "qc buckets"
    stage = "buckets"

    def task(self, rank: int, world_size: int) -> dict[str, Any]:
        return publish.bucket_task(self.spec, self.layout, rank)


class QCResolve(_PublishStep):
    """C: the judge and the first-kept walk over the possible duplicates; one task."""

    name = "qc resolve"
    stage = "resolve"

    def task(self, rank: int, world_size: int) -> dict[str, Any]:
        return publish.resolve_task(self.spec, self.layout, self.options.get("client_factory"))


class WriteConfigs(_PublishStep):
    """D: the kept rows of this task's configs into staged Parquet shards."""

    name = "write configs"
    stage = "write"

    def task(self, rank: int, world_size: int) -> dict[str, Any]:
        return publish.write_task(
            self.spec, self.layout, rank, world_size, self.options.get("crash_after_units")
        )


class AssembleCorpus(_PublishStep):
    """E: the report, the staged configs swapped into place, the card; one task."""

    name = "assemble corpus"
    stage = "assemble"

    def task(self, rank: int, world_size: int) -> dict[str, Any]:
        report = publish.assemble_task(self.spec, self.layout)
        return {f"rows_{config}": rows for config, rows in sorted(report.rows_published.items())}


PUBLISH_STEPS = (QCSignatures, QCBuckets, QCResolve, WriteConfigs, AssembleCorpus)
