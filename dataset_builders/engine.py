"""Which datatrove executor runs the build's steps (`steps.py`): this machine, a Slurm cluster, or a
Ray cluster.

- `run_build` / `ingest` / `publish`: datatrove's `LocalPipelineExecutor`. `tasks` tasks split the
  work units round robin and `workers` processes run them; publish is five executors chained with
  `depends=` (`steps.PUBLISH_STEPS`: signatures, buckets, resolve, write, assemble), whose task
  counts default to `tasks` (write: at most one task per config). The published folder depends on
  none of these counts. Machines without a scheduler share the output folder (or gather
  `_work/units/`), each running `local_tasks` of the `tasks` from `local_rank_offset` on, then one
  of them publishes.
- `slurm_build`: datatrove's `SlurmPipelineExecutor`: an array job of ingest tasks, then one job
  (an array where the stage has several tasks) per publish stage, each depending on the one before
  (`sbatch` scripts written to the engine folder, see `build.ingest_scope`).
- `ray_build`: datatrove's `RayPipelineExecutor` on a running Ray cluster (`ray.init()` first, or
  `address=`; without one, a local cluster is started): the ingest tasks, then the five publish
  stages chained with `depends=`, each stage waiting for the one before. Every task runs in a Ray
  actor, so the output folder must be shared by the cluster's machines (it is on one machine).

Completion is the engine's, per stage: a task that finished has a completion file and is skipped
when the same build is run again; a killed or failed task runs again (and inside an ingest task,
units already written with their current fingerprint are skipped).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor
from datatrove.utils.stats import PipelineStats

from .build import (
    BuildReport,
    ClientFactory,
    StaleUnits,
    check_output_dir,
    finish_ingest_scope,
    ingest_scope,
    judge_options,
)
from .publish import Layout, load_report
from .spec import BuildSpec, load_build_spec
from .steps import PUBLISH_STEPS, IngestUnits


@contextlib.contextmanager
def command_line_imports() -> Iterator[None]:
    """Processes started meanwhile import `gmaivl` as its command line does: without torch and
    transformers. The pool's forkserver children are `python -c` processes, which `gmaivl`'s
    argv test cannot tell from a user's script, so each registered the model classes, importing
    torch (2,000 images, 2 workers: 28.5 s and 8.4 s without; see `tests/data/test_engine.py`)."""
    import multiprocess

    before = os.environ.get("GMAIVL_COMMAND_LINE")
    os.environ["GMAIVL_COMMAND_LINE"] = "1"
    # the forkserver imports the build once; each worker forked from it starts with it imported
    multiprocess.set_forkserver_preload(["__main__", "gmaivl.dataset_builders.steps"])
    try:
        yield
    finally:
        if before is None:
            del os.environ["GMAIVL_COMMAND_LINE"]
        else:
            os.environ["GMAIVL_COMMAND_LINE"] = before


class _LocalExecutor(LocalPipelineExecutor):
    """datatrove's `LocalPipelineExecutor`; with one worker its tasks run in this process, as
    there, but without the `multiprocess.Manager` its `run` starts for the pool: a server process
    per stage, forked from a process that holds the build's imports (`benchmark_vs_datasets`,
    2,000 images, 1 worker: peak resident memory of all processes 480-489 MB with it, 303 without)."""

    def run(self) -> PipelineStats | None:
        if self.workers != 1:
            with command_line_imports():
                return super().run()
        if self.depends:
            if not self.depends._launched:
                self.depends.run()
            if incomplete := self.depends.get_incomplete_ranks(skip_completed=True):
                raise RuntimeError(f"{len(incomplete)} tasks of {self.depends} did not complete")
        self._launched = True
        here = range(self.local_rank_offset, self.local_rank_offset + self.local_tasks)
        if all(map(self.is_rank_completed, here)):
            return None
        self.save_executor_as_json()
        local_ranks: queue.SimpleQueue[int] = queue.SimpleQueue()
        local_ranks.put(0)
        pipeline, stats = self.pipeline, []
        for rank in self.get_incomplete_ranks(here):
            self.pipeline = deepcopy(pipeline)
            stats.append(self._launch_run_for_rank(rank, local_ranks))
        merged = sum(stats, start=PipelineStats())
        with self.logging_dir.open("stats.json", "wt") as handle:
            merged.save_to_disk(handle)
        return merged


class _RayExecutor(RayPipelineExecutor):
    """datatrove's `RayPipelineExecutor`, except that a stage after one with failed tasks raises
    (datatrove's waits, polling every two minutes, for tasks that will not run again) and that
    the stage before is not shipped to the actors with this one."""

    def run(self) -> None:
        depends = self.depends
        if depends is not None:
            if not depends._launched:
                depends.run()
            if incomplete := depends.get_incomplete_ranks(skip_completed=True):
                raise RuntimeError(f"{len(incomplete)} of {depends.world_size} tasks of {depends} failed")
        self.depends = None
        try:
            super().run()
        finally:
            self.depends = depends


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
    executor = _LocalExecutor(
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


def _judge_possible(spec: BuildSpec, client_factory: ClientFactory | None) -> bool:
    """Whether the signature tasks sample rows for the judge (an LLM backend, or a given client)."""
    backend = spec.generation.get("backend", "templates")
    return judge_options(spec) is not None and (client_factory is not None or backend != "templates")


def _publish_chain(
    spec: BuildSpec,
    layout: Layout,
    make: Callable[[Any, str, Any], Any],
    client_factory: ClientFactory | None = None,
    crash: tuple[str, int] | None = None,
) -> Any:
    """The publish stages as executors, each depending on the one before; returns the last."""
    previous = None
    for step in PUBLISH_STEPS:
        options: dict[str, Any] = {}
        if step.stage == "signatures":
            options["judge"] = _judge_possible(spec, client_factory)
        if step.stage == "resolve":
            options["client_factory"] = client_factory
        if crash and crash[0] == step.stage:
            options["crash_after_units"] = crash[1]
        previous = make(step(spec, layout, **options), step.stage, previous)
    return previous


def publish_layout(
    out: str | Path,
    tasks: int = 1,
    signature_tasks: int | None = None,
    bucket_tasks: int | None = None,
    write_tasks: int | None = None,
) -> Layout:
    """Task counts of the publish stages (each defaults to `tasks`) and their folder."""
    return Layout.create(out, signature_tasks or tasks, bucket_tasks or tasks, write_tasks or tasks)


def _start_publish(
    out: Path, tasks: int, signature_tasks: int | None, bucket_tasks: int | None, write_tasks: int | None
) -> Layout:
    """The publish layout, its folder made and its start time kept (for `finalize_seconds`) once."""
    layout = publish_layout(out, tasks, signature_tasks, bucket_tasks, write_tasks)
    layout.root.mkdir(parents=True, exist_ok=True)
    started = layout.root / "started"
    if not started.is_file():
        started.write_text(repr(time.time()))
    return layout


def publish(
    spec: BuildSpec | str | Path,
    out: str | Path,
    tasks: int = 1,
    workers: int = 1,
    signature_tasks: int | None = None,
    bucket_tasks: int | None = None,
    write_tasks: int | None = None,
    client_factory: ClientFactory | None = None,
    crash: tuple[str, int] | None = None,
    progress: bool = True,
) -> BuildReport:
    """Run the publish stages on this machine (`workers` processes); returns the `BuildReport`.
    `crash` (stage, units): that stage's tasks raise `SimulatedCrash` after that many units."""
    spec = _spec(spec)
    out = Path(out)
    check_output_dir(spec, out)
    layout = _start_publish(out, tasks, signature_tasks, bucket_tasks, write_tasks)

    def make(step: Any, stage: str, depends: Any) -> LocalPipelineExecutor:
        count = layout.tasks(stage)
        return _LocalExecutor(
            [step],
            tasks=count,
            workers=min(workers, count),
            logging_dir=str(layout.logs(stage)),
            depends=depends,
        )

    _publish_chain(spec, layout, make, client_factory, crash).run()
    return load_report(layout)


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
    signature_tasks: int | None = None,
    bucket_tasks: int | None = None,
    write_tasks: int | None = None,
    crash: tuple[str, int] | None = None,
) -> BuildReport | dict[str, Any]:
    """Run the requested stages on this machine; returns the `BuildReport` (or `{"ingest": counts}`
    without finalize). The publish stages run `signature_tasks`, `bucket_tasks` and `write_tasks`
    tasks (default: `tasks`). If the sources changed after some tasks of a resumed build finished,
    those tasks run again in a new scope, so the result still equals a fresh build.
    `crash_after_units`: ingest tasks crash after that many units; `crash`: see `publish`."""
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
    publish_options: dict[str, Any] = dict(
        tasks=tasks or workers,
        workers=workers,
        signature_tasks=signature_tasks,
        bucket_tasks=bucket_tasks,
        write_tasks=write_tasks,
        client_factory=client_factory,
        progress=progress,
    )
    try:
        report = publish(spec, out, crash=crash, **publish_options)
    except StaleUnits:
        if "ingest" not in stages or local_tasks is not None:
            raise
        finish_ingest_scope(out)
        result["ingest"] = ingest(spec, out, **options)
        report = publish(spec, out, **publish_options)
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
    signature_tasks: int | None = None,
    bucket_tasks: int | None = None,
    write_tasks: int | None = None,
) -> dict[str, Any]:
    """Submit the build to Slurm: an array of `tasks` ingest tasks (at most `max_parallel` at once),
    then one job per publish stage (arrays of `signature_tasks`, `bucket_tasks` and `write_tasks`,
    default `tasks`), each starting when the one before succeeded. Returns the job ids (`jobs`, by
    stage, and `ingest_job` / `publish_job`, the first and the last) and the folders of the launch
    scripts and logs in the order they run (`scripts`). `env_command` prepares each job's shell
    (default: activate this Python's virtual environment)."""
    import time as clock

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
    layout = publish_layout(out, tasks, signature_tasks, bucket_tasks, write_tasks)
    layout.root.mkdir(parents=True, exist_ok=True)
    (layout.root / "started").write_text(repr(clock.time()))
    executors = {"ingest": ingest_job}

    def make(step: Any, stage: str, depends: Any) -> SlurmPipelineExecutor:
        executors[stage] = SlurmPipelineExecutor(
            [step],
            tasks=layout.tasks(stage),
            workers=max_parallel,
            job_name=f"{spec.name}-publish-{stage}",
            logging_dir=str(layout.logs(f"slurm-{stage}")),
            depends=depends or ingest_job,
            **common,
        )
        return executors[stage]

    last = _publish_chain(spec, layout, make)
    last.run()
    return {
        "jobs": {stage: executor.job_id for stage, executor in executors.items()},
        "ingest_job": ingest_job.job_id,
        "publish_job": last.job_id,
        "scripts": [str(executor.logging_dir.path) for executor in executors.values()],
        "tasks": {stage: executor.world_size for stage, executor in executors.items()},
    }


