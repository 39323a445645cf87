"""Bad inputs: spec typos and wrong types fail before anything runs; bad pixels, blank images and
broken annotations are counted; a build that publishes nothing exits non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from gmaivl.dataset_builders.engine import run_build
from gmaivl.dataset_builders.imaging import BadPixels, read_image, to_rgb8
from gmaivl.dataset_builders.spec import SpecError, load_build_spec


def texture(seed: int, size: int = 80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def spec_file(tmp_path: Path, **source) -> Path:
    base = {"name": "s", "type": "class_folders", "root": "imgs", "modality": "CT", "department": "Radiology"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"sources": [{**base, **source}]}))
    return path


@pytest.mark.parametrize(
    "source, message",
    [
        ({"lable": "x"}, "unknown key 'lable' (did you mean 'label'?)"),
        ({"windw": "lung"}, "unknown key 'windw' (did you mean 'window'?)"),
        ({"type": "csv", "image_colum": "path"}, "unknown key 'image_colum' (did you mean 'image_column'?)"),
        (
            {"type": "csv", "options": {"label_colum": "y"}},
            "unknown key 'label_colum' (did you mean 'label_column'?)",
        ),
        ({"min_side": "big"}, "key 'min_side' must be an integer or null, got 'big'"),
        ({"window": 7}, "key 'window' must be a string or a list of a number or null, got 7"),
        ({"window": [40]}, "window must be a preset name or [level, width]"),
        ({"slices": 5}, "key 'slices' must be a mapping with keys axis, step, keep, max_per_volume, got 5"),
        ({"slices": {"stepp": 2}}, "unknown key 'stepp' (did you mean 'step'?)"),
        ({"slices": {"step": 0}}, "step must be >= 1"),
        ({"mask": {"values": {"one": "liver"}}}, "key 'values' must be a mapping an integer -> a string"),
        ({"type": "dicom", "series": "yes", "label": "x"}, "key 'series' must be true/false, got 'yes'"),
        ({"type": "text", "format": "dialog"}, "key 'format' must be one of 'single', 'multi', got 'dialog'"),
        ({"type": "dicm"}, "unknown type 'dicm' (did you mean 'dicom'?)"),
        ({"percentiles": [99, 1]}, "percentiles must be [lower, upper]"),
    ],
)
def test_spec_typos_and_types_fail_at_load_naming_the_key(tmp_path, source, message):
    with pytest.raises(SpecError) as error:
        load_build_spec(spec_file(tmp_path, **source))
    assert message in str(error.value) and str(tmp_path / "spec.yaml") in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "block, message",
    [
        (
            {"generation": {"max_atempts": 3}},
            "generation: unknown key 'max_atempts' (did you mean 'max_attempts'?)",
        ),
        ({"generation": {"judge": {"treshold": 2}}}, "unknown key 'treshold' (did you mean 'threshold'?)"),
        ({"qc": {"min_image_size": 32}}, "qc: unknown key 'min_image_size' (did you mean 'min_image_side'?)"),
        ({"publish": "big"}, "'publish' must be a mapping"),
        ({"privacy": {"id_key_fle": "k"}}, "unknown key 'id_key_fle' (did you mean 'id_key_file'?)"),
        ({"generaton": {}}, "unknown top-level key 'generaton' (did you mean 'generation'?)"),
    ],
)
def test_build_block_typos_fail_at_load(tmp_path, block, message):
    path = spec_file(tmp_path)
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **block}))
    with pytest.raises(SpecError) as error:
        load_build_spec(path)
    assert message in str(error.value)


def test_spec_error_is_one_cli_line_before_anything_runs(tmp_path, cli_exit):
    spec = spec_file(tmp_path, lable="x")
    code, line = cli_exit(["data", "build", "--spec", str(spec), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and line.startswith("gmaivl: error: ") and "did you mean 'label'?" in line
    assert not (tmp_path / "out" / "_work").exists()


def test_nan_and_inf_pixels_are_left_out_of_the_normalisation():
    rng = np.random.default_rng(0)
    mr = rng.normal(500, 100, (64, 64)).astype(np.float32)
    clean = to_rgb8(mr, "MR")
    for bad in (np.nan, np.inf, -np.inf):
        broken = mr.copy()
        broken[5, 7] = bad
        out = to_rgb8(broken, "MR")
        assert out[5, 7].tolist() == [0, 0, 0]
        diff = np.abs(out.astype(int) - clean.astype(int))
        diff[5, 7] = 0
        assert diff.max() <= 2 and out.std() > 20  # not a black slice
    ct = mr * 3 - 1000
    ct[0, :] = np.nan
    windowed = to_rgb8(ct, "CT", window="abdomen")
    assert (windowed[0] == 0).all() and windowed[1:].std() > 0
    with pytest.raises(BadPixels):
        to_rgb8(np.full((8, 8), np.nan, np.float32), "MR")


def test_blank_constant_and_nan_slices_are_dropped_with_counted_reasons(tmp_path):
    import nibabel as nib

    folder = tmp_path / "imgs" / "polyp"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((80, 80), np.uint8)).save(folder / "blank.png")
    Image.fromarray(np.full((80, 80, 3), 128, np.uint8)).save(folder / "constant.png")
    Image.fromarray(texture(1)).save(folder / "good.png")
    volume = np.random.default_rng(0).normal(100, 20, (48, 48, 3)).astype(np.float32)
    volume[:, :, 0] = np.nan  # a slice without a finite voxel
    volume[:, :, 1] = 0.0  # an empty slice
    volume[3, 4, 2] = np.nan  # one bad voxel in a good slice
    (tmp_path / "vol").mkdir()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "vol" / "v.nii.gz"))
    spec = {
        "sources": [
            {
                "name": "s",
                "type": "class_folders",
                "root": "imgs",
                "modality": "endoscopy",
                "department": "Radiology",
            },
            {
                "name": "v",
                "type": "nifti",
                "root": "vol",
                "images_dir": ".",
                "modality": "MR",
                "department": "Neurology",
                "label": "brain",
                "slices": {"axis": 0, "keep": "all"},
            },
        ],
        "qc": {"min_image_side": 16},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    report = run_build(tmp_path / "spec.yaml", tmp_path / "out", progress=False)
    assert report.dropped_ingest == {"blank_image": 2, "constant_image": 1, "non_finite_image": 1}
    assert report.records_ingested == 2 and report.errors_by_kind == {}


def test_nothing_usable_exits_non_zero(tmp_path, cli_exit):
    folder = tmp_path / "imgs" / "polyp"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((80, 80), np.uint8)).save(folder / "blank.png")
    (folder / "broken.png").write_bytes(b"not a png")
    spec = spec_file(tmp_path)
    code, line = cli_exit(["data", "build", "--spec", str(spec), "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and line.startswith("gmaivl: error: ") and "nothing usable was built" in line
    assert "unreadable: 1" in line and "blank_image" in line
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())  # written all the same
    assert report["errors"]["by_kind"] == {"unreadable": 1}


def test_coco_annotation_without_bbox_keeps_the_images_other_boxes(tmp_path):
    (tmp_path / "c" / "images").mkdir(parents=True)
    Image.fromarray(texture(3, 96)).save(tmp_path / "c" / "images" / "a.png")
    coco = {
        "images": [{"id": 7, "file_name": "a.png"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [5, 5, 30, 30]},
            {"id": 2, "image_id": 7, "category_id": 1, "segmentation": [[1, 1, 9, 9, 1, 9]]},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": "oops"},
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [40, 40, 30, 30]},
        ],
        "categories": [{"id": 1, "name": "polyp"}, {"id": 2, "name": "ulcer"}],
    }
    (tmp_path / "c" / "annotations.json").write_text(json.dumps(coco))
    spec = spec_file(tmp_path, type="coco", root="c", name="c", modality="endoscopy")
    report = run_build(spec, tmp_path / "out", progress=False)
    assert report.records_ingested == 2
    assert report.errors_by_kind == {"missing_bbox": 2}
    assert {e["item"] for e in report.errors} == {"image 7 annotation 2", "image 7 annotation 3"}


def test_16bit_png_memory_stays_near_its_pixel_size(tmp_path):
    import tracemalloc

    side = 4096
    ramp = (
        np.arange(side, dtype=np.uint32)[None, :] * 16 + np.arange(side, dtype=np.uint32)[:, None]
    ) % 65536
    path = tmp_path / "xray16.png"
    Image.fromarray(ramp.astype(np.uint16)).save(path, compress_level=1)
    assert path.stat().st_size < 1_000_000  # a small file holding 32 MiB of 16-bit pixels
    tracemalloc.start()  # numpy's buffers are traced (Pillow's own decode buffer, 1x more, is not)
    try:
        gray = read_image(path)
        rgb = to_rgb8(gray, "X-ray")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    pixel_bytes = side * side * 2
    assert gray.dtype == np.uint8 and rgb.shape == (side, side, 3) and gray.max() == 255 and gray.min() == 0
    # the 16-bit array, the 8-bit result and its RGB copy: about 2x; one float64 copy alone is 4x
    assert peak < 3 * pixel_bytes, peak / pixel_bytes
