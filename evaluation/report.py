"""Results on disk: JSON (the source of truth the model card reads), Markdown tables, bar charts,
and the VLMEvalKit submission file.

Values from the data (benchmark and model names, category values, failure reasons, the system
prompt) are escaped in `results.md` (`gmaivl.core.markdown`): a `|` or `<img ...>` in a category
value stays text inside its cell. In the `.xlsx` submission a cell starting with `=`, `+`, `-`,
`@`, tab or CR is stored as a text cell with Excel's quote prefix, so it is never a formula,
while its value reads back unchanged (pandas, openpyxl, VLMEvalKit); in the `.tsv` submission,
which has no cell types, such a value gets a leading `'` (OWASP's CSV-injection rule).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from gmaivl.core.files import atomic_write, atomic_write_text
from gmaivl.core.markdown import md_code, md_text

RESULTS_FORMAT = "gmaivl-eval-results/1"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as a formula (OWASP)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def slug(text: str, default: str = "benchmark") -> str:
    """A file-name-safe form of a benchmark or column name (`GMAI MMBench/VAL` -> `GMAI_MMBench_VAL`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or default


def markdown_report(result: dict[str, Any]) -> str:
    """`results.md`: the metrics, counts, breakdowns and protocol, data values escaped."""
    t = md_text
    lines = [f"# {t(result['benchmark'])}: {t(result['model'])}", ""]
    counts = ", ".join(f"{t(k)}: {v}" for k, v in result["counts"].items())
    if result.get("scored") is False:
        lines += [f"Questions: {result['n']} ({counts}). Scoring skipped: {result['note']}."]
    else:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {t(k)} | {_fmt(v)} |" for k, v in result["metrics"].items()]
        lines += [
            "",
            f"Questions: {result['n']} ({counts}). "
            f"Unanswerable replies (scored as wrong): {result['unanswerable']['count']}.",
        ]
        if result.get("leaderboard_metric"):
            value = result["metrics"][result["leaderboard_metric"]]
            lines += [
                "",
                f"**Leaderboard figure: {md_code(result['leaderboard_metric'])} = {_fmt(value)}.** "
                f"{result['note']}",
            ]
    if result.get("skipped_rows"):
        lines += [
            "",
            "Rows skipped: " + ", ".join(f"{t(k)} {v}" for k, v in result["skipped_rows"].items()) + ".",
        ]
    failed = result.get("failed_rows")
    if failed:
        lines += [
            "",
            f"Rows that failed (image unreadable or over the limits; left out of every metric, "
            f"not asked again on a rerun): {failed['count']}.",
            "",
            "| index | reason |",
            "| --- | --- |",
        ]
        lines += [f"| {t(i)} | {t(reason)} |" for i, reason in failed["reasons"].items()]
    if result.get("extraction_methods"):
        lines += [
            "",
            "Answer extraction: "
            + ", ".join(f"{t(k)} {v}" for k, v in result["extraction_methods"].items())
            + ".",
        ]
    for key, table in result.get("breakdowns", {}).items():
        lines += ["", f"## Accuracy by {t(key)}", "", f"| {t(key)} | accuracy | n |", "| --- | --- | --- |"]
        lines += [f"| {t(name)} | {_fmt(row['accuracy'])} | {row['n']} |" for name, row in table.items()]
        lines += [f"| **macro average** | **{_fmt(result['metrics'][f'macro_accuracy/{key}'])}** | |"]
    protocol = result.get("protocol", {})
    if protocol:
        lines += ["", "## Protocol", ""] + [f"- {t(k)}: {t(v)}" for k, v in protocol.items()]
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
    path = atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
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
            table, f"{result['benchmark']}: accuracy by {key}", out / f"accuracy_by_{slug(key).lower()}.png"
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


def write_submission(
    samples: Any, predictions_path: str | os.PathLike, out_base: str | os.PathLike, formats=("xlsx", "tsv")
) -> dict[str, Path]:
    """VLMEvalKit-style submission: the benchmark's own columns (image left out, index, options
    and categories as read) plus `prediction`, the model's raw reply, in the benchmark's order.

    `samples` come from `load_vlmevalkit_tsv` (their `source_row`); `out_base` gets `.xlsx`
    (openpyxl, as VLMEvalKit writes it) and/or `.tsv`.
    """
    import pandas as pd

    replies: dict[str, str] = {}
    with open(predictions_path, encoding="utf-8") as fh:
        next(fh, None)  # header
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                replies[str(rec["index"])] = rec["prediction"]
    missing = [s.index for s in samples if s.index not in replies]
    if missing:
        raise ValueError(
            f"{predictions_path}: no prediction for {len(missing)} question(s), e.g. {missing[:5]}"
        )
    columns = list(getattr(samples, "columns", None) or samples[0].source_row)
    rows = [
        {**{c: s.source_row.get(c, "") for c in columns}, "prediction": replies[s.index]} for s in samples
    ]
    frame = pd.DataFrame(rows, columns=[*[c for c in columns if c != "prediction"], "prediction"], dtype=str)
    out_base = Path(out_base)
    files: dict[str, Path] = {}
    if "tsv" in formats:
        safe = frame.map(neutralise_formula).rename(columns=neutralise_formula)
        text = safe.to_csv(sep="\t", index=False)
        files["tsv"] = atomic_write_text(out_base.with_suffix(".tsv"), text)
    if "xlsx" in formats:
        files["xlsx"] = atomic_write(out_base.with_suffix(".xlsx"), lambda f: _write_xlsx(frame, f))
    return files


def neutralise_formula(value: Any) -> Any:
    """OWASP's rule for CSV injection: text that a spreadsheet would read as a formula (it starts
    with `=`, `+`, `-`, `@`, tab or CR) gets a leading `'`, so it opens as text."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _xlsx_cell(ws: Any, value: Any) -> Any:
    """A write-only cell; text that a spreadsheet would read as a formula stays text."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if isinstance(value, str):
        value = ILLEGAL_CHARACTERS_RE.sub("", value)
    cell = WriteOnlyCell(ws, value=value)
    if isinstance(value, str) and value.startswith(FORMULA_START):
        cell.data_type = "s"  # openpyxl makes "=..." a formula otherwise
        cell.quotePrefix = True  # Excel's leading apostrophe: text even after editing the cell
    return cell


def _write_xlsx(frame: Any, fh: Any) -> None:
    """`frame` (strings) as a one-sheet workbook, header first, as `DataFrame.to_excel` lays it out."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Sheet1")
    ws.append([_xlsx_cell(ws, str(c)) for c in frame.columns])
    for row in frame.itertuples(index=False, name=None):
        ws.append([_xlsx_cell(ws, v) for v in row])
    wb.save(fh)
