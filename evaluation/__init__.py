"""Evaluation on medical benchmarks with one written-down protocol (see evaluation/README.md).

- `loaders`: VLMEvalKit TSV (GMAI-MMBench, OmniMedVQA) and Hugging Face VQA datasets -> `EvalSample`.
- `prompts`, `runner`, `predictions`: prompts per question type, batched generation, resumable JSONL.
- `extraction`, `metrics`, `report`: answer reading, scores and breakdowns, JSON/Markdown/plots.
- `bench_build`, `decontam`: GMAI-MMBench-style benchmark construction and overlap checks.
"""

if __name__ != "gmaivl.evaluation":  # imported by its folder name from a checkout: see gmaivl/_checkout.py
    import pathlib
    import runpy

    runpy.run_path(str(pathlib.Path(__file__).parents[1] / "gmaivl" / "_checkout.py"))["hand_over"](__name__)
