"""`gmaivl data build`: ingest (read sources, generate rows into resumable work units) and
publish (QC, judge, Parquet configs, report, card; each stage as engine tasks: `--signature-tasks`,
`--bucket-tasks`, `--write-tasks`). `data ingest` and `data publish` run one half.

Bad specs, unreadable sources and an unreachable LLM backend are one `gmaivl: error:` line (exit 2,
finished work units kept); a build that published no row also exits 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._flags import non_negative_int, output_dir, positive_int, quiet

STAGES = ("ingest", "finalize")


def add_arguments(p: argparse.ArgumentParser, stages: tuple[str, ...] = STAGES) -> None:
    p.add_argument("--spec", required=True, help="build spec YAML")
    output_dir(p, "output corpus folder", required=True)
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="processes on this machine; 1 runs the tasks in this one (default: %(default)s)",
    )
    p.add_argument(
        "--tasks",
        type=positive_int,
        default=None,
        help="engine tasks the work units are split into, round robin; also the default task count "
        "of each publish stage (default: --workers)",
    )
    if "finalize" in stages:
        for flag, what in (
            ("signature", "QC signature tasks (each takes every N-th unit)"),
            ("bucket", "duplicate bucket tasks"),
            ("write", "writer tasks, at most one per config"),
        ):
            p.add_argument(
                f"--{flag}-tasks",
                type=positive_int,
                default=None,
                help=f"publish: {what} (default: --tasks); the published bytes do not depend on it",
            )
    if "ingest" in stages:
        p.add_argument(
            "--local-tasks",
            type=positive_int,
            default=None,
            help="run only this many of the tasks here, for machines without a scheduler (default: all)",
        )
        p.add_argument(
            "--local-rank-offset",
            type=non_negative_int,
            default=0,
            help="the first task this machine runs, with --local-tasks (default: %(default)s)",
        )
        p.add_argument(
            "--executor",
            choices=("local", "slurm", "ray"),
            default="local",
            help="run here, submit an ingest array job and a job per publish stage to Slurm, or run the "
            "stages' tasks as actors of a Ray cluster (default: %(default)s)",
        )
        p.add_argument(
            "--ray-address",
            help="with --executor ray: the cluster to connect to (default: RAY_ADDRESS, else a local cluster)",
        )
        p.add_argument("--slurm-partition", help="with --executor slurm: the partition to submit to")
        p.add_argument(
            "--slurm-time",
            default="04:00:00",
            help="with --executor slurm: time limit per job (default: %(default)s)",
        )
    quiet(p)
    p.set_defaults(stages=stages)


def run(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.engine import run_build
    from gmaivl.dataset_builders.imaging import SourceError
    from gmaivl.dataset_builders.llm import LLMError

    if getattr(args, "executor", "local") == "slurm":
        return _submit_to_slurm(args)
    try:
        if getattr(args, "executor", "local") == "ray":
            result = _run_on_ray(args)
        else:
            result = run_build(
                args.spec,
                args.output_dir,
                workers=getattr(args, "workers", 1),
                tasks=getattr(args, "tasks", None),
                local_tasks=getattr(args, "local_tasks", None),
                local_rank_offset=getattr(args, "local_rank_offset", 0),
                stages=args.stages,
                progress=not args.quiet,
                signature_tasks=getattr(args, "signature_tasks", None),
                bucket_tasks=getattr(args, "bucket_tasks", None),
                write_tasks=getattr(args, "write_tasks", None),
            )
    except (SourceError, LLMError, RuntimeError, OSError) as error:
        raise ValueError(str(error)) from error
    if "finalize" not in args.stages:
        print(json.dumps(result["ingest"], indent=2))
        return 0
    out = Path(args.output_dir)
    print(json.dumps(result.summary(), indent=2))
    print(f"report: {out / 'build_report.json'}; card: {out / 'README.md'}")
    if not result.usable:
        kinds = ", ".join(f"{k}: {v}" for k, v in result.errors_by_kind.items()) or "none"
        dropped = {**result.dropped_ingest, **result.dropped_qc}
        raise ValueError(
            f"{args.spec}: nothing usable was built (0 rows published; input errors: {kinds}; "
            f"dropped: {dropped or 'none'}); see {out / 'build_report.json'} and {out / '_work' / 'failures.jsonl'}"
        )
    return 0


def _run_on_ray(args: argparse.Namespace):
    from gmaivl.dataset_builders.engine import ray_build

    if args.stages != STAGES:
        raise ValueError("--executor ray runs the whole build (use `gmaivl data build`)")
    return ray_build(
        args.spec,
        args.output_dir,
        tasks=args.tasks or args.workers,
        workers=args.workers if args.workers > 1 else -1,
        address=args.ray_address,
        signature_tasks=args.signature_tasks,
        bucket_tasks=args.bucket_tasks,
        write_tasks=args.write_tasks,
    )


def _submit_to_slurm(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.engine import slurm_build

    if args.stages != STAGES:
        raise ValueError("--executor slurm runs the whole build (use `gmaivl data build`)")
    if not args.slurm_partition:
        raise ValueError("--executor slurm needs --slurm-partition")
    submitted = slurm_build(
        args.spec,
        args.output_dir,
        tasks=args.tasks or args.workers,
        partition=args.slurm_partition,
        time=args.slurm_time,
        max_parallel=args.workers if args.workers > 1 else -1,
        signature_tasks=args.signature_tasks,
        bucket_tasks=args.bucket_tasks,
        write_tasks=args.write_tasks,
    )
    print(json.dumps(submitted, indent=2))
    return 0
