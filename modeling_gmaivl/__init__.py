"""The files that travel to the Hub (flat, relative imports, torch + transformers only).

Names are imported on first use, so that `intensity_gmaivl` (numpy only) loads without torch.
"""

if (
    __name__ != "gmaivl.modeling_gmaivl"
):  # imported by its folder name from a checkout: see gmaivl/_checkout.py
    import pathlib
    import runpy

    runpy.run_path(str(pathlib.Path(__file__).parents[1] / "gmaivl" / "_checkout.py"))["hand_over"](__name__)
else:
    import importlib
    from typing import TYPE_CHECKING, Any

    _NAMES = {
        "CHATML_TEMPLATE": "processing_gmaivl",
        "GMAIVLConfig": "configuration_gmaivl",
        "GMAIVLForConditionalGeneration": "modeling_gmaivl",
        "GMAIVLImageProcessor": "image_processing_gmaivl",
        "GMAIVLModel": "modeling_gmaivl",
        "GMAIVLPreTrainedModel": "modeling_gmaivl",
        "GMAIVLProcessor": "processing_gmaivl",
    }
    __all__ = [
        "CHATML_TEMPLATE",
        "GMAIVLConfig",
        "GMAIVLForConditionalGeneration",
        "GMAIVLImageProcessor",
        "GMAIVLModel",
        "GMAIVLPreTrainedModel",
        "GMAIVLProcessor",
    ]

    if TYPE_CHECKING:
        from .configuration_gmaivl import GMAIVLConfig
        from .image_processing_gmaivl import GMAIVLImageProcessor
        from .modeling_gmaivl import GMAIVLForConditionalGeneration, GMAIVLModel, GMAIVLPreTrainedModel
        from .processing_gmaivl import CHATML_TEMPLATE, GMAIVLProcessor

    def __getattr__(name: str) -> Any:
        if name in _NAMES:
            value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
