"""A spy on `model.generate` for the evaluation tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock


@contextlib.contextmanager
def spy_generate(model, fail_on_call: int | None = None) -> Iterator[mock.MagicMock]:
    """Patch `model.generate` with a mock that runs the real one and records every call
    (`call_args_list`); call number `fail_on_call` raises KeyboardInterrupt (an interruption)."""
    original = model.generate

    def generate(*args, **kwargs):
        if spy.call_count == fail_on_call:  # the mock counts a call before running it
            raise KeyboardInterrupt("simulated interruption")
        return original(*args, **kwargs)

    with mock.patch.object(model, "generate", side_effect=generate) as spy:
        yield spy


def batch_rows(spy: mock.MagicMock) -> list[int]:
    """Rows per `generate` call."""
    return [call.kwargs["input_ids"].shape[0] for call in spy.call_args_list]
