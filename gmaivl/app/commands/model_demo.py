"""`gmaivl model demo`: a small random GMAI-VL at 336 px asks about a real CT slice, is saved as
a Hub folder, reloaded with `trust_remote_code=True` and checked to answer identically."""

from __future__ import annotations

import argparse
import json

from ._flags import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output-dir", default="runs/demo", help="where to save the Hub-ready folder (default: %(default)s)"
    )
    p.add_argument(
        "--question",
        default="What imaging modality is shown in this image?",
        help="question asked about the slice (default: %(default)r)",
    )
    p.add_argument(
        "--window",
        default="soft_tissue",
        help="CT window preset or 'level,width' in HU (default: %(default)s)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=12,
        help="most tokens generated for the answer (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from gmaivl.app.demo import run_demo

    window = tuple(float(v) for v in args.window.split(",")) if "," in args.window else args.window
    print(json.dumps(run_demo(args.output_dir, args.question, window, args.max_new_tokens), indent=2))
    return 0