def ray_build(
    spec: BuildSpec | str | Path,
    out: str | Path,
    tasks: int = 1,
    workers: int = -1,
    address: str | None = None,
    cpus_per_task: int = 1,
    mem_per_cpu_gb: float = 2,
    signature_tasks: int | None = None,
    bucket_tasks: int | None = None,
    write_tasks: int | None = None,
    client_factory: ClientFactory | None = None,
    crash_after_units: int | None = None,
) -> BuildReport:
    """Run the build on Ray: `tasks` ingest tasks (at most `workers` at once, default all), then the
    publish stages (`signature_tasks`, `bucket_tasks`, `write_tasks`, default `tasks`), each a
    `RayPipelineExecutor` depending on the one before; finished tasks are skipped on a rerun, as
    locally. Uses the Ray cluster this process is connected to, else `ray.init(address=address)`
    (no address and no `RAY_ADDRESS`: a local cluster). Returns the `BuildReport`; raises
    `RuntimeError` when tasks of a stage failed (their logs: `logs/` of the stage's engine folder).
    `crash_after_units`: ingest tasks crash after that many units (as in `run_build`, for tests)."""
    import ray

    spec = _spec(spec)
    out = Path(out).resolve()
    check_output_dir(spec, out)
    out.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(address=address)
    common = dict(
        workers=workers,
        cpus_per_task=cpus_per_task,
        mem_per_cpu_gb=mem_per_cpu_gb,
        # the actors import `gmaivl` as the command line does: without torch and transformers
        # (each actor otherwise spends seconds importing them, for nothing a build uses)
        ray_remote_kwargs={"runtime_env": {"env_vars": {"GMAIVL_COMMAND_LINE": "1"}}},
    )
    ingest_dir = ingest_scope(out) / "ray-ingest"  # publish closes the scope: its path is read now
    ingest_job = _RayExecutor(
        [IngestUnits(spec, out, client_factory, crash_after_units)],
        tasks=tasks,
        logging_dir=str(ingest_dir),
        **common,
    )
    layout = _start_publish(out, tasks, signature_tasks, bucket_tasks, write_tasks)

    def make(step: Any, stage: str, depends: Any) -> RayPipelineExecutor:
        return _RayExecutor(
            [step],
            tasks=layout.tasks(stage),
            logging_dir=str(layout.logs(f"ray-{stage}")),
            depends=depends or ingest_job,
            **common,
        )

    last = _publish_chain(spec, layout, make, client_factory)
    last.run()
    if incomplete := last.get_incomplete_ranks(skip_completed=True):
        raise RuntimeError(f"{len(incomplete)} of {last.world_size} tasks of {last} failed")
    report = load_report(layout)
    report.ingest = {"tasks": tasks, **_task_counts(ingest_dir, list(range(tasks)))}
    return report
