"""The processor's announced placeholder counts (`_get_num_multimodal_tokens`, which vLLM's
Transformers backend reads before it processes a prompt) equal what it then produces."""

import pytest
import torch

from gmaivl.core.tiny import build_tiny_gmaivl

from ._helpers import conversation, random_image


@pytest.fixture(scope="module")
def processor():
    return build_tiny_gmaivl(seed=0)[1]


@pytest.mark.parametrize("sizes", [[(56, 56)], [(40, 60), (500, 336)], [(5, 400), (64, 64), (90, 30)]])
def test_announced_image_token_counts_match_the_processed_prompt(processor, sizes):
    images = [random_image(i, size) for i, size in enumerate(sizes)]
    text = processor.apply_chat_template(
        conversation("Compare.", n_images=len(sizes)), add_generation_prompt=True
    )
    inputs = processor(text=[text], images=[images], return_tensors="pt", return_mm_token_type_ids=True)

    announced = processor._get_num_multimodal_tokens(image_sizes=[(h, w) for w, h in sizes])
    marks = inputs["mm_token_type_ids"][0]
    assert torch.equal(marks == 1, inputs["input_ids"][0] == processor.image_token_id)
    # runs of image tokens, one per image, in order
    edges = torch.diff(torch.cat([torch.zeros(1), marks.float(), torch.zeros(1)]))
    runs = (torch.nonzero(edges == -1).flatten() - torch.nonzero(edges == 1).flatten()).tolist()
    assert runs == announced.num_image_tokens
    assert announced.num_image_patches == [1] * len(sizes)
    assert inputs["pixel_values"].shape[0] == len(sizes)
    assert processor._get_num_multimodal_tokens().num_image_tokens is None
