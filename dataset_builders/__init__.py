"""Dataset builders: annotated medical imaging datasets -> the GMAI-VL-5.5M corpus (viewer-ready Parquet).

Public API:
- `MedicalRecord`, `iter_records(folder)`: the standardised records of a built folder.
- `load_build_spec`, `run_build`: build a corpus from a YAML spec (see README.md in this folder).
"""

from .records import MedicalRecord, image_phash, iter_records, pixel_md5, record_features

__all__ = ["MedicalRecord", "image_phash", "iter_records", "pixel_md5", "record_features"]
