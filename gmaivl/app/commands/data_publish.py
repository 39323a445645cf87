"""`gmaivl data publish`: QC and judge over all work units, then Parquet configs, report and card,
as distributed stages (`--tasks`, `--signature-tasks`, `--bucket-tasks`, `--write-tasks`, `--workers`)."""

from __future__ import annotations

import argparse

from . import data_build


def add_arguments(p: argparse.ArgumentParser) -> None:
    data_build.add_arguments(p, stages=("finalize",))


run = data_build.run
