"""Learnable toy data for CPU smoke runs: the colour of an image decides the answer.

Recipes name these sources as `path: toy:colours` (SFT rows: `images` + `messages`),
`path: toy:text` (text-only dialogue rows, `images` empty) and `path: toy:colour_qa` (GRPO rows:
`question`, `answer`, `options`, `question_type`), with `size` rows and a `seed`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from datasets import Dataset, Features, Image, List, Sequence, Value
from PIL import Image as PILImage

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
}


def colour_image(name: str, rng: np.random.Generator, size: int = 56) -> PILImage.Image:
    base = np.array(COLOURS[name], dtype=np.int16)
    noise = rng.integers(-25, 26, size=(size, size, 3))
    return PILImage.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


_MESSAGE_FEATURES = List({"role": Value("string"), "content": Value("string")})


def _sft_features() -> Features:
    return Features({"images": Sequence(Image()), "messages": _MESSAGE_FEATURES, "id": Value("string")})


def colours_dataset(size: int = 32, seed: int = 0, image_size: int = 56) -> Dataset:
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    rows: dict[str, list[Any]] = {"images": [], "messages": [], "id": []}
    for i in range(size):
        name = names[i % len(names)]
        rows["images"].append([colour_image(name, rng, image_size)])
        rows["messages"].append(
            [
                {"role": "user", "content": "What colour is this image?"},
                {"role": "assistant", "content": name},
            ]
        )
        rows["id"].append(f"colours-{seed}-{i}")
    return Dataset.from_dict(rows, features=_sft_features())


def text_dataset(size: int = 16, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    pairs = [
        ("Is there a fracture?", "No."),
        ("Which organ is abnormal?", "The liver."),
        ("Name a colour.", "red"),
    ]
    rows: dict[str, list[Any]] = {"images": [], "messages": [], "id": []}
    for i in range(size):
        q, a = rng.choice(pairs)
        rows["images"].append([])
        rows["messages"].append([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
        rows["id"].append(f"text-{seed}-{i}")
    return Dataset.from_dict(rows, features=_sft_features())


def colour_qa_dataset(size: int = 24, seed: int = 0, image_size: int = 56) -> Dataset:
    """Verifiable questions about the colour: MCQs (some with word options), yes/no and open."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    rows: dict[str, list[Any]] = {
        "images": [],
        "question": [],
        "answer": [],
        "options": [],
        "question_type": [],
    }
    for i in range(size):
        name = names[i % len(names)]
        kind = ("mcq_letter", "mcq_word", "closed", "open")[i % 4]
        rows["images"].append([colour_image(name, rng, image_size)])
        if kind == "mcq_word":
            rows["question"].append("Which colour is the image?")
            rows["options"].append(names)
            rows["answer"].append("ABC"[names.index(name)])
            rows["question_type"].append("mcq")
        elif kind == "mcq_letter":
            rows["question"].append("Is the image mostly one colour? Pick the statement that fits.")
            rows["options"].append([f"It is mostly {n} throughout the whole picture." for n in names])
            rows["answer"].append("ABC"[names.index(name)])
            rows["question_type"].append("mcq")
        elif kind == "closed":
            asked = names[(i // 4) % len(names)]
            rows["question"].append(f"Is the image {asked}?")
            rows["options"].append([])
            rows["answer"].append("yes" if asked == name else "no")
            rows["question_type"].append("closed")
        else:
            rows["question"].append("What colour is the image?")
            rows["options"].append([])
            rows["answer"].append(name)
            rows["question_type"].append("open")
    features = Features(
        {
            "images": Sequence(Image()),
            "question": Value("string"),
            "answer": Value("string"),
            "options": Sequence(Value("string")),
            "question_type": Value("string"),
        }
    )
    return Dataset.from_dict(rows, features=features)


TOY_SOURCES = {"colours": colours_dataset, "text": text_dataset, "colour_qa": colour_qa_dataset}


def load_toy(source: dict[str, Any]) -> Dataset:
    kind = str(source["path"]).split(":", 1)[1]
    if kind not in TOY_SOURCES:
        raise ValueError(f"unknown toy source {source['path']!r}; known: toy:{', toy:'.join(TOY_SOURCES)}")
    kwargs = {"size": int(source.get("size", 32)), "seed": int(source.get("seed", 0))}
    if kind != "text" and source.get("image_size"):
        kwargs["image_size"] = int(source["image_size"])
    return TOY_SOURCES[kind](**kwargs)
