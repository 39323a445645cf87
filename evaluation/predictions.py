"""A resumable predictions file (JSONL).

Line 1 is a header describing the run (benchmark fingerprint, model, prompt version, generation
settings). Every further line is one answered question, appended and flushed batch by batch, so
an interrupted run keeps what it finished. Re-opening checks the header: a file written by a
different run (other benchmark, model or settings) is refused with an error naming the file and
the differing fields. A torn last line (a crash mid-write) is dropped.

A question that could not be asked (its image is unreadable or over the image limits) is stored
like an answered one, with `"prediction": ""` and its reason under `"error"`: it counts as done,
so a rerun does not ask it again. `forget_failed` drops those lines (`run_benchmark(...,
retry_failed=True)`, `gmaivl eval run --retry-failed`), so the next run asks them again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gmaivl.core.files import atomic_write_text

HEADER_KEY = "gmaivl_predictions"
FORMAT_VERSION = 1


class PredictionsMismatchError(ValueError):
    """The predictions file belongs to another run."""


class PredictionsFile:
    def __init__(self, path: str | os.PathLike, run: dict[str, Any]) -> None:
        self.path = Path(path)
        self.run = json.loads(json.dumps(run, sort_keys=True, default=str))
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists() and self.path.stat().st_size > 0:
            self._load()
        else:
            atomic_write_text(self.path, json.dumps({HEADER_KEY: FORMAT_VERSION, "run": self.run}) + "\n")

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError as exc:
            raise PredictionsMismatchError(f"{self.path}: first line is not a predictions header") from exc
        if not isinstance(header, dict) or header.get(HEADER_KEY) != FORMAT_VERSION:
            raise PredictionsMismatchError(
                f"{self.path}: not a gmaivl predictions file (no '{HEADER_KEY}' header)"
            )
        theirs = header.get("run", {})
        diff = sorted(k for k in set(theirs) | set(self.run) if theirs.get(k) != self.run.get(k))
        if diff:
            detail = "; ".join(f"{k}: file has {theirs.get(k)!r}, this run {self.run.get(k)!r}" for k in diff)
            raise PredictionsMismatchError(
                f"{self.path} was written by another run ({detail}). Use a new --predictions path "
                "or delete the file to start over."
            )
        good = [lines[0]]
        for number, line in enumerate(lines[1:], start=2):
            try:
                rec = json.loads(line)
                if not line.endswith("\n"):
                    raise json.JSONDecodeError("torn line", line, len(line))
            except json.JSONDecodeError:
                if number == len(lines):  # torn final line from an interrupted write: drop it
                    break
                raise PredictionsMismatchError(f"{self.path} line {number}: not valid JSON") from None
            self.records[str(rec["index"])] = rec
            good.append(line)
        if len(good) != len(lines):
            atomic_write_text(self.path, "".join(good))

    def __contains__(self, index: str) -> bool:
        return index in self.records

    def __len__(self) -> int:
        return len(self.records)

    @property
    def failed(self) -> dict[str, str]:
        """Index -> reason of the questions stored as failed."""
        return {i: r["error"] for i, r in self.records.items() if "error" in r}

    def forget_failed(self) -> int:
        """Drop the failed questions' lines (atomically), so they are asked again; how many."""
        dropped = forget_failed(self.path)
        self.records = {i: r for i, r in self.records.items() if "error" not in r}
        return dropped

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append finished records durably (flush + fsync), one JSON object per line."""
        with self.path.open("a", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
                self.records[str(rec["index"])] = rec
            fh.flush()
            os.fsync(fh.fileno())


def forget_failed(path: str | os.PathLike) -> int:
    """Rewrite the predictions file at `path` without its failed questions (records with an
    `error`); returns how many lines were dropped (0 when there is no such file)."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or HEADER_KEY not in header:
        return 0  # not a predictions file: left alone (opening it says so)
    keep = lines[:1]
    for line in lines[1:]:
        try:
            failed = "error" in json.loads(line)
        except json.JSONDecodeError:
            failed = False  # a torn line: left for `PredictionsFile` to judge
        if not failed:
            keep.append(line)
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(keep))
    return len(lines) - len(keep)
