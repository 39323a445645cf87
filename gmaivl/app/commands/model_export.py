"""`gmaivl model export`: a GMAI-VL checkpoint as a native LLaVA folder for vLLM / SGLang / TGI
(`--format llava`), or a LLaVA-1.5 folder as a GMAI-VL one that enters the staged recipe
(`--format gmaivl`). The weights are unchanged; config and processor are rewritten."""

from __future__ import annotations

import argparse

from ._flags import output_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", required=True, choices=["llava", "gmaivl"], help="format to write")
    p.add_argument("--model", help="checkpoint folder to read")
    output_dir(p, "folder to write (must not exist or be empty)")
    p.add_argument("src", nargs="?", help="checkpoint folder to read (same as --model)")
    p.add_argument("dst", nargs="?", help="folder to write (same as --output-dir)")


def run(args: argparse.Namespace) -> int:
    src, dst = args.model or args.src, args.output_dir or args.dst
    if not src or not dst:
        raise ValueError(
            "model export: give the checkpoint (--model SRC) and the folder to write (--output-dir DST)"
        )
    import torch

    from gmaivl.core.export import export_to_llava, import_from_llava

    with torch.no_grad():
        out = export_to_llava(src, dst) if args.format == "llava" else import_from_llava(src, dst)
    print(f"wrote {args.format} checkpoint to {out}")
    return 0
