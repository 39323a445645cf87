import numpy as np
import pytest
from PIL import Image

from gmaivl.tiny import build_tiny_gmaivl


@pytest.fixture(scope="module")
def tiny():
    """A tiny random GMAI-VL (16 image tokens per 56 px image) and its processor."""
    return build_tiny_gmaivl(seed=0)


def random_image(seed: int, size: tuple[int, int] = (40, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def conversation(question: str, answer: str | None = None, n_images: int = 1) -> list[dict]:
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """transformers' common tests compare eager and SDPA attention in fp32, fp16 and bf16. On CPU the
    half-precision variants test PyTorch's emulated kernels, not this model, and take most of the
    mixin's time: they run with `-m slow` (see modeling_gmaivl/README.md)."""
    for item in items:
        half = "_fp16_" in item.name or "_bf16_" in item.name
        if "test_transformers_common" in item.nodeid and "eager_matches_sdpa" in item.name and half:
            item.add_marker(pytest.mark.slow)
