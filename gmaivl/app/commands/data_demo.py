"""`gmaivl data demo`: demo sources (real files shipped in pydicom / nibabel / scikit-image) and
the build spec that turns them into a corpus."""

from __future__ import annotations

import argparse

from ._flags import output_dir, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    output_dir(p, "folder for the sources and build.yaml", required=True)
    p.add_argument(
        "--scale", type=positive_int, default=1, help="multiply the number of 2D crops (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.demo import write_demo_sources

    print(write_demo_sources(args.output_dir, scale=args.scale))
    return 0
