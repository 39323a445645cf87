"""`gmaivl data push`: upload a built corpus to a Hub dataset repo (never its local `_work/`)."""

from __future__ import annotations

import argparse

from ._flags import flag


def add_arguments(p: argparse.ArgumentParser) -> None:
    flag(p, "--corpus", "--folder", required=True, help="built corpus folder")
    p.add_argument("--repo-id", required=True, help="Hub dataset repo, e.g. org/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to upload to (default: the main branch)")


def run(args: argparse.Namespace) -> int:
    from gmaivl.dataset_builders.hub import push_folder

    try:
        info = push_folder(args.corpus, args.repo_id, private=args.private, revision=args.revision)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as error:  # Hub, auth and network errors: one line, not a traceback
        raise ValueError(f"push to {args.repo_id} failed: {type(error).__name__}: {error}") from error
    print(info)
    return 0
