"""Benchmark: padding share and training tokens/s, packed vs padded (the baseline), same samples.

The length mix imitates GMAI-VL data: many short captions (a few words after the image) and
fewer long instructions. Run: `python -m gmaivl.trainers.benchmark_packing [--samples 64]`.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch

from .packing import GMAIVLDataCollator


def gmai_like_rows(n: int, seed: int = 0) -> list[dict]:
    from .toy import COLOURS, colour_image

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    words = [
        "the",
        "lesion",
        "liver",
        "chest",
        "image",
        "shows",
        "a",
        "small",
        "round",
        "region",
        "with",
        "normal",
        "anatomy",
        "and",
        "mild",
        "effusion",
    ]
    rows = []
    for i in range(n):
        long = rng.random() < 0.3  # 70% short captions, 30% long instructions
        n_words = rng.randint(40, 160) if long else rng.randint(2, 12)
        answer = " ".join(rng.choice(words) for _ in range(n_words))
        question = "Describe the findings in detail." if long else "Caption this image."
        rows.append(
            {
                "id": f"bench-{i}",
                "images": [colour_image(rng.choice(list(COLOURS)), nrng)],
                "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            }
        )
    return rows


def bench(model, collator, samples, steps: int) -> tuple[float, float]:
    batch = collator.collate_encoded(samples)
    real = sum(len(s) for s in samples)
    share = 1.0 - real / batch["input_ids"].numel()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    model.train()
    model(**batch).loss.backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        model(**batch).loss.backward()
    elapsed = time.perf_counter() - start
    return share, real * steps / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from gmaivl.core.tiny import build_tiny_gmaivl

    model, processor = build_tiny_gmaivl(seed=args.seed)
    padded = GMAIVLDataCollator(processor, max_length=args.max_length)
    packed = GMAIVLDataCollator(processor, max_length=args.max_length, packing=True)
    samples = [padded.encode(r, i) for i, r in enumerate(gmai_like_rows(args.samples, args.seed))]
    lengths = sorted(len(s) for s in samples)
    print(
        f"{len(samples)} samples, tokens min/median/max = {lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]}"
    )
    pad_share, pad_tps = bench(model, padded, samples, args.steps)
    pack_share, pack_tps = bench(model, packed, samples, args.steps)
    rows = len(packed.collate_encoded(samples)["input_ids"])
    print(f"padded (baseline): {len(samples)} rows, padding {pad_share:6.1%}, {pad_tps:9.0f} real tokens/s")
    print(f"packed (BFD)     : {rows} rows, padding {pack_share:6.1%}, {pack_tps:9.0f} real tokens/s")
    print(f"speed-up packed / padded: {pack_tps / pad_tps:.2f}x")


if __name__ == "__main__":
    main()
