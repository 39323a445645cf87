"""Atomic file writes, the one implementation every part uses.

A reader (or a resumed job) sees either the old file or the complete new one, never a torn one:
the data goes to a unique temporary file beside the target, is flushed to disk, and is renamed
over the target (`os.replace` is atomic on POSIX and Windows). Secrets (id keys) go through
`atomic_write_private` / `create_private`, which make files readable by their owner only (0600).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(file)` on a temporary binary file, then rename it to `path` (parents created).

    The file gets the mode a plain `open(path, "w")` would give (0666 less the umask), not the
    0600 of the temporary file: published files stay readable by a server running as another user."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


PRIVATE_MODE = 0o600


def _private_temp(path: Path, data: bytes) -> str:
    """A complete temporary file beside `path` holding `data`, mode 0600 whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, PRIVATE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_private(path: str | os.PathLike, data: bytes) -> Path:
    """`data` to `path` atomically (replacing it), readable and writable by the owner only (0600)."""
    path = Path(path)
    tmp = _private_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def create_private(path: str | os.PathLike, data: bytes) -> bool:
    """Create `path` (mode 0600) holding `data`, complete or not at all; False when it already exists.

    The first of several concurrent writers wins (a hard link never replaces a file), so parallel
    processes agree on one content; readers never see a partial file."""
    path = Path(path)
    tmp = _private_temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, **dumps_kwargs: Any) -> Path:
    """JSON with `indent=2`, `ensure_ascii=False` and `default=str` unless told otherwise.

    Text that is not UTF-8 (a file name with undecodable bytes, held as surrogates) is written
    with `\\u` escapes, which `json.load` reads back to the same string."""
    options = {"indent": 2, "ensure_ascii": False, "default": str, **dumps_kwargs}
    text = json.dumps(data, **options)
    try:
        return atomic_write_bytes(path, text.encode("utf-8"))
    except UnicodeEncodeError:
        return atomic_write_bytes(path, json.dumps(data, **{**options, "ensure_ascii": True}).encode())
