"""`gmaivl train chain`: the stages of a chain YAML in order (e.g. I -> II -> III -> GRPO), each
starting from the previous stage's folder. Finished stages are skipped when their recipe is
unchanged; an interrupted one resumes from its last complete checkpoint."""

from __future__ import annotations

import argparse
import logging
import os

from ._flags import add_dry_run

PASSES_EXTRA_ARGS = True  # recipe keys for every stage, parsed by TRL's parser


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", required=True, help="chain YAML (a path or a packaged one, e.g. tiny/chain.yaml)"
    )
    add_dry_run(p)


def run(args: argparse.Namespace) -> int:
    from gmaivl.trainers.chain import chain_recipes, run_chain
    from gmaivl.trainers.recipes import resolve_recipe_path

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = resolve_recipe_path(args.config)
    overrides = list(getattr(args, "extra_args", []))
    if args.dry_run:
        from gmaivl.trainers.dry_run import dry_run

        recipes = chain_recipes(path, overrides)
        first = recipes[0].model_args.model_name_or_path
        for recipe in recipes:
            # later stages start from folders the chain has not written yet: size them with the first model
            if recipe is not recipes[0] and not os.path.isdir(recipe.model_args.model_name_or_path):
                recipe.model_args.model_name_or_path = first
            print(dry_run(recipe, args.accelerate_config), end="\n\n")
        return 0
    for out in run_chain(path, overrides):
        print(out)
    return 0
