"""Shared fixtures: standardised records made from real medical images shipped in registry
packages (scikit-image fundus / IHC / microscopy / CT phantom, pydicom CT / MR / ultrasound,
nibabel's MR volume), a small benchmark built from them, and a saved tiny GMAI-VL checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SKIMAGE_FILES = {
    "retina.jpg": "fundus photography",
    "microaneurysms.png": "fundus photography",
    "ihc.png": "histopathology",
    "cell.png": "microscopy",
    "phantom.png": "CT",
}


def _skimage(name: str) -> np.ndarray:
    import skimage

    img = Image.open(os.path.join(os.path.dirname(skimage.__file__), "data", name)).convert("RGB")
    img.thumbnail((96, 96))
    return np.asarray(img)


def _dicom(name: str, modality: str) -> np.ndarray:
    from pydicom.data import get_testdata_file

    from gmaivl.dataset_builders.imaging import read_dicom, to_rgb8

    frames, _ = read_dicom(get_testdata_file(name))
    rgb = to_rgb8(frames[0], modality)
    img = Image.fromarray(rgb)
    img.thumbnail((96, 96))
    return np.asarray(img)


def _nifti_slices() -> list[np.ndarray]:
    import nibabel
    import nibabel.testing

    vol = np.asarray(
        nibabel.load(os.path.join(nibabel.testing.data_path, "anatomical.nii")).dataobj, dtype=np.float32
    )
    from gmaivl.dataset_builders.imaging import to_rgb8

    out = []
    for z in range(4, vol.shape[2] - 4, max(1, (vol.shape[2] - 8) // 6)):
        img = Image.fromarray(to_rgb8(vol[:, :, z], "MR"))
        out.append(np.asarray(img.resize((96, 96))))
    return out


def _record(rid: str, rgb: np.ndarray, **kw):
    from gmaivl.dataset_builders.records import MedicalRecord, encode_png, image_phash, pixel_md5

    return MedicalRecord(
        record_id=rid,
        image_png=encode_png(rgb),
        width=rgb.shape[1],
        height=rgb.shape[0],
        image_md5=pixel_md5(rgb),
        phash=image_phash(rgb),
        split="test",
        **kw,
    )


def make_records() -> list:
    """Image-level records (labels from each dataset's label space) and box-level MR records."""
    recs = []
    fundus_space = ["diabetic retinopathy", "no abnormality", "glaucoma", "age-related macular degeneration"]
    for i, (name, flip) in enumerate(
        [(n, f) for n in ("retina.jpg", "microaneurysms.png") for f in (0, 1, 2)]
    ):
        rgb = _skimage(name)
        rgb = np.ascontiguousarray(np.rot90(rgb, flip))
        label = "diabetic retinopathy" if name == "microaneurysms.png" else "no abnormality"
        recs.append(
            _record(f"fundus-{i}", rgb, modality="fundus photography", label=label, department="Ophthalmology",
                    source_dataset="fundus-demo", clinical_task="Disease Diagnosis", label_space=fundus_space)
        )  # fmt: skip
    for i, name in enumerate(["ihc.png", "cell.png"]):
        rgb = _skimage(name)
        recs.append(
            _record(f"micro-{i}", rgb, modality="microscopy", label="stained tissue" if i == 0 else "cell nuclei",
                    department="Laboratory Medicine and Pathology", source_dataset="micro-demo",
                    clinical_task="Cell Recognition", label_space=["stained tissue", "cell nuclei", "red blood cell"])
        )  # fmt: skip
    for i, (name, mod) in enumerate(
        [("CT_small.dcm", "CT"), ("MR_small.dcm", "MR"), ("ExplVR_BigEnd.dcm", "US")]
    ):
        rgb = _dicom(name, mod)
        recs.append(
            _record(f"dcm-{i}", rgb, modality=mod, label=f"{mod} study", department="Radiology",
                    source_dataset="modality-demo", clinical_task="Attribute Recognition",
                    label_space=["CT study", "MR study", "US study", "X-ray study"])
        )  # fmt: skip
    for i, rgb in enumerate(_nifti_slices()):
        label = "brain" if i % 2 == 0 else "ventricle"
        recs.append(
            _record(f"mr-box-{i}", rgb, modality="MR", label=label, department="Neurology",
                    source_dataset="mr-volume-demo", clinical_task="Nervous Tissue", granularity="box",
                    task_type="detection", bbox=[20.0, 20.0, 70.0, 60.0])
        )  # fmt: skip
    recs.append(
        _record("phantom-box", _skimage("phantom.png"), modality="MR", label="skull", department="Neurology",
                source_dataset="phantom-demo", clinical_task="Nervous Tissue", granularity="box",
                task_type="detection", bbox=[5.0, 5.0, 90.0, 90.0])
    )  # fmt: skip
    return recs


@pytest.fixture(scope="session")
def records():
    return make_records()


@pytest.fixture(scope="session")
def bench_tsv(tmp_path_factory, records) -> Path:
    from gmaivl.evaluation.bench_build import build_benchmark

    out = tmp_path_factory.mktemp("bench") / "tiny_mmbench.tsv"
    build_benchmark(records, out, cases_per_answer=2, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def answer_b(tiny_shared) -> dict:
    """Generation kwargs (`sequence_bias`) making the tiny model reply exactly "B": a model whose
    scores are known in advance."""
    tok = tiny_shared[1].tokenizer
    b = tok.encode("B", add_special_tokens=False)
    assert len(b) == 1
    return {"sequence_bias": {(b[0],): 100.0, (b[0], tok.eos_token_id): 200.0}}
