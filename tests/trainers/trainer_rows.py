"""Toy rows shared by the trainer tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def colour_row(
    colour: str, answer: str, question: str = "What colour is this image?", rid: str = "r"
) -> dict:
    rgb = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}[colour]
    arr = np.clip(
        np.array(rgb)[None, None, :] + np.random.default_rng(0).integers(-20, 20, (56, 56, 3)), 0, 255
    )
    return {
        "id": rid,
        "images": [Image.fromarray(arr.astype(np.uint8))],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": answer},
        ],
    }


def text_row(question: str, answer: str, rid: str = "t") -> dict:
    return {
        "id": rid,
        "images": [],
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
    }
