"""The files that travel to the Hub (flat, relative imports, torch + transformers only)."""

from .configuration_gmaivl import GMAIVLConfig
from .image_processing_gmaivl import GMAIVLImageProcessor
from .modeling_gmaivl import GMAIVLForConditionalGeneration, GMAIVLModel, GMAIVLPreTrainedModel
from .processing_gmaivl import CHATML_TEMPLATE, GMAIVLProcessor

__all__ = [
    "CHATML_TEMPLATE",
    "GMAIVLConfig",
    "GMAIVLForConditionalGeneration",
    "GMAIVLImageProcessor",
    "GMAIVLModel",
    "GMAIVLPreTrainedModel",
    "GMAIVLProcessor",
]
