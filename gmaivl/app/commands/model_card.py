"""`gmaivl model card`: write README.md (model card with `model-index`) for a checkpoint folder."""

from __future__ import annotations

import argparse
import sys

from ._flags import flag, output_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help=argparse.SUPPRESS)  # the earlier positional form
    p.add_argument("--model", help="checkpoint folder (config.json, weights, gmaivl_recipe.yaml)")
    flag(
        p,
        "--results",
        nargs="+",
        help="results.json files of `gmaivl eval run` (default: MODEL/evaluation/*/results.json)",
    )
    output_file(p, "output path (default: MODEL/README.md)")
    p.add_argument("--model-name", help="name in the card's title and model-index (default: the folder name)")
    p.add_argument("--repo-id", help="Hub repo id shown in the usage snippet")
    p.add_argument(
        "--license", default="apache-2.0", help="license id in the card metadata (default: %(default)s)"
    )
    p.add_argument("--base-model", action="append", help="base model Hub id (repeatable)")
    p.add_argument("--dataset", action="append", help="training dataset Hub id (repeatable)")


def run(args: argparse.Namespace) -> int:
    from gmaivl.model_cards.model_card import write_model_card

    model = args.model or args.checkpoint
    if not model:
        raise ValueError("model card: give --model CHECKPOINT_FOLDER")
    path = write_model_card(
        model,
        out=args.output,
        results=args.results,
        model_name=args.model_name,
        repo_id=args.repo_id,
        license=args.license,
        base_models=args.base_model,
        datasets=args.dataset,
    )
    print(f"model card: {path}", file=sys.stderr)
    return 0
