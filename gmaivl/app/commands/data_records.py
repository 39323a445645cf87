"""`gmaivl data records`: count the standardised records of a built corpus by source and modality."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from ._flags import flag


def add_arguments(p: argparse.ArgumentParser) -> None:
    flag(p, "--corpus", "--folder", required=True, help="built corpus folder")


def run(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.records import iter_records

    by_source: Counter[str] = Counter()
    by_modality: Counter[str] = Counter()
    for record in iter_records(args.corpus):
        by_source[record.source_dataset] += 1
        by_modality[record.modality] += 1
    summary = {"records": by_source.total(), "by_source": dict(by_source), "by_modality": dict(by_modality)}
    print(json.dumps(summary, indent=2))
    return 0
