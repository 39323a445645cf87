"""Batched, resumable generation over a benchmark, then scoring.

The protocol (written into every predictions header and results file):
greedy decoding (`do_sample=False`), one prompt per question built by `prompts.py` through the
processor's chat template, left padding, a per-question-type token budget, rule-based answer
extraction with an optional LLM judge as the last resort.

A question's token budget depends on its question type only: questions are batched in budget
order and every `generate` call holds questions of one budget, so a reply never depends on its
batch neighbours. A question whose image cannot be read (corrupt, or over `ImageLimits`) fails
alone: it is stored with its reason (`error`), left out of the metrics and counted under
`failed_rows`, and a rerun does not ask it again (`retry_failed=True` does).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from gmaivl.core.tsv import ImageDecodeError, ImageLimits

from .extraction import Judge
from .images import UnreadableImage
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


@dataclass(frozen=True)
class RowError:
    """A question that cannot be asked (its image cannot be read): stored with `reason`, done."""

    reason: str


Reply = str | RowError | None


def load_sample_images(sample: EvalSample, limits: ImageLimits | None = None) -> list[Image.Image]:
    """The sample's images as RGB, each checked against `limits` before it is decoded."""
    return [im if isinstance(im, Image.Image) else im.load(limits) for im in sample.images]


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
    image_limits: ImageLimits | None = None,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Generate the missing predictions (appending to `predictions_path`), then score them all.

    `generation_kwargs` go to `model.generate` on top of greedy decoding (and into the run header,
    with `batch_size`). Each question gets its own type's budget (`max_new_tokens`), whatever
    else is in its batch. `image_limits` (default `ImageLimits.from_env()`) are checked before
    any image is decoded; a question failing them is recorded as failed, not retried unless
    `retry_failed`.
    """
    check_chat_template(processor)
    budgets = {**DEFAULT_MAX_NEW_TOKENS, **(max_new_tokens or {})}
    limits = image_limits or ImageLimits.from_env()
    protocol = protocol_header(budgets, system_prompt, judge, judge_id, batch_size=batch_size)
    protocol["generation_kwargs"] = {k: repr(v) for k, v in sorted((generation_kwargs or {}).items())}

    def generate(batch: list[EvalSample]) -> list[Reply]:
        replies: list[Reply] = [None] * len(batch)
        groups: dict[int, list[tuple[int, EvalSample, list[Image.Image]]]] = {}
        for i, sample in enumerate(batch):
            try:
                images = load_sample_images(sample, limits)
            except ImageDecodeError as exc:
                replies[i] = RowError(str(exc))
                continue
            groups.setdefault(budgets[sample.question_type], []).append((i, sample, images))
        for budget, items in groups.items():  # one generate call per budget: no shared maximum
            prompts = [render_prompt(processor, s, system_prompt) for _, s, _ in items]
            images = [img for _, _, imgs in items for img in imgs]
            texts = _generate(model, processor, prompts, images, budget, generation_kwargs or {})
            for (i, _, _), text in zip(items, texts):
                replies[i] = text
        return replies

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
            group_key=lambda s: budgets[s.question_type],
            retry_failed=retry_failed,
            image_limits=limits,
        )
    finally:
        if model_was_training:
            model.train()


def protocol_header(
    budgets: dict[str, int],
    system_prompt: str | None,
    judge: Judge | None,
    judge_id: str | None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """The settings that decide the replies; written into the predictions header and results.

    `batch_size` (in-process generation) is recorded too: replies do not depend on it by design,
    but padded batches can round differently on some hardware, so a resume must use the same.
    """
    header = {
        "prompt_version": PROMPT_VERSION,
        "decoding": "greedy",
        "max_new_tokens": budgets,
        "system_prompt": system_prompt,
        "generation_kwargs": {},
        "extraction": "rules, then LLM judge" if judge else "rules only",
        "judge": judge_id if judge else None,
    }
    if batch_size is not None:
        header["batch_size"] = batch_size
    return header


class GenerationFailedError(RuntimeError):
    """Some questions got no reply; the finished ones are saved, a rerun retries the rest."""


def _unreadable_reason(sample: EvalSample) -> str | None:
    for im in sample.images:
        if isinstance(im, UnreadableImage):
            return im.reason
    return None


def _generate_isolating(
    generate: Callable[[list[EvalSample]], Sequence[Reply]],
    batch: list[EvalSample],
    limits: ImageLimits | None = None,
) -> list[Reply]:
    """`generate(batch)`; when it raises `ImageDecodeError` (a backend that decodes the images
    itself, as the served one does), the batch's images are read here to find the bad ones: those
    questions fail, the others are asked again together (one by one if that still raises).
    A question whose loader already found its image unreadable (`UnreadableImage`) is not sent."""
    known_bad = {
        i: RowError(str(_unreadable_reason(s))) for i, s in enumerate(batch) if _unreadable_reason(s)
    }
    if known_bad:
        rest = [s for i, s in enumerate(batch) if i not in known_bad]
        replies = iter(_generate_isolating(generate, rest, limits) if rest else [])
        return [known_bad[i] if i in known_bad else next(replies) for i in range(len(batch))]
    try:
        return list(generate(batch))
    except ImageDecodeError as exc:
        if len(batch) == 1:
            return [RowError(str(exc))]
    out: list[Reply] = [None] * len(batch)
    good: list[int] = []
    for i, sample in enumerate(batch):
        try:
            load_sample_images(sample, limits)
        except ImageDecodeError as exc:
            out[i] = RowError(str(exc))
        else:
            good.append(i)
    if good:
        try:
            replies = list(generate([batch[i] for i in good]))
        except ImageDecodeError:
            replies = []
            for i in good:
                try:
                    replies.extend(generate([batch[i]]))
                except ImageDecodeError as exc:
                    replies.append(RowError(str(exc)))
        for i, reply in zip(good, replies):
            out[i] = reply
    return out


def evaluate(
    samples: Sequence[EvalSample],
    predictions_path: str | os.PathLike,
    generate: Callable[[list[EvalSample]], Sequence[Reply]],
    *,
    benchmark: str,
    model_id: str,
    protocol: dict[str, Any],
    batch_size: int = 8,
    judge: Judge | None = None,
    breakdown_keys: Sequence[str] | None = None,
    progress: bool = True,
    group_key: Callable[[EvalSample], Hashable] | None = None,
    retry_failed: bool = False,
    image_limits: ImageLimits | None = None,
) -> dict[str, Any]:
    """The loop shared by every backend: resume, generate the missing replies batch by batch,
    store, score.

    `generate` returns one reply per question: its text; None when it got no reply (a served
    request that ran out of retries: not stored, a rerun asks again); or a `RowError` when the
    question cannot be asked (its image is bad or over the limits: stored with `error`, counted
    under `failed_rows`, left out of the metrics, not asked again unless `retry_failed`).
    `group_key` orders the questions (stably) so that a batch holds questions of one group.
    Raises `GenerationFailedError` after the loop when some questions got no reply.
    """
    image_limits = image_limits or ImageLimits.from_env()
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
    if retry_failed:
        store.forget_failed()
    todo = [s for s in samples if s.index not in store]
    if group_key is not None:
        todo.sort(key=group_key)  # stable: benchmark order within a group
    bar = tqdm(
        total=len(samples), initial=len(samples) - len(todo), desc=f"eval {benchmark}", disable=not progress
    )
    failed: list[str] = []
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            replies = _generate_isolating(generate, batch, image_limits)
            records = []
            for sample, reply in zip(batch, replies):
                if reply is None:
                    failed.append(sample.index)
                    continue
                if isinstance(reply, RowError):
                    records.append(
                        {"index": sample.index, "question_type": sample.question_type,
                         "prediction": "", "error": reply.reason}
                    )  # fmt: skip
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
    errors = {r["index"]: r["error"] for r in records if "error" in r}
    answered = [s for s in samples if s.index not in errors]
    records = [r for r in records if "error" not in r]
    predictions = {r["index"]: r["prediction"] for r in records}
    result = aggregate(answered, records, predictions, breakdown_keys)
    out = {"benchmark": benchmark, "model": model_id, "protocol": protocol, **result}
    skipped = getattr(samples, "skipped", None)
    if skipped:
        out["skipped_rows"] = skipped
    out["image_limits"] = {"max_pixels": image_limits.max_pixels, "max_bytes": image_limits.max_bytes}
    if errors:
        out["failed_rows"] = {"count": len(errors), "indices": list(errors), "reasons": errors}
    return out
