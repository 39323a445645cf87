"""Smaller pieces: labels, imaging, masks, option rule, QC indexes, specs, export, push, CLI."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import yaml
from datasets import load_dataset
from pydicom.data import get_testdata_file

from gmaivl.app.cli import main
from gmaivl.dataset_builders.imaging import mask_to_boxes, read_dicom, to_rgb8
from gmaivl.dataset_builders.labels import LabelStandardizer
from gmaivl.dataset_builders.qc import HammingIndex, QualityControl, count_tokens
from gmaivl.dataset_builders.spec import SpecError, load_build_spec
from gmaivl.dataset_builders.templates import choose_options, rng_for


def test_label_standardisation_rules(tmp_path):
    standardize = LabelStandardizer()
    assert standardize("AMD") == "age-related macular degeneration"
    assert standardize("Left Kidney") == standardize("right_kidney") == "kidney"
    assert standardize("lung nodule") == standardize("Pulmonary nodule") == "pulmonary nodule"
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {"abbreviations": {"ptx": "pneumothorax"}, "synonyms": {}, "laterality": {"words": []}}
        )
    )
    custom = LabelStandardizer(rules)
    assert custom("PTX") == "pneumothorax" and custom("left lung") == "left lung"


def test_ct_window_and_mr_percentiles_on_real_dicom():
    ct, meta = read_dicom(get_testdata_file("CT_small.dcm"))
    assert meta["Modality"] == "CT" and "PatientName" not in meta
    abdomen, lung = to_rgb8(ct[0], "CT", "abdomen"), to_rgb8(ct[0], "CT", "lung")
    assert abdomen.shape == (128, 128, 3) and abdomen.dtype == np.uint8
    assert not np.array_equal(abdomen, lung)
    level, width = 40.0, 400.0
    expected = np.clip((ct[0] - (level - width / 2)) / width, 0, 1) * 255
    assert np.abs(abdomen[..., 0].astype(float) - expected).max() <= 1.0
    mr, _ = read_dicom(get_testdata_file("MR_small.dcm"))
    rgb = to_rgb8(mr[0], "MR")
    assert rgb.min() == 0 and rgb.max() == 255
    us, meta = read_dicom(get_testdata_file("ExplVR_BigEnd.dcm"))
    assert meta["Modality"] == "US" and to_rgb8(us[0], "US").shape == (60, 80, 3)


def test_mask_to_boxes_per_component_with_drops():
    mask = np.zeros((64, 64), np.int32)
    mask[2:12, 3:20] = 1
    mask[40:50, 40:60] = 1
    mask[30:31, 5:7] = 1  # tiny
    mask[20:30, 30:34] = 2
    boxes, dropped = mask_to_boxes(mask, values=[1, 2, 3], min_area=10)
    assert sorted((b.value, tuple(b.bbox)) for b in boxes) == [
        (1, (3, 2, 20, 12)),
        (1, (40, 40, 60, 50)),
        (2, (30, 20, 34, 30)),
    ]
    assert dropped == {"tiny_component": 1, "empty_label": 1}
    top, dropped = mask_to_boxes(mask, values=[1], min_area=10, max_per_label=1)
    assert len(top) == 1 and top[0].area == 200 and dropped["extra_component"] == 1


def test_option_count_rule_and_determinism():
    pool = [f"label {i}" for i in range(10)]
    counts = Counter()
    for i in range(400):
        options, letter = choose_options("label 3", pool, rng_for(0, f"r{i}"))
        assert "label 3" in options and options["ABCDE".index(letter)] == "label 3"
        assert len(set(options)) == len(options)
        counts[len(options) - 1] += 1
    assert set(counts) == {1, 2, 3, 4}  # 1..4 distractors, never more
    assert choose_options("a", ["a", "b"], rng_for(0, "x"))[0] in (["a", "b"], ["b", "a"])
    assert choose_options("only", ["only"], rng_for(0, "x")) is None
    assert choose_options("label 3", pool, rng_for(5, "r1")) == choose_options(
        "label 3", pool, rng_for(5, "r1")
    )


def test_hamming_index_and_text_qc():
    index = HammingIndex(distance=3)
    index.add(0b1011 << 40, owner=7)
    assert index.find((0b1011 << 40) ^ 0b111) == 7  # 3 bits away
    assert index.find((0b1011 << 40) ^ 0b1111) is None  # 4 bits away
    index.add(0b1011 << 40, owner=8)  # a second image with the same hash
    index.add((0b1011 << 40) ^ (1 << 63), owner=9)  # 1 bit away, in another band
    assert index.find_all((0b1011 << 40) ^ 0b11) == [(7, 2), (8, 2), (9, 3)]
    with pytest.raises(ValueError, match="Hamming distance"):
        HammingIndex(distance=64)
    qc = QualityControl({"min_caption_tokens": 5, "max_tokens": 60})
    base = {
        "config": "text_single",
        "row_id": "a",
        "messages": [
            {"role": "user", "content": "How is anaemia treated in adults with low ferritin levels?"},
            {
                "role": "assistant",
                "content": "Oral iron first, with a repeat blood count after four weeks; intravenous iron when oral iron fails or is not tolerated.",
            },
        ],
    }
    assert qc.check_row(base) is None
    near = {
        **base,
        "row_id": "b",
        "messages": [
            base["messages"][0],
            {
                "role": "assistant",
                "content": "Oral iron first, with a repeat blood count after four weeks; intravenous iron when oral iron fails or is not tolerated!",
            },
        ],
    }
    assert qc.check_row(near) == "near_duplicate_text"
    assert (
        qc.check_row(
            {
                **base,
                "config": "caption",
                "row_id": "c",
                "messages": [
                    {"role": "user", "content": "Describe"},
                    {"role": "assistant", "content": "A CT."},
                ],
            }
        )
        == "caption_too_short"
    )
    assert (
        qc.check_row({**base, "row_id": "d", "messages": [{"role": "user", "content": "word " * 70}]})
        == "text_too_long"
    )
    assert count_tokens("高血压 is 2 words") == 3 + 3
    assert qc.dropped == Counter({"near_duplicate_text": 1, "caption_too_short": 1, "text_too_long": 1})


def test_spec_errors_name_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump({"sources": [{"name": "x", "type": "hologram", "modality": "CT", "department": "D"}]})
    )
    with pytest.raises(SpecError, match=r"bad.yaml: source 'x': unknown type 'hologram'"):
        load_build_spec(path)
    path.write_text(yaml.safe_dump({"sources": [{"name": "x", "type": "dicom", "department": "D"}]}))
    with pytest.raises(SpecError, match="missing required field 'modality'"):
        load_build_spec(path)
    (tmp_path / "one.yaml").write_text(
        yaml.safe_dump(
            {"name": "inc", "type": "dicom", "modality": "CT", "department": "D", "root": "dcm", "label": "x"}
        )
    )
    path.write_text(yaml.safe_dump({"sources": [{"include": "one.yaml"}]}))
    spec = load_build_spec(path)
    assert spec.sources[0].name == "inc" and spec.sources[0].base_dir == tmp_path / "dcm"


def test_export_llava_and_records_cli(built, tmp_path, capsys):
    out, report = built
    target = tmp_path / "llava" / "caption.json"
    assert (
        main(["data", "export-llava", "--folder", str(out), "--config", "caption", "--out", str(target)]) == 0
    )
    entries = json.loads(target.read_text())
    assert len(entries) == len(load_dataset(str(out), "caption", split="train"))
    first = entries[0]
    assert first["conversations"][0]["from"] == "human" and first["conversations"][0]["value"].startswith(
        "<image>\n"
    )
    assert (target.parent / first["image"]).is_file()
    text_target = tmp_path / "llava" / "text.json"
    assert (
        main(
            [
                "data",
                "export-llava",
                "--folder",
                str(out),
                "--config",
                "text_multi",
                "--out",
                str(text_target),
            ]
        )
        == 0
    )
    assert "image" not in json.loads(text_target.read_text())[0]
    capsys.readouterr()
    assert main(["data", "records", "--folder", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == report["records"]["kept"] and "CT" in summary["by_modality"]


def test_push_uploads_dataset_files_only(built, monkeypatch):
    out, _ = built
    import huggingface_hub.hf_api as hf_api
    from huggingface_hub import HfApi

    captured = {}
    monkeypatch.setattr(hf_api, "is_xet_available", lambda: False)
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: captured.setdefault("repo", (repo_id, kw))
    )

    def fake_commit(self, repo_id, operations, **kwargs):
        captured["commit"] = (repo_id, kwargs, [op.path_in_repo for op in operations])
        return "commit-url"

    monkeypatch.setattr(HfApi, "create_commit", fake_commit)
    # stale Parquet files of the configs are deleted: the push lists the repo's files
    monkeypatch.setattr(HfApi, "list_repo_files", lambda self, repo_id, **kw: [".gitattributes"])
    # upload_folder asks the Hub to validate the card's YAML: offline, record what it would send
    monkeypatch.setattr(
        HfApi, "_validate_yaml", lambda self, content, **kw: captured.setdefault("yaml", content)
    )
    assert main(["data", "push", "--folder", str(out), "--repo-id", "org/gmai-demo"]) == 0
    repo_id, kwargs, paths = captured["commit"]
    assert repo_id == "org/gmai-demo" and kwargs["repo_type"] == "dataset"
    assert captured["repo"][1]["repo_type"] == "dataset"
    assert "README.md" in paths and "build_report.json" in paths and "statistics.png" in paths
    assert any(p.startswith("caption/train-") and p.endswith(".parquet") for p in paths)
    assert not any(p.startswith("_work") or p.endswith(".tmp") for p in paths)
    assert "config_name: caption" in captured["yaml"]


def test_push_failure_is_one_line(built, monkeypatch, cli_exit):
    from huggingface_hub import HfApi

    def refuse(self, repo_id, **kwargs):
        raise PermissionError("401 Client Error: Unauthorized (invalid token)")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    out, _ = built
    code, line = cli_exit(["data", "push", "--folder", str(out), "--repo-id", "org/x"])
    assert (code, line) == (
        2,
        "gmaivl: error: push to org/x failed: PermissionError: 401 Client Error: Unauthorized (invalid token)",
    )


def test_cli_build_small_spec(demo_spec, tmp_path, capsys, cli_exit):
    demo = yaml.safe_load(demo_spec.read_text())
    sources = [
        {**s, "root": str(demo_spec.parent / s["root"])}
        for s in demo["sources"]
        if s["name"] in ("demo-mr", "demo-text-multi")
    ]
    spec = tmp_path / "small.yaml"
    spec.write_text(yaml.safe_dump({"name": "small", "sources": sources}))
    out = tmp_path / "out"
    assert main(["data", "ingest", "--spec", str(spec), "--out", str(out), "--quiet"]) == 0
    assert main(["data", "publish", "--spec", str(spec), "--out", str(out), "--quiet"]) == 0
    assert "report:" in capsys.readouterr().out
    report = json.loads((out / "build_report.json").read_text())
    assert report["rows"]["published"]["caption"] == 1 and report["rows"]["published"]["text_multi"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{name: x, type: nope}]")
    assert cli_exit(["data", "build", "--spec", str(bad), "--out", str(out), "--quiet"]) == (
        2,
        f"gmaivl: error: {bad}: source 'x': unknown type 'nope'; supported: class_folders, csv, coco, "
        "mask_pairs, nifti, msd, dicom, text, llava, medmnist, multilabel_csv, onehot_csv",
    )


def test_metaimage_volumes_through_simpleitk(tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    from gmaivl.dataset_builders.demo import package_files
    from gmaivl.dataset_builders.records import MedicalRecord
    from gmaivl.dataset_builders.registry import plan_units, read_unit

    data = np.asarray(
        nib.load(str(package_files()["anatomical.nii"])).dataobj, dtype=np.float32
    ).T  # (z, y, x)
    labels = np.zeros(data.shape, np.uint8)
    labels[10:14, 15:30, 8:20] = 1
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    image = sitk.GetImageFromArray(data)
    image.SetSpacing((2.0, 2.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "images" / "case1.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "labels" / "case1.nrrd"))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {
                        "name": "itk",
                        "type": "nifti",
                        "root": ".",
                        "images_dir": "images",
                        "labels_dir": "labels",
                        "modality": "MR",
                        "department": "Neurology",
                        "mask": {"values": {1: "lesion"}},
                    }
                ]
            }
        )
    )
    source = load_build_spec(spec_path).sources[0]
    (unit,) = plan_units(source)
    items = list(read_unit(source, unit, LabelStandardizer(), ["lesion"]))
    records = [i for i in items if isinstance(i, MedicalRecord)]
    assert [r.meta["slice"] for r in records] == [10, 11, 12, 13]
    # identity direction is LPS: the x axis turns round to RAS, the anterior side stays up
    width = data.shape[2]
    assert all(
        r.bbox == [width - 20.0, 15.0, width - 8.0, 30.0] and r.meta["spacing"] == [3.0, 2.0, 2.0]
        for r in records
    )


def test_metaimage_and_nifti_of_one_scan_give_the_same_slices(tmp_path):
    """An oblique-axis scan (axes permuted and flipped) reads the same from .nrrd/.mha as from .nii.gz."""
    import nibabel as nib
    import SimpleITK as sitk

    from gmaivl.dataset_builders.demo import package_files
    from gmaivl.dataset_builders.imaging import read_volume

    data = np.asarray(nib.load(str(package_files()["anatomical.nii"])).dataobj, dtype=np.float32).T
    image = sitk.GetImageFromArray(np.ascontiguousarray(data))
    image.SetSpacing((0.5, 0.8, 2.0))
    image.SetDirection((0, -1, 0, 1, 0, 0, 0, 0, -1))  # i -> posterior, j -> right, k -> inferior
    for name in ("scan.nii.gz", "scan.nrrd", "scan.mha"):
        sitk.WriteImage(image, str(tmp_path / name))
    nifti = read_volume(tmp_path / "scan.nii.gz")
    for name in ("scan.nrrd", "scan.mha"):
        itk = read_volume(tmp_path / name)
        np.testing.assert_array_equal(itk.data, nifti.data)
        np.testing.assert_allclose(itk.spacing, nifti.spacing, rtol=1e-6)
    assert nifti.data.shape == (data.shape[0], data.shape[2], data.shape[1])  # the in-plane axes swapped


@pytest.mark.parametrize(
    ("score", "expected"),
    [(3, 3.0), ("2.5", 2.5), ("4/5", 4.0), ("4 out of 5", 4.0), ("10", None), ("-1", None), (0, None)],
)
def test_judge_score_validation_reads_whole_numbers(score, expected):
    from gmaivl.dataset_builders.llm import validate_score

    if expected is None:  # out of the 1-5 scale: an invalid reply (retried), never a digit of it
        with pytest.raises(ValueError, match="not within 1-5"):
            validate_score({"score": score})
    else:
        assert validate_score({"score": score})[0] == expected
