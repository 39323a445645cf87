"""`gmaivl data push`: upload a built corpus to a Hub dataset repo: the card, the build report and
plot, and the Parquet files the card's configs name; never `_work/`, hidden files, links or strays."""

from __future__ import annotations

import argparse

from ._flags import flag


def add_arguments(p: argparse.ArgumentParser) -> None:
    flag(p, "--corpus", "--folder", required=True, help="built corpus folder")
    p.add_argument("--repo-id", required=True, help="Hub dataset repo, e.g. org/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to upload to (default: the main branch)")
    p.add_argument(
        "--dry-run", action="store_true", help="list the files that would be uploaded; contact nothing"
    )


def run(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.hub import publishable_files, push_folder

    if args.dry_run:
        files = publishable_files(args.corpus)
        print("\n".join(files))
        print(f"{len(files)} files would be uploaded to {args.repo_id}")
        return 0
    try:
        info = push_folder(args.corpus, args.repo_id, private=args.private, revision=args.revision)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as error:  # Hub, auth and network errors: one line, not a traceback
        raise ValueError(f"push to {args.repo_id} failed: {type(error).__name__}: {error}") from error
    print(info)
    return 0
