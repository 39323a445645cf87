"""Evaluation on medical benchmarks with one written-down protocol (see evaluation/README.md).

- `loaders`: VLMEvalKit TSV (GMAI-MMBench, OmniMedVQA) and Hugging Face VQA datasets -> `EvalSample`.
- `prompts`, `runner`, `predictions`: prompts per question type, batched generation, resumable JSONL.
- `extraction`, `metrics`, `report`: answer reading, scores and breakdowns, JSON/Markdown/plots.
- `bench_build`, `decontam`: GMAI-MMBench-style benchmark construction and overlap checks.
"""
