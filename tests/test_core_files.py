"""`gmaivl.core.files`: atomic writes keep the usual file mode; secrets are the owner's only."""

import os
import stat

from gmaivl.core.files import atomic_write_json, atomic_write_private, atomic_write_text


def test_atomic_writes_get_the_mode_of_a_plain_write_and_secrets_stay_private(tmp_path):
    old = os.umask(0o022)
    try:
        published = atomic_write_text(tmp_path / "README.md", "card")
        report = atomic_write_json(tmp_path / "report.json", {"a": 1})
        key = atomic_write_private(tmp_path / "id.key", b"0" * 32)
    finally:
        os.umask(old)
    assert stat.S_IMODE(published.stat().st_mode) == 0o644  # a server as another user can read it
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert published.read_text() == "card" and not list(tmp_path.glob(".*.tmp"))
