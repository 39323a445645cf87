"""The build on a real local Ray cluster (`engine.ray_build`, datatrove's `RayPipelineExecutor`):
the ingest tasks and the five publish stages run as Ray actors, chained with `depends=`, and publish
the bytes of a local run; a task killed on the cluster reruns there and the result is the same."""

from __future__ import annotations

import os

import pytest
import ray

from gmaivl.dataset_builders.engine import ray_build

from .test_engine import published_bytes


@pytest.fixture()
def local_ray_cluster():
    ray.init(num_cpus=2, object_store_memory=100 * 1024**2, include_dashboard=False)
    yield
    ray.shutdown()


def test_a_local_ray_cluster_publishes_the_bytes_of_a_local_run(
    built, demo_spec, tmp_path, local_ray_cluster
):
    reference, local = built
    out = tmp_path / "ray"
    report = ray_build(demo_spec, out, tasks=2, mem_per_cpu_gb=0.5)
    assert report.ingest == {"tasks": 2, "units": local.units, "processed": local.units, "skipped": 0}
    assert report.rows_published == local.rows_published
    assert published_bytes(out) == published_bytes(reference)
    engine = out / "_work" / "engine"
    # every task of every stage ran on the cluster and left the engine's completion file
    assert sorted(os.listdir(engine / "ingest-0000" / "ray-ingest" / "completions")) == ["00000", "00001"]
    stages = sorted(p.parent.parent.name for p in out.rglob("ray-*/completions/00000"))
    assert stages == sorted(
        ["ray-ingest", "ray-signatures", "ray-buckets", "ray-resolve", "ray-write", "ray-assemble"]
    )


def test_a_task_killed_on_the_cluster_reruns_and_the_bytes_are_those_of_a_fresh_build(
    built, demo_spec, tmp_path, local_ray_cluster
):
    reference, local = built
    out = tmp_path / "killed"
    # both ingest actors die after 2 of their units: the stages after them do not start
    with pytest.raises(RuntimeError, match=r"2 of 2 tasks of .* failed"):
        ray_build(demo_spec, out, tasks=2, mem_per_cpu_gb=0.5, crash_after_units=2)
    assert not (out / "records").exists()
    assert not list(out.rglob("ray-ingest/completions/*"))
    resumed = ray_build(demo_spec, out, tasks=2, mem_per_cpu_gb=0.5)
    # the 4 units on disk are not read again; the others are
    assert resumed.ingest == {"tasks": 2, "units": local.units, "processed": local.units - 4, "skipped": 4}
    assert published_bytes(out) == published_bytes(reference)
