"""Upload a built folder to the Hub as a dataset repository (resumable `HfApi.upload_folder`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Build internals that never go to the Hub: work units, LLM cache, staging folders.
IGNORE_PATTERNS = ["_work/**", ".staging-*/**", "**/.*.tmp", "**/*.tmp"]


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
    """Create the dataset repo if needed and upload the card, report, plot and Parquet configs."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder}: no README.md dataset card; run `gmaivl data build` first")
    api = api or HfApi(token=token)
    if create_repo:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        revision=revision,
        ignore_patterns=IGNORE_PATTERNS,
        commit_message=commit_message or f"Upload {folder.name} built with gmaivl data build",
    )
