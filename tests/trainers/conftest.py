"""Fixtures of the trainer tests: a tiny GMAI-VL and toy rows."""

from __future__ import annotations

import pytest

from ._helpers import colour_row, text_row


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
