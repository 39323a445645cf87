"""`gmaivl card <checkpoint>`: write the model card from the checkpoint and evaluation results."""

from __future__ import annotations

import argparse
import sys


def run_card(args: argparse.Namespace) -> int:
    from .model_card import write_model_card

    path = write_model_card(
        args.checkpoint,
        out=args.out,
        results=args.results,
        model_name=args.model_name,
        repo_id=args.repo_id,
        license=args.license,
        base_models=args.base_model,
        datasets=args.dataset,
    )
    print(f"model card: {path}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("card", help="write README.md (model card) for a checkpoint folder")
    p.add_argument("checkpoint", help="saved checkpoint folder (config.json, weights, gmaivl_recipe.yaml)")
    p.add_argument(
        "--results",
        nargs="+",
        help="results.json files of `gmaivl eval` (default: CHECKPOINT/evaluation/*/results.json)",
    )
    p.add_argument("--out", help="output path (default: CHECKPOINT/README.md)")
    p.add_argument("--model-name")
    p.add_argument("--repo-id", help="Hub repo id shown in the usage snippet")
    p.add_argument("--license", default="apache-2.0")
    p.add_argument("--base-model", action="append", help="base model Hub id (repeatable)")
    p.add_argument("--dataset", action="append", help="training dataset Hub id (repeatable)")
    p.set_defaults(func=run_card)
