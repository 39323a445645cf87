"""`gmaivl data export-llava`: one config of a built corpus as LLaVA-style JSON + image files."""

from __future__ import annotations

import argparse

from ._flags import flag, output_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    flag(p, "--corpus", "--folder", required=True, help="built corpus folder")
    p.add_argument(
        "--config",
        default="caption",
        help="corpus config to export, e.g. caption, instruct, percept (default: %(default)s)",
    )
    p.add_argument("--split", default="train", help="split of that config (default: %(default)s)")
    output_file(p, "output JSON file", required=True)
    p.add_argument("--image-dir", default=None, help="image folder (default: images/ next to the JSON)")


def run(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.export import export_llava

    count = export_llava(args.corpus, args.config, args.output, args.image_dir, args.split)
    print(f"wrote {count} rows to {args.output}")
    return 0
