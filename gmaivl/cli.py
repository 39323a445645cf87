"""The `gmaivl` command line.

Each area of the package owns its sub-commands: a module listed in `COMMAND_MODULES` exposes
`register(subparsers)`, which adds its parsers and sets `func` (called with the parsed
namespace, returning an exit code). Imports happen lazily so `gmaivl --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES: tuple[str, ...] = (
    "gmaivl.demo",
    "gmaivl.dataset_builders.commands",
    "gmaivl.evaluation.commands",
    "gmaivl.kernels.cli",
    "gmaivl.model_cards.commands",
    "gmaivl.trainers.cli",
    "gmaivl.quickstart",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gmaivl", description="GMAI-VL medical vision-language toolkit.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def run() -> None:
    """Console entry point: bad input (a `ValueError` or a missing file) is one line on stderr and
    exit status 2, not a traceback; `GMAIVL_TRACEBACK=1` shows the traceback."""
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("GMAIVL_TRACEBACK"):
            raise
        print(f"gmaivl: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
