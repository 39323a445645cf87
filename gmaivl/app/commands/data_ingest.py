"""`gmaivl data ingest`: read sources and generate rows into resumable work units (datatrove tasks;
split across machines with `--tasks/--local-tasks/--local-rank-offset`); `data publish` finishes."""

from __future__ import annotations

import argparse

from . import data_build


def add_arguments(p: argparse.ArgumentParser) -> None:
    data_build.add_arguments(p, stages=("ingest",))


run = data_build.run
