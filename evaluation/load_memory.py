"""Peak memory of loading a GMAI-MMBench-sized TSV: the lazy loader against decoding up front.

    python -m gmaivl.evaluation.load_memory --questions 2000 --size 512

Writes a TSV of `--questions` rows, each with its own PNG image (`--size` px, noisy so PNG does
not shrink it to nothing), then loads it in fresh subprocesses and prints each one's peak RSS:
`lazy` is `load_vlmevalkit_tsv`; `eager` (the baseline) reads it with pandas and decodes every
image, as the loader did before images became lazy.
"""

from __future__ import annotations

import argparse
import base64
import io
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def _write(path: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("index\tquestion\tA\tB\tanswer\tmodality\timage\n")
        for i in range(n):
            img = base.copy()
            img[i % size] = 255 - img[i % size]  # a distinct image per row
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            b64 = base64.b64encode(buf.getvalue()).decode()
            fh.write(f"{i}\tWhich?\tx\ty\tA\tCT\t{b64}\n")


def _child(mode: str, path: str) -> None:
    if mode == "lazy":
        from gmaivl.evaluation.loaders import load_vlmevalkit_tsv

        held = load_vlmevalkit_tsv(path)
    else:
        import pandas as pd

        from gmaivl.core.tsv import decode_base64_image

        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        held = [decode_base64_image(v, path) for v in df["image"]]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(held)} {peak_mib:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=2000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for n in (args.questions // 10, args.questions):
            path = Path(tmp) / f"b{n}.tsv"
            _write(path, n, args.size)
            mib = path.stat().st_size / 2**20
            for mode in ("lazy", "eager"):
                out = subprocess.run(
                    [sys.executable, "-m", "gmaivl.evaluation.load_memory", "--child", mode, str(path)],
                    check=True, capture_output=True, text=True,
                ).stdout.split()  # fmt: skip
                results[(n, mode)] = float(out[1])
                print(f"{n:>6} questions ({mib:7.1f} MiB TSV), {mode:>5}: peak RSS {float(out[1]):8.1f} MiB")
        small, large = args.questions // 10, args.questions
        for mode in ("lazy", "eager"):
            grow = results[(large, mode)] - results[(small, mode)]
            print(f"{mode}: +{grow:.1f} MiB from {small} to {large} questions")
        print(
            f"ratio eager/lazy peak at {large} questions: {results[(large, 'eager')] / results[(large, 'lazy')]:.1f}x"
        )


if __name__ == "__main__":
    main()
