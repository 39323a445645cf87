"""Serving sees the training pixels: for 8-bit RGB images of any aspect ratio, GMAI-VL's image
processor and the LLaVA processor that `gmaivl model export --format llava` writes agree within
1/255 (in [0, 1] units, before CLIP normalisation)."""

import numpy as np
import pytest
from PIL import Image
from transformers import AutoImageProcessor

from gmaivl import GMAIVLImageProcessor
from gmaivl.core.export import llava_image_processor

SIZES = [(40, 60), (60, 40), (336, 500), (500, 336), (37, 101), (123, 77), (56, 56), (5, 400)]


def unit(pixel_values: np.ndarray, processor) -> np.ndarray:
    """CLIP-normalised pixels back to [0, 1] units."""
    mean = np.asarray(processor.image_mean, dtype=np.float64)[:, None, None]
    std = np.asarray(processor.image_std, dtype=np.float64)[:, None, None]
    return pixel_values.astype(np.float64) * std + mean


def pair(size: int, pad: bool, tmp_path):
    ours = GMAIVLImageProcessor(size=size, do_pad_to_square=pad)
    llava_image_processor(ours).save_pretrained(tmp_path)
    # What a server reads back from the exported folder (PIL backend: torchvision is not installed).
    return ours, AutoImageProcessor.from_pretrained(tmp_path)


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("side", [56, 336])
def test_exported_processor_gives_the_training_pixels(side, pad, tmp_path):
    ours, served = pair(side, pad, tmp_path)
    assert type(served).__name__ == "LlavaImageProcessorPil"
    worst = 0.0
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        for height, width in SIZES:
            array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = Image.fromarray(array)
            a = ours(image, return_tensors="np")["pixel_values"]
            b = served(image, return_tensors="np")["pixel_values"]
            assert a.shape == b.shape == (1, 3, side, side)
            diff = np.abs(unit(a, ours) - unit(b, served)).max()
            assert diff <= 1 / 255 + 1e-6, f"seed {seed}, {height}x{width}: max diff {diff * 255:.2f}/255"
            worst = max(worst, diff)
            # numpy arrays take the same path as PIL images
            np.testing.assert_array_equal(ours(array, return_tensors="np")["pixel_values"], a)
    assert worst < 1e-5  # in fact the same 8-bit computation: equal up to float rounding


def test_padding_is_the_eight_bit_mean_colour():
    processor = GMAIVLImageProcessor(size=60)
    black = np.zeros((20, 60, 3), dtype=np.uint8)  # padded to 60x60: rows 0-19 and 40-59 are padding
    values = unit(processor(black, return_tensors="np")["pixel_values"], processor)[0]
    expected = np.floor(np.asarray(processor.image_mean) * 255) / 255  # int(mean * 255), as LLaVA
    np.testing.assert_allclose(values[:, :20, :].mean(axis=(1, 2)), expected, atol=1e-6)
    np.testing.assert_allclose(values[:, 20:40, :], 0.0, atol=1e-6)


def test_sixteen_bit_and_windowed_inputs_keep_the_float_path():
    """No 8-bit quantisation for inputs that are not 8-bit: a 16-bit ramp keeps its fine levels."""
    processor = GMAIVLImageProcessor(size=64)
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))  # 32x64: padded to 64x64
    values = unit(processor(ramp, return_tensors="np")["pixel_values"], processor)[0, 0, 32, :]
    steps = values * 255
    assert np.abs(steps - np.round(steps)).max() > 0.1  # not on the 8-bit grid
    np.testing.assert_allclose(values, np.linspace(0, 1, 64), atol=1e-3)
    # and the float path pads with the exact (float) mean
    padded = unit(processor(ramp, return_tensors="np")["pixel_values"], processor)[0, :, :8, :]
    np.testing.assert_allclose(padded.mean(axis=(1, 2)), processor.image_mean, atol=1e-5)
