"""`gmaivl model import --from enhanced-llava|llava-original SRC DST`: the official GMAI-VL release
(`enhanced_llava`) or an original-LLaVA-repo checkpoint (LLaVA-1.5, LLaVA-Med v1.5) as a GMAI-VL
folder with its Hub code, which enters the staged recipe and loads with `trust_remote_code`."""

from __future__ import annotations

import argparse

from ._flags import resolve_source_and_destination, source_and_destination


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from",
        dest="source_format",
        required=True,
        choices=["enhanced-llava", "llava-original"],
        help="format of SRC: the official GMAI-VL release, or haotian-liu/LLaVA's layout",
    )
    source_and_destination(p)
    p.add_argument(
        "--vision-tower",
        help="llava-original: local CLIP folder that the checkpoint's mm_vision_tower names "
        "(default: mm_vision_tower itself, when it is a local folder)",
    )
    p.add_argument(
        "--conv-mode",
        choices=["llava_v1", "mistral_instruct"],
        help="llava-original: LLaVA conversation template (default: mistral_instruct for llava_mistral, "
        "else llava_v1)",
    )


def run(args: argparse.Namespace) -> int:
    src, dst = resolve_source_and_destination(args, "model import")
    import torch

    from gmaivl.core.model_import import import_checkpoint

    with torch.no_grad():
        out = import_checkpoint(
            src, dst, args.source_format, vision_tower=args.vision_tower, conv_mode=args.conv_mode
        )
    print(f"wrote GMAI-VL checkpoint (from {args.source_format}) to {out}")
    return 0
