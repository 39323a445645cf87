"""Inputs in the layouts the field publishes, with planted identifiers and faults (issue: data
layouts, private and safe by construction)."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import yaml
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

from gmaivl.dataset_builders import iter_records, pixel_md5
from gmaivl.dataset_builders.engine import run_build

from .test_privacy import leaks, published_texts, texture

COMMON = {"department": "Radiology", "clinical_task": "Disease Diagnosis"}


def build(tmp_path: Path, sources: list[dict], **spec) -> tuple[Path, object]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "build.yaml"
    path.write_text(
        yaml.safe_dump({"name": "planted", "sources": sources, "qc": {"min_image_side": 32}, **spec})
    )
    out = tmp_path / "out"
    return out, run_build(path, out, progress=False)


def test_patient_folders_under_class_folders_are_never_labels(tmp_path):
    # `class/patient/image.png`: the patient folder's name must not become a label or an option
    for i, (label, patient) in enumerate(
        [("pneumonia", "DOE_JANE_12345"), ("normal", "ZZSMITH"), ("pneumonia", "MILLER_ANNA_4242")]
    ):
        folder = tmp_path / "src" / label / patient
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(2):
            Image.fromarray(texture(30 + 2 * i + j)).save(folder / f"{patient}_{j}.png")
    out, _ = build(
        tmp_path, [{"name": "cls", "type": "class_folders", "root": "src", "modality": "X-ray", **COMMON}]
    )
    records = list(iter_records(out))
    assert len(records) == 6
    assert {r.label for r in records} == {"pneumonia", "no abnormality"}
    checked = 0
    for path, data in published_texts(out):
        assert not leaks(data), f"{path}: {leaks(data)}"
        checked += 1
    assert checked > 10


def test_a_spec_can_name_a_deeper_class_folder(tmp_path):
    # `site/class/image.png` with `label_depth: 2`: the site folder is not a label
    for i, (site, label) in enumerate([("SITE_PLANTEDINST", "pneumonia"), ("SITE_PLANTEDINST", "normal")]):
        folder = tmp_path / "src" / site / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(texture(40 + i)).save(folder / f"{i}.png")
    source = {
        "name": "cls",
        "type": "class_folders",
        "root": "src",
        "modality": "X-ray",
        "label_depth": 2,
        **COMMON,
    }
    out, _ = build(tmp_path, [source])
    assert {r.label for r in iter_records(out)} == {"pneumonia", "no abnormality"}
    for path, data in published_texts(out):
        assert not leaks(data), f"{path}: {leaks(data)}"


# -- burned-in annotation -------------------------------------------------------------------------
def _dicom(path: Path, modality: str = "CT", burned_in: str | None = None, shift: int = 0) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality = modality
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    ds.PixelData = np.roll(ds.pixel_array, shift, axis=1).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)


def test_burned_in_annotations_are_held_back_unless_the_source_opts_in(tmp_path):
    _dicom(tmp_path / "src" / "a.dcm", burned_in="YES")  # a name drawn into the pixels
    _dicom(tmp_path / "src" / "b.dcm", burned_in="NO", shift=7)
    _dicom(tmp_path / "src" / "c.dcm", modality="US", shift=13)  # ultrasound without the tag
    source = {
        "name": "d",
        "type": "dicom",
        "root": "src",
        "modality": "CT",
        "label": "no abnormality",
        **COMMON,
    }
    out, report = build(tmp_path, [source])
    assert len(list(iter_records(out))) == 2
    assert report["dropped"]["ingest"]["burned_in_annotation"] == 1
    assert report["notices"] == {"burned_in_tag_missing": 1}
    card = (out / "README.md").read_text()
    assert "burned_in_tag_missing: 1" in card and "burned_in_annotation: 1" in card
    assert all("burned_in" not in json.dumps(r.meta) for r in iter_records(out))  # no header value published

    opted, report = build(tmp_path / "opt", [{**source, "root": "../src", "publish_burned_in": True}])
    assert len(list(iter_records(opted))) == 3
    assert "burned_in_annotation" not in report["dropped"]["ingest"]


# -- one bad item never ends a build ----------------------------------------------------------------
def test_a_file_name_that_is_not_utf8_is_one_counted_failure(tmp_path):
    folder = tmp_path / "src" / "normal"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(texture(50 + i)).save(folder / f"{i}.png")
    bad = os.path.join(os.fsencode(folder), b"DOE_JANE_\xff\xfe.png")
    with open(bad, "wb") as handle:
        Image.fromarray(texture(60)).save(handle, format="PNG")
    out, report = build(
        tmp_path, [{"name": "cls", "type": "class_folders", "root": "src", "modality": "X-ray", **COMMON}]
    )
    assert len(list(iter_records(out))) == 3
    assert report["errors"]["by_kind"] == {"undecodable_name": 1}
    (item,) = report["errors"]["items"]
    assert item["item"].startswith("file ") and "DOE_JANE" not in json.dumps(item)
    for path, data in published_texts(out):
        assert not leaks(data), f"{path}: {leaks(data)}"


# -- paths that leave the source root --------------------------------------------------------------
def test_annotation_paths_outside_the_root_are_refused_per_row(tmp_path):
    private = tmp_path / "private"
    private.mkdir()
    Image.fromarray(texture(70)).save(private / "DOE_JOHN_MRN12345.png")
    root = tmp_path / "data" / "csv"
    (root / "imgs").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(texture(71 + i)).save(root / "imgs" / f"{i}.png")
    (root / "imgs" / "link.png").symlink_to(private / "DOE_JOHN_MRN12345.png")
    rows = [
        "image,label",
        "imgs/0.png,polyp",
        "imgs/1.png,polyp",
        "../../private/DOE_JOHN_MRN12345.png,polyp",
        f"{private / 'DOE_JOHN_MRN12345.png'},polyp",
        "imgs/link.png,polyp",
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    coco_root = tmp_path / "data" / "coco"
    (coco_root / "images").mkdir(parents=True)
    Image.fromarray(texture(74)).save(coco_root / "images" / "ok.png")
    coco = {
        "images": [
            {"id": 1, "file_name": "ok.png", "width": 96, "height": 96},
            {"id": 2, "file_name": "../../../private/DOE_JOHN_MRN12345.png", "width": 96, "height": 96},
        ],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 40, 30]} for i in (1, 2)],
        "categories": [{"id": 1, "name": "lesion"}],
    }
    (coco_root / "annotations.json").write_text(json.dumps(coco))
    sources = [
        {"name": "csv", "type": "csv", "root": "data/csv", "modality": "endoscopy", **COMMON},
        {"name": "coco", "type": "coco", "root": "data/coco", "modality": "endoscopy", **COMMON},
    ]
    out, report = build(tmp_path, sources)
    records = list(iter_records(out))
    assert sorted(r.source_dataset for r in records) == ["coco", "csv", "csv"]
    assert report["errors"]["by_kind"] == {"outside_root": 4}
    outside = np.asarray(Image.open(private / "DOE_JOHN_MRN12345.png").convert("RGB"))
    assert all(r.image_md5 != pixel_md5(outside) for r in records)
    for path, data in published_texts(out):
        assert not leaks(data) and b"MRN12345" not in data, path


# -- size limits before decoding ------------------------------------------------------------------
def _deflated_dicom_bomb(path: Path, rows: int, columns: int) -> None:
    """A real deflated DICOM whose PixelData inflates to rows x columns x 2 bytes, written in
    bounded memory (the pixel element is streamed through zlib)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.Rows, ds.Columns = rows, columns
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = io.BytesIO()
    ds.save_as(header, enforce_file_format=True)  # meta + a small deflated body
    raw = header.getvalue()
    meta_end = 132 + 12 + struct.unpack("<I", raw[140:144])[0]  # after the file meta group
    body = zlib.decompress(raw[meta_end:], -zlib.MAX_WBITS)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    length = rows * columns * 2
    with open(path, "wb") as handle:
        handle.write(raw[:meta_end])
        handle.write(deflate.compress(body))
        handle.write(deflate.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length)))
        zeros = bytes(1 << 22)
        for _ in range(length // len(zeros)):
            handle.write(deflate.compress(zeros))
        handle.write(deflate.flush())


def test_oversize_inputs_are_refused_before_decoding_in_bounded_memory(tmp_path):
    src = tmp_path / "src"
    (src / "dcm").mkdir(parents=True)
    _dicom(src / "dcm" / "ok.dcm")
    _deflated_dicom_bomb(src / "dcm" / "bomb.dcm", 32768, 16384)  # 1 MB inflating to 1 GiB
    (src / "vol" / "images").mkdir(parents=True)
    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 512))  # declares 8 GiB of float32, holds a few bytes
    header.set_data_dtype(np.float32)
    volume = np.random.default_rng(0).normal(500, 100, (64, 64, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), src / "vol" / "images" / "ok.nii.gz")
    with gzip.open(src / "vol" / "images" / "bomb.nii.gz", "wb") as handle:
        handle.write(header.binaryblock + b"\0" * 4 + bytes(1 << 16))
    (src / "png" / "normal").mkdir(parents=True)
    Image.new("1", (20000, 20000)).save(src / "png" / "normal" / "bomb.png")
    Image.fromarray(texture(80)).save(src / "png" / "normal" / "ok.png")
    (src / "text.jsonl").write_text(
        json.dumps({"question": "q1", "answer": "a1"})
        + "\n"
        + json.dumps({"question": "x" * (3 << 20), "answer": "a"})
        + "\n"
        + json.dumps({"question": "q3", "answer": "a3"})
        + "\n"
    )
    label = {"label": "no abnormality"}
    sources = [
        {"name": "dcm", "type": "dicom", "root": "src/dcm", "modality": "CT", **label, **COMMON},
        {"name": "vol", "type": "nifti", "root": "src/vol", "modality": "MR", **label, **COMMON},
        {"name": "png", "type": "class_folders", "root": "src/png", "modality": "X-ray", **COMMON},
        {
            "name": "txt",
            "type": "text",
            "root": "src",
            "file": "text.jsonl",
            "limits": {"max_line_bytes": 1 << 20},
        },
    ]
    spec = tmp_path / "build.yaml"
    spec.write_text(yaml.safe_dump({"name": "limits", "sources": sources, "qc": {"min_image_side": 2}}))
    # in a fresh process, so that its peak memory is the build's own
    # (VmHWM: this process's peak RSS; ru_maxrss would carry the forking parent's over exec)
    probe = (
        "import json, re, sys\n"
        "from pathlib import Path\n"
        "from gmaivl.dataset_builders.engine import run_build\n"
        "report = run_build(sys.argv[1], sys.argv[2], progress=False)\n"
        "peak = int(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1]) / 1024\n"
        "print(json.dumps({'errors': report['errors']['by_kind'], 'rows': report['rows']['published'],\n"
        "  'peak_mib': peak}))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe, str(spec), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["errors"] == {"oversize": 4}
    assert result["peak_mib"] < 1024, result
    kinds = {r.source_dataset for r in iter_records(tmp_path / "out")}
    assert kinds == {"dcm", "vol", "png"}  # the good file of each source is published


# -- edits that keep a file's size and mtime -------------------------------------------------------
def _same_size_edit(path: Path, seed: int) -> None:
    """Rewrite a PNG with other pixels of exactly the same file size, then restore its mtime."""
    info = path.stat()
    size = info.st_size
    for attempt in range(200):
        candidate = io.BytesIO()
        Image.fromarray(texture(seed + attempt)).save(candidate, format="PNG")
        data = candidate.getvalue()
        if len(data) <= size:  # pad inside the PNG after IEND: decoders ignore trailing bytes
            path.write_bytes(data + b"\0" * (size - len(data)))
            os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
            return
    raise AssertionError("no smaller PNG found")


def test_content_fingerprint_sees_an_edit_that_keeps_size_and_mtime(tmp_path):
    folder = tmp_path / "src" / "normal"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(texture(90 + i)).save(folder / f"{i}.png")
    source = {"name": "cls", "type": "class_folders", "root": "src", "modality": "X-ray", **COMMON}

    def md5s(sources: list[dict], out: str) -> set[str]:
        built, _ = build(tmp_path / out, sources)
        return {r.image_md5 for r in iter_records(built)}

    stat_before = md5s([{**source, "root": "../src"}], "stat")
    content_before = md5s([{**source, "root": "../src", "fingerprint": "content"}], "content")
    assert stat_before == content_before
    _same_size_edit(folder / "0.png", seed=200)
    edited = pixel_md5(np.asarray(Image.open(folder / "0.png").convert("RGB")))
    assert edited not in stat_before
    # size + mtime: the rebuild keeps the stale record; content: it reads the file again
    assert md5s([{**source, "root": "../src"}], "stat") == stat_before
    assert edited in md5s([{**source, "root": "../src", "fingerprint": "content"}], "content")
