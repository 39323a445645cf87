"""`gmaivl eval run`: evaluate a checkpoint (in process) or a served endpoint on a benchmark.

Predictions are written as they come (JSONL) and a rerun resumes; reports go to
`OUTPUT_DIR/<benchmark-name>/`, plus a submission file for VLMEvalKit `.tsv` benchmarks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._flags import non_negative_int, output_dir, positive_float, positive_int, quiet

_QUESTION_TYPES = {"mcq", "closed", "open", "report"}


def _budgets(text: str) -> dict[str, int]:
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in _QUESTION_TYPES or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expects e.g. mcq=32,report=512; got {text!r}")
        out[key.strip()] = int(value)
    return out


def _formats(text: str) -> tuple[str, ...]:
    out = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in out if x not in {"xlsx", "tsv"}]
    if bad:
        raise argparse.ArgumentTypeError(f"takes xlsx and/or tsv, got {bad}")
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint folder or Hub id (in-process generation)")
    p.add_argument("--benchmark", required=True, help="VLMEvalKit .tsv, or a Hugging Face dataset folder/id")
    p.add_argument("--config", help="dataset config name (Hugging Face datasets)")
    p.add_argument(
        "--split", default="test", help="dataset split (Hugging Face datasets; default: %(default)s)"
    )
    p.add_argument(
        "--preset",
        help="vqa-rad, vqa-rad-answer-type, slake, slake-en, omnimedvqa, pmc-vqa (published layouts or "
        "Hugging Face columns); pathvqa, mmmu, report (Hugging Face columns)",
    )
    p.add_argument("--benchmark-name", help="name in reports and the model card (default: from the source)")
    output_dir(p, "reports go to DIR/<benchmark-name>/ (default: %(default)s)", default="eval_results")
    p.add_argument("--predictions", help="predictions JSONL (default DIR/<name>/predictions.jsonl)")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="questions per generate call (default: %(default)s)",
    )
    p.add_argument("--limit", type=positive_int, help="first N questions only")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="ask again the questions a previous run recorded as failed (unreadable or oversize image)",
    )
    p.add_argument(
        "--max-new-tokens", type=_budgets, default={}, help="per question type, e.g. mcq=32,closed=16,open=64"
    )
    p.add_argument("--system-prompt", help="system message put before every question (default: none)")
    p.add_argument("--model-id", help="name recorded in the predictions header (default: --model)")
    p.add_argument("--device", default="auto", help="cuda, cpu, ... (auto: cuda when available)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype of the in-process model (auto: as saved)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the checkpoint's own modelling code (Hub models)",
    )
    p.add_argument(
        "--judge-url", help="OpenAI-compatible base URL (e.g. http://localhost:8000/v1) of an LLM judge"
    )
    p.add_argument("--judge-model", help="model name served at --judge-url")
    p.add_argument(
        "--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key"
    )
    p.add_argument(
        "--submission",
        type=_formats,
        default=("xlsx", "tsv"),
        help="submission formats for .tsv benchmarks (written as DIR/<name>/<name>_submission.*)",
    )
    s = p.add_argument_group("served model (OpenAI-compatible chat endpoint: vLLM, SGLang, TGI, hosted)")
    s.add_argument("--endpoint", help="base URL, e.g. http://localhost:8000/v1 (instead of --model)")
    s.add_argument("--served-model", help="model name the endpoint serves")
    s.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    s.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        help="requests in flight at once (default: %(default)s)",
    )
    s.add_argument(
        "--max-retries",
        type=non_negative_int,
        default=5,
        help="per request, on 429 / 5xx / timeouts; 0: none (default: %(default)s)",
    )
    s.add_argument(
        "--request-timeout",
        type=positive_float,
        default=120.0,
        help="seconds per request (default: %(default)s)",
    )
    quiet(p)


def run(args: argparse.Namespace) -> int:
    from gmaivl.evaluation.extraction import OpenAIJudge
    from gmaivl.evaluation.layouts import detect_layout
    from gmaivl.evaluation.loaders import load_benchmark
    from gmaivl.evaluation.report import slug, write_reports, write_submission
    from gmaivl.evaluation.runner import GenerationFailedError

    if not args.model and not args.endpoint:
        raise ValueError("gmaivl eval run needs --model (in-process) or --endpoint with --served-model")
    if args.endpoint and not args.served_model:
        raise ValueError("--endpoint needs --served-model (the model name the server expects)")
    samples = load_benchmark(
        args.benchmark, name=args.config, split=args.split, preset=args.preset, limit=args.limit
    )
    is_tsv = args.benchmark.lower().endswith(".tsv")
    layout = None if is_tsv else detect_layout(args.benchmark)
    if args.benchmark_name:
        name = args.benchmark_name
    elif layout:
        name = slug(f"{args.preset or layout[0]}-{args.split}")
    else:
        name = slug(Path(args.benchmark).stem if is_tsv else args.benchmark)
    judge = None
    if args.judge_url:
        if not args.judge_model:
            raise ValueError("--judge-url needs --judge-model")
        judge = OpenAIJudge(args.judge_url, args.judge_model, api_key_env=args.judge_api_key_env or None)
    out_dir = Path(args.output_dir) / name
    predictions = Path(args.predictions or out_dir / "predictions.jsonl")
    common = dict(
        benchmark=name,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        judge=judge,
        judge_id=args.judge_model,
        system_prompt=args.system_prompt,
        progress=not args.quiet,
    )
    if args.retry_failed:  # either backend: the failed questions' lines go, so they are asked again
        from gmaivl.evaluation.predictions import forget_failed

        forget_failed(predictions)
    try:
        if args.endpoint:
            result = _run_served(args, samples, predictions, common)
        else:
            result = _run_in_process(args, samples, predictions, common)
    except GenerationFailedError as exc:  # finished predictions are saved; a rerun resumes
        print(f"gmaivl: error: {exc}", file=sys.stderr)
        return 1
    result = {**result, "source": args.benchmark, "split": None if is_tsv else args.split}
    if args.config:
        result["config"] = args.config
    files = write_reports(result, out_dir, print_tables=not args.quiet)
    if is_tsv:
        sub = write_submission(samples, predictions, out_dir / f"{name}_submission", formats=args.submission)
        for kind, path in sub.items():
            print(f"submission ({kind}): {path}", file=sys.stderr)
    if result.get("scored") is False:
        print(f"note: {result['note']}", file=sys.stderr)
    if result.get("failed_rows"):
        failed = result["failed_rows"]
        print(
            f"note: {failed['count']} question(s) failed and are left out of the metrics "
            f"(first: {failed['indices'][:5]}); reasons in results.json `failed_rows`",
            file=sys.stderr,
        )
    print(f"results: {files['json']}", file=sys.stderr)
    return 0


def _run_served(args: argparse.Namespace, samples, predictions: Path, common: dict) -> dict:
    from gmaivl.evaluation.served import ServedModel, run_served_benchmark

    served = ServedModel(
        args.endpoint,
        args.served_model,
        api_key_env=args.api_key_env or None,
        concurrency=args.concurrency,
        max_retries=args.max_retries,
        timeout=args.request_timeout,
    )
    return run_served_benchmark(
        served, samples, predictions, model_id=args.model_id or args.served_model, **common
    )


def _run_in_process(args: argparse.Namespace, samples, predictions: Path, common: dict) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import gmaivl  # registers the GMAI-VL auto classes
    from gmaivl.evaluation.runner import run_benchmark

    gmaivl.register_auto_classes()
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    model = AutoModelForImageTextToText.from_pretrained(
        args.model, dtype=dtype[args.dtype], trust_remote_code=args.trust_remote_code
    )
    model.to(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    return run_benchmark(
        model, processor, samples, predictions, model_id=args.model_id or args.model, **common
    )
