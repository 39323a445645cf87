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
