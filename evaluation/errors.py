"""The loaders' error: a benchmark file or folder does not have the shape its format publishes."""

from __future__ import annotations


class BenchmarkFormatError(ValueError):
    """A benchmark file or dataset does not have the expected shape; the message names where."""
