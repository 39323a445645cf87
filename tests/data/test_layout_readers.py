"""The layout readers of `dataset_builders/readers/`, each built through `run_build` from a small
replica written in the layout its dataset's authors publish (file names, columns, nesting), with
generated images, planted identifiers and bad rows: LLaVA JSON / JSONL (GMAI-VL, PubMedVision zips,
GMAI-VL's `example_list.json`), NIH ChestX-ray14, ISIC 2019 and MedMNIST."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from gmaivl.dataset_builders import iter_records
from gmaivl.dataset_builders.engine import run_build
from gmaivl.dataset_builders.spec import SpecError, load_build_spec

from .test_privacy import leaks, published_texts, texture

COMMON = {"department": "Radiology", "clinical_task": "Disease Diagnosis"}


def build(tmp_path: Path, sources: list[dict], workers: int = 1, **spec) -> tuple[Path, object]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "build.yaml"
    path.write_text(
        yaml.safe_dump({"name": "layouts", "sources": sources, "qc": {"min_image_side": 32}, **spec})
    )
    out = tmp_path / "out"
    return out, run_build(path, out, workers=workers, progress=False)


def config_rows(out: Path, config: str) -> list[dict]:
    return [
        row for path in sorted((out / config).glob("*.parquet")) for row in pq.read_table(path).to_pylist()
    ]


def assert_nothing_leaks(out: Path, *extra: bytes) -> None:
    checked = 0
    for path, data in published_texts(out):
        assert not leaks(data), f"{path}: {leaks(data)}"
        for secret in extra:
            assert secret not in data, f"{path}: {secret!r}"
        checked += 1
    assert checked > 10


def save(path: Path, seed: int, size: int = 96, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = texture(seed, size)
    Image.fromarray(pixels[..., 0] if gray else pixels).save(path)


def turns(*values: str) -> list[dict[str, str]]:
    return [{"from": "human" if k % 2 == 0 else "gpt", "value": v} for k, v in enumerate(values)]


CAPTION_ASK = "<image>\nCould you kindly generate a caption that provides an overview of the medical image depicted here?"
CAPTION = "This histopathological image exhibits a section of tissue featuring glandular structures lined by columnar epithelial cells."


# -- LLaVA JSON / JSONL ----------------------------------------------------------------------------
def test_llava_json_and_jsonl_rows_keep_their_conversations_and_images(tmp_path):
    root = tmp_path / "src" / "gmai"
    save(root / "images" / "DOE_JANE_12345.png", 1)
    save(root / "images" / "case_1.tif", 2, gray=True)  # GMAI-VL's example image is a TIFF
    save(root / "images" / "a.png", 3)
    save(root / "images" / "b.png", 4)
    save(root / "private" / "SMITH_JOHN_777.png", 5)  # in the root, outside the image folder
    (root / "images" / "link.png").symlink_to(root / "private" / "SMITH_JOHN_777.png")
    save(tmp_path / "elsewhere" / "MILLER_ANNA_4242.png", 6)
    entries = [
        # GMAI-VL's examples/example_data.json layout: an id that spells the source path
        {
            "image": "DOE_JANE_12345.png",
            "conversations": turns(CAPTION_ASK, CAPTION),
            "id": "2d#cls#histopathology#crc100k#images#NORM#DOE_JANE_12345.png",
            "width": 96,
            "height": 96,
        },
        {
            "id": "ZZSMITH-2",
            "image": "case_1.tif",
            "conversations": turns(
                "<image>\nWhat modality is this?",
                "It is a CT slice.",
                "Is the liver visible?",
                "Yes, on the left.",
            ),
        },
        {
            "id": "multi",
            "image": ["a.png", "b.png"],
            "conversations": turns("<image>\n<image>\nCompare the two images.", "The second is brighter."),
        },
        {"id": "3", "image": "ZZSMITH_missing.png", "conversations": turns("<image>\nDescribe.", "A scan.")},
        {"id": "4", "image": "../private/SMITH_JOHN_777.png", "conversations": turns("<image>\nA?", "B.")},
        {
            "id": "5",
            "image": str(tmp_path / "elsewhere" / "MILLER_ANNA_4242.png"),
            "conversations": turns("<image>\nA?", "B."),
        },
        {"id": "6", "image": "link.png", "conversations": turns("<image>\nA?", "B.")},
        {
            "id": "7",
            "conversations": turns("What is a normal resting heart rate?", "60 to 100 beats per minute."),
        },
        {"id": "8", "image": "a.png", "conversations": turns("<image>\n<image>\nTwo?", "One.")},
        {"id": "9", "conversations": turns("<image>\nWhat is shown?", "A lesion.")},
    ]
    (root / "example_data.json").write_text(json.dumps(entries, indent=4))
    jsonl = [
        json.dumps(
            {"id": "j1", "image": "b.png", "conversations": turns("<image>\nAny fracture?", "No fracture.")}
        ),
        "{not json",
    ]
    (root / "more.jsonl").write_text("\n".join(jsonl) + "\n")
    source = {
        "name": "gmai",
        "type": "llava",
        "root": "src/gmai",
        "annotations": ["example_data.json", "more.jsonl"],
        "image_folder": "images",
    }
    out, report = build(tmp_path, [source])

    assert report.errors_by_kind == {
        "missing_image": 2,  # a file that is not there; <image> in a row without an image
        "outside_root": 3,  # `..`, an absolute path, a symlink out of the image folder
        "image_count_mismatch": 1,
        "invalid_json": 1,
    }
    assert {e["item"] for e in report.errors} >= {"annotations 1 entry 4", "annotations 2 entry 2"}
    rows = config_rows(out, "instruct")
    assert len(rows) == 4 and {r["generator"] for r in rows} == {"import"}
    by_first = {r["messages"][0]["content"]: r for r in rows}
    caption = by_first[
        "Could you kindly generate a caption that provides an overview of the medical image depicted here?"
    ]
    assert caption["messages"][1] == {"role": "assistant", "content": CAPTION}
    assert caption["question_type"] == "instruct" and len(caption["images"]) == 1
    dialogue = by_first["What modality is this?"]
    assert [m["role"] for m in dialogue["messages"]] == ["user", "assistant", "user", "assistant"]
    assert dialogue["question_type"] == "dialogue"
    assert len(by_first["Compare the two images."]["images"]) == 2
    assert "Any fracture?" in by_first
    assert all("<image>" not in m["content"] for r in rows for m in r["messages"])
    # nothing is generated for a given dialogue; the row without an image is a text row
    assert "caption" not in report.rows_published and "percept" not in report.rows_published
    (text,) = config_rows(out, "text_single")
    assert text["messages"][1]["content"] == "60 to 100 beats per minute."
    records = list(iter_records(out))
    assert len(records) == 4 and {r.label for r in records} == {""}
    assert_nothing_leaks(out)


def test_pubmedvision_images_are_read_inside_their_zip_archives(tmp_path):
    root = tmp_path / "src" / "pmv"
    root.mkdir(parents=True)
    images = {}
    for k, name in enumerate(["PMC1_fig1.jpg", "PMC1_fig2.jpg", "MILLER_ANNA_4242.jpg", "PMC2_fig1.jpg"]):
        buffer = Path(tmp_path / "tmp.jpg")
        Image.fromarray(texture(20 + k)).save(buffer, quality=95)
        images[name] = buffer.read_bytes()
    # `unzip -j images_$i.zip -d images/`: members are matched by file name, whatever their folder
    with zipfile.ZipFile(root / "images_0.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("PMC1_fig1.jpg", images["PMC1_fig1.jpg"])
        archive.writestr("MILLER_ANNA_4242.jpg", images["MILLER_ANNA_4242.jpg"])
    with zipfile.ZipFile(root / "images_1.zip", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("images/PMC1_fig2.jpg", images["PMC1_fig2.jpg"])
        archive.writestr("images/PMC2_fig1.jpg", images["PMC2_fig1.jpg"])

    def entry(id_: str, paths: list[str], question: str) -> dict:
        return {
            "id": id_,
            "image": [f"images/{p}" for p in paths],
            "conversations": turns("<image>\n" * len(paths) + question, "The image shows a chest CT."),
            "modality": "Computed Tomography",
            "body_part": "Chest",
        }

    entries = [
        entry("PMC1_SMITH_JOHN_777", ["PMC1_fig1.jpg"], "What does the image show?"),
        entry("PMC1-2", ["PMC1_fig2.jpg", "PMC2_fig1.jpg"], "Compare the panels."),
        entry("PLANTEDPID", ["MILLER_ANNA_4242.jpg"], "Which organ is visible?"),
        entry("PMC3", ["PMC3_fig9.jpg"], "Describe."),  # not in any archive
        entry("PMC4", ["../PMC1_fig1.jpg"], "Describe."),
    ]
    (root / "PubMedVision_InstructionTuning_VQA.json").write_text(json.dumps(entries))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    source = {
        "name": "pmv",
        "type": "llava",
        "root": "src/pmv",
        "annotations": "PubMedVision_InstructionTuning_VQA.json",
        "image_zips": ["images_*.zip"],
        "modality": "CT",
        "department": "Pulmonary Medicine",
    }
    out, report = build(tmp_path, [source])
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing extracted
    assert report.errors_by_kind == {"missing_image": 1, "outside_root": 1}
    rows = config_rows(out, "instruct")
    assert sorted(len(r["images"]) for r in rows) == [1, 1, 2]
    assert {r["modality"] for r in rows} == {"CT"}
    assert_nothing_leaks(out)
    # worker processes open the archives themselves (no handle crosses a fork): the same rows
    parallel, _ = build(tmp_path / "parallel", [{**source, "root": "../src/pmv", "unit_size": 1}], workers=2)
    again = config_rows(parallel, "instruct")
    assert sorted((r["messages"][0]["content"], len(r["images"])) for r in again) == sorted(
        (r["messages"][0]["content"], len(r["images"])) for r in rows
    )


def test_gmai_vl_example_list_names_the_annotation_files_and_their_sample_ratios(tmp_path):
    root = tmp_path / "GMAI-VL"
    examples = root / "examples"
    save(examples / "example.tif", 30)
    save(examples / "example_2.tif", 31)
    data = [
        {
            "image": "example.tif",
            "conversations": turns(CAPTION_ASK, CAPTION),
            "id": "2d#cls#a",
            "width": 96,
            "height": 96,
        },
        {
            "image": "example_2.tif",
            "conversations": turns("<image>\nWhich tissue?", "Colon."),
            "id": "2d#cls#b",
        },
    ]
    (examples / "example_data.json").write_text(json.dumps(data, indent=4))
    lines = []
    for k in range(4):
        save(root / "more" / "images" / f"{k}.png", 40 + k)
        lines.append(
            json.dumps(
                {
                    "id": str(k),
                    "image": f"{k}.png",
                    "conversations": turns("<image>\nFinding?", f"Finding {k}."),
                }
            )
        )
    (root / "more" / "data.jsonl").write_text("\n".join(lines) + "\n")
    # GMAI-VL's examples/example_list.json, trailing comma included
    (examples / "example_list.json").write_text(
        "{\n"
        '    "FILE1": {\n        "image_dir": "examples",\n        "annotations": "examples/example_data.json",\n'
        '        "sample_ratio": 1.0,\n        "length": 2,\n        "data_augment": true\n    },\n'
        '    "FILE2": {\n        "image_dir": "more/images",\n        "annotations": "more/data.jsonl",\n'
        '        "sample_ratio": 0.5,\n        "length": 4,\n        "data_augment": false\n    },\n'
        "}"
    )
    source = {"name": "gmai", "type": "llava", "root": "GMAI-VL", "meta": "examples/example_list.json"}
    out, report = build(tmp_path, [source])
    assert report.errors_by_kind == {}
    rows = config_rows(out, "instruct")
    answers = sorted(r["messages"][-1]["content"] for r in rows)
    assert len(rows) == 4 and {"Colon.", CAPTION} <= set(answers)
    assert sum(a.startswith("Finding ") for a in answers) == 2  # half of FILE2, the same half every build
    again, _ = build(tmp_path / "again", [{**source, "root": "../GMAI-VL"}])
    assert sorted(r["messages"][-1]["content"] for r in config_rows(again, "instruct")) == answers


# -- NIH ChestX-ray14 ------------------------------------------------------------------------------
CXR_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def test_chestxray14_multi_labels_become_one_record_per_finding(tmp_path):
    root = tmp_path / "src" / "cxr"
    rows = [
        ("00031337_000.png", "Effusion|Atelectasis", "0", "PLANTEDPID", "images_001"),
        ("00031337_001.png", "No Finding", "1", "31337", "images_001"),
        ("00031338_000.png", "Cardiomegaly|Effusion|Pleural_Thickening", "0", "31338", "images_002"),
        ("00031339_000.png", "Hernia", "0", "31339", "images_002"),
        ("00031340_000.png", "Mass", "0", "31340", None),  # listed, not on disk
        ("00031341_000.png", "No Finding|Mass", "0", "31341", "images_002"),
    ]
    lines = [CXR_HEADER]
    for k, (name, labels, follow_up, patient, folder) in enumerate(rows):
        lines.append(f"{name},{labels},{follow_up},{patient},58,M,PA,2682,2749,0.143,0.143")
        if folder:
            save(root / folder / "images" / name, 50 + k, size=128, gray=True)
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text(
        "00031337_000.png\n00031337_001.png\n00031338_000.png\n00031340_000.png\n"
    )
    (root / "test_list.txt").write_text("00031339_000.png\n00031341_000.png\n")
    (root / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
    source = {
        "name": "cxr",
        "type": "multilabel_csv",
        "root": "src/cxr",
        "modality": "X-ray",
        "split_files": {"train": "train_val_list.txt", "test": "test_list.txt"},
        **COMMON,
    }
    out, report = build(tmp_path, [source])
    assert report.errors_by_kind == {"missing_image": 1, "contradictory_labels": 1}
    records = list(iter_records(out))
    by_image: dict[str, list] = {}
    for record in records:
        by_image.setdefault(record.record_id.split("#a")[0], []).append(record)
    found = sorted(sorted(r.label for r in group) for group in by_image.values())
    assert found == [
        ["atelectasis", "effusion"],
        ["cardiomegaly", "effusion", "pleural thickening"],
        ["hernia"],
        ["no abnormality"],
    ]
    assert not any("|" in r.label for r in records)
    for group in by_image.values():
        labels = sorted(r.label for r in group)
        for record in group:
            assert record.meta.get("labels", labels) == labels
            assert not set(labels) - {record.label} & set(
                record.label_space
            )  # co-findings are no distractors
    assert {r.split for r in records if r.label == "hernia"} == {"test"}
    assert {r.split for r in records if r.label != "hernia"} == {"train"}
    label_of = {r.record_id: r for r in records}
    for row in config_rows(out, "percept"):
        record = label_of[row["record_id"]]
        others = set(record.meta.get("labels", [])) - {record.label}
        assert not others & set(row["options"]), row["question"]
    assert_nothing_leaks(out, b"00031337", b"31338")


# -- ISIC 2019 -------------------------------------------------------------------------------------
def test_isic2019_one_hot_columns_give_readable_labels(tmp_path):
    root = tmp_path / "src" / "isic"
    images = root / "ISIC_2019_Training_Input"
    header = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    rows = [
        ("ISIC_0000000", "NV"),
        ("ISIC_0000001", "MEL"),
        ("ISIC_0000002_downsampled", "BCC"),
        ("DOE_JANE_12345", "SCC"),  # a file named after a patient
        ("ISIC_0000003", "UNK"),
        ("ISIC_0000004", None),  # no positive column
        ("ISIC_0000005", "DF"),  # no image
        ("../ISIC_0000001", "MEL"),
    ]
    images.mkdir(parents=True)
    with open(root / "ISIC_2019_Training_GroundTruth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for k, (name, label) in enumerate(rows):
            writer.writerow([name, *("1.0" if column == label else "0.0" for column in header[1:])])
            if name.startswith(("ISIC_000000", "DOE")) and label not in (None, "DF"):
                Image.fromarray(texture(60 + k)).save(images / f"{name}.jpg", quality=95)
    (images / "ATTRIBUTION.txt").write_text("ISIC archive\n")
    (images / "LICENSE.txt").write_text("CC-BY-NC\n")
    (root / "ISIC_2019_Training_Metadata.csv").write_text(
        "image,age_approx,anatom_site_general,lesion_id,sex\nISIC_0000000,55.0,anterior torso,PLANTEDPID,female\n"
    )
    source = {"name": "isic", "type": "onehot_csv", "root": "src/isic", "modality": "dermoscopy", **COMMON}
    out, report = build(tmp_path, [{**source, "department": "Dermatology"}])
    assert report.errors_by_kind == {"missing_label": 1, "missing_image": 1, "outside_root": 1}
    assert report.dropped_ingest["dropped_label"] == 1  # the UNK row
    records = list(iter_records(out))
    assert sorted(r.label for r in records) == [
        "basal cell carcinoma",
        "melanocytic nevus",
        "melanoma",
        "squamous cell carcinoma",
    ]
    assert set(records[0].label_space) == {
        "melanoma",
        "melanocytic nevus",
        "basal cell carcinoma",
        "actinic keratosis",
        "benign keratosis",
        "dermatofibroma",
        "vascular lesion",
        "squamous cell carcinoma",
    }
    assert_nothing_leaks(out)


# -- MedMNIST --------------------------------------------------------------------------------------
def _mnist_images(count: int, seed: int, colour: bool) -> np.ndarray:
    planes = [texture(seed + k, 32)[2:30, 2:30] for k in range(count)]
    return np.stack(planes if colour else [p[..., 1] for p in planes]).astype(np.uint8)


def test_medmnist_npz_splits_and_label_names(tmp_path):
    from gmaivl.dataset_builders.readers.medmnist import npz_array

    root = tmp_path / "src" / "mnist"
    root.mkdir(parents=True)
    np.savez_compressed(
        root / "pathmnist.npz",
        train_images=_mnist_images(6, 100, True),
        train_labels=np.array([[0], [3], [8], [3], [5], [6]], np.uint8),
        val_images=_mnist_images(2, 200, True),
        val_labels=np.array([[1], [2]], np.uint8),
        test_images=_mnist_images(2, 300, True),
        test_labels=np.array([[4], [7]], np.uint8),
    )
    chest = np.zeros((4, 14), np.uint8)
    chest[0, [0, 2]] = 1  # atelectasis + effusion
    chest[2, 13] = 1  # hernia
    chest[3, 1] = 1  # cardiomegaly
    np.savez(  # uncompressed: memory-mapped
        root / "chestmnist.npz",
        train_images=_mnist_images(4, 400, False),
        train_labels=chest,
        val_images=_mnist_images(1, 500, False),
        val_labels=np.eye(14, dtype=np.uint8)[[4]],
        test_images=_mnist_images(1, 600, False),
        test_labels=np.eye(14, dtype=np.uint8)[[5]],
    )
    assert isinstance(npz_array(root / "chestmnist.npz", "train_images", 1 << 30), np.memmap)
    common = {"root": "src/mnist", "type": "medmnist", "min_side": 64}
    sources = [
        {
            "name": "path",
            "file": "pathmnist.npz",
            "modality": "pathology",
            "department": "Pathology",
            **common,
        },
        {"name": "chest", "file": "chestmnist.npz", "modality": "X-ray", **COMMON, **common},
    ]
    out, report = build(tmp_path, sources)
    assert report.errors_by_kind == {}
    records = list(iter_records(out))
    path = [r for r in records if r.source_dataset == "path"]
    assert {s: sum(r.split == s for r in path) for s in ("train", "validation", "test")} == {
        "train": 6,
        "validation": 2,
        "test": 2,
    }
    assert sorted(r.label for r in path if r.split == "validation") == ["background", "debris"]
    assert {r.label for r in path if r.split == "train"} == {
        "adipose",
        "lymphocytes",
        "colorectal adenocarcinoma epithelium",
        "smooth muscle",
        "normal colon mucosa",
    }
    assert all(r.width == 64 for r in records)
    chest_labels = sorted((r.split, r.label) for r in records if r.source_dataset == "chest")
    assert chest_labels == [
        ("test", "nodule"),
        ("train", "atelectasis"),
        ("train", "cardiomegaly"),
        ("train", "effusion"),
        ("train", "hernia"),
        ("train", "no abnormality"),
        ("validation", "mass"),
    ]
    assert "validation" in report.splits["percept"]


# -- specs -----------------------------------------------------------------------------------------
def test_layout_keys_are_checked_when_the_spec_is_loaded(tmp_path):
    path = tmp_path / "spec.yaml"

    def load(source: dict) -> None:
        path.write_text(yaml.safe_dump({"sources": [{"name": "s", **source}]}))
        load_build_spec(path)

    with pytest.raises(SpecError, match="exactly one of `annotations`"):
        load({"type": "llava"})
    with pytest.raises(SpecError, match=r"unknown key 'image_zip' \(did you mean 'image_zips'\?\)"):
        load({"type": "llava", "annotations": "a.json", "image_zip": ["x.zip"]})
    with pytest.raises(SpecError, match="no label names for organsmnist.npz"):
        load({"type": "medmnist", "file": "organsmnist.npz", "modality": "CT", **COMMON})
    load(
        {"type": "medmnist", "file": "organsmnist.npz", "labels": {0: "bladder"}, "modality": "CT", **COMMON}
    )
    with pytest.raises(SpecError, match="key 'separator' must be a string"):
        load({"type": "multilabel_csv", "separator": 1, "modality": "X-ray", **COMMON})
