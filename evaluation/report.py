"""Results on disk: JSON (the source of truth the model card reads), Markdown tables, bar charts."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

RESULTS_FORMAT = "gmaivl-eval-results/1"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "x"


def markdown_report(result: dict[str, Any]) -> str:
    lines = [f"# {result['benchmark']}: {result['model']}", ""]
    lines += ["| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in result["metrics"].items()]
    lines += [
        "",
        f"Questions: {result['n']} ({', '.join(f'{k}: {v}' for k, v in result['counts'].items())}). "
        f"Unanswerable replies (scored as wrong): {result['unanswerable']['count']}.",
    ]
    if result.get("extraction_methods"):
        lines += [
            "",
            "Answer extraction: "
            + ", ".join(f"{k} {v}" for k, v in result["extraction_methods"].items())
            + ".",
        ]
    for key, table in result.get("breakdowns", {}).items():
        lines += ["", f"## Accuracy by {key}", "", f"| {key} | accuracy | n |", "| --- | --- | --- |"]
        lines += [f"| {name} | {_fmt(row['accuracy'])} | {row['n']} |" for name, row in table.items()]
        lines += [f"| **macro average** | **{_fmt(result['metrics'][f'macro_accuracy/{key}'])}** | |"]
    protocol = result.get("protocol", {})
    if protocol:
        lines += ["", "## Protocol", ""] + [f"- {k}: {v}" for k, v in protocol.items()]
    return "\n".join(lines) + "\n"


def bar_chart(table: dict[str, dict[str, float]], title: str, path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    values = [table[n]["accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 2), 4.0))
    ax.bar(range(len(names)), values, color="#3b7dd8")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    for i, v in enumerate(values):
        ax.text(i, v + 1, f"{v:.1f}", ha="center", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_reports(
    result: dict[str, Any], out_dir: str | os.PathLike, print_tables: bool = True
) -> dict[str, Path]:
    """Write results.json, results.md and one bar chart per breakdown into `out_dir`."""
    out = Path(out_dir)
    result = {"format": RESULTS_FORMAT, **result}
    files = {
        "json": atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str) + "\n")
    }
    md = markdown_report(result)
    files["markdown"] = atomic_write_text(out / "results.md", md)
    for key, table in result.get("breakdowns", {}).items():
        files[f"chart:{key}"] = bar_chart(
            table, f"{result['benchmark']}: accuracy by {key}", out / f"accuracy_by_{_slug(key)}.png"
        )
    if print_tables:
        print(md)
    return files


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read evaluation results ({exc})") from exc
    if data.get("format") != RESULTS_FORMAT or "metrics" not in data:
        raise ValueError(f"{path}: not a gmaivl evaluation results file (format {RESULTS_FORMAT})")
    return data
