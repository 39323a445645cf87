"""Privacy by construction: identifiers planted in file names, folder names, DICOM tags (standard,
private, nested in sequences) and NIfTI headers reach no published byte: Parquet, card, report,
plot, LLaVA export, nor the prompts sent to an LLM. The local work area keeps them for the user."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import yaml
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from gmaivl.dataset_builders import iter_records
from gmaivl.dataset_builders.engine import run_build
from gmaivl.dataset_builders.export import export_llava
from gmaivl.dataset_builders.llm import LLMClient, ReplyCache
from gmaivl.dataset_builders.spec import SpecError, load_build_spec

from .test_llm import FakeOpenAI

SECRETS = (
    "DOE_JANE_12345",
    "ZZSMITH",
    "20991231",
    "SMITH_JOHN_777",
    "MILLER_ANNA_4242",
    "PLANTEDPN",
    "PLANTEDPID",
    "PLANTEDINST",
    "PLANTEDPRIV",
    "PLANTEDNEST",
    "PLANTEDDESCRIP",
    "1.2.840.99999",
    "PATIENTFOLDERX",
)


def planted_dicom(path: Path, pixels: np.ndarray | None = None) -> np.ndarray:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "DOE^JANE^PLANTEDPN"
    ds.PatientID = "PLANTEDPID"
    ds.InstitutionName = "PLANTEDINST"
    ds.StudyDate = "20991231"
    ds.private_block(0x0011, "PLANTED CREATOR", create=True).add_new(0x01, "LO", "PLANTEDPRIV")
    nested = Dataset()
    nested.PatientID = "PLANTEDNEST"
    inner = Dataset()
    inner.PatientName = "PLANTEDNEST^INNER"
    nested.OtherPatientIDsSequence = [inner]
    ds.OtherPatientIDsSequence = [nested]
    if pixels is not None:
        ds.PixelData = pixels.astype(ds.pixel_array.dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return ds.pixel_array


def texture(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def write_sources(root: Path) -> Path:
    src = root / "src"
    # mask_pairs: a DICOM named after the patient, its mask
    pixels = planted_dicom(src / "mp" / "images" / "DOE_JANE_12345.dcm")
    mask = np.zeros(pixels.shape, np.uint8)
    mask[30:70, 40:90] = 1
    (src / "mp" / "masks").mkdir(parents=True)
    Image.fromarray(mask).save(src / "mp" / "masks" / "DOE_JANE_12345.png")
    # coco: a patient-named image
    (src / "coco" / "images").mkdir(parents=True)
    Image.fromarray(texture(1)).save(src / "coco" / "images" / "SMITH_JOHN_777.png")
    coco = {
        "images": [{"id": 1, "file_name": "SMITH_JOHN_777.png", "width": 96, "height": 96}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30]}],
        "categories": [{"id": 1, "name": "lesion"}, {"id": 2, "name": "cyst"}],
    }
    (src / "coco" / "annotations.json").write_text(json.dumps(coco))
    # dicom: patient/study folders, a UID-named file, a .dicom file, a suffix-less file, a stray text file
    study = src / "dicom" / "ZZSMITH JOHN 777" / "20991231 CT ABDOMEN"
    planted_dicom(study / "1.2.840.99999.1.777", np.roll(pixels, 5, axis=1))
    planted_dicom(study / "DOE_JANE_12345.dicom", np.roll(pixels, 9, axis=1))
    planted_dicom(study / "MILLER_ANNA_4242", np.roll(pixels, 17, axis=0))
    (study / "notes_ZZSMITH.txt").write_text("not an image")
    # class folders: class names are folder names (published by design), file names are not
    for i in range(3):
        folder = src / "cls" / ("pneumonia" if i % 2 else "normal")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(texture(10 + i)).save(folder / f"DOE_JANE_12345_{i}.png")
    (src / "cls" / "normal" / "MILLER_ANNA_4242.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    # csv: image paths in a patient folder
    (src / "csv" / "PATIENTFOLDERX").mkdir(parents=True)
    Image.fromarray(texture(20)).save(src / "csv" / "PATIENTFOLDERX" / "SMITH_JOHN_777.png")
    (src / "csv" / "labels.csv").write_text("image,label\nPATIENTFOLDERX/SMITH_JOHN_777.png,polyp\n")
    # nifti: a patient-named volume with identifiers in its header
    volume = np.linspace(0, 1000, 64 * 64 * 5, dtype=np.float32).reshape(64, 64, 5)
    volume += np.random.default_rng(0).normal(0, 50, volume.shape).astype(np.float32)
    image = nib.Nifti1Image(volume, np.eye(4))
    image.header["descrip"] = b"PLANTEDDESCRIP DOE_JANE_12345"
    (src / "vol" / "images").mkdir(parents=True)
    nib.save(image, str(src / "vol" / "images" / "DOE_JANE_12345.nii.gz"))
    common = {"department": "Radiology", "clinical_task": "Disease Diagnosis"}
    spec = {
        "name": "privacy",
        "sources": [
            {
                "name": "mp",
                "type": "mask_pairs",
                "root": "src/mp",
                "modality": "CT",
                "mask": {"values": {1: "liver"}},
                **common,
            },
            {"name": "coco", "type": "coco", "root": "src/coco", "modality": "endoscopy", **common},
            {
                "name": "dcm",
                "type": "dicom",
                "root": "src/dicom",
                "modality": "CT",
                "label": "no abnormality",
                **common,
            },
            {"name": "cls", "type": "class_folders", "root": "src/cls", "modality": "X-ray", **common},
            {"name": "csv", "type": "csv", "root": "src/csv", "modality": "endoscopy", **common},
            {"name": "vol", "type": "nifti", "root": "src/vol", "modality": "MR", "label": "brain", **common},
        ],
        "generation": {"backend": "templates", "translate_fraction": 0.5},
        "qc": {"min_image_side": 32},
    }
    path = root / "build.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class RecordingBackend:
    """An in-process chat model that answers like the fake OpenAI server and keeps every prompt."""

    identity = "recording"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, system: str, prompt: str, images) -> str:
        self.prompts.append(system + "\n" + prompt)
        return FakeOpenAI.reply(prompt, 2)


def leaks(data: bytes) -> list[str]:
    text = data.decode("latin-1").lower()
    return [s for s in SECRETS if s.lower() in text]


def published_texts(folder: Path):
    """(path, bytes) of every published file, plus the decoded content of Parquet files and PNGs."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "_work" not in p.parts):
        yield path, path.read_bytes()
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(path)
            yield path, json.dumps(str(parquet.schema_arrow.metadata)).encode()
            for row in parquet.read().to_pylist():
                for key in ("image", "images"):
                    items = row.pop(key, None)
                    for image in items if isinstance(items, list) else [items] if items else []:
                        yield path, image["bytes"] + str(Image.open(io.BytesIO(image["bytes"])).info).encode()
                yield path, json.dumps(row, default=str, ensure_ascii=False).encode()
        if path.suffix == ".png":
            yield path, str(Image.open(path).info).encode()


