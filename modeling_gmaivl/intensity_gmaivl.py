"""Medical intensities to [0, 1]: CT windows, robust percentiles, min-max (numpy only).

Used by the image processor and by the dataset builders, which must not load torch for it. This
file travels to the Hub with the image processor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# CT display windows as (level, width) in Hounsfield units.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 150.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
}

INTENSITY_MODES = ("auto", "minmax", "percentile")


def resolve_window(window: str | Sequence[float]) -> tuple[float, float]:
    """Turn a preset name or a `(level, width)` pair into `(level, width)` floats."""
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise ValueError(f"Unknown window preset {window!r}; known presets: {', '.join(WINDOW_PRESETS)}.")
        return WINDOW_PRESETS[window]
    if len(window) != 2:
        raise ValueError(f"A window is (level, width), got {window!r}.")
    level, width = float(window[0]), float(window[1])
    if not width > 0:
        raise ValueError(f"Window width must be positive, got {width}.")
    return level, width


def apply_window(array: np.ndarray, level: float, width: float) -> np.ndarray:
    """Linear window: `level - width/2` maps to 0, `level + width/2` to 1, clipped outside."""
    low = level - width / 2.0
    return np.clip((np.asarray(array, dtype=np.float64) - low) / width, 0.0, 1.0).astype(np.float32)


def percentile_normalize(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Clip to the `[lower, upper]` percentiles and scale to [0, 1] (robust MR normalisation)."""
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"Percentiles must satisfy 0 <= lower < upper <= 100, got ({lower}, {upper}).")
    array = np.asarray(array, dtype=np.float64)
    low, high = np.percentile(array, [lower, upper])
    if high <= low:
        return np.zeros(array.shape, dtype=np.float32)
    return np.clip((array - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _minmax(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    low, high = array.min(), array.max()
    if high <= low:
        return np.zeros(array.shape, dtype=np.float32)
    return ((array - low) / (high - low)).astype(np.float32)
