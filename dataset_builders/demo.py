"""A demo corpus from real medical files shipped in registry packages, in every supported layout.

`write_demo_sources(folder)` lays out pydicom's CT / MR / ultrasound files (plus a DICOM series and a
copy that carries patient identifiers), nibabel's `anatomical.nii` (as a NIfTI source and as a
Decathlon task, with generated label volumes), scikit-image's fundus, IHC and cell images (class
folders, a CSV, image + mask pairs, COCO boxes) and two small text corpora, together with a
deliberate set of bad inputs (truncated files, a mask of the wrong shape, an unknown label, a bad
JSON line) and a benchmark folder / TSV for decontamination. It writes `build.yaml` next to them.

The labels are illustrative (the packages' files carry no diagnosis); the files are real.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from gmaivl.core.files import create_private

# Identifiers planted in a DICOM copy; tests assert none of them reaches any output.
PLANTED_IDENTIFIERS = {
    "PatientName": "DOE^JANE^PLANTEDNAME",
    "PatientID": "PLANTED-PID-90210",
    "PatientBirthDate": "19370412",
    "InstitutionName": "PLANTED GENERAL HOSPITAL",
    "ReferringPhysicianName": "PLANTED^DOCTOR",
    "AccessionNumber": "PLANTEDACC77",
}


def package_files() -> dict[str, Path]:
    import nibabel
    import skimage
    from pydicom.data import get_testdata_file

    skimage_data = Path(skimage.__file__).parent / "data"
    files = {
        name: Path(get_testdata_file(name)) for name in ("CT_small.dcm", "MR_small.dcm", "ExplVR_BigEnd.dcm")
    }
    files["anatomical.nii"] = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    for name in ("retina.jpg", "microaneurysms.png", "ihc.png", "cell.png"):
        files[name] = skimage_data / name
    return files


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _crops(image: np.ndarray, count: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    size = min(size, h, w)
    out = []
    for _ in range(count):
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        out.append(np.ascontiguousarray(image[y : y + size, x : x + size]))
    return out


def _truncate(source: Path, target: Path, keep: float = 0.4) -> None:
    data = source.read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[: int(len(data) * keep)])


DemoWriter = Callable[[Path, dict[str, Path], int], None]
_DEMO_SOURCES: list[tuple[list[dict[str, Any]], DemoWriter]] = []


def demo_source(*specs: dict[str, Any]) -> Callable[[DemoWriter], DemoWriter]:
    """Register a writer of demo files together with the spec blocks of the sources it writes."""

    def register(writer: DemoWriter) -> DemoWriter:
        _DEMO_SOURCES.append((list(specs), writer))
        return writer

    return register


@demo_source(
    {
        "name": "demo-fundus",
        "type": "class_folders",
        "root": "sources/fundus",
        "modality": "fundus",
        "department": "Ophthalmology",
        "clinical_task": "Disease Diagnosis",
        "max_side": 256,
        "unit_size": 4,
    }
)
def _fundus(src: Path, files: dict[str, Path], scale: int) -> None:
    """Fundus: class folders (real fundus photographs, crops), one exact duplicate."""
    retina = np.asarray(Image.open(files["retina.jpg"]).convert("RGB").resize((512, 512)))
    micro = np.asarray(Image.open(files["microaneurysms.png"]).convert("RGB"))
    for i, crop in enumerate(_crops(retina, 4 * scale, 320, 0)):
        _save(crop, src / "fundus" / "DR" / f"retina_{i:03d}.png")
    for i, crop in enumerate(_crops(micro, 3 * scale, 96, 1)):
        _save(crop, src / "fundus" / "MA" / f"micro_{i:03d}.png")
    _save(np.ascontiguousarray(retina[::-1]), src / "fundus" / "normal" / "retina_flipped.png")
    shutil.copy(
        src / "fundus" / "DR" / "retina_000.png", src / "fundus" / "normal" / "copy_of_retina_000.png"
    )


@demo_source(
    {
        "name": "demo-ihc",
        "type": "csv",
        "root": "sources/histology",
        "file": "labels.csv",
        "split_column": "split",
        "modality": "immunohistochemistry",
        "department": "Laboratory Medicine and Pathology",
        "clinical_task": "Attribute Recognition",
        "label_map": {"dab positive": "DAB-positive staining", "dab negative": "DAB-negative staining"},
        "unit_size": 4,
    }
)
def _histology_csv(src: Path, files: dict[str, Path], scale: int) -> None:
    """Histopathology: CSV of path + label, with bad rows."""
    ihc = np.asarray(Image.open(files["ihc.png"]).convert("RGB"))
    rows = []
    for i, crop in enumerate(_crops(ihc, 4 * scale, 192, 2)):
        _save(crop, src / "histology" / "images" / f"ihc_{i:03d}.png")
        rows.append(
            {
                "image": f"images/ihc_{i:03d}.png",
                "label": ["dab positive", "dab negative"][i % 2],
                "split": "train" if i % 4 else "test",
            }
        )
    _truncate(src / "histology" / "images" / "ihc_000.png", src / "histology" / "images" / "truncated.png")
    rows.append({"image": "images/truncated.png", "label": "dab positive", "split": "train"})
    rows.append({"image": "images/ihc_001.png", "label": "unlisted stain", "split": "train"})
    with open(src / "histology" / "labels.csv", "w", encoding="utf-8") as handle:
        handle.write(
            "image,label,split\n" + "".join(f"{r['image']},{r['label']},{r['split']}\n" for r in rows)
        )


@demo_source(
    {
        "name": "demo-ihc-seg",
        "type": "mask_pairs",
        "root": "sources/ihc_seg",
        "images_dir": "images",
        "masks_dir": "masks",
        "modality": "histopathology",
        "department": "Laboratory Medicine and Pathology",
        "clinical_task": "Cell Recognition",
        "mask": {"values": {1: "cell nucleus", 2: "DAB-positive region"}, "min_area": 64, "max_per_label": 3},
    }
)
def _ihc_mask_pairs(src: Path, files: dict[str, Path], scale: int) -> None:
    """IHC image + mask pairs: masks generated by colour deconvolution."""
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu

    ihc = np.asarray(Image.open(files["ihc.png"]).convert("RGB"))
    for i, crop in enumerate(_crops(ihc, 3 * scale, 256, 3)):
        hed = rgb2hed(crop)
        mask = np.zeros(crop.shape[:2], np.uint8)
        mask[hed[..., 0] > threshold_otsu(hed[..., 0])] = 1  # haematoxylin: nuclei
        mask[hed[..., 2] > threshold_otsu(hed[..., 2]) + 0.02] = 2  # DAB-positive region
        _save(crop, src / "ihc_seg" / "images" / f"ihc_{i:03d}.png")
        _save(mask, src / "ihc_seg" / "masks" / f"ihc_{i:03d}.png")
    _save(np.zeros((10, 12), np.uint8), src / "ihc_seg" / "masks" / "wrong_shape.png")
    _save(_crops(ihc, 1, 256, 9)[0], src / "ihc_seg" / "images" / "wrong_shape.png")


@demo_source(
    {
        "name": "demo-cells",
        "type": "coco",
        "root": "sources/cells",
        "annotations": "annotations.json",
        "images_dir": "images",
        "modality": "microscopy",
        "department": "Laboratory Medicine and Pathology",
        "clinical_task": "Cell Recognition",
    }
)
def _cells_coco(src: Path, files: dict[str, Path], scale: int) -> None:
    """Microscopy: COCO boxes of cells."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    cell = np.asarray(Image.open(files["cell.png"]).convert("L"))
    images, annotations = [], []
    for i, crop in enumerate(_crops(cell, 2 * scale, 256, 4)):
        _save(crop, src / "cells" / "images" / f"cell_{i:03d}.png")
        images.append(
            {"id": i + 1, "file_name": f"cell_{i:03d}.png", "width": crop.shape[1], "height": crop.shape[0]}
        )
        regions = sorted(regionprops(label(crop > threshold_otsu(crop))), key=lambda r: -r.area)[:4]
        for region in regions:
            y0, x0, y1, x1 = region.bbox
            category = 1 if region.area > 400 else 2
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": category,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int(region.area),
                }
            )
    annotations.append(
        {"id": len(annotations) + 1, "image_id": 1, "category_id": 1, "bbox": [9000, 9000, 5, 5]}
    )
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cell cluster"}, {"id": 2, "name": "single cell"}],
    }
    (src / "cells" / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")


@demo_source(
    {
        "name": "demo-mr-nifti",
        "type": "nifti",
        "root": "sources/mr_volumes",
        "images_dir": "images",
        "labels_dir": "labels",
        "modality": "MR",
        "department": "Neurology",
        "clinical_task": "Organ Recognition - Head and Neck",
        "mask": {"values": {1: "brain tissue", 2: "lesion"}, "min_area": 9, "max_per_label": 2},
        "slices": {"axis": 0, "step": 6},
        "min_side": 128,
    },
    {
        "name": "demo-msd",
        "type": "msd",
        "root": "sources/Task01_Demo",
        "modality": "MR",
        "department": "Neurology",
        "clinical_task": "Organ Recognition - Head and Neck",
        "mask": {"min_area": 9, "max_per_label": 2},
        "slices": {"axis": 0, "step": 8},
        "min_side": 128,
    },
)
def _mr_volumes(src: Path, files: dict[str, Path], scale: int) -> None:
    """MR volume: NIfTI with a generated label volume, and as a Decathlon task."""
    import nibabel as nib

    image = nib.load(str(files["anatomical.nii"]))
    data = np.asarray(image.dataobj, dtype=np.float32)
    labels = np.zeros(data.shape, np.uint8)
    labels[data > np.percentile(data, 70)] = 1  # bright tissue
    centre = np.array(data.shape) // 2
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in data.shape], indexing="ij"))
    labels[((grid - centre[:, None, None, None]) ** 2).sum(0) <= 9] = 2  # a small generated "lesion"
    (src / "mr_volumes" / "images").mkdir(parents=True, exist_ok=True)
    (src / "mr_volumes" / "labels").mkdir(parents=True, exist_ok=True)
    shutil.copy(files["anatomical.nii"], src / "mr_volumes" / "images" / "subject01.nii")
    nib.save(nib.Nifti1Image(labels, image.affine), str(src / "mr_volumes" / "labels" / "subject01.nii.gz"))
    _truncate(files["anatomical.nii"], src / "mr_volumes" / "images" / "broken.nii", 0.3)
    (src / "mr_volumes" / "labels" / "broken.nii.gz").write_bytes(
        (src / "mr_volumes" / "labels" / "subject01.nii.gz").read_bytes()
    )
    task = src / "Task01_Demo"
    (task / "imagesTr").mkdir(parents=True, exist_ok=True)
    (task / "labelsTr").mkdir(parents=True, exist_ok=True)
    shutil.copy(files["anatomical.nii"], task / "imagesTr" / "demo_001.nii")
    nib.save(nib.Nifti1Image(labels, image.affine), str(task / "labelsTr" / "demo_001.nii.gz"))
    (task / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Demo",
                "modality": {"0": "MRI"},
                "labels": {"0": "background", "1": "brain tissue", "2": "lesion"},
                "training": [{"image": "./imagesTr/demo_001.nii", "label": "./labelsTr/demo_001.nii.gz"}],
            }
        ),
        encoding="utf-8",
    )


