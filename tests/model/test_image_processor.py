"""GMAIVLImageProcessor on real medical files, with hand-computed intensities."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import skimage
from PIL import Image
from pydicom.data import get_testdata_file

from gmaivl import GMAIVLImageProcessor
from gmaivl.modeling_gmaivl.image_processing_gmaivl import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    WINDOW_PRESETS,
    apply_window,
    percentile_normalize,
)

MEAN = np.asarray(OPENAI_CLIP_MEAN, dtype=np.float32)[:, None, None]
STD = np.asarray(OPENAI_CLIP_STD, dtype=np.float32)[:, None, None]


def hounsfield(name: str) -> np.ndarray:
    ds = pydicom.dcmread(get_testdata_file(name))
    return ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )


def test_ct_soft_tissue_window_matches_hand_computed_values():
    hu = hounsfield("CT_small.dcm")  # slope 1, intercept -1024
    processor = GMAIVLImageProcessor(size=hu.shape[0])  # 128: no resampling, values stay comparable
    unit = processor.to_unit_range(hu, window="soft_tissue")
    level, width = WINDOW_PRESETS["soft_tissue"]
    assert (level, width) == (40.0, 400.0)
    # Soft tissue: -160 HU -> 0, 240 HU -> 1, linear between.
    for (row, col), value in np.ndenumerate(hu[::17, ::13]):
        r, c = row * 17, col * 13
        expected = min(max((value + 160.0) / 400.0, 0.0), 1.0)
        assert unit[r, c, 0] == pytest.approx(expected, abs=1e-6)
        assert unit[r, c, 1] == unit[r, c, 2] == unit[r, c, 0]
    assert unit[hu <= -160].max() == 0.0 and unit[hu >= 240].min() == 1.0
    # Full pipeline: square already, same size, so pixel_values are the CLIP-normalised window.
    pixel_values = processor(hu, window="soft_tissue", return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 3, 128, 128)
    np.testing.assert_allclose(pixel_values[0], (unit.transpose(2, 0, 1) - MEAN) / STD, atol=1e-5)


def test_window_presets_and_explicit_level_width_agree():
    hu = hounsfield("CT_small.dcm")
    processor = GMAIVLImageProcessor(size=128)
    lung = processor.to_unit_range(hu, window="lung")
    explicit = processor.to_unit_range(hu, window=(-600, 1500))
    np.testing.assert_array_equal(lung, explicit)
    assert apply_window(np.array([-1350.0, -600.0, 150.0]), -600, 1500).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="Unknown window preset 'lungs'"):
        processor.to_unit_range(hu, window="lungs")
    with pytest.raises(ValueError, match="width must be positive"):
        processor.to_unit_range(hu, window=(40, 0))


def test_mr_percentile_normalisation_matches_hand_computed_values():
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array  # int16
    processor = GMAIVLImageProcessor(size=64, intensity="percentile", percentiles=(1.0, 99.0))
    unit = processor.to_unit_range(mr)[..., 0]
    low, high = np.percentile(mr.astype(np.float64), [1.0, 99.0])
    expected = np.clip((mr - low) / (high - low), 0, 1)
    np.testing.assert_allclose(unit, expected, atol=1e-6)
    assert (unit == 0).mean() >= 0.01 and (unit == 1).mean() >= 0.005
    np.testing.assert_allclose(percentile_normalize(mr, 1.0, 99.0), expected, atol=1e-6)
    # Without a window or percentile mode, 16-bit data is min-max scaled.
    minmax = GMAIVLImageProcessor(size=64).to_unit_range(mr)[..., 0]
    np.testing.assert_allclose(minmax, (mr - mr.min()) / (mr.max() - mr.min()), atol=1e-6)


def test_retina_is_padded_with_the_mean_colour_and_resized():
    path = Path(skimage.__file__).parent / "data" / "retina.jpg"
    image = Image.open(path)
    width, height = image.size
    image = image.crop((0, 0, width, height // 2))  # a 2:1 fundus photo: a quarter of padding each side
    processor = GMAIVLImageProcessor()
    pixel_values = processor(image, return_tensors="np")["pixel_values"]
    assert pixel_values.shape == (1, 3, 336, 336)
    # The top and bottom quarters are padding: LLaVA's 8-bit mean colour, int(mean * 255), for 8-bit
    # inputs (what a served LLaVA export pads with), i.e. 122/255 - mean in red, normalised.
    eight_bit_mean = np.floor(MEAN * 255) / 255
    padding = np.broadcast_to((eight_bit_mean - MEAN) / STD, (3, 80, 336))
    np.testing.assert_allclose(pixel_values[0, :, :80, :], padding, atol=1e-6)
    np.testing.assert_allclose(pixel_values[0, :, -80:, :], padding, atol=1e-6)
    # The centre band is the photo: its darkest pixels (the black surround) normalise to -mean/std.
    centre = pixel_values[0, :, 100:236, :]
    np.testing.assert_allclose(centre.min(axis=(1, 2)), (-MEAN / STD).ravel(), atol=0.05)
    assert np.abs(centre).mean() > 0.3


def test_accepts_the_array_layouts_medical_users_have():
    processor = GMAIVLImageProcessor(size=32)
    rng = np.random.default_rng(0)
    gray8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    expected = processor(np.repeat(gray8[..., None], 3, axis=-1), return_tensors="np")["pixel_values"]
    for variant in (gray8, gray8[..., None], gray8[None], Image.fromarray(gray8)):
        np.testing.assert_allclose(
            processor(variant, return_tensors="np")["pixel_values"], expected, atol=1e-6
        )
    chw = np.repeat(gray8[None], 3, axis=0)
    np.testing.assert_allclose(processor(chw, return_tensors="np")["pixel_values"], expected, atol=1e-6)
    sixteen = gray8.astype(np.uint16) * 257  # same picture in 16 bits: min-max gives the same result
    out16 = processor(Image.fromarray(sixteen), return_tensors="np")["pixel_values"]
    scaled = (gray8.astype(np.float64) - gray8.min()) / (gray8.max() - gray8.min())
    expected_minmax = processor(scaled.astype(np.float32), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(out16, expected_minmax, atol=1e-5)
    rgba = np.dstack([np.repeat(gray8[..., None], 3, axis=-1), np.full_like(gray8, 7)])
    np.testing.assert_allclose(processor(rgba, return_tensors="np")["pixel_values"], expected, atol=1e-6)
    floats = rng.random((25, 25, 3)).astype(np.float32)  # already in [0, 1]: kept as is
    unit = processor.to_unit_range(floats)
    np.testing.assert_array_equal(unit, floats)
    batch = processor([gray8, floats], return_tensors="pt")["pixel_values"]
    assert tuple(batch.shape) == (2, 3, 32, 32)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 10), dtype=np.uint8), "empty"),
        (np.zeros((1, 1), dtype=np.uint8), "smaller than min_size"),
        (np.full((8, 8), np.nan, dtype=np.float32), "NaN or infinite"),
        (np.ones((8, 8), dtype=np.complex64), "unsupported pixel dtype complex64"),
        (np.ones((8, 8), dtype=bool), "unsupported pixel dtype bool"),
        (np.zeros((5, 8, 8), dtype=np.uint8), "Slice 3D volumes"),
        ("not an image", "expected a PIL image"),
    ],
)
def test_bad_images_get_clear_errors(image, message):
    with pytest.raises((ValueError, TypeError), match=message):
        GMAIVLImageProcessor(size=32)(image)


def test_unknown_per_call_options_are_refused():
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['size'\]"):
        GMAIVLImageProcessor(size=32)(np.zeros((8, 8), dtype=np.uint8), size=64)


def test_settings_survive_save_and_load(tmp_path):
    processor = GMAIVLImageProcessor(size=64, window="bone", intensity="percentile", percentiles=(2, 98))
    processor.save_pretrained(tmp_path)
    loaded = GMAIVLImageProcessor.from_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["size"] == {
        "height": 64,
        "width": 64,
    }
    assert (loaded.side, loaded.window, loaded.intensity, loaded.percentiles) == (
        64,
        "bone",
        "percentile",
        [2, 98],
    )
    hu = hounsfield("CT_small.dcm")
    np.testing.assert_array_equal(processor(hu)["pixel_values"], loaded(hu)["pixel_values"])
