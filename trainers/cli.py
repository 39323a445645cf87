"""`gmaivl train` and `gmaivl train-chain`."""

from __future__ import annotations

import argparse
import logging


def _train(args: argparse.Namespace) -> int:
    from .recipes import parse_recipe, resolve_recipe_path
    from .train import run_chain, run_stage

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.chain:
        outputs = run_chain(resolve_recipe_path(args.chain), _chain_overrides(args))
        for out in outputs:
            print(out)
        return 0
    if not args.config:
        raise SystemExit("gmaivl train: give --config RECIPE.yaml (or --chain CHAIN.yaml)")
    path = resolve_recipe_path(args.config)
    recipe = parse_recipe(path, args.overrides, source=str(path))
    print(run_stage(recipe))
    return 0


def _chain_overrides(args: argparse.Namespace) -> list[str]:
    return list(args.overrides)


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
    train.set_defaults(func=_train)

    chain = _add_parser(
        subparsers,
        "train-chain",
        help="run a chain of stages (e.g. I -> II -> III -> GRPO), resuming finished ones",
        description="Run the stages of a chain YAML in order; each starts from the previous stage's folder. "
        "Stages already done are skipped; an interrupted one resumes from its last checkpoint.",
    )
    chain.add_argument("--config", required=True, help="chain YAML")
    chain.set_defaults(func=_train_chain)
