"""`gmaivl data ...`: demo sources, build (ingest + publish), export to LLaVA JSON, push to the Hub."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="build the GMAI-VL-5.5M-style corpus from annotated datasets")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    demo = commands.add_parser(
        "demo", help="write demo sources (real files from pydicom/nibabel/scikit-image) and build.yaml"
    )
    demo.add_argument("--out", required=True, help="folder for the sources and build.yaml")
    demo.add_argument("--scale", type=int, default=1, help="multiply the number of 2D crops")
    demo.set_defaults(func=_demo)

    for name, stages, help_text in (
        ("build", ("ingest", "finalize"), "all stages: ingest + generate, QC, Parquet, card"),
        (
            "ingest",
            ("ingest",),
            "read sources and generate rows into resumable work units (parallel, shardable)",
        ),
        ("publish", ("finalize",), "QC + judge over all work units, write Parquet configs, report and card"),
    ):
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--spec", required=True, help="build spec YAML")
        parser.add_argument("--out", required=True, help="output dataset folder")
        if "ingest" in stages:
            parser.add_argument("--workers", type=int, default=1, help="worker processes")
            parser.add_argument(
                "--num-shards", type=int, default=1, help="split the work units across machines"
            )
            parser.add_argument("--shard-index", type=int, default=0, help="this machine's shard (0-based)")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        parser.set_defaults(func=_build, stages=stages)

    export = commands.add_parser("export-llava", help="write one config as LLaVA-style JSON + image files")
    export.add_argument("--folder", required=True, help="built dataset folder")
    export.add_argument("--config", default="caption")
    export.add_argument("--split", default="train")
    export.add_argument("--out", required=True, help="output JSON file")
    export.add_argument("--image-dir", default=None, help="image folder (default: images/ next to the JSON)")
    export.set_defaults(func=_export)

    push = commands.add_parser("push", help="upload a built folder to a Hub dataset repo")
    push.add_argument("--folder", required=True)
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", default=None)
    push.set_defaults(func=_push)

    records = commands.add_parser("records", help="summarise the standardised records of a built folder")
    records.add_argument("--folder", required=True)
    records.set_defaults(func=_records)


def _demo(args: argparse.Namespace) -> int:
    from .demo import write_demo_sources

    print(write_demo_sources(args.out, scale=args.scale))
    return 0


def _build(args: argparse.Namespace) -> int:
    """Bad specs, unreadable sources and an unreachable LLM backend are one `gmaivl: error:` line
    (exit 2, finished work units kept); a build that published no row also exits 2."""
    from .build import run_build
    from .imaging import SourceError
    from .llm import LLMError
    from .spec import SpecError

    try:
        result = run_build(
            args.spec,
            args.out,
            num_workers=getattr(args, "workers", 1),
            num_shards=getattr(args, "num_shards", 1),
            shard_index=getattr(args, "shard_index", 0),
            stages=args.stages,
            progress=not args.quiet,
        )
    except SpecError:
        raise
    except (SourceError, LLMError, RuntimeError, OSError) as error:
        raise ValueError(str(error)) from error
    if "finalize" not in args.stages:
        print(json.dumps(result["ingest"], indent=2))
        return 0
    print(json.dumps(result.summary(), indent=2))
    report_path = Path(args.out) / "build_report.json"
    print(f"report: {report_path}; card: {Path(args.out) / 'README.md'}")
    if not result.usable:
        kinds = ", ".join(f"{k}: {v}" for k, v in result.errors_by_kind.items()) or "none"
        dropped = {**result.dropped_ingest, **result.dropped_qc}
        raise ValueError(
            f"{args.spec}: nothing usable was built (0 rows published; input errors: {kinds}; "
            f"dropped: {dropped or 'none'}); see {report_path} and {Path(args.out) / '_work' / 'failures.jsonl'}"
        )
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_llava

    count = export_llava(args.folder, args.config, args.out, args.image_dir, args.split)
    print(f"wrote {count} rows to {args.out}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from .hub import push_folder

    try:
        info = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as error:  # Hub, auth and network errors: one line, not a traceback
        raise ValueError(f"push to {args.repo_id} failed: {type(error).__name__}: {error}") from error
    print(info)
    return 0


def _records(args: argparse.Namespace) -> int:
    from .records import iter_records

    by_source: Counter[str] = Counter()
    by_modality: Counter[str] = Counter()
    for record in iter_records(args.folder):
        by_source[record.source_dataset] += 1
        by_modality[record.modality] += 1
    print(
        json.dumps(
            {
                "records": sum(by_source.values()),
                "by_source": dict(by_source),
                "by_modality": dict(by_modality),
            },
            indent=2,
        )
    )
    return 0
