"""Which datatrove executor runs the build's steps (`steps.py`): this machine, or a Slurm cluster.

- `run_build` / `ingest`: datatrove's `LocalPipelineExecutor`. `tasks` tasks split the work units
  round robin and `workers` processes run them; the published folder does not depend on either.
  Machines without a scheduler share the output folder (or gather `_work/units/`), each running
  `local_tasks` of the `tasks` from `local_rank_offset` on, then one of them publishes.
- `slurm_build`: datatrove's `SlurmPipelineExecutor`: an array job of ingest tasks and a publish job
  that depends on it (`sbatch` scripts written to the engine folder, see `build.ingest_scope`).

Completion is the engine's: a task that finished has a completion file and is skipped when the
same build is run again; a killed or failed task runs again (and inside it, units already written
with their current fingerprint are skipped).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor

from .build import (
    BuildReport,
    ClientFactory,
    StaleUnits,
    check_output_dir,
    finalize,
    finish_ingest_scope,
    ingest_scope,
)
from .spec import BuildSpec, load_build_spec
from .steps import IngestUnits, PublishCorpus


def _spec(spec: BuildSpec | str | Path) -> BuildSpec:
    return spec if isinstance(spec, BuildSpec) else load_build_spec(spec)


def _task_counts(logging_dir: Path, ranks: list[int]) -> dict[str, int]:
    """Units of the given tasks, processed and skipped, from the engine's per-task stats files."""
    totals = {"units": 0, "processed": 0, "skipped": 0}
    for rank in ranks:
        path = logging_dir / "stats" / f"{rank:05d}.json"
        if not path.is_file():
            continue
        (step,) = json.loads(path.read_text())
        for key in totals:
            value = step["stats"].get(key, 0)
            totals[key] += int(value["total"] if isinstance(value, dict) else value)
    return totals


def ingest(
    spec: BuildSpec | str | Path,
    out: str | Path,
    tasks: int | None = None,
    workers: int = 1,
    local_tasks: int | None = None,
    local_rank_offset: int = 0,
    client_factory: ClientFactory | None = None,
    crash_after_units: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the ingest tasks of this machine; returns counts of tasks and units."""
    spec = _spec(spec)
    out = Path(out)
    check_output_dir(spec, out)
    tasks = tasks or workers
    logging_dir = ingest_scope(out) / "local-ingest"
    executor = LocalPipelineExecutor(
        [IngestUnits(spec, out, client_factory, crash_after_units, progress and workers == 1)],
        tasks=tasks,
        workers=min(workers, tasks),
        logging_dir=str(logging_dir),
        local_tasks=local_tasks if local_tasks is not None else -1,
        local_rank_offset=local_rank_offset,
    )
    here = range(local_rank_offset, local_rank_offset + executor.local_tasks)
    pending = executor.get_incomplete_ranks(here)
    executor.run()
    return {
        "tasks": tasks,
        "tasks_run": len(pending),
        "tasks_skipped": len(here) - len(pending),
        **_task_counts(logging_dir, pending),
    }


def run_build(
    spec: BuildSpec | str | Path,
    out: str | Path,
    workers: int = 1,
    tasks: int | None = None,
    local_tasks: int | None = None,
    local_rank_offset: int = 0,
    stages: tuple[str, ...] = ("ingest", "finalize"),
    client_factory: ClientFactory | None = None,
    crash_after_units: int | None = None,
    progress: bool = True,
) -> BuildReport | dict[str, Any]:
    """Run the requested stages on this machine; returns the `BuildReport` (or `{"ingest": counts}`
    without finalize). If the sources changed after some tasks of a resumed build finished, those
    tasks run again in a new scope, so the result still equals a fresh build."""
    spec = _spec(spec)
    check_output_dir(spec, out)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = dict(
        tasks=tasks,
        workers=workers,
        local_tasks=local_tasks,
        local_rank_offset=local_rank_offset,
        client_factory=client_factory,
        progress=progress,
    )
    result: dict[str, Any] = {}
    if "ingest" in stages:
        result["ingest"] = ingest(spec, out, crash_after_units=crash_after_units, **options)
    if "finalize" not in stages:
        return result
    try:
        report = finalize(spec, out, client_factory, progress)
    except StaleUnits:
        if "ingest" not in stages or local_tasks is not None:
            raise
        finish_ingest_scope(out)
        result["ingest"] = ingest(spec, out, **options)
        report = finalize(spec, out, client_factory, progress)
    report.ingest = result.get("ingest")
    return report


def slurm_build(
    spec: BuildSpec | str | Path,
    out: str | Path,
    tasks: int,
    partition: str,
    time: str = "04:00:00",
    cpus_per_task: int = 1,
    mem_per_cpu_gb: int = 4,
    max_parallel: int = -1,
    env_command: str | None = None,
    sbatch_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Submit the build to Slurm: an array of `tasks` ingest tasks (at most `max_parallel` at once)
    and a publish job that starts when all of them succeeded. Returns the job ids and the folder of
    the launch scripts and logs. `env_command` prepares each job's shell (default: activate this
    Python's virtual environment)."""
    spec = _spec(spec)
    out = Path(out).resolve()
    check_output_dir(spec, out)
    out.mkdir(parents=True, exist_ok=True)
    scope = ingest_scope(out)
    env = env_command or (
        f"source {Path(sys.prefix) / 'bin' / 'activate'}" if sys.prefix != sys.base_prefix else ""
    )
    common = dict(
        partition=partition,
        time=time,
        cpus_per_task=cpus_per_task,
        mem_per_cpu_gb=mem_per_cpu_gb,
        env_command=env or None,
        sbatch_args=sbatch_args,
    )
    ingest_job = SlurmPipelineExecutor(
        [IngestUnits(spec, out)],
        tasks=tasks,
        workers=max_parallel,
        job_name=f"{spec.name}-ingest",
        logging_dir=str(scope / "slurm-ingest"),
        **common,
    )
    publish_job = SlurmPipelineExecutor(
        [PublishCorpus(spec, out)],
        tasks=1,
        job_name=f"{spec.name}-publish",
        logging_dir=str(scope / "slurm-publish"),
        depends=ingest_job,
        **common,
    )
    publish_job.run()
    return {
        "ingest_job": ingest_job.job_id,
        "publish_job": publish_job.job_id,
        "scripts": [str(scope / "slurm-ingest"), str(scope / "slurm-publish")],
    }
