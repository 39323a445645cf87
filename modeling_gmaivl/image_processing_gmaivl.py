"""GMAI-VL image processor: medical intensities in, CLIP-normalised 336 px squares out.

Pipeline per image (the GMAI-VL / LLaVA-1.5 preprocessing, plus what medical data needs first):

1. intensities to [0, 1]: 8-bit data is divided by 255; anything else (16-bit, signed CT in
   Hounsfield units, float MR) is windowed (`window=(level, width)` or a preset name such as
   "lung"), percentile-normalised (`intensity="percentile"`, for MR) or min-max scaled;
2. grayscale is repeated to RGB, alpha is dropped;
3. the image is padded to a square with the mean colour, resized to `size` (bicubic),
   normalised with the CLIP mean / std.

8-bit images (uint8, no window, `intensity="auto"`) take LLaVA's own 8-bit path instead, so that
a model served as LLaVA (`gmaivl model export --format llava`) sees the pixels it was trained on:
padded with the 8-bit mean colour (`int(mean * 255)`), resized by PIL as an 8-bit RGB image, then
divided by 255, exactly as transformers' `LlavaImageProcessor` / `CLIPImageProcessor` do. Other
inputs (16-bit, Hounsfield units, float MR) are padded and resized as 32-bit floats, with no
8-bit quantisation.

This file travels to the Hub with `save_pretrained`: torch, numpy, PIL and transformers only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor

from .intensity_gmaivl import (
    INTENSITY_MODES,
    WINDOW_PRESETS,
    _minmax,
    apply_window,
    percentile_normalize,
    resolve_window,
)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _to_array(image: Any, index: int) -> np.ndarray:
    """Any supported image object to a numpy array, HW or HWC, original dtype."""
    if isinstance(image, Image.Image):
        if image.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(image, dtype=np.uint16)
        if image.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV", "1", "LA", "PA", "RGBa"):
            image = image.convert("RGBA" if "A" in image.mode else "RGB")
        return np.asarray(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return image
    raise TypeError(
        f"Image {index}: expected a PIL image, numpy array or torch tensor, got {type(image).__name__}."
    )


def _channels_last(array: np.ndarray, index: int) -> np.ndarray:
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3:
        if array.shape[-1] in (1, 3, 4):
            return array
        if array.shape[0] in (1, 3, 4):
            return np.moveaxis(array, 0, -1)
    raise ValueError(
        f"Image {index}: expected a 2D grayscale or 3D (H, W, C) / (C, H, W) array with 1, 3 or 4 channels, "
        f"got shape {array.shape}. Slice 3D volumes into 2D images first."
    )


class GMAIVLImageProcessor(BaseImageProcessor):
    r"""
    Image processor for GMAI-VL (see the module docstring for the pipeline).

    Args:
        size (`int`, defaults to 336): side of the square fed to the vision encoder.
        image_mean, image_std (`tuple[float, float, float]`): normalisation (CLIP's by default).
        do_pad_to_square (`bool`, defaults to `True`): pad with the mean colour before resizing.
        window (`str` or `(level, width)`, *optional*): default CT window for non-8-bit inputs.
        intensity (`str`, defaults to `"auto"`): how non-8-bit inputs without a window reach
            [0, 1]: `"auto"` (floats already in [0, 1] kept, else min-max), `"minmax"`, `"percentile"`.
        percentiles (`(float, float)`, defaults to `(0.5, 99.5)`): bounds for `"percentile"`.
        min_size (`int`, defaults to 4): smaller images are rejected as degenerate.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 336,
        image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        image_std: Sequence[float] = OPENAI_CLIP_STD,
        do_pad_to_square: bool = True,
        window: str | Sequence[float] | None = None,
        intensity: str = "auto",
        percentiles: Sequence[float] = (0.5, 99.5),
        min_size: int = 4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(size, dict):  # transformers' {"height": h, "width": w} convention, as saved
            side = size.get("shortest_edge") or size["height"]
            if size.get("width", side) != side:
                raise ValueError(f"GMAI-VL feeds square images to its vision encoder, got size={size}")
            size = side
        # Saved in transformers' convention (serving engines such as vLLM read `size["height"]`).
        self.size = {"height": int(size), "width": int(size)}
        self.image_mean = [float(m) for m in image_mean]
        self.image_std = [float(s) for s in image_std]
        self.do_pad_to_square = do_pad_to_square
        self.window = list(window) if isinstance(window, (list, tuple)) else window
        self.intensity = intensity
        self.percentiles = [float(p) for p in percentiles]
        self.min_size = int(min_size)
        if window is not None:
            resolve_window(window)
        self._check_intensity(intensity)

    @property
    def side(self) -> int:
        """Side of the square fed to the vision encoder, in pixels."""
        return self.size["height"]

    @staticmethod
    def _check_intensity(intensity: str) -> None:
        if intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}.")

    def _validated(self, image: Any, index: int) -> np.ndarray:
        """One image as a checked `(H, W, C)` array of its own dtype, C 1 or 3 (alpha dropped)."""
        array = _channels_last(_to_array(image, index), index)
        if array.dtype == object or array.dtype.kind not in "uif":
            raise TypeError(
                f"Image {index}: unsupported pixel dtype {array.dtype}; expected unsigned/signed integers or floats."
            )
        height, width = array.shape[:2]
        if height == 0 or width == 0:
            raise ValueError(f"Image {index} is empty (shape {array.shape}).")
        if min(height, width) < self.min_size:
            raise ValueError(
                f"Image {index} is {height}x{width} pixels, smaller than min_size={self.min_size}: "
                "too small to carry information."
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"Image {index} contains NaN or infinite values.")
        if array.shape[-1] == 4:
            array = array[..., :3]
        return array

    def _options(self, window, intensity) -> tuple[Any, str]:
        window = self.window if window is None else window
        intensity = self.intensity if intensity is None else intensity
        self._check_intensity(intensity)
        return window, intensity

    @staticmethod
    def _is_eight_bit(array: np.ndarray, window, intensity: str) -> bool:
        """8-bit data read as is (divided by 255): the case LLaVA's processor handles."""
        return array.dtype == np.uint8 and window is None and intensity == "auto"

    def to_unit_range(
        self,
        image: Any,
        window: str | Sequence[float] | None = None,
        intensity: str | None = None,
        index: int = 0,
    ) -> np.ndarray:
        """Validate one image and map its intensities to float32 `[0, 1]`, shape `(H, W, C)`."""
        array = self._validated(image, index)
        window, intensity = self._options(window, intensity)
        return self._unit(array, window, intensity)

    def _unit(self, array: np.ndarray, window, intensity: str) -> np.ndarray:
        if self._is_eight_bit(array, window, intensity):
            unit = array.astype(np.float32) / 255.0
        elif window is not None:
            unit = apply_window(array, *resolve_window(window))
        elif intensity == "percentile":
            unit = percentile_normalize(array, *self.percentiles)
        elif intensity == "auto" and array.dtype.kind == "f" and array.min() >= 0.0 and array.max() <= 1.0:
            unit = array.astype(np.float32)
        else:
            unit = _minmax(array)
        if unit.shape[-1] == 1:
            unit = np.repeat(unit, 3, axis=-1)
        return unit

    def _pad_and_resize_eight_bit(self, array: np.ndarray) -> np.ndarray:
        """LLaVA's 8-bit path: pad with the 8-bit mean colour, PIL bicubic on 8-bit RGB, then / 255."""
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        height, width = array.shape[:2]
        if self.do_pad_to_square and height != width:
            side = max(height, width)
            canvas = np.empty((side, side, 3), dtype=np.uint8)
            canvas[...] = np.asarray([int(m * 255) for m in self.image_mean], dtype=np.uint8)
            top, left = (side - height) // 2, (side - width) // 2
            canvas[top : top + height, left : left + width] = array
            array = canvas
        if array.shape[0] != self.side or array.shape[1] != self.side:
            image = Image.fromarray(np.ascontiguousarray(array))
            array = np.asarray(image.resize((self.side, self.side), Image.Resampling.BICUBIC))
        return array.astype(np.float32) / 255.0

    def _pad_and_resize(self, unit: np.ndarray) -> np.ndarray:
        height, width = unit.shape[:2]
        if self.do_pad_to_square and height != width:
            side = max(height, width)
            canvas = np.empty((side, side, 3), dtype=np.float32)
            canvas[...] = np.asarray(self.image_mean, dtype=np.float32)
            top, left = (side - height) // 2, (side - width) // 2
            canvas[top : top + height, left : left + width] = unit
            unit = canvas
        if unit.shape[0] != self.side or unit.shape[1] != self.side:
            # Resize each channel as a 32-bit float image: no 8-bit quantisation of 16-bit data.
            channels = [
                np.asarray(
                    Image.fromarray(unit[..., c]).resize((self.side, self.side), Image.Resampling.BICUBIC)
                )
                for c in range(3)
            ]
            unit = np.clip(np.stack(channels, axis=-1), 0.0, 1.0)
        return unit

    def preprocess(
        self,
        images: Any,
        window: str | Sequence[float] | None = None,
        intensity: str | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Process one image or a list of images into `pixel_values` `(N, 3, size, size)`."""
        unknown = sorted(k for k, v in kwargs.items() if v is not None)
        if unknown:
            raise TypeError(
                f"Unknown option(s) {unknown} for GMAIVLImageProcessor; per call it takes window and "
                "intensity (size, mean/std and padding are set when the processor is created)."
            )
        if isinstance(images, (Image.Image, np.ndarray, torch.Tensor)):
            images = [images]
        images = [img for item in images for img in (item if isinstance(item, (list, tuple)) else [item])]
        if not images:
            raise ValueError("No images were given to the image processor.")
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        pixel_values = []
        for index, image in enumerate(images):
            array = self._validated(image, index)
            options = self._options(window, intensity)
            if self._is_eight_bit(array, *options):
                unit = self._pad_and_resize_eight_bit(array)
            else:
                unit = self._pad_and_resize(self._unit(array, *options))
            pixel_values.append(((unit - mean) / std).transpose(2, 0, 1))
        batch = np.stack(pixel_values).astype(np.float32)
        return BatchFeature({"pixel_values": batch}, tensor_type=return_tensors)

    def __call__(self, images: Any, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)


# `save_pretrained` writes `auto_map` and copies this code beside the weights for these auto classes.
GMAIVLImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "WINDOW_PRESETS",
    "GMAIVLImageProcessor",
    "apply_window",
    "percentile_normalize",
    "resolve_window",
]
