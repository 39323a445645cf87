"""The build on datatrove's executors: any split into tasks, processes or machines publishes the
same bytes; the engine's completion files skip finished tasks; Slurm gets an array job of ingest
tasks and one job per publish stage that, run as Slurm would run them, publish the same bytes again
(the publish stages with many tasks: tests/data/test_publish_stages.py)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import dill
import pytest

from gmaivl.dataset_builders.build import SimulatedCrash, StaleUnits
from gmaivl.dataset_builders.engine import ingest, publish, run_build, slurm_build
from gmaivl.dataset_builders.spec import load_build_spec


def published_bytes(folder: Path) -> dict[str, str]:
    """sha256 of every published file; the report without its wall-clock field."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or rel.startswith("_work/"):
            continue
        data = path.read_bytes()
        if rel == "build_report.json":
            report = json.loads(data)
            report.pop("finalize_seconds")
            data = json.dumps(report, sort_keys=True).encode()
        digests[rel] = hashlib.sha256(data).hexdigest()
    assert any(rel.endswith(".parquet") for rel in digests)
    return digests


def test_tasks_processes_and_machines_publish_the_same_bytes(built, demo_spec, tmp_path):
    reference, report = built
    assert report.ingest["tasks"] == 1
    spec = load_build_spec(demo_spec)
    out = tmp_path / "machines"
    # machine A runs tasks 0-1 of 4 in two processes, machine B tasks 2-3 in one
    first = ingest(spec, out, tasks=4, workers=2, local_tasks=2, local_rank_offset=0, progress=False)
    with pytest.raises(StaleUnits, match="not ingested yet"):
        publish(spec, out, progress=False)
    second = ingest(spec, out, tasks=4, workers=1, local_tasks=2, local_rank_offset=2, progress=False)
    assert first["tasks_run"] == second["tasks_run"] == 2
    assert first["processed"] + second["processed"] == report.units
    publish(spec, out, progress=False)
    assert published_bytes(out) == published_bytes(reference)


def test_a_killed_task_reruns_and_finished_tasks_are_skipped(built, demo_spec, tmp_path):
    reference, _ = built
    spec = load_build_spec(demo_spec)
    out = tmp_path / "killed"
    with pytest.raises(SimulatedCrash):  # each of 3 tasks dies after 2 of its units
        run_build(spec, out, tasks=3, crash_after_units=2, progress=False)
    # the first task died: the engine marked no task complete, 2 units are on disk
    resumed = run_build(spec, out, tasks=3, progress=False)
    assert resumed.ingest["tasks_run"] == 3 and resumed.ingest["skipped"] == 2
    assert published_bytes(out) == published_bytes(reference)
    # the same build again: a new scope re-checks every unit and writes none
    again = run_build(spec, out, tasks=3, progress=False)
    assert (again.ingest["tasks_run"], again.ingest["processed"]) == (3, 0)
    assert published_bytes(out) == published_bytes(reference)


def test_finished_tasks_are_skipped_by_the_engine(demo_spec, tmp_path):
    spec = load_build_spec(demo_spec)
    out = tmp_path / "half"
    first = ingest(spec, out, tasks=2, local_tasks=1, progress=False)
    assert first["tasks_run"] == 1
    both = ingest(spec, out, tasks=2, progress=False)  # task 0 has its completion file
    assert (both["tasks_run"], both["tasks_skipped"], both["skipped"]) == (1, 1, 0)
    completions = sorted(p.name for p in out.glob("_work/engine/ingest-*/local-ingest/completions/*"))
    assert completions == ["00000", "00001"]


def test_machines_with_different_id_keys_get_the_real_reason(demo_spec, tmp_path, monkeypatch):
    spec = load_build_spec(demo_spec)
    out = tmp_path / "keys"
    monkeypatch.setenv(spec.privacy.id_key_env, "a" * 64)
    ingest(spec, out, tasks=2, local_tasks=1, local_rank_offset=0, progress=False)
    monkeypatch.setenv(spec.privacy.id_key_env, "b" * 64)
    ingest(spec, out, tasks=2, local_tasks=1, local_rank_offset=1, progress=False)
    with pytest.raises(StaleUnits, match="ingested with a different id key") as error:
        publish(spec, out, progress=False)
    assert "a" * 16 not in str(error.value)  # digests, never the key


FAKE_SBATCH = """#!{python}
import pathlib, sys
calls = pathlib.Path({calls!r})
script = pathlib.Path(sys.argv[-1]).read_text()
number = len(list(calls.glob("*.slurm"))) + 1
(calls / f"{{number}}.slurm").write_text(script)
(calls / f"{{number}}.args").write_text(" ".join(sys.argv[1:-1]))
print(f"Submitted batch job {{1000 + number}}")
"""


