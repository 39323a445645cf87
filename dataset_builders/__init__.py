"""Dataset builders: annotated medical imaging datasets -> the GMAI-VL-5.5M corpus (viewer-ready Parquet).

Public API:
- `MedicalRecord`, `iter_records(folder)`: the standardised records of a built folder.
- `load_build_spec(path)`, `run_build(spec, out, ...)`: build a corpus from a YAML spec
  (imported lazily; see README.md in this folder).
"""

if (
    __name__ != "gmaivl.dataset_builders"
):  # imported by its folder name from a checkout: see gmaivl/_checkout.py
    import pathlib
    import runpy

    runpy.run_path(str(pathlib.Path(__file__).parents[1] / "gmaivl" / "_checkout.py"))["hand_over"](__name__)
else:
    from typing import Any

    from .records import MedicalRecord, image_phash, iter_records, pixel_md5, record_features

    __all__ = [
        "MedicalRecord",
        "image_phash",
        "iter_records",
        "load_build_spec",
        "pixel_md5",
        "record_features",
        "run_build",
    ]

    def __getattr__(name: str) -> Any:
        # the build pulls in pyarrow, datasets and the imaging stack: only on demand
        if name == "run_build":
            from .engine import run_build

            return run_build
        if name == "load_build_spec":
            from .spec import load_build_spec

            return load_build_spec
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