def test_planted_identifiers_reach_no_published_byte(tmp_path):
    spec = write_sources(tmp_path)
    backend = RecordingBackend()
    out = tmp_path / "out"
    report = run_build(
        spec,
        out,
        progress=False,
        client_factory=lambda o: LLMClient(backend, ReplyCache(o / "_work" / "c.sqlite")),
    )
    # every source reached the corpus (a leak test on an empty corpus proves nothing)
    records = list(iter_records(out))
    assert {r.source_dataset for r in records} == {"mp", "coco", "dcm", "cls", "csv", "vol"}
    # DICOM recognised by content: the UID-named, `.dicom` and suffix-less files; the text file is counted
    assert sum(r.source_dataset == "dcm" for r in records) == 3
    assert report.dropped_ingest["not_dicom"] == 1
    assert report.errors_by_kind == {"unreadable": 1}  # the truncated, patient-named PNG
    assert {r.label for r in records if r.source_dataset == "cls"} == {
        "no abnormality",
        "pneumonia",
    }  # folder names, opted in
    assert backend.prompts and any("Translate" in p for p in backend.prompts)

    export_dir = tmp_path / "llava"
    for config in ("caption", "instruct", "percept"):
        export_llava(out, config, export_dir / f"{config}.json")
    checked = 0
    for folder in (out, export_dir):
        for path, data in published_texts(folder):
            assert not leaks(data), f"{path}: {leaks(data)}"
            checked += 1
    assert checked > 50
    for prompt in backend.prompts:
        assert not leaks(prompt.encode()), prompt
    # ids are keyed hashes: stable for the key, different under another key
    assert all(r.record_id.split("/", 1)[1][:16].isalnum() for r in records)
    # the local work area (never pushed) still tells the user which file failed
    local = (out / "_work" / "failures.jsonl").read_text()
    assert "MILLER_ANNA_4242.png" in local
    item = json.loads((out / "build_report.json").read_text())["errors"]["items"][0]
    assert item["source"] == "cls" and item["item"].startswith("file ") and item["kind"] == "unreadable"


def test_labels_from_folders_need_an_opt_in(tmp_path):
    spec = {
        "sources": [{"name": "d", "type": "dicom", "root": "x", "modality": "CT", "department": "Radiology"}]
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match=r"needs `label` .* or `label_from: folder`"):
        load_build_spec(path)
    spec["sources"][0]["label_from"] = "folder"
    path.write_text(yaml.safe_dump(spec))
    assert load_build_spec(path).sources[0].label_from == "folder"