def job_name(script: str) -> str:
    return next(
        line.split("=", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH --job-name=")
    )


def test_slurm_gets_an_array_job_and_dependent_publish_stage_jobs(built, demo_spec, tmp_path, monkeypatch):
    reference, _ = built
    calls = tmp_path / "sbatch-calls"
    calls.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(FAKE_SBATCH.format(python=sys.executable, calls=str(calls)))
    scontrol = bin_dir / "scontrol"  # `scontrol show hostnames n1` inside a job
    scontrol.write_text("#!/bin/sh\necho n1\n")
    for tool in (sbatch, scontrol):
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "slurm"
    submitted = slurm_build(
        demo_spec,
        out,
        tasks=2,
        partition="cpu",
        time="01:00:00",
        max_parallel=2,
        bucket_tasks=2,
        write_tasks=2,
    )
    stages = ["ingest", "signatures", "buckets", "resolve", "write", "assemble"]
    assert list(submitted["jobs"]) == stages
    assert [submitted["tasks"][s] for s in stages] == [2, 2, 2, 1, 2, 1]
    scripts = {p.stem: p.read_text() for p in calls.glob("*.slurm")}
    args = {p.stem: p.read_text() for p in calls.glob("*.args")}
    launch = {k: s for k, s in scripts.items() if "launch_pickled_pipeline" in s}
    for index, stage in enumerate(stages):
        name = "-ingest" if stage == "ingest" else f"-publish-{stage}"
        key = next(k for k, s in launch.items() if job_name(s).endswith(name))
        tasks = submitted["tasks"][stage]
        array = f"#SBATCH --array=0-{tasks - 1}" + ("%2" if tasks > 1 else "")
        assert array in launch[key] and "#SBATCH --partition=cpu" in launch[key], stage
        if index:  # each stage starts when the one before succeeded
            assert f"--dependency=afterok:{submitted['jobs'][stages[index - 1]]}" in args[key], stage
    # run the jobs as Slurm would, stage after stage: each array task with its SLURM_ARRAY_TASK_ID,
    # the ingest tasks through `launch_pickled_pipeline` (the command of the scripts), the publish
    # tasks through the same two lines in this process (a fresh interpreter per task costs seconds)
    for stage, folder in zip(stages, submitted["scripts"]):
        for task in range(submitted["tasks"][stage]):
            env = {"SLURM_ARRAY_TASK_ID": str(task), "RUN_OFFSET": "0", "SLURM_NODELIST": "n1"}
            if stage == "ingest":
                run = [str(Path(sys.executable).parent / "launch_pickled_pipeline"), f"{folder}/executor.pik"]
                subprocess.run(run, env={**os.environ, **env}, check=True, capture_output=True, timeout=300)
                continue
            with monkeypatch.context() as inside:
                for name, value in env.items():
                    inside.setenv(name, value)
                with open(f"{folder}/executor.pik", "rb") as handle:
                    dill.load(handle).run()
    assert published_bytes(out) == published_bytes(reference)


_POOL_SCRIPT = """
import json, sys
from datatrove.executor import LocalPipelineExecutor
from gmaivl.dataset_builders.engine import _LocalExecutor

def report(data, rank, world_size):
    import gmaivl.dataset_builders.steps  # what an ingest task imports
    with open(f"{sys.argv[2]}/{rank}.json", "w") as handle:
        json.dump("torch" in sys.modules, handle)
    yield from data or ()

if __name__ == "__main__":
    executor = {"ours": _LocalExecutor, "datatrove": LocalPipelineExecutor}[sys.argv[1]]
    executor([report], tasks=2, workers=2, logging_dir=sys.argv[2] + "/logs").run()
"""


def test_worker_processes_of_a_multi_worker_build_do_not_import_torch(tmp_path):
    """datatrove's pool starts `python -c` forkserver children, which import `gmaivl` as a user's
    script would (registering the model classes: torch); the build's executor makes them import it
    as the command line does. Control: datatrove's own executor, whose workers do load torch."""
    script = tmp_path / "pool.py"
    script.write_text(_POOL_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "GMAIVL_COMMAND_LINE"}
    seen = {}
    for kind in ("ours", "datatrove"):
        out = tmp_path / kind
        out.mkdir()
        subprocess.run([sys.executable, str(script), kind, str(out)], check=True, env=env, timeout=300)
        seen[kind] = [json.loads((out / f"{rank}.json").read_text()) for rank in range(2)]
    assert seen == {"ours": [False, False], "datatrove": [True, True]}
