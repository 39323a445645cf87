"""Source data of `gmaivl quickstart`: real medical files with planted findings, as builder sources.

Backgrounds are real images shipped inside installed packages (pydicom's CT / MR / ultrasound test
files, nibabel's MR volumes, scikit-image's fundus and microscopy images), cut into slices, crops
and augmentations, with their intensities compressed into `BACKGROUND_RANGE`. Onto each one a
synthetic finding may be planted: a round, finely mottled lesion (a one-pixel checker of black and
full-brightness pixels; `LESION_CELL` says why not a plain bright disc), of a known size (small or
large) in a known quadrant. So every question has ground truth, and it can only be answered by
looking at the image:

- `lesion-presence`: "lesion present" / "no lesion" (half the images carry no lesion);
- `lesion-location`: the quadrant of the lesion ("upper left lesion", ...);
- `lesion-size`: "small lesion" / "large lesion".

Each (task, modality, split) is one `class_folders` source of the dataset builders' YAML spec
(the folder name is the label), so the corpus is built by `gmaivl data build` like any other.
Answers are balanced within every source, so the question text alone predicts nothing.

The split is by source: the held-out (`test`) backgrounds come from files and volume slices that
no training image is cut from (for fundus and microscopy, whose only images are scikit-image's
`retina.jpg` and `ihc.png`, from a disjoint part of that image), and a held-out image that hashes
near a training one is drawn again, so `gmaivl decontam` finds no overlap. (scikit-image's
`microaneurysms.png` is not used: its real dark dots would contradict "no lesion".)

A `text` source adds text-only multiple-choice dialogues about written findings; they pre-train the
tiny language model from scratch (the role the pretrained LLM plays in the paper's recipe).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from gmaivl.core.files import atomic_write_private

#: Labels of each task; every source holds the same number of images per label.
TASKS: dict[str, dict[str, Any]] = {
    "lesion-presence": {
        "labels": ["lesion present", "no lesion"],
        "clinical_task": "Disease Diagnosis",
    },
    "lesion-location": {
        "labels": ["upper left lesion", "upper right lesion", "lower left lesion", "lower right lesion"],
        "clinical_task": "Attribute Recognition",
    },
    "lesion-size": {
        "labels": ["small lesion", "large lesion"],
        "clinical_task": "Severity Grading",
    },
}
QUADRANTS = {"upper left": (0, 0), "upper right": (0, 1), "lower left": (1, 0), "lower right": (1, 1)}
SIZES = ("small", "large")


#: Department of each modality's images (GMAI-MMBench lexical tree).
DEPARTMENTS = {
    "CT": "Oncology (Medical)",
    "MR": "Neurology",
    "US": "Obstetrics and Gynecology",
    "fundus": "Ophthalmology",
    "microscopy": "Laboratory Medicine and Pathology",
}


@dataclass(frozen=True)
class Finding:
    """A planted lesion: quadrant and size; `None` quadrant means no lesion."""

    quadrant: str | None
    size: str = "small"


# ------------------------------------------------------------------------------------------------
# backgrounds from packaged files
# ------------------------------------------------------------------------------------------------
def _unit(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Percentile-normalise to [0, 1] float32 (grayscale or RGB)."""
    array = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(array, [lower, upper])
    return np.clip((array - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def _window(array: np.ndarray, level: float, width: float) -> np.ndarray:
    return np.clip((np.asarray(array, np.float32) - (level - width / 2)) / width, 0.0, 1.0)


def _nifti_slices(name: str, keep: Callable[[int, int], bool]) -> list[np.ndarray]:
    import nibabel

    from gmaivl.dataset_builders.imaging import read_nifti

    volume = read_nifti(Path(nibabel.__file__).parent / "tests" / "data" / name)
    data = volume.data
    n = data.shape[0]
    out = []
    for z in range(n):
        if keep(z, n) and np.ptp(data[z]) > 0 and (data[z] > data[z].mean()).mean() > 0.15:
            out.append(_unit(data[z]))
    return out


def _dicom_frames(name: str, frames: slice | None = None) -> list[np.ndarray]:
    from pydicom.data import get_testdata_file

    from gmaivl.dataset_builders.imaging import read_dicom

    data, meta = read_dicom(get_testdata_file(name))
    data = data[frames] if frames is not None else data
    if meta.get("Modality") == "CT":
        return [_window(f, 40.0, 400.0) for f in data]  # soft-tissue window
    return [_unit(f) for f in data]


def _skimage(name: str) -> np.ndarray:
    import skimage

    image = Image.open(Path(skimage.__file__).parent / "data" / name)
    return _unit(np.asarray(image.convert("RGB" if image.mode not in ("L", "I", "I;16") else "L")))


def trim(array: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Cut an image to the bounding box of its content (pixels brighter than `threshold`): the black
    frame around a scanner's field of view would otherwise fill whole crops."""
    gray = array if array.ndim == 2 else array.max(axis=-1)
    rows, cols = np.nonzero(gray.max(axis=1) > threshold)[0], np.nonzero(gray.max(axis=0) > threshold)[0]
    if rows.size == 0 or cols.size == 0:
        return array
    return array[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def packaged_backgrounds() -> dict[tuple[str, str], list[np.ndarray]]:
    """Base images per (modality, split), in [0, 1], trimmed to their content. The held-out (`test`)
    images come from other files, other volume slices, or a disjoint part of the one slide or photograph."""
    ihc, retina = _skimage("ihc.png"), _skimage("retina.jpg")
    ihc_cut, retina_cut = ihc.shape[0] * 3 // 5, retina.shape[1] * 3 // 5
    backgrounds = {
        ("CT", "train"): _dicom_frames("CT_small.dcm") + _dicom_frames("J2K_pixelrep_mismatch.dcm"),
        ("CT", "test"): _dicom_frames("693_J2KI.dcm"),
        ("MR", "train"): _nifti_slices("anatomical.nii", lambda z, n: z < n // 2 - 2 or z > n // 2 + 2)
        + _nifti_slices("example4d.nii.gz", lambda z, n: True)
        + _dicom_frames("examples_overlay.dcm"),
        ("MR", "test"): _nifti_slices("anatomical.nii", lambda z, n: n // 2 - 2 <= z <= n // 2 + 2)
        + _dicom_frames("MR_small.dcm"),
        ("US", "train"): _dicom_frames("examples_ybr_color.dcm", slice(0, 30, 3))
        + _dicom_frames("examples_rgb_color.dcm"),
        ("US", "test"): _dicom_frames("examples_palette.dcm"),
        # one fundus photograph and one immunohistochemistry slide: training crops from one part,
        # held-out crops from the rest
        ("fundus", "train"): [retina[:, :retina_cut]],
        ("fundus", "test"): [retina[:, retina_cut:]],
        ("microscopy", "train"): [ihc[:ihc_cut]],
        ("microscopy", "test"): [ihc[ihc_cut:]],
    }
    return {key: [trim(b) for b in bases] for key, bases in backgrounds.items()}


# ------------------------------------------------------------------------------------------------
# augmentation and planting
# ------------------------------------------------------------------------------------------------
def augment(base: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop (50-100% of the short side), flip, rotation and contrast jitter, resized."""
    h, w = base.shape[:2]
    side = int(min(h, w) * rng.uniform(0.5, 1.0))
    side = max(side, min(h, w, 16))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = base[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.rot90(crop, int(rng.integers(0, 4)))
    gray = crop.ndim == 2
    image = Image.fromarray((np.clip(crop, 0, 1) * 255).astype(np.uint8), mode="L" if gray else "RGB")
    out = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    gamma = float(np.exp(rng.uniform(-0.3, 0.3)))
    out = BACKGROUND_RANGE[0] + (BACKGROUND_RANGE[1] - BACKGROUND_RANGE[0]) * np.clip(out, 0, 1) ** gamma
    if gray:
        out = np.repeat(out[..., None], 3, axis=-1)
    return out


#: Intensity range of the backgrounds; a lesion is a fine checker of `LESION_DARK` and `LESION_VALUE`
#: pixels (a mottled lesion), and its bright pixels are the only ones at full brightness.
#:
#: Why a texture and not a bright disc: the CLIP vision tower embeds each patch linearly (no bias)
#: and layer-normalises the result, so a uniform patch of any brightness becomes the same token up
#: to sign. Measured on the quickstart's vision tower: uniform patches at 0.85 and 1.0 have cosine
#: 0.998 after `pre_layrnorm`, even after stage III. A uniformly bright lesion is then visible only
#: at its edge. Measured, seed 0, 600 stage III steps on one thread: 0.991 held-out with the
#: checker, 0.925 with 2-pixel cells, 0.825 with the plain bright disc.
BACKGROUND_RANGE = (0.05, 0.7)
LESION_VALUE = 1.0
LESION_DARK = 0.0
LESION_CELL = 1  # pixels


def lesion_radius(size: str, image_size: int) -> tuple[float, float]:
    """Radius range of a small or large lesion, in pixels of a square image of `image_size`."""
    return (
        (0.07 * image_size, 0.09 * image_size) if size == "small" else (0.15 * image_size, 0.19 * image_size)
    )


def plant(image: np.ndarray, finding: Finding, rng: np.random.Generator) -> np.ndarray:
    """Draw a round mottled lesion (soft edge) inside its quadrant (see `LESION_CELL`)."""
    if finding.quadrant is None:
        return image
    size = image.shape[0]
    half = size / 2
    r = rng.uniform(*lesion_radius(finding.size, size))
    margin = r + 0.04 * size
    row, col = QUADRANTS[finding.quadrant]
    cy = row * half + rng.uniform(margin, half - margin)
    cx = col * half + rng.uniform(margin, half - margin)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    alpha = np.clip(r + 0.5 - dist, 0.0, 1.0)[..., None]
    return image * (1 - alpha) + lesion_texture(size)[..., None] * alpha


def lesion_texture(size: int) -> np.ndarray:
    """The lesion's mottled texture over a whole `size` x `size` image (float32, 0-1)."""
    yy, xx = np.mgrid[0:size, 0:size]
    checker = (yy // LESION_CELL + xx // LESION_CELL) % 2
    return (LESION_DARK + (LESION_VALUE - LESION_DARK) * checker).astype(np.float32)


def finding_for(task: str, label: str, rng: np.random.Generator) -> Finding:
    """A finding consistent with `label` of `task`; the attributes the task does not ask are random."""
    quadrant = str(rng.choice(list(QUADRANTS)))
    size = str(rng.choice(SIZES))
    if task == "lesion-presence":
        return Finding(quadrant if label == "lesion present" else None, size)
    if task == "lesion-location":
        return Finding(label.removesuffix(" lesion"), size)
    return Finding(quadrant, label.removesuffix(" lesion"))


def describe(finding: Finding) -> str:
    """The finding in words (used by the text-only pre-training dialogues)."""
    if finding.quadrant is None:
        return "no focal lesion"
    return f"a {finding.size} round lesion in the {finding.quadrant} quadrant"


# ------------------------------------------------------------------------------------------------
# sources + spec
# ------------------------------------------------------------------------------------------------
def write_sources(
    folder: str | Path,
    *,
    train_per_label: int = 24,
    test_per_label: int = 8,
    text_dialogues: int = 2000,
    image_size: int = 112,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the image sources, the text source and `build.yaml` under `folder`; returns the spec path.

    File names carry only a running number (no source file name or DICOM value reaches them).
    """
    from tqdm.auto import tqdm

    from gmaivl.dataset_builders.qc import DECONTAMINATION_DISTANCE, HammingIndex
    from gmaivl.dataset_builders.records import image_phash

    root = Path(folder)
    backgrounds = packaged_backgrounds()
    jobs = []  # training images first: the held-out ones are then drawn away from them
    for split in ("train", "test"):
        for (modality, base_split), bases in sorted(backgrounds.items()):
            if base_split != split:
                continue
            for task, info in TASKS.items():
                per_label = train_per_label if split == "train" else test_per_label
                for label in info["labels"]:
                    for i in range(per_label):
                        jobs.append((modality, split, task, label, i, bases))
    # a held-out image within twice decontam's pHash distance of a training image is drawn again
    # (dark, nearly empty crops of different files can hash alike), so the split holds by construction
    train_hashes = HammingIndex(2 * DECONTAMINATION_DISTANCE)
    sources = []
    seen = set()
    for modality, split, task, label, i, bases in tqdm(jobs, desc="quickstart sources", disable=not progress):
        name = f"{task}-{modality.lower()}-{split}"
        for attempt in range(100):
            rng = np.random.default_rng(_seed(seed, name, label, i, attempt))
            base = bases[int(rng.integers(0, len(bases)))]
            image = plant(augment(base, rng, image_size), finding_for(task, label, rng), rng)
            pixels = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
            phash = int(image_phash(pixels), 16)
            if split == "train":
                train_hashes.add(phash, name)
                break
            if train_hashes.find(phash) is None:
                break
        else:
            raise RuntimeError(f"{name}: no held-out image away from the training images in 100 draws")
        path = root / "sources" / name / label.replace(" ", "_") / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        if name not in seen:
            seen.add(name)
            sources.append(
                {
                    "name": name,
                    "type": "class_folders",
                    "root": f"sources/{name}",
                    "modality": modality,
                    "department": DEPARTMENTS[modality],
                    "clinical_task": TASKS[task]["clinical_task"],
                    "split": split,
                    "label_map": {lab.replace(" ", "_"): lab for lab in TASKS[task]["labels"]},
                    "unit_size": 256,
                }
            )
    text_file = root / "sources" / "text" / "finding_dialogues.jsonl"
    write_text_dialogues(text_file, text_dialogues, seed)
    sources.append(
        {"name": "findings-text", "type": "text", "root": "sources/text", "file": "finding_dialogues.jsonl",
         "format": "single", "question_field": "question", "answer_field": "answer"}
    )  # fmt: skip
    rules = root / "label_rules.yaml"
    # labels are already standard; no laterality merge ("upper left" and "upper right" differ)
    rules.write_text(yaml.safe_dump({"abbreviations": {}, "synonyms": {}, "laterality": {"words": []}}))
    # the ids' key from the seed, so a rerun gives the same ids, hence the same benchmark and training
    # order (the builders' default is a random key per output folder); the quickstart's file names
    # are running numbers, so the key protects nothing here
    atomic_write_private(
        root / "id.key", hashlib.sha256(f"gmaivl-quickstart-{seed}".encode()).hexdigest().encode()
    )
    spec = {
        "name": "gmaivl-quickstart",
        "seed": seed,
        "privacy": {"id_key_file": "id.key"},
        "description": "Real medical images from pydicom, nibabel and scikit-image with planted lesions "
        "(gmaivl quickstart).",
        "sources": sources,
        "label_standardization": rules.name,
        "generation": {"backend": "templates"},
        # the text dialogues share their wording by design: no MinHash near-duplicate filter on them
        "qc": {"min_image_side": 32, "phash_distance": 0, "minhash_configs": []},
    }
    path = root / "build.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:4], "big")


CAPTION_PROMPTS = (
    "Describe this medical image.",
    "Give a short description of this image.",
    "What does this image show?",
)


def write_text_dialogues(path: Path, count: int, seed: int) -> None:
    """Text-only dialogues about a written finding (JSONL: question, answer).

    Most are multiple-choice questions in the held-out benchmark's layout (its question pools and
    option counts, the evaluator's prompt) with the finding written as context: they teach the
    language model to answer with the text of the option that matches a finding. The rest are
    captions in the image rows' wording."""
    from gmaivl.dataset_builders.labels import modality_name
    from gmaivl.dataset_builders.templates import distractor_count
    from gmaivl.evaluation.bench_build import load_question_pools, questions_for
    from gmaivl.evaluation.prompts import prompt_text
    from gmaivl.evaluation.samples import EvalSample

    pools = load_question_pools()
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        task = rng.choice(list(TASKS))
        labels = TASKS[task]["labels"]
        label = rng.choice(labels)
        finding = finding_for(task, label, np_rng)
        modality = modality_name(rng.choice(list(DEPARTMENTS)))
        if rng.random() < 0.2:  # the caption's wording
            lines.append(json.dumps({"question": f"Report: the {modality} image shows {describe(finding)}.\n"
                                     f"{rng.choice(CAPTION_PROMPTS)}",
                                     "answer": f"This {modality} image shows {label}."}))  # fmt: skip
            continue
        pool = [x for x in labels if x != label]
        options = [label, *rng.sample(pool, distractor_count(len(pool), rng, 4))]
        rng.shuffle(options)
        question = rng.choice(questions_for(pools, TASKS[task]["clinical_task"], "image"))
        sample = EvalSample(
            index=str(i),
            question=question.replace("<modality>", modality),
            answer="ABCDE"[options.index(label)],
            question_type="mcq",
            options=dict(zip("ABCDE", options)),
            metadata={"hint": f"the {modality} image shows {describe(finding)}."},
        )
        lines.append(json.dumps({"question": prompt_text(sample), "answer": label}))
    path.write_text("\n".join(lines) + "\n")
