"""Source readers, one layout per module, registered with `@register_source` when imported
(`registry` imports this package; the shared base is `adapters`). Built-in layouts first (their
order is the order of `registry.source_types()`):

- `class_folders`: `root/<class>/<image>`, the label from the class folder's name.
- `csv_table` (`type: csv`): a CSV of image path, label and split.
- `coco`: COCO detection JSON, one record per box.
- `mask_pairs`: 2D image + label mask matched by stem, one box per label and component.
- `nifti`: 3D volumes (+ label volumes) read as 2D slices.
- `msd`: Medical Segmentation Decathlon `dataset.json`.
- `dicom`: DICOM files by content, per frame or (`series: true`) per series volume.
- `text`: text-only QA and dialogue corpora (GMAI-Text-Single / -Multi).

Readers of published dataset layouts:

- `llava`: LLaVA JSON / JSONL (GMAI-VL, PubMedVision; images in a folder or zip archives) and
  GMAI-VL / xtuner `example_list.json`; the given conversations become `instruct` rows.
- `multilabel_csv`: `|`-joined labels per image (NIH ChestX-ray14 `Data_Entry_2017.csv`).
- `onehot_csv`: one 0/1 column per class (ISIC 2019 `ISIC_2019_Training_GroundTruth.csv`).
- `medmnist`: MedMNIST `.npz` arrays with their train / val / test splits.

A reader is not itself a datatrove `PipelineStep`: the one ingest step `steps.IngestUnits` runs
whichever readers a task's work units need, so one step class per reader would be boilerplate.
"""

from . import class_folders, csv_table, coco, mask_pairs, nifti, msd, dicom, text  # noqa: I001  (built-in first)
from . import llava, medmnist, multilabel_csv, onehot_csv

__all__ = [
    "class_folders",
    "coco",
    "csv_table",
    "dicom",
    "llava",
    "mask_pairs",
    "medmnist",
    "msd",
    "multilabel_csv",
    "nifti",
    "onehot_csv",
    "text",
]
