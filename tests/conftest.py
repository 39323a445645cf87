"""Test-wide settings: offline, CPU, Triton interpreter."""

import os

# Nothing may touch the network, and Triton kernels run in the CPU interpreter when no GPU is
# present. Both must be set before transformers / triton are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
try:
    import torch

    _has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")


# One family of tiny-model fixtures for every test folder: a fresh model per test (cheap: ~0.1 s),
# one shared read-only model for module/session fixtures, and one saved checkpoint folder.
import pytest


@pytest.fixture
def tiny():
    """A fresh tiny random GMAI-VL (16 image tokens per 56 px image) and its processor."""
    from gmaivl.core.tiny import build_tiny_gmaivl

    return build_tiny_gmaivl(seed=0)


@pytest.fixture(scope="session")
def tiny_shared():
    """The same tiny GMAI-VL and processor, built once: for fixtures and tests that only read it."""
    from gmaivl.core.tiny import build_tiny_gmaivl

    return build_tiny_gmaivl(seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_shared, tmp_path_factory):
    """A saved folder of `tiny_shared` (model + processor), as `from_pretrained` reads it."""
    model, processor = tiny_shared
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-gmaivl"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
