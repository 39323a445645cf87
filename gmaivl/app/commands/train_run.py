"""`gmaivl train run` (also `gmaivl train --config ...`): one recipe stage (SFT or GRPO) with TRL.

Any recipe key can be overridden with TRL's own spelling, `--key value` (e.g. `--max_steps 10
--output_dir runs/x --resume_from_checkpoint last`); those pass through to `TrlParser` unchanged.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ._flags import add_dry_run

PASSES_EXTRA_ARGS = True  # recipe keys, parsed by TRL's parser


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        help="recipe YAML (a path, or a packaged recipe, e.g. gmaivl/stage1_shallow_alignment.yaml)",
    )
    p.add_argument("--chain", help=argparse.SUPPRESS)  # earlier spelling of `gmaivl train chain`
    add_dry_run(p)


def run(args: argparse.Namespace) -> int:
    if args.chain:
        from . import train_chain

        print(
            "gmaivl: note: `gmaivl train --chain X` is now `gmaivl train chain --config X`", file=sys.stderr
        )
        args.config = args.chain
        return train_chain.run(args)
    from gmaivl.trainers.recipes import parse_recipe, resolve_recipe_path

    if not args.config:
        raise ValueError("gmaivl train run needs --config RECIPE.yaml")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = resolve_recipe_path(args.config)
    recipe = parse_recipe(path, getattr(args, "extra_args", []), source=str(path))
    if args.dry_run:
        from gmaivl.trainers.dry_run import dry_run

        print(dry_run(recipe, args.accelerate_config))
        return 0
    from gmaivl.trainers.train import run_stage

    print(run_stage(recipe))
    return 0
