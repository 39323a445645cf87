"""`gmaivl eval bench-build`: a GMAI-MMBench-style multiple-choice TSV from a built corpus."""

from __future__ import annotations

import argparse
import json

from ._flags import flag, non_negative_int, output_file, positive_int, quiet


def add_arguments(p: argparse.ArgumentParser) -> None:
    flag(p, "--corpus", "--records", required=True, help="built corpus folder (with records/)")
    output_file(p, "output .tsv", required=True)
    p.add_argument("--split", default=None, help="only records of this split (e.g. test)")
    p.add_argument(
        "--cases-per-answer",
        type=positive_int,
        default=30,
        help="most questions with the same answer (per source and task; default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of case, question and option choice (default: %(default)s)",
    )
    p.add_argument("--question-pools", help="YAML question pools (default: the packaged ones)")
    quiet(p)


def run(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.records import iter_records
    from gmaivl.evaluation.bench_build import build_benchmark

    summary = build_benchmark(
        iter_records(args.corpus, split=args.split),
        args.output,
        cases_per_answer=args.cases_per_answer,
        seed=args.seed,
        question_pools=args.question_pools,
        progress=not args.quiet,
    )
    print(
        json.dumps(
            {"tsv": str(summary.path), "questions": summary.n_questions, "skipped": summary.skipped}, indent=2
        )
    )
    return 0
