"""`gmaivl data ingest`: read sources and generate rows into resumable work units (parallel,
shardable across machines with `--num-shards/--shard-index`); `data publish` finishes."""

from __future__ import annotations

import argparse

from . import data_build


def add_arguments(p: argparse.ArgumentParser) -> None:
    data_build.add_arguments(p, stages=("ingest",))


run = data_build.run
