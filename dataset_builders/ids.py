"""Published ids are keyed hashes of source-relative paths; paths stay in the local work area.

File and folder names of medical datasets often carry patient names, ids or dates
(`DOE_JANE_12345.dcm`, `ZZSMITH JOHN 777/`). A record id is `<source>/<hmac>` with
`hmac = HMAC-SHA256(key, source + relative path)[:16]`: stable across runs, machines and shards that
share the key, and not reversible by guessing names without it. The key comes from (first match)
the environment variable named by `privacy.id_key_env` (`GMAIVL_ID_KEY`), the file
`privacy.id_key_file`, or `_work/id_key` in the output folder (created at random on the first
build, mode 0600; `push` never uploads `_work/`). Builds that must give the same ids (several
machines, a fresh rebuild to compare with) share the key through one of the first two. A key of
fewer than `MIN_KEY_CHARS` (32) characters, e.g. 32 hex digits = 16 random bytes, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from gmaivl.core.files import create_private

if TYPE_CHECKING:
    from .spec import BuildSpec

# 32 hex digits carry 16 random bytes; a shorter key can be guessed, and with it every file name
MIN_KEY_CHARS = 32


def _checked_key(text: str, where: str) -> bytes:
    """`text` as key bytes; a short key is refused naming where it came from (never the key)."""
    if len(text) < MIN_KEY_CHARS:
        raise ValueError(
            f"{where}: id key too short ({len(text)} characters, at least {MIN_KEY_CHARS}: e.g. "
            "`python -c 'import secrets; print(secrets.token_hex(16))'`)"
        )
    return text.encode()


def resolve_id_key(spec: BuildSpec, work: Path) -> bytes:
    """The id key of a build (see the module docstring); creates `_work/id_key` (0600) when needed."""
    env = spec.privacy.id_key_env
    value = os.environ.get(env, "").strip()
    if value:
        return _checked_key(value, f"${env} (privacy.id_key_env)")
    if spec.privacy.id_key_file:
        path = Path(spec.privacy.id_key_file)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"{spec.spec_file}: privacy.id_key_file {path} unreadable ({error})") from error
        return _checked_key(text, f"{spec.spec_file}: privacy.id_key_file {path}")
    path = work / "id_key"
    if not path.is_file():
        create_private(path, secrets.token_hex(32).encode())  # first writer wins: one key per build
    elif stat.S_IMODE(path.stat().st_mode) & 0o077:  # made by an older version, or copied
        os.chmod(path, 0o600)
    return _checked_key(path.read_text(encoding="utf-8").strip(), str(path))


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
        # a file name that is not UTF-8 arrives with surrogate escapes: hash its bytes
        message = f"{source}\x1f{Path(rel).as_posix()}".encode("utf-8", "surrogateescape")
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
