"""GMAI-VL processor: image processor + tokenizer + ChatML chat template.

This file travels to the Hub with `save_pretrained`: torch and transformers only.
"""

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ImagesKwargs, MultiModalData, ProcessingKwargs, ProcessorMixin


def render_macro(image_text: str) -> str:
    """Jinja macro `render(content)`: a string as it is, or parts with images rendered as `image_text`."""
    return (
        "{%- macro render(content) -%}"
        "{%- if content is string -%}{{- content -}}"
        "{%- else -%}{%- for part in content -%}"
        "{%- if part['type'] == 'image' -%}{{- '" + image_text + "' -}}"
        "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
    )


def chatml_template(image_text: str = "<image>\n") -> str:
    """ChatML as in InternLM2 / Qwen, images rendered as `image_text` where they stand in the content.

    `{% generation %}` marks what the assistant says (its <|im_end|> included) so that TRL's
    `assistant_only_loss=True` trains those tokens only: never image placeholders or user turns.
    """
    return render_macro(image_text) + (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'assistant' -%}"
        "{{- '<|im_start|>assistant\n' -}}"
        "{% generation %}{{- render(message['content']) + '<|im_end|>' -}}{% endgeneration %}"
        "{{- '\n' -}}"
        "{%- else -%}"
        "{{- '<|im_start|>' + message['role'] + '\n' + render(message['content']) + '<|im_end|>\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
    )


CHATML_TEMPLATE = chatml_template()


class GMAIVLImagesKwargs(ImagesKwargs, total=False):
    """Per-call image options: a CT window (preset name or `(level, width)`) and the intensity mode."""

    window: str | list[float] | tuple[float, float] | None
    intensity: str | None


class GMAIVLProcessorKwargs(ProcessingKwargs, total=False):
    images_kwargs: GMAIVLImagesKwargs
    _defaults = {}


def _flat_images(images) -> list:
    """Flatten nested image lists; 2D grayscale arrays become (H, W, 1) so transformers sees one image."""
    if not isinstance(images, (list, tuple)):
        images = [images]
    flat = []
    for item in images:
        if isinstance(item, (list, tuple)):
            flat.extend(_flat_images(item))
        elif isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim == 2:
            flat.append(item[..., None])
        else:
            flat.append(item)
    return flat


class GMAIVLBatchFeature(BatchFeature):
    """A `BatchFeature` whose `labels`, however they are set, never train image placeholder positions.

    Collators such as TRL's `DataCollatorForVisionLanguageModeling` set `batch["labels"] =
    input_ids.clone()`. `Trainer` divides the summed loss by the number of labels != -100 it counts
    in that batch (`num_items_in_batch`, summed over gradient accumulation), while the model never
    trains the `num_image_tokens` positions of each image. Masking them where the labels enter the
    batch makes that count the model's own, so the logged and optimised loss is the mean over the
    tokens that are trained, with exact weighting across accumulation steps.
    """

    image_token_id: int | None = None

    def __setitem__(self, key, value) -> None:
        if key == "labels" and self.image_token_id is not None and isinstance(value, torch.Tensor):
            input_ids = self.data.get("input_ids")
            if isinstance(input_ids, torch.Tensor) and input_ids.shape == value.shape:
                value = value.masked_fill(input_ids.to(value.device) == self.image_token_id, -100)
        super().__setitem__(key, value)

    def __getstate__(self):  # BatchFeature pickles `data` only; DataLoader workers pickle batches
        return {**super().__getstate__(), "image_token_id": self.image_token_id}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.image_token_id = state.get("image_token_id")


class GMAIVLProcessor(ProcessorMixin):
    r"""
    Wraps a [`GMAIVLImageProcessor`] and a tokenizer. Each `<image>` in the text becomes
    `num_image_tokens` image tokens (576 for a ViT-L/14 at 336 px), one `<image>` per image given.

    Args:
        image_processor ([`GMAIVLImageProcessor`]): the image processor.
        tokenizer: a tokenizer that knows the `<image>` token.
        chat_template (`str`, *optional*): defaults to ChatML with generation markers.
        image_token (`str`, defaults to `"<image>"`): the placeholder token.
        num_image_tokens (`int`, defaults to 576): tokens per image; must equal the model config's.
    """

    valid_processor_kwargs = GMAIVLProcessorKwargs

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        num_image_tokens: int = 576,
        **kwargs,
    ):
        self.image_token = image_token
        self.num_image_tokens = int(num_image_tokens)
        if tokenizer is not None:
            token_id = tokenizer.convert_tokens_to_ids(image_token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(
                    f"The tokenizer has no {image_token!r} token; add it as a special token first."
                )
            self.image_token_id = token_id
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHATML_TEMPLATE, **kwargs)

    def prepare_inputs_layout(self, images=None, text=None, videos=None, audio=None, **kwargs):
        if images is not None:
            images = _flat_images(images)
        return super().prepare_inputs_layout(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def __call__(self, *args, **kwargs) -> GMAIVLBatchFeature:
        batch = GMAIVLBatchFeature(super().__call__(*args, **kwargs).data)
        batch.image_token_id = getattr(self, "image_token_id", None)
        return batch

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.num_image_tokens

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs) -> MultiModalData:
        """Placeholder tokens per image before processing (vLLM's Transformers backend asks): every
        image is padded to a square and resized, so each takes `num_image_tokens`, in one patch."""
        if image_sizes is None:
            return MultiModalData()
        count = len(image_sizes)
        return MultiModalData(num_image_tokens=[self.num_image_tokens] * count, num_image_patches=[1] * count)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


# `save_pretrained` writes `auto_map` and copies this code beside the weights for these auto classes.
GMAIVLProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["CHATML_TEMPLATE", "GMAIVLProcessor"]
