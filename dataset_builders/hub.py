"""Upload a built folder to the Hub as a dataset repository: an allow-list, never the folder.

`publishable_files(folder)` names what a push sends: the card `README.md`, `build_report.json`,
the plot `statistics.png`, and the Parquet files that the card's `configs` name (their
`data_files` patterns). Nothing else goes, whatever the folder holds: no `_work/` (the id key,
the LLM cache, local failure paths) at any depth, no hidden file or folder (`.env`), no symbolic
link (it may point anywhere), no stray file (`id.key`, notes, a copied source).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from .card import CONFIG_ORDER

# What the build writes for publication besides the Parquet configs (build.py writes the report,
# card.py the card and the plot); only these top-level names, and only as regular files.
PUBLISHED_FILES = ("README.md", "build_report.json", "statistics.png")


def _regular(path: Path) -> bool:
    """A regular file, not a link (`lstat`: a link is never followed)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def card_data_files(card: str | Path) -> dict[str, list[str]]:
    """The `data_files` patterns of each config in a dataset card's YAML (config -> patterns)."""
    from huggingface_hub import DatasetCard

    configs = DatasetCard.load(Path(card)).data.to_dict().get("configs") or []
    patterns: dict[str, list[str]] = {}
    for config in configs:
        files = config.get("data_files") or []
        entries = [files] if isinstance(files, str | dict) else list(files)
        found: list[str] = []
        for entry in entries:
            paths = entry.get("path", []) if isinstance(entry, dict) else entry
            found += [paths] if isinstance(paths, str) else list(paths)
        patterns[str(config.get("config_name", "default"))] = found
    return patterns


def _matches(rel: str, pattern: str) -> bool:
    """The Hub's `data_files` glob: `*` stays within one folder, `**` crosses folders."""
    if "**" in pattern:
        return fnmatch.fnmatchcase(rel, pattern)
    parts, wanted = PurePosixPath(rel).parts, PurePosixPath(pattern).parts
    return len(parts) == len(wanted) and all(map(fnmatch.fnmatchcase, parts, wanted))


def _candidates(folder: Path) -> list[str]:
    """Relative paths of the regular files under `folder`, outside hidden and `_` folders."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")) and not os.path.islink(Path(top, d)))
        for name in sorted(files):
            path = Path(top, name)
            if not name.startswith(".") and _regular(path):
                found.append(path.relative_to(folder).as_posix())
    return found


def publishable_files(folder: str | Path) -> list[str]:
    """The paths (relative, sorted) that `push_folder` uploads; see the module docstring.

    Raises `FileNotFoundError` without a regular `README.md`, and `ValueError` when a config of
    the card names no Parquet file of the folder (a card and folder that disagree)."""
    folder = Path(folder)
    if not _regular(folder / "README.md"):
        raise FileNotFoundError(
            f"{folder}: no README.md dataset card (a regular file); run `gmaivl data build` first"
        )
    patterns = card_data_files(folder / "README.md")
    parquet = [p for p in _candidates(folder) if p.endswith(".parquet")]
    chosen = {name for name in PUBLISHED_FILES if _regular(folder / name)}
    for config, config_patterns in patterns.items():
        matched = [p for p in parquet if any(_matches(p, pattern) for pattern in config_patterns)]
        if not matched:
            raise ValueError(
                f"{folder}: the card's config {config!r} names {', '.join(config_patterns) or 'no data_files'} "
                "but the folder has no such Parquet file; rebuild with `gmaivl data publish`"
            )
        chosen.update(matched)
    return sorted(chosen)


def _literal(path: str) -> str:
    """An `fnmatch` pattern matching exactly `path`."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def push_folder(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_repo: bool = True,
    api: Any = None,
) -> Any:
    """Create the dataset repo if needed and upload `publishable_files(folder)` (`HfApi.upload_folder`
    with that allow-list; resumable with `hf_xet`). Parquet files of the configs already on the Hub
    that this build did not write are deleted in the same commit (a larger earlier build's shards
    would otherwise be read with the new ones)."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    files = publishable_files(folder)
    api = api or HfApi(token=token)
    if create_repo:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        revision=revision,
        allow_patterns=[_literal(p) for p in files],
        delete_patterns=[f"{config}/*.parquet" for config in CONFIG_ORDER],
        commit_message=commit_message or f"Upload {folder.name} built with gmaivl data build",
    )
