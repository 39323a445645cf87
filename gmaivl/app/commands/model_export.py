"""`gmaivl model export`: a GMAI-VL checkpoint as a native LLaVA folder for vLLM / SGLang / TGI
(`--format llava`), or a LLaVA-1.5 folder as a GMAI-VL one that enters the staged recipe
(`--format gmaivl`). The weights are unchanged; config and processor are rewritten."""

from __future__ import annotations

import argparse

from ._flags import resolve_source_and_destination, source_and_destination


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, choices=["llava", "gmaivl"], help="format to write")
    source_and_destination(p)


def run(args: argparse.Namespace) -> int:
    src, dst = resolve_source_and_destination(args, "model export")
    import torch

    from gmaivl.core.export import export_to_llava, import_from_llava

    with torch.no_grad():
        out = export_to_llava(src, dst) if args.format == "llava" else import_from_llava(src, dst)
    print(f"wrote {args.format} checkpoint to {out}")
    return 0
