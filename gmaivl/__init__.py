"""GMAI-VL: a medical vision-language model, Hugging Face native.

`import gmaivl` registers the GMAI-VL classes with transformers' auto classes, so that
`AutoModelForImageTextToText.from_pretrained(folder)` works without `trust_remote_code` when
the package is installed; `save_pretrained` copies the model code beside the weights so that a
folder also loads with `trust_remote_code=True` where the package is not installed.

The classes are imported on first use. The `gmaivl` command line skips the registration (it would
load torch for every `--help` and every data-builder worker); its commands that load checkpoints
call `register_auto_classes()` themselves.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CHATML_TEMPLATE",
    "GMAIVLConfig",
    "GMAIVLForConditionalGeneration",
    "GMAIVLImageProcessor",
    "GMAIVLModel",
    "GMAIVLProcessor",
    "register_auto_classes",
]

if TYPE_CHECKING:
    from .modeling_gmaivl import (
        CHATML_TEMPLATE,
        GMAIVLConfig,
        GMAIVLForConditionalGeneration,
        GMAIVLImageProcessor,
        GMAIVLModel,
        GMAIVLProcessor,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module(".modeling_gmaivl", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_registered = False


def register_auto_classes() -> None:
    """Register the GMAI-VL classes with transformers' auto classes (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    from .modeling_gmaivl import (
        GMAIVLConfig,
        GMAIVLForConditionalGeneration,
        GMAIVLImageProcessor,
        GMAIVLModel,
        GMAIVLProcessor,
    )

    AutoConfig.register(GMAIVLConfig.model_type, GMAIVLConfig, exist_ok=True)
    AutoModel.register(GMAIVLConfig, GMAIVLModel, exist_ok=True)
    AutoModelForImageTextToText.register(GMAIVLConfig, GMAIVLForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(GMAIVLConfig, slow_image_processor_class=GMAIVLImageProcessor, exist_ok=True)
    AutoProcessor.register(GMAIVLConfig, GMAIVLProcessor, exist_ok=True)
    _registered = True


def _imported_by_the_command_line() -> bool:
    """True while the `gmaivl` console script or `python -m gmaivl` (argv[0] is "-m" while the
    package is located) imports this package; multiprocessing workers inherit the parent's argv,
    and workers started apart from it (the Ray actors of `dataset_builders.engine.ray_build`) have
    `GMAIVL_COMMAND_LINE=1` in their environment."""
    if os.environ.get("GMAIVL_COMMAND_LINE") == "1":
        return True
    return Path(sys.argv[0] if sys.argv else "").name == "gmaivl" or sys.argv[:1] == ["-m"]


if not _imported_by_the_command_line():
    register_auto_classes()
