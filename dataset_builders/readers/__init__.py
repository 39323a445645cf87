"""Source readers of published dataset layouts, one module each, registered with `@register_source`
when imported (`registry` imports this package):

- `llava`: LLaVA JSON / JSONL (GMAI-VL, PubMedVision; images in a folder or zip archives) and
  GMAI-VL / xtuner `example_list.json`; the given conversations become `instruct` rows.
- `multilabel_csv`: `|`-joined labels per image (NIH ChestX-ray14 `Data_Entry_2017.csv`).
- `onehot_csv`: one 0/1 column per class (ISIC 2019 `ISIC_2019_Training_GroundTruth.csv`).
- `medmnist`: MedMNIST `.npz` arrays with their train / val / test splits.
"""

from . import llava, medmnist, multilabel_csv, onehot_csv

__all__ = ["llava", "medmnist", "multilabel_csv", "onehot_csv"]
