"""Annotation files read with a bound on memory: JSON Lines one line at a time, never a line
longer than `InputLimits.max_line_bytes` in memory; whole JSON files only below a size bound."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .imaging import InputLimits, Oversize

#: A whole `.json` annotation file may be this many times `max_line_bytes` (1 GiB by default).
JSON_FILE_FACTOR = 16


def iter_json_lines(path: Path, max_line_bytes: int) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) per non-blank line. A line that is not JSON or is longer than
    `max_line_bytes` gives `{"__error__": message, "__kind__": "invalid_json" | "oversize"}`; the
    rest of an oversize line is skipped in bounded reads."""
    with open(path, "rb") as handle:
        number = 0
        while True:
            line = handle.readline(max_line_bytes + 1)
            if not line:
                return
            number += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                message = f"line {number}: longer than limits.max_line_bytes={max_line_bytes:,}"
                yield number, {"__error__": message, "__kind__": "oversize"}
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                yield (
                    number,
                    {"__error__": f"line {number}: invalid JSON ({error})", "__kind__": "invalid_json"},
                )


def load_json(path: Path, limits: InputLimits) -> Any:
    """A whole JSON file, refused (`Oversize`) above `JSON_FILE_FACTOR * max_line_bytes` bytes."""
    size = path.stat().st_size
    if size > JSON_FILE_FACTOR * limits.max_line_bytes:
        raise Oversize(
            f"{path}: {size:,} bytes, over {JSON_FILE_FACTOR} x limits.max_line_bytes for a JSON file "
            "(write it as JSON Lines to stream it)"
        )
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
