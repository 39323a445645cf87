"""The build as datatrove pipeline steps; `engine` picks the executor that runs them.

`IngestUnits` is one task of the ingest stage: task `rank` of `world_size` plans, fingerprints and
processes its own work units (every `world_size`-th, round robin) in its own process, whichever
executor runs it. `PublishCorpus` is the publish stage, run as a single task after every ingest
task finished. Neither step passes documents on: their output is the `_work/units/` shards and the
published folder, and they record their counts as the engine's task stats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep

from .build import ClientFactory, finalize, ingest_task
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


class PublishCorpus(PipelineStep):
    """QC, judge and publish every work unit into the dataset folder (`build.finalize`); one task."""

    name = "publish corpus"
    type = "GMAI-VL"

    def __init__(self, spec: BuildSpec, out: str | Path, progress: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.out = str(out)
        self.progress = progress

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1):
        if world_size != 1:
            raise ValueError(f"publish runs as one task, not {world_size}")
        report = finalize(self.spec, self.out, progress=self.progress)
        for config, rows in sorted(report.rows_published.items()):
            self.stat_update(f"rows_{config}", value=rows)
        yield from data or ()
