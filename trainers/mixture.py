"""Build a stage's training set from the recipe's sources, ratios and quality filters."""

from __future__ import annotations

import logging
import math
from typing import Any

from datasets import Dataset, concatenate_datasets

from gmaivl.core.hf_datasets import open_dataset

from .configs import StageFields

logger = logging.getLogger(__name__)


def load_source(source: dict[str, Any]) -> Dataset:
    """Load one source: a `save_to_disk` folder, a data file, a local dataset folder or a Hub id."""
    path = str(source["path"])
    split = source.get("split", "train")
    if path.startswith("toy:"):
        from .toy import load_toy

        return load_toy(source)
    return open_dataset(path, source.get("name"), split=split, data_files=source.get("data_files"))


def sample_ratio(ds: Dataset, ratio: float, seed: int) -> Dataset:
    """Keep a `ratio` share of the rows (random, seeded); above 1, repeat whole copies plus a share."""
    n = len(ds)
    if ratio == 1.0 or n == 0:
        return ds
    whole, frac = math.floor(ratio), ratio - math.floor(ratio)
    parts = [ds] * whole
    k = round(frac * n)
    if k:
        parts.append(ds.shuffle(seed=seed).select(range(k)))
    if not parts:
        return ds.select([])
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def assistant_text(messages: list[dict[str, Any]]) -> str:
    out = []
    for m in messages:
        if m.get("role") != "assistant":
            continue
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "".join(out)


def quality_filter(ds: Dataset, args: StageFields, source_name: str) -> Dataset:
    """Drop too-short answers and rows with a poor judge score (GMAI-VL stage III)."""
    before = len(ds)
    if args.min_response_chars > 0 and "messages" in ds.column_names:
        limit = args.min_response_chars
        ds = ds.filter(lambda msgs: len(assistant_text(msgs).strip()) >= limit, input_columns="messages")
    col = args.quality_score_column
    if (args.max_quality_score is not None or args.min_quality_score is not None) and col in ds.column_names:
        lo, hi = args.min_quality_score, args.max_quality_score

        def keep(score: Any) -> bool:
            if score is None:
                return True  # unscored rows (e.g. public sets) are kept
            s = float(score)
            return (lo is None or s >= lo) and (hi is None or s <= hi)

        ds = ds.filter(keep, input_columns=col)
    if len(ds) < before:
        logger.info("%s: quality filter kept %d of %d rows", source_name, len(ds), before)
    return ds


def build_mixture(args: StageFields, stats: list[tuple[str, int, float, int]] | None = None) -> Dataset:
    """Load, filter and sub-sample every source, tag rows with their source, concatenate and shuffle.

    `stats`, when given, receives per source: (name, rows after filters, ratio, rows used).
    """
    if not args.datasets:
        raise ValueError("the recipe lists no `datasets`")
    parts = []
    for i, source in enumerate(args.datasets):
        ratio = float(source.get("ratio", 1.0))
        name = str(source.get("source") or source.get("name") or source["path"])
        if ratio == 0:
            continue
        ds = load_source(source)
        for required in ("messages",):
            if required not in ds.column_names and "question" not in ds.column_names:
                raise ValueError(f"data source {name!r}: no `{required}` column (columns: {ds.column_names})")
        ds = quality_filter(ds, args, name)
        filtered = len(ds)
        ds = sample_ratio(ds, ratio, seed=args.mixture_seed + i)
        if stats is not None:
            stats.append((name, filtered, ratio, len(ds)))
        if "mixture_source" not in ds.column_names:
            ds = ds.add_column("mixture_source", [name] * len(ds))
        logger.info("%s: %d rows at ratio %.3g", name, len(ds), ratio)
        parts.append(ds)
    if not parts:
        raise ValueError("every source of the mixture has ratio 0 for this stage")
    mixed = _concatenate(parts).shuffle(seed=args.mixture_seed)
    if args.max_train_samples is not None:
        mixed = mixed.select(range(min(args.max_train_samples, len(mixed))))
    if len(mixed) == 0:
        raise ValueError("the mixture is empty after filtering and sampling")
    return mixed


def _concatenate(parts: list[Dataset]) -> Dataset:
    """Concatenate sources whose metadata columns differ: keep the columns every source has."""
    common = set(parts[0].column_names)
    for p in parts[1:]:
        common &= set(p.column_names)
    parts = [p.select_columns([c for c in p.column_names if c in common]) for p in parts]
    try:
        return concatenate_datasets(parts)
    except ValueError:
        # e.g. `images` typed as an empty list in a text-only source: align features on the first
        features = parts[0].features
        return concatenate_datasets([parts[0], *[p.cast(features) for p in parts[1:]]])


def load_training_data(
    script_args: Any, training_args: StageFields, stats: list[tuple[str, int, float, int]] | None = None
) -> Dataset:
    """The stage's rows: the recipe's `datasets` mixture, or TRL's `dataset_name` (+ `dataset_config`)."""
    if training_args.datasets:
        if script_args.dataset_name:
            logger.warning("both `datasets` and `dataset_name` given: using the `datasets` mixture")
        return build_mixture(training_args, stats)
    if script_args.dataset_name:
        source = {
            "path": script_args.dataset_name,
            "name": script_args.dataset_config,
            "split": script_args.dataset_train_split,
        }
        return load_source(source)
    raise ValueError("the recipe lists no `datasets` and no `dataset_name`")