@demo_source(
    {
        "name": "demo-ct",
        "type": "dicom",
        "root": "sources/dicom/ct",
        "modality": "CT",
        "department": "Oncology (Medical)",
        "clinical_task": "Disease Diagnosis",
        "label": "no abnormality",
        "window": "abdomen",
    },
    {
        "name": "demo-mr",
        "type": "dicom",
        "root": "sources/dicom/mr",
        "modality": "MR",
        "department": "Neurology",
        "clinical_task": "Disease Diagnosis",
        "label": "no abnormality",
        "min_side": 128,
    },
    {
        "name": "demo-us",
        "type": "dicom",
        "root": "sources/dicom/us",
        "modality": "US",
        "department": "Obstetrics and Gynecology",
        "clinical_task": "Disease Diagnosis",
        "label": "no abnormality",
        "min_side": 128,
    },
    {
        "name": "demo-ct-series",
        "type": "dicom",
        "root": "sources/ct_series",
        "series": True,
        "modality": "CT",
        "department": "Oncology (Medical)",
        "clinical_task": "Disease Diagnosis",
        "label": "no abnormality",
        "window": [40, 400],
        "slices": {"keep": "all", "step": 2},
    },
)
def _dicom(src: Path, files: dict[str, Path], scale: int) -> None:
    """DICOM: CT / MR / US files, a planted-identifier copy, a series, a truncated file."""
    import pydicom

    for name, sub in (("CT_small.dcm", "ct"), ("MR_small.dcm", "mr"), ("ExplVR_BigEnd.dcm", "us")):
        (src / "dicom" / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(files[name], src / "dicom" / sub / name)
    planted = pydicom.dcmread(files["CT_small.dcm"])
    for keyword, value in PLANTED_IDENTIFIERS.items():
        setattr(planted, keyword, value)
    planted.PixelData = np.ascontiguousarray(planted.pixel_array[:, ::-1]).tobytes()
    if planted.file_meta.TransferSyntaxUID.is_compressed:
        planted.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    planted.save_as(src / "dicom" / "ct" / "planted_identifiers.dcm")
    _truncate(files["CT_small.dcm"], src / "dicom" / "ct" / "truncated.dcm", 0.5)
    base = pydicom.dcmread(files["CT_small.dcm"])
    series_uid = pydicom.uid.generate_uid()
    _mkdir(src / "ct_series")
    for z in range(5):
        ds = base.copy()
        for keyword, value in PLANTED_IDENTIFIERS.items():
            setattr(ds, keyword, value)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = z + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(z) * 5.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelData = np.roll(base.pixel_array, 7 * z, axis=0).astype(base.pixel_array.dtype).tobytes()
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.save_as(src / "ct_series" / f"slice_{4 - z}.dcm")


@demo_source(
    {
        "name": "demo-text-single",
        "type": "text",
        "root": "sources/text",
        "file": "single.jsonl",
        "format": "single",
    },
    {
        "name": "demo-text-multi",
        "type": "text",
        "root": "sources/text",
        "file": "multi.jsonl",
        "format": "multi",
    },
)
def _text_corpora(src: Path, files: dict[str, Path], scale: int) -> None:
    """Text corpora."""
    single = [
        {
            "question": "What are common symptoms of iron deficiency anaemia?",
            "answer": "Fatigue, pallor, shortness of breath on exertion, brittle nails and sometimes cravings for ice are common; a blood count and ferritin level confirm it.",
        },
        {
            "question": "How is type 2 diabetes usually diagnosed?",
            "answer": "By an HbA1c of 6.5% or more, a fasting plasma glucose of 7.0 mmol/L or more, or a 2-hour glucose of 11.1 mmol/L or more in an oral glucose tolerance test, confirmed on repeat testing.",
        },
        {
            "question": "How is type 2 diabetes usually diagnosed?",
            "answer": "By an HbA1c of 6.5% or more, a fasting plasma glucose of 7.0 mmol/L or more, or a 2-hour glucose of 11.1 mmol/L or more in an oral glucose tolerance test, confirmed on repeat testing!",
        },
        {
            "instruction": "Explain what a CT contrast agent does.",
            "input": "",
            "output": "An iodinated contrast agent raises the attenuation of blood and perfused tissue, so vessels and enhancing lesions stand out from their surroundings.",
        },
        {
            "question": "高血压患者应如何调整饮食？",
            "answer": "应减少食盐摄入，多吃蔬菜水果和全谷物，限制饮酒，并保持健康体重。",
        },
    ]
    multi = [
        {
            "conversations": [
                {"from": "human", "value": "I have had a dry cough for three weeks."},
                {"from": "gpt", "value": "Do you have fever, weight loss or night sweats, and do you smoke?"},
                {"from": "human", "value": "No fever, but I smoke."},
                {
                    "from": "gpt",
                    "value": "A persistent cough in a smoker deserves a chest X-ray and a visit to your doctor.",
                },
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "What does an MRI of the knee show?"},
                {
                    "role": "assistant",
                    "content": "Ligaments, menisci, cartilage and bone marrow, which X-rays do not show well.",
                },
                {"role": "user", "content": "Is it painful?"},
                {
                    "role": "assistant",
                    "content": "No, the scan itself is painless, though you must lie still for some time.",
                },
            ]
        },
    ]
    (src / "text").mkdir(parents=True, exist_ok=True)
    with open(src / "text" / "single.jsonl", "w", encoding="utf-8") as handle:
        for row in single:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.write("{this line is not json\n")
    with open(src / "text" / "multi.jsonl", "w", encoding="utf-8") as handle:
        for row in multi:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _benchmarks(root: Path, src: Path) -> None:
    """Benchmark images for decontamination: a folder and a VLMEvalKit-style TSV."""
    shutil.copy(src / "fundus" / "DR" / "retina_001.png", _mkdir(root / "benchmark") / "bench_0.png")
    buffer = io.BytesIO()
    Image.open(src / "histology" / "images" / "ihc_002.png").save(buffer, format="PNG")
    with open(root / "benchmark.tsv", "w", encoding="utf-8") as handle:
        handle.write("index\tquestion\tanswer\timage\n")
        handle.write(f"0\tWhich stain?\tA\t{base64.b64encode(buffer.getvalue()).decode()}\n")


