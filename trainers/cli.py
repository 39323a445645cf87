"""`gmaivl train` and `gmaivl train-chain`."""

from __future__ import annotations

import argparse
import logging
import os


def _train(args: argparse.Namespace) -> int:
    from .recipes import parse_recipe, resolve_recipe_path

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.chain:
        from .chain import chain_recipes, run_chain

        path = resolve_recipe_path(args.chain)
        if args.dry_run:
            from .dry_run import dry_run

            recipes = chain_recipes(path, list(args.overrides))
            first = recipes[0].model_args.model_name_or_path
            for recipe in recipes:
                # later stages start from folders the chain has not written yet: size them with the first model
                if recipe is not recipes[0] and not os.path.isdir(recipe.model_args.model_name_or_path):
                    recipe.model_args.model_name_or_path = first
                print(dry_run(recipe, args.accelerate_config), end="\n\n")
            return 0
        for out in run_chain(path, list(args.overrides)):
            print(out)
        return 0
    if not args.config:
        raise ValueError("gmaivl train needs --config RECIPE.yaml (or --chain CHAIN.yaml)")
    path = resolve_recipe_path(args.config)
    recipe = parse_recipe(path, args.overrides, source=str(path))
    if args.dry_run:
        from .dry_run import dry_run

        print(dry_run(recipe, args.accelerate_config))
        return 0
    from .train import run_stage

    print(run_stage(recipe))
    return 0


def _train_chain(args: argparse.Namespace) -> int:
    args.chain = args.config
    return _train(args)


class _OverridesParser(argparse.ArgumentParser):
    """Collects unknown `--key value` pairs as recipe overrides instead of rejecting them."""

    def parse_known_args(self, args=None, namespace=None):
        ns, extras = super().parse_known_args(args, namespace)
        ns.overrides = [*(getattr(ns, "overrides", None) or []), *(e for e in extras if e != "--")]
        return ns, []


def _add_parser(subparsers: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    original = subparsers._parser_class
    subparsers._parser_class = _OverridesParser
    try:
        return subparsers.add_parser(name, **kwargs)
    finally:
        subparsers._parser_class = original


def _add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the recipe and print parameters per part, data mixture, steps, global batch and memory per GPU",
    )
    parser.add_argument(
        "--accelerate-config",
        dest="accelerate_config",
        help="with --dry-run: the accelerate config the run will use (a path or a shipped one, e.g. deepspeed_zero3.yaml)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    train = _add_parser(
        subparsers,
        "train",
        help="train one recipe stage (SFT or GRPO) with TRL",
        description="Train one stage from a YAML recipe; any recipe key can be overridden as --key value "
        "(e.g. --max_steps 10 --output_dir runs/x --resume_from_checkpoint last).",
    )
    train.add_argument(
        "--config", help="recipe YAML (a path, or one of the packaged recipes, e.g. gmaivl/...)"
    )
    train.add_argument("--chain", help="run a chain YAML instead (stages in order)")
    _add_dry_run(train)
    train.set_defaults(func=_train)

    chain = _add_parser(
        subparsers,
        "train-chain",
        help="run a chain of stages (e.g. I -> II -> III -> GRPO), resuming finished ones",
        description="Run the stages of a chain YAML in order; each starts from the previous stage's folder. "
        "Stages already done are skipped; an interrupted one resumes from its last complete checkpoint.",
    )
    chain.add_argument("--config", required=True, help="chain YAML")
    _add_dry_run(chain)
    chain.set_defaults(func=_train_chain)
