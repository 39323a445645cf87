"""`gmaivl eval decontam`: benchmark images (or their unannotated sources) found in a training corpus."""

from __future__ import annotations

import argparse
import json

from ._flags import flag, non_negative_int, output_file, quiet


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--benchmark", required=True, help=".tsv, records folder, Parquet, image folder or dataset"
    )
    flag(
        p,
        "--corpus",
        "--train",
        required=True,
        help="training corpus: built folder, Parquet, images or dataset",
    )
    output_file(p, "JSON report", required=True)
    p.add_argument(
        "--max-distance",
        type=non_negative_int,
        help="largest pHash Hamming distance of a near duplicate; 0: exact only (default: 2)",
    )
    p.add_argument("--benchmark-split", help="split of a dataset or records benchmark (default: all)")
    p.add_argument("--train-split", help="split of a dataset or records corpus (default: all)")
    p.add_argument("--cache", help="JSONL cache of training-image hashes (resumes an interrupted run)")
    p.add_argument("--fail-on-overlap", action="store_true", help="exit with status 1 when overlaps exist")
    quiet(p)


def run(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.qc import DECONTAMINATION_DISTANCE
    from gmaivl.evaluation.decontam import decontamination_report

    report = decontamination_report(
        args.benchmark,
        args.corpus,
        args.output,
        max_distance=DECONTAMINATION_DISTANCE if args.max_distance is None else args.max_distance,
        benchmark_split=args.benchmark_split,
        train_split=args.train_split,
        cache=args.cache,
        progress=not args.quiet,
    )
    print(json.dumps({k: v for k, v in report.items() if k != "overlaps"}, indent=2))
    for o in report["overlaps"][:20]:
        print(
            f"  overlap: benchmark {o['benchmark_id']} ~ train {o['train_id']} ({o['match']}, distance {o['distance']})"
        )
    return 1 if report["overlaps"] and args.fail_on_overlap else 0
