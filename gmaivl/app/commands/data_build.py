"""`gmaivl data build`: ingest (read sources, generate rows into resumable work units) and
publish (QC, judge, Parquet configs, report, card). `data ingest` and `data publish` run one half.

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
    if "ingest" in stages:
        p.add_argument(
            "--workers",
            type=positive_int,
            default=1,
            help="worker processes; 1 runs in this one (default: %(default)s)",
        )
        p.add_argument(
            "--num-shards",
            type=positive_int,
            default=1,
            help="split the work units across this many machines (default: %(default)s)",
        )
        p.add_argument(
            "--shard-index",
            type=non_negative_int,
            default=0,
            help="this machine's shard, 0 to NUM_SHARDS-1 (default: %(default)s)",
        )
    quiet(p)
    p.set_defaults(stages=stages)


def run(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.build import run_build
    from gmaivl.dataset_builders.imaging import SourceError
    from gmaivl.dataset_builders.llm import LLMError

    try:
        result = run_build(
            args.spec,
            args.output_dir,
            num_workers=getattr(args, "workers", 1),
            num_shards=getattr(args, "num_shards", 1),
            shard_index=getattr(args, "shard_index", 0),
            stages=args.stages,
            progress=not args.quiet,
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
