"""Build a GMAI-MMBench-style multiple-choice benchmark from standardised records (the GMAI-MMBench paper).

Input: `MedicalRecord`s of the dataset builders (image, modality, label, department, clinical task,
perceptual granularity, bbox). Steps:

1. Every answer (a label) gets a question pool keyed by (clinical task, granularity); each question
   names the modality through a `<modality>` placeholder filled per image
   (`resources/question_pools.yaml`).
2. Option pools: for image-level questions, the other labels of the answer's own source dataset
   and task (so that no second option is also true of the image); for region-level questions
   (box / mask / contour), one pool shared by all answers with the same (modality, clinical task,
   granularity).
3. Option count: with a distractor pool of size L, n = randint(1, min(4, L)) distractors are drawn,
   so a question has 2 to 5 options (A-E). Seed 004 prints the bounds as
   `randint(max(1, L), min(4, L))`, which is only well-formed for L <= 4; we read it as
   "between one and at most four, never more than the pool holds".
4. N cases per answer (30 by default, all when fewer), chosen for diversity: round-robin over
   source datasets, then farthest-first by perceptual-hash distance.
5. Region-level images get the region drawn on them: a rectangle (box), a filled translucent
   shape (mask) or an outline (contour). Records carry boxes only, so masks and contours are drawn
   as the ellipse inscribed in the box.

Output: a VLMEvalKit-compatible TSV (`index, question, A..E, answer, image` as base64 PNG, plus the
lexical-tree columns `modality, clinical vqa task, department, perceptual granularity`, the
source's `source_id` (a digest of its record id, which may hold file names) and the `source_md5`/`source_phash` of the image before any region was drawn,
which `gmaivl decontam` checks as well as the rendered image) and a
`*.lexical_tree.json` with counts per branch, both written atomically.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from gmaivl.core.files import atomic_write_text
from gmaivl.dataset_builders.templates import distractor_count

REGION_LEVELS = ("box", "mask", "contour")
LETTERS = "ABCDE"
TSV_COLUMNS = (
    "index", "question", "A", "B", "C", "D", "E", "answer", "category", "image", "modality",
    "clinical vqa task", "department", "perceptual granularity", "label", "source_dataset", "source_id",
    "source_md5", "source_phash",
)  # fmt: skip


def source_id(record_id: str) -> str:
    """The benchmark row's reference to its source record: a digest, because record ids may
    carry source file names, which must not reach a published benchmark."""
    return hashlib.sha256(f"gmaivl-bench-source\0{record_id}".encode()).hexdigest()[:20]


def default_question_pools() -> Path:
    return Path(str(resources.files("gmaivl.evaluation") / "resources" / "question_pools.yaml"))


def load_question_pools(path: str | os.PathLike | None = None) -> dict[str, Any]:
    path = Path(path) if path else default_question_pools()
    with open(path, encoding="utf-8") as fh:
        pools = yaml.safe_load(fh) or {}
    if "default" not in pools:
        raise ValueError(f"{path}: a question pool file needs a 'default' section")
    for section in [pools["default"], *pools.get("tasks", {}).values()]:
        for level, questions in section.items():
            for q in questions:
                if "<modality>" not in q:
                    raise ValueError(
                        f"{path}: question for {level!r} lacks the <modality> placeholder: {q!r}"
                    )
    return pools


def questions_for(pools: dict[str, Any], task: str, granularity: str) -> list[str]:
    task_pool = pools.get("tasks", {}).get(task, {})
    return task_pool.get(granularity) or pools["default"].get(granularity) or []


def _hamming_matrix(hashes: list[int]) -> np.ndarray:
    arr = np.array(hashes, dtype=np.uint64)
    x = arr[:, None] ^ arr[None, :]
    return np.unpackbits(x.view(np.uint8).reshape(len(arr), len(arr), 8), axis=-1).sum(-1)


def select_diverse(cases: list[Any], n: int, rng: random.Random) -> list[Any]:
    """Up to `n` cases: sources taken in turn, then farthest-first by pHash Hamming distance."""
    if len(cases) <= n:
        return list(cases)
    by_source: dict[str, list[Any]] = defaultdict(list)
    for c in cases:
        by_source[c.source_dataset].append(c)
    quota = {s: 0 for s in by_source}
    for i in range(n):  # spread the n picks over sources as evenly as their sizes allow
        open_sources = [s for s in sorted(by_source) if quota[s] < len(by_source[s])]
        quota[open_sources[i % len(open_sources)]] += 1
    chosen: list[Any] = []
    for source, members in sorted(by_source.items()):
        k = quota[source]
        hashes = [int(m.phash or "0", 16) for m in members]
        dist = _hamming_matrix(hashes)
        first = rng.randrange(len(members))
        picked = [first]
        mind = dist[first].astype(float)
        while len(picked) < k:
            mind[picked] = -1
            best = np.flatnonzero(mind == mind.max())
            nxt = int(best[rng.randrange(len(best))])
            picked.append(nxt)
            mind = np.minimum(mind, dist[nxt])
        chosen.extend(members[i] for i in picked)
    return chosen


def mark_region(image: Image.Image, bbox: list[float], granularity: str) -> Image.Image:
    """Draw the region a region-level question asks about."""
    img = image.convert("RGB").copy()
    x0, y0, x1, y1 = (float(v) for v in bbox)
    width = max(2, round(min(img.size) / 100))
    if granularity == "box":
        ImageDraw.Draw(img).rectangle([x0, y0, x1, y1], outline=(255, 0, 0), width=width)
    elif granularity == "contour":
        ImageDraw.Draw(img).ellipse([x0, y0, x1, y1], outline=(0, 255, 0), width=width)
    elif granularity == "mask":
        overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
        ImageDraw.Draw(overlay).ellipse([x0, y0, x1, y1], fill=(0, 255, 0, 110))
        img = Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")
    return img


def _b64_png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class BuildSummary:
    path: Path
    n_questions: int
    answers: int
    skipped: dict[str, int] = field(default_factory=dict)
    lexical_tree: dict[str, dict[str, int]] = field(default_factory=dict)


def build_benchmark(
    records: Iterable[Any],
    out_tsv: str | os.PathLike,
    *,
    cases_per_answer: int = 30,
    seed: int = 0,
    question_pools: str | os.PathLike | None = None,
    max_distractors: int = 4,
    progress: bool = True,
) -> BuildSummary:
    """Write the benchmark TSV; see the module docstring for the protocol."""
    from gmaivl.dataset_builders.labels import modality_name
    from gmaivl.dataset_builders.records import image_phash, pixel_md5

    pools = load_question_pools(question_pools)
    rng = random.Random(seed)
    skipped: Counter[str] = Counter()
    kept = []
    for rec in records:
        if not rec.label:  # e.g. the image of a given dialogue (a `llava` source): nothing to ask
            skipped["record without a label"] += 1
            continue
        if rec.granularity in REGION_LEVELS and not rec.bbox:
            skipped["region-level record without bbox"] += 1
            continue
        if not questions_for(pools, rec.clinical_task, rec.granularity):
            skipped[f"no question pool for ({rec.clinical_task}, {rec.granularity})"] += 1
            continue
        if not rec.phash:
            rec.phash = image_phash(rec.image())
        kept.append(rec)

    # option pools
    dataset_labels: dict[tuple, set[str]] = defaultdict(set)
    region_labels: dict[tuple, set[str]] = defaultdict(set)
    for rec in kept:
        if rec.granularity in REGION_LEVELS:
            region_labels[(rec.modality, rec.clinical_task, rec.granularity)].add(rec.label)
        else:
            key = (rec.source_dataset, rec.clinical_task)
            dataset_labels[key].add(rec.label)
            dataset_labels[key].update(rec.label_space or [])

    def option_pool(rec: Any) -> list[str]:
        if rec.granularity in REGION_LEVELS:
            pool = region_labels[(rec.modality, rec.clinical_task, rec.granularity)]
        else:
            pool = dataset_labels[(rec.source_dataset, rec.clinical_task)]
        return sorted(pool - {rec.label})

    answers: dict[tuple, list[Any]] = defaultdict(list)
    for rec in kept:
        group = (rec.source_dataset,) if rec.granularity not in REGION_LEVELS else (rec.modality,)
        answers[(*group, rec.clinical_task, rec.granularity, rec.label)].append(rec)

    rows = []
    tree: dict[str, Counter[str]] = {
        k: Counter() for k in ("modality", "clinical vqa task", "department", "perceptual granularity")
    }
    for key in tqdm(sorted(answers), desc="bench-build", disable=not progress):
        group = answers[key]
        pool = option_pool(group[0])
        if not pool:
            skipped["answer without distractors"] += len(group)
            continue
        for rec in select_diverse(group, cases_per_answer, rng):
            question = rng.choice(questions_for(pools, rec.clinical_task, rec.granularity))
            question = question.replace("<modality>", modality_name(rec.modality))
            wrong = rng.sample(pool, distractor_count(len(pool), rng, max_distractors))
            opts = [rec.label, *wrong]
            rng.shuffle(opts)
            img = rec.image()
            # hashes of the unannotated source: decontamination finds the training copy of an
            # image even where this question draws a region over it
            source_md5 = rec.image_md5 or pixel_md5(np.asarray(img))
            source_phash = rec.phash or image_phash(img)
            if rec.granularity in REGION_LEVELS:
                img = mark_region(img, rec.bbox, rec.granularity)
            row = {
                "index": len(rows),
                "question": question,
                **{LETTERS[i]: (opts[i] if i < len(opts) else "") for i in range(len(LETTERS))},
                "answer": LETTERS[opts.index(rec.label)],
                "category": rec.clinical_task,
                "image": _b64_png(img),
                "modality": rec.modality,
                "clinical vqa task": rec.clinical_task,
                "department": rec.department,
                "perceptual granularity": rec.granularity,
                "label": rec.label,
                "source_dataset": rec.source_dataset,
                "source_id": source_id(rec.record_id),
                "source_md5": source_md5,
                "source_phash": source_phash,
            }
            rows.append(row)
            for dim in tree:
                tree[dim][str(row[dim])] += 1
    if not rows:
        raise ValueError(f"no question could be built (skipped: {dict(skipped)})")

    import pandas as pd

    out = Path(out_tsv)
    atomic_write_text(out, pd.DataFrame(rows, columns=list(TSV_COLUMNS)).to_csv(sep="\t", index=False))
    lexical_tree = {k: dict(sorted(v.items())) for k, v in tree.items()}
    atomic_write_text(
        out.with_suffix(".lexical_tree.json"),
        json.dumps(
            {"n_questions": len(rows), "answers": len(answers), "skipped": dict(skipped), **lexical_tree},
            indent=2,
        ),
    )
    return BuildSummary(out, len(rows), len(answers), dict(skipped), lexical_tree)
