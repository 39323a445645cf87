"""GMAI-VL: a medical vision-language model, Hugging Face native.

Importing this package registers the GMAI-VL classes with transformers' auto classes, so that
`AutoModelForImageTextToText.from_pretrained(folder)` works without `trust_remote_code` when
the package is installed, and `save_pretrained` copies the model code beside the weights so that
it also loads with `trust_remote_code=True` where the package is not installed.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .modeling_gmaivl import (
    CHATML_TEMPLATE,
    GMAIVLConfig,
    GMAIVLForConditionalGeneration,
    GMAIVLImageProcessor,
    GMAIVLModel,
    GMAIVLProcessor,
)

__version__ = "0.1.0"


def _register() -> None:
    AutoConfig.register(GMAIVLConfig.model_type, GMAIVLConfig, exist_ok=True)
    AutoModel.register(GMAIVLConfig, GMAIVLModel, exist_ok=True)
    AutoModelForImageTextToText.register(GMAIVLConfig, GMAIVLForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(GMAIVLConfig, slow_image_processor_class=GMAIVLImageProcessor, exist_ok=True)
    AutoProcessor.register(GMAIVLConfig, GMAIVLProcessor, exist_ok=True)
    GMAIVLConfig.register_for_auto_class("AutoConfig")
    GMAIVLModel.register_for_auto_class("AutoModel")
    GMAIVLForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    GMAIVLImageProcessor.register_for_auto_class("AutoImageProcessor")
    GMAIVLProcessor.register_for_auto_class("AutoProcessor")


_register()

__all__ = [
    "CHATML_TEMPLATE",
    "GMAIVLConfig",
    "GMAIVLForConditionalGeneration",
    "GMAIVLImageProcessor",
    "GMAIVLModel",
    "GMAIVLProcessor",
]
