"""`gmaivl quickstart`: the GMAI-VL stage ablation (the GMAI-VL paper's Table 7) in miniature on a
CPU: a corpus built from real medical files with planted findings, a held-out benchmark, a small
GMAI-VL trained through stages I, II, III and GRPO, and held-out accuracy after every stage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._flags import non_negative_int, positive_int, quiet


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output-dir", default="runs/quickstart", help="where everything is written (default: %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the data, the model and training (default: %(default)s)",
    )
    p.add_argument(
        "--small",
        action="store_true",
        help="reduced sizes (about 3 min): learns, but less than the whole run",
    )
    p.add_argument(
        "--arms",
        action="store_true",
        help="Table 7's four arms (stage1, 1+2, 1+3, 1+2+3) from one stage I checkpoint, with the "
        "longer stage 0 and the stage I recipe under which stage I alone answers, and one more stage "
        "III (measured with --small: 15.5 min at one thread on shared cores)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads (default: min(2, CPU count)); 1 if the cores are shared",
    )
    quiet(p)


def run(args: argparse.Namespace) -> int:
    from gmaivl.app.quickstart import QuickstartConfig, arms_config, run_quickstart, small_config

    cfg = QuickstartConfig(seed=args.seed, progress=not args.quiet)
    if args.threads:
        cfg.num_threads = args.threads
    if args.small:
        cfg = small_config(cfg)
    if args.arms:
        cfg = arms_config(cfg)
    results = run_quickstart(args.output_dir, cfg)
    print(Path(args.output_dir, "results.md").read_text())
    keys = ("chance", "chance_by_task", "decontam_overlap", "stages", "blank_images", "shuffled_images")
    summary = {k: results[k] for k in (*keys, "arms") if k in results}
    print(json.dumps(summary, indent=2))
    return 0
