"""Batched, resumable generation over a benchmark, then scoring.

The protocol (written into every predictions header and results file):
greedy decoding (`do_sample=False`), one prompt per question built by `prompts.py` through the
processor's chat template, left padding, a per-question-type token budget, rule-based answer
extraction with an optional LLM judge as the last resort.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from .extraction import Judge
from .metrics import aggregate, score_sample
from .predictions import PredictionsFile
from .prompts import PROMPT_VERSION, check_chat_template, render_prompt
from .samples import EvalSample, benchmark_fingerprint

DEFAULT_MAX_NEW_TOKENS: dict[str, int] = {"mcq": 32, "closed": 16, "open": 64, "report": 512}


def model_identifier(model: Any) -> str:
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return str(name) or type(model).__name__


def _generate(
    model: Any, processor: Any, prompts: list[str], images: list, max_new_tokens: int, extra: dict[str, Any]
) -> list[str]:
    import torch

    tokenizer = processor.tokenizer
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only batched generation needs the prompts flush right
    try:
        inputs = processor(text=prompts, images=images or None, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = old_side
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = {
        k: (v.to(device, dtype) if k == "pixel_values" else v.to(device)) if hasattr(v, "to") else v
        for k, v in inputs.items()
    }
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id, **extra
        )
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def run_benchmark(
    model: Any,
    processor: Any,
    samples: Sequence[EvalSample],
    predictions_path: str | os.PathLike,
    *,
    benchmark: str,
    model_id: str | None = None,
    batch_size: int = 8,
    max_new_tokens: dict[str, int] | None = None,
    judge: Judge | None = None,
    judge_id: str | None = None,
    system_prompt: str | None = None,
    generation_kwargs: dict[str, Any] | None = None,
    breakdown_keys: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the missing predictions (appending to `predictions_path`), then score them all.

    `generation_kwargs` go to `model.generate` on top of greedy decoding (and into the run header).
    """
    check_chat_template(processor)
    budgets = {**DEFAULT_MAX_NEW_TOKENS, **(max_new_tokens or {})}
    protocol = protocol_header(budgets, system_prompt, judge, judge_id)
    protocol["generation_kwargs"] = {k: repr(v) for k, v in sorted((generation_kwargs or {}).items())}

    def generate(batch: list[EvalSample]) -> list[str | None]:
        prompts = [render_prompt(processor, s, system_prompt) for s in batch]
        images = [img for s in batch for img in s.load_images()]
        budget = max(budgets[s.question_type] for s in batch)
        return _generate(model, processor, prompts, images, budget, generation_kwargs or {})

    model_was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        return evaluate(
            samples,
            predictions_path,
            generate,
            benchmark=benchmark,
            model_id=model_id or model_identifier(model),
            protocol=protocol,
            batch_size=batch_size,
            judge=judge,
            breakdown_keys=breakdown_keys,
            progress=progress,
        )
    finally:
        if model_was_training:
            model.train()


def protocol_header(
    budgets: dict[str, int], system_prompt: str | None, judge: Judge | None, judge_id: str | None
) -> dict[str, Any]:
    """The settings that decide the replies; written into the predictions header and results."""
    return {
        "prompt_version": PROMPT_VERSION,
        "decoding": "greedy",
        "max_new_tokens": budgets,
        "system_prompt": system_prompt,
        "generation_kwargs": {},
        "extraction": "rules, then LLM judge" if judge else "rules only",
        "judge": judge_id if judge else None,
    }


class GenerationFailedError(RuntimeError):
    """Some questions got no reply; the finished ones are saved, a rerun retries the rest."""


def evaluate(
    samples: Sequence[EvalSample],
    predictions_path: str | os.PathLike,
    generate: Callable[[list[EvalSample]], list[str | None]],
    *,
    benchmark: str,
    model_id: str,
    protocol: dict[str, Any],
    batch_size: int = 8,
    judge: Judge | None = None,
    breakdown_keys: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The loop shared by every backend: resume, generate the missing replies batch by batch
    (`generate` returns one reply per question, None for a question that failed), store, score.

    Raises `GenerationFailedError` after the loop when some questions failed.
    """
    run = {
        "benchmark": benchmark,
        "benchmark_fingerprint": benchmark_fingerprint(list(samples)),
        "n_questions": len(samples),
        "model": model_id,
        **protocol,
    }
    known = {s.index for s in samples}
    if len(known) != len(samples):
        repeated = sorted(i for i, n in Counter(s.index for s in samples).items() if n > 1)
        raise ValueError(
            f"{benchmark}: question indices must be unique (predictions are keyed by them); "
            f"repeated: {repeated[:5]}"
        )
    store = PredictionsFile(predictions_path, run)
    stray = [i for i in store.records if i not in known]
    if stray:
        raise ValueError(f"{predictions_path}: holds predictions for indices not in {benchmark}: {stray[:5]}")
    todo = [s for s in samples if s.index not in store]
    bar = tqdm(
        total=len(samples), initial=len(samples) - len(todo), desc=f"eval {benchmark}", disable=not progress
    )
    failed: list[str] = []
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            replies = generate(batch)
            records = []
            for sample, reply in zip(batch, replies):
                if reply is None:
                    failed.append(sample.index)
                    continue
                rec = score_sample(sample, reply, judge=judge)
                rec["prediction"] = reply
                records.append(rec)
            store.append(records)
            bar.update(len(batch))
    finally:
        bar.close()
    if failed:
        raise GenerationFailedError(
            f"{benchmark}: {len(failed)} question(s) got no reply (first: {failed[:5]}); "
            f"{len(store)} predictions are saved in {predictions_path}: run again to retry the rest"
        )
    records = [store.records[s.index] for s in samples]
    predictions = {r["index"]: r["prediction"] for r in records}
    result = aggregate(samples, records, predictions, breakdown_keys)
    out = {"benchmark": benchmark, "model": model_id, "protocol": protocol, **result}
    skipped = getattr(samples, "skipped", None)
    if skipped:
        out["skipped_rows"] = skipped
    return out
