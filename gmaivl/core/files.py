"""Atomic file writes, the one implementation every part uses.

A reader (or a resumed job) sees either the old file or the complete new one, never a torn one:
the data goes to a unique temporary file beside the target, is flushed to disk, and is renamed
over the target (`os.replace` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(file)` on a temporary binary file, then rename it to `path` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, **dumps_kwargs: Any) -> Path:
    """JSON with `indent=2`, `ensure_ascii=False` and `default=str` unless told otherwise."""
    options = {"indent": 2, "ensure_ascii": False, "default": str, **dumps_kwargs}
    return atomic_write_text(path, json.dumps(data, **options))
