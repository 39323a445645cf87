"""`gmaivl eval`, `gmaivl bench-build` and `gmaivl decontam`."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path


def _budgets(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in {"mcq", "closed", "open", "report"} or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"--max-new-tokens expects e.g. mcq=32,report=512; got {text!r}")
        out[key.strip()] = int(value)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "benchmark"


def run_eval(args: argparse.Namespace) -> int:
    from .extraction import OpenAIJudge
    from .loaders import load_benchmark
    from .report import write_reports, write_submission
    from .runner import GenerationFailedError

    if not args.model and not args.endpoint:
        raise ValueError("gmaivl eval needs --model (in-process) or --endpoint with --served-model")
    if args.endpoint and not args.served_model:
        raise ValueError("--endpoint needs --served-model (the model name the server expects)")
    samples = load_benchmark(
        args.benchmark, name=args.config, split=args.split, preset=args.preset, limit=args.limit
    )
    is_tsv = args.benchmark.lower().endswith(".tsv")
    name = args.benchmark_name or _slug(Path(args.benchmark).stem if is_tsv else args.benchmark)
    judge = None
    if args.judge_url:
        if not args.judge_model:
            raise ValueError("--judge-url needs --judge-model")
        judge = OpenAIJudge(
            args.judge_url, args.judge_model, api_key=os.environ.get(args.judge_api_key_env or "")
        )
    out_dir = Path(args.out) / name
    predictions = Path(args.predictions or out_dir / "predictions.jsonl")
    common = dict(
        benchmark=name,
        batch_size=args.batch_size,
        max_new_tokens=_budgets(args.max_new_tokens),
        judge=judge,
        judge_id=args.judge_model,
        system_prompt=args.system_prompt,
        progress=not args.quiet,
    )
    if args.endpoint:
        from .served import ServedModel, run_served_benchmark

        served = ServedModel(
            args.endpoint,
            args.served_model,
            api_key=os.environ.get(args.api_key_env or "") or None,
            concurrency=args.concurrency,
            max_retries=args.max_retries,
            timeout=args.request_timeout,
        )
    try:
        if args.endpoint:
            result = run_served_benchmark(
                served, samples, predictions, model_id=args.model_id or args.served_model, **common
            )
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
    print(f"results: {files['json']}", file=sys.stderr)
    return 0


def _run_in_process(args: argparse.Namespace, samples, predictions: Path, common: dict) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import gmaivl  # noqa: F401  (registers the GMAI-VL auto classes)

    from .runner import run_benchmark

    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        args.dtype
    ]
    model = AutoModelForImageTextToText.from_pretrained(
        args.model, dtype=dtype, trust_remote_code=args.trust_remote_code
    )
    model.to(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    return run_benchmark(
        model, processor, samples, predictions, model_id=args.model_id or args.model, **common
    )


def _formats(text: str) -> tuple[str, ...]:
    out = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in out if x not in {"xlsx", "tsv"}]
    if bad:
        raise argparse.ArgumentTypeError(f"--submission takes xlsx and/or tsv, got {bad}")
    return out


def run_bench_build(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.records import iter_records

    from .bench_build import build_benchmark

    summary = build_benchmark(
        iter_records(args.records, split=args.split),
        args.out,
        cases_per_answer=args.cases_per_answer,
        seed=args.seed,
        question_pools=args.question_pools,
        progress=not args.quiet,
    )
    print(
        json.dumps(
            {"tsv": str(summary.path), "questions": summary.n_questions, "skipped": summary.skipped}, indent=2
        )
    )
    return 0


def run_decontam(args: argparse.Namespace) -> int:
    from .decontam import decontamination_report

    report = decontamination_report(
        args.benchmark,
        args.train,
        args.out,
        max_distance=args.max_distance,
        benchmark_split=args.benchmark_split,
        train_split=args.train_split,
        cache=args.cache,
        progress=not args.quiet,
    )
    summary = {k: v for k, v in report.items() if k != "overlaps"}
    print(json.dumps(summary, indent=2))
    for o in report["overlaps"][:20]:
        print(
            f"  overlap: benchmark {o['benchmark_id']} ~ train {o['train_id']} ({o['match']}, distance {o['distance']})"
        )
    if report["overlaps"] and args.fail_on_overlap:
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model on a medical benchmark (resumable)")
    p.add_argument("--model", help="checkpoint folder or Hub id (in-process generation)")
    p.add_argument("--benchmark", required=True, help="VLMEvalKit .tsv, or a Hugging Face dataset folder/id")
    p.add_argument("--config", help="dataset config name (Hugging Face datasets)")
    p.add_argument("--split", default="test")
    p.add_argument("--preset", help="column preset: vqa-rad, slake, slake-en, pathvqa, pmc-vqa, mmmu, report")
    p.add_argument("--benchmark-name", help="name in reports and the model card (default: from the source)")
    p.add_argument("--out", default="eval_results", help="reports go to OUT/<benchmark-name>/")
    p.add_argument("--predictions", help="predictions JSONL (default OUT/<name>/predictions.jsonl)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, help="first N questions only")
    p.add_argument("--max-new-tokens", help="per question type, e.g. mcq=32,closed=16,open=64,report=512")
    p.add_argument("--system-prompt")
    p.add_argument("--model-id", help="name recorded in the predictions header (default: --model)")
    p.add_argument("--device", default="auto", help="cuda, cpu, ... (auto: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument(
        "--judge-url", help="OpenAI-compatible base URL (e.g. http://localhost:8000/v1) for the LLM judge"
    )
    p.add_argument("--judge-model", help="model name served at --judge-url")
    p.add_argument(
        "--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key"
    )
    p.add_argument(
        "--submission",
        type=_formats,
        default=("xlsx", "tsv"),
        help="submission file formats for .tsv benchmarks (written as OUT/<name>/<name>_submission.*)",
    )
    s = p.add_argument_group("served model (OpenAI-compatible chat endpoint: vLLM, SGLang, TGI, hosted)")
    s.add_argument("--endpoint", help="base URL, e.g. http://localhost:8000/v1 (instead of --model)")
    s.add_argument("--served-model", help="model name the endpoint serves")
    s.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    s.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    s.add_argument("--max-retries", type=int, default=5, help="per request, on 429 / 5xx / timeouts")
    s.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_eval)

    b = subparsers.add_parser("bench-build", help="build a GMAI-MMBench-style TSV from standardised records")
    b.add_argument("--records", required=True, help="dataset-builder output folder (with records/)")
    b.add_argument("--out", required=True, help="output .tsv")
    b.add_argument("--split", default=None, help="only records of this split (e.g. test)")
    b.add_argument("--cases-per-answer", type=int, default=30)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--question-pools", help="YAML question pools (default: the packaged ones)")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=run_bench_build)

    d = subparsers.add_parser("decontam", help="find benchmark images that occur in a training corpus")
    d.add_argument(
        "--benchmark", required=True, help=".tsv, records folder, Parquet, image folder or dataset"
    )
    d.add_argument("--train", required=True, help="records folder, Parquet shards, image folder or dataset")
    d.add_argument("--out", required=True, help="JSON report")
    d.add_argument("--max-distance", type=int, default=0, help="pHash Hamming distance for a near duplicate")
    d.add_argument("--benchmark-split")
    d.add_argument("--train-split")
    d.add_argument("--cache", help="JSONL cache of training-image hashes (resumes an interrupted run)")
    d.add_argument("--fail-on-overlap", action="store_true", help="exit with status 1 when overlaps exist")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=run_decontam)