def write_demo_sources(folder: str | Path, scale: int = 1) -> Path:
    """Write the demo sources and `build.yaml` under `folder`; returns the spec path.

    `scale` multiplies the number of 2D crops (the benchmark script uses it to grow the corpus).
    """
    root = Path(folder)
    src = root / "sources"
    files = package_files()
    for _specs, writer in _DEMO_SOURCES:
        writer(src, files, scale)
    _benchmarks(root, src)
    # the key of the hashed ids: builds that share it give the same ids (shards, rebuild checks)
    create_private(root / "id.key", secrets.token_hex(32).encode())  # 0600; an existing key is kept
    spec = demo_spec()
    spec_path = root / "build.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return spec_path


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def demo_spec() -> dict:
    """The build spec of the demo sources (paths relative to the spec file)."""
    return {
        "name": "gmai-vl-demo",
        "description": "Demo corpus built from medical files that ship in pydicom, nibabel and scikit-image (illustrative labels).",
        "seed": 0,
        "license": "other",
        "sources": [spec for specs, _ in _DEMO_SOURCES for spec in specs],
        "generation": {"backend": "templates", "configs": ["caption", "instruct", "percept"]},
        "qc": {
            "min_image_side": 64,
            "decontaminate": ["benchmark", "benchmark.tsv"],
            "min_caption_tokens": 8,
        },
        "publish": {"row_group_rows": 16, "max_shard_size": "2MB"},
        "privacy": {"id_key_file": "id.key"},
    }


if __name__ == "__main__":  # pragma: no cover
    print(write_demo_sources(os.environ.get("OUT", "demo")))
