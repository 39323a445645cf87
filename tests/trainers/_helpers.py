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


def published_rows(size: int = 8, seed: int = 0):
    """Rows with the columns the dataset builders publish: closed-form colour questions (`messages`,
    `prompt`, `question`, `options`, `answer`, `question_type`) and two captions without a question."""
    from datasets import Dataset, Features, Image, List, Value

    from gmaivl.trainers.toy import colour_qa_dataset

    qa = colour_qa_dataset(size=size, seed=seed)
    rows = []
    for i, row in enumerate(qa):
        text = row["question"] + "".join(f"\n{'ABCDE'[k]}. {o}" for k, o in enumerate(row["options"]))
        rows.append(
            {
                "row_id": f"qa-{seed}-{i}",
                "images": row["images"],
                "messages": [
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": row["answer"]},
                ],
                "question_type": row["question_type"],
                "question": row["question"],
                "options": row["options"],
                "answer": row["answer"],
                "prompt": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "text": None}, {"type": "text", "text": text}],
                    }
                ],
            }
        )
    for i in range(2):
        rows.append(
            {
                "row_id": f"caption-{seed}-{i}",
                "images": qa[i]["images"],
                "messages": [
                    {"role": "user", "content": "Describe the image."},
                    {"role": "assistant", "content": "A plain colour image."},
                ],
                "question_type": "caption",
                "question": "",
                "options": [],
                "answer": "",
                "prompt": [],
            }
        )
    features = Features(
        {
            "row_id": Value("string"),
            "images": List(Image()),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "question_type": Value("string"),
            "question": Value("string"),
            "options": List(Value("string")),
            "answer": Value("string"),
            "prompt": List(
                {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
            ),
        }
    )
    return Dataset.from_list(rows, features=features)


def write_hub_corpus(folder, configs: dict) -> None:
    """A dataset folder in the Hub layout the builders publish: `<config>/train-*.parquet` + a card
    declaring the configs, so that `load_dataset(folder, config)` (and `trl --dataset_name`) reads it."""
    from pathlib import Path

    folder = Path(folder)
    card = ["---", "configs:"]
    for name, ds in configs.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(folder / name / "train-00000-of-00001.parquet"))
        card += [
            f"- config_name: {name}",
            "  data_files:",
            "  - split: train",
            f"    path: {name}/train-*.parquet",
        ]
    (folder / "README.md").write_text("\n".join([*card, "---", ""]))
