"""Published ids are keyed hashes of source-relative paths; paths stay in the local work area.

File and folder names of medical datasets often carry patient names, ids or dates
(`DOE_JANE_12345.dcm`, `ZZSMITH JOHN 777/`). A record id is `<source>/<hmac>` with
`hmac = HMAC-SHA256(key, source + relative path)[:16]`: stable across runs, machines and shards that
share the key, and not reversible by guessing names without it. The key comes from (first match)
the environment variable named by `privacy.id_key_env` (`GMAIVL_ID_KEY`), the file
`privacy.id_key_file`, or `_work/id_key` in the output folder (created at random on the first
build; `push` never uploads `_work/`). Builds that must give the same ids (several machines, a
fresh rebuild to compare with) share the key through one of the first two.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spec import BuildSpec


def resolve_id_key(spec: BuildSpec, work: Path) -> bytes:
    """The id key of a build (see the module docstring); creates `_work/id_key` when needed."""
    value = os.environ.get(spec.privacy.id_key_env, "").strip()
    if value:
        return value.encode()
    if spec.privacy.id_key_file:
        path = Path(spec.privacy.id_key_file)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"{spec.spec_file}: privacy.id_key_file {path} unreadable ({error})") from error
        if len(text) < 16:
            raise ValueError(f"{path}: id key too short (at least 16 characters)")
        return text.encode()
    path = work / "id_key"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".id_key.{os.getpid()}.tmp")
        tmp.write_text(secrets.token_hex(32), encoding="utf-8")
        try:  # first writer wins, so parallel processes agree on one key
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip().encode()


def key_digest(key: bytes) -> str:
    """A short public digest of the key (part of the unit fingerprints: new key, new ids)."""
    return hashlib.sha256(b"gmaivl-id-key\x00" + key).hexdigest()[:16]


class IdHasher:
    """`file_id(source, rel)`: the keyed hash (or, with `publish_paths`, the path itself)."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def file_id(self, source: str, rel: str, publish_paths: bool = False) -> str:
        if publish_paths:
            return rel
        message = f"{source}\x1f{Path(rel).as_posix()}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:16]


def scrub(text: str, paths: list[str | Path], replacement: str = "<file>") -> str:
    """`text` with every given path, and each of their components, replaced (longest first)."""
    needles: set[str] = set()
    for path in paths:
        text_path = str(path)
        needles.add(text_path)
        for part in Path(text_path).parts:
            if part not in ("/", ".", "..") and len(part) >= 2:
                needles.add(part)
                stem = part.split(".")[0]
                if len(stem) >= 2:
                    needles.add(stem)
    for needle in sorted(needles, key=len, reverse=True):
        pattern = rf"(?<![A-Za-z0-9]){re.escape(needle)}(?![A-Za-z0-9])"
        text = re.sub(pattern, replacement, text, flags=re.IGNORECASE)
    return text
