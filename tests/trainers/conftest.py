"""Fixtures of the trainer tests: a tiny GMAI-VL and toy rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the helper module `trainer_rows`
from trainer_rows import colour_row, text_row


@pytest.fixture
def tiny():
    from gmaivl.tiny import build_tiny_gmaivl

    return build_tiny_gmaivl(seed=0)


@pytest.fixture
def rows() -> list[dict]:
    """Samples of different lengths, with and without images."""
    return [
        colour_row("red", "red", rid="a"),
        text_row("Is there a fracture in this chest radiograph of the patient?", "No.", rid="b"),
        colour_row("blue", "The image is blue with a small round region.", rid="c"),
        text_row("Name a colour.", "green", rid="d"),
        colour_row("green", "green", question="Which colour?", rid="e"),
    ]
