"""`type: medmnist`: a MedMNIST `.npz` (`pathmnist.npz`, `chestmnist.npz`, MedMNIST+ `pathmnist_224.npz`
...) holding `train_images`, `train_labels`, `val_*`, `test_*`: images uint8 (N, H, W) or
(N, H, W, 3), labels (N, 1) class indices or (N, K) 0/1 multi-label columns (ChestMNIST).

The npz split becomes the record's split (`splits`: `val` -> `validation` by default). Label names
come from `labels` (index -> name), else from the `medmnist` package's `INFO` when it is installed,
else from `MEDMNIST_LABELS` (MedMNIST v2 INFO for the datasets listed there). A multi-label row
gives one record per label (`_common.labelled_records`); a row without a positive label gets
`none_label` (ChestMNIST: `No Finding`, as in ChestX-ray14) or is skipped and counted.
An uncompressed npz (`np.savez`) is memory-mapped; a compressed one (`np.savez_compressed`, the
MedMNIST downloads) is decompressed once per worker process, refused above
`limits.max_decoded_bytes`. 3D MedMNIST (`organmnist3d`, (N, 28, 28, 28)) is not read.
MedMNIST images are 28 px (or 64 / 128 / 224): set `min_side` (resize) or `qc.min_image_side`.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters import Dropped, Item, SourceReader, register_source
from ..imaging import Oversize, SourceError
from ..source_spec import ReaderOptions, SourceSpec
from ._common import cached, labelled_records

#: MedMNIST v2 `INFO[flag]["label"]` of some 2D datasets (the `medmnist` package has all of them)
MEDMNIST_LABELS: dict[str, dict[int, str]] = {
    "pathmnist": {
        0: "adipose",
        1: "background",
        2: "debris",
        3: "lymphocytes",
        4: "mucus",
        5: "smooth muscle",
        6: "normal colon mucosa",
        7: "cancer-associated stroma",
        8: "colorectal adenocarcinoma epithelium",
    },
    "chestmnist": {
        0: "atelectasis",
        1: "cardiomegaly",
        2: "effusion",
        3: "infiltration",
        4: "mass",
        5: "nodule",
        6: "pneumonia",
        7: "pneumothorax",
        8: "consolidation",
        9: "edema",
        10: "emphysema",
        11: "fibrosis",
        12: "pleural",
        13: "hernia",
    },
    "dermamnist": {
        0: "actinic keratoses and intraepithelial carcinoma",
        1: "basal cell carcinoma",
        2: "benign keratosis-like lesions",
        3: "dermatofibroma",
        4: "melanoma",
        5: "melanocytic nevi",
        6: "vascular lesions",
    },
    "octmnist": {0: "choroidal neovascularization", 1: "diabetic macular edema", 2: "drusen", 3: "normal"},
    "pneumoniamnist": {0: "normal", 1: "pneumonia"},
    "breastmnist": {0: "malignant", 1: "normal, benign"},
    "bloodmnist": {
        0: "basophil",
        1: "eosinophil",
        2: "erythroblast",
        3: "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
        4: "lymphocyte",
        5: "monocyte",
        6: "neutrophil",
        7: "platelet",
    },
}
#: the label of multi-label rows without a positive column, by dataset
MEDMNIST_NONE = {"chestmnist": "No Finding"}


def dataset_flag(file: str) -> str:
    """`pathmnist_224.npz` -> `pathmnist` (the key of MedMNIST's `INFO`)."""
    return re.sub(r"_\d+$", "", Path(file).name.lower().removesuffix(".npz"))


def known_labels(flag: str) -> dict[int, str]:
    try:
        from medmnist import INFO  # optional: not a dependency

        return {int(k): str(v) for k, v in INFO[flag]["label"].items()}
    except (ImportError, KeyError, AttributeError, ValueError):
        return dict(MEDMNIST_LABELS.get(flag, {}))


@dataclass
class MedMnistOptions(ReaderOptions):
    file: str = "pathmnist.npz"
    labels: dict[int, str] = field(default_factory=dict)  # label index -> name (default: MedMNIST INFO)
    # npz split -> published split; splits not listed are not read
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "val": "validation", "test": "test"}
    )
    none_label: str | None = None  # multi-label rows without a positive label (default: MEDMNIST_NONE)


def _npy_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(handle)


def npz_array(path: Path, key: str, max_bytes: int) -> np.ndarray:
    """One array of an npz: memory-mapped when stored uncompressed, else decompressed (bounded)."""
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(f"{key}.npy")
        except KeyError:
            raise SourceError(f"{path}: no array {key!r}") from None
        with archive.open(info) as member:
            shape, fortran, dtype = _npy_header(member)
            header = member.tell()
    if dtype.hasobject:
        raise SourceError(f"{path}: {key} holds Python objects (not read)")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as handle:
            handle.seek(info.header_offset)
            local = handle.read(30)
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        offset = info.header_offset + 30 + name_length + extra_length + header
        if not shape or int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(
            path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
        )
    if info.file_size > max_bytes:
        raise Oversize(
            f"{path}: {key} decompresses to {info.file_size:,} bytes, over limits.max_decoded_bytes "
            "(re-save the npz uncompressed with np.savez to memory-map it)"
        )
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data[key])


@register_source
class MedMnist(SourceReader):
    """A MedMNIST `.npz` (train/val/test images and labels); the split is kept, label names come
    from `labels` or MedMNIST's INFO."""

    type_name = "medmnist"
    Options = MedMnistOptions

    @classmethod
    def check_spec(cls, source: SourceSpec) -> str | None:
        options = source.options
        if options.labels or source.label_map or known_labels(dataset_flag(options.file)):
            return None
        return (
            f"no label names for {Path(options.file).name}: set `labels` (index -> name, MedMNIST's "
            "INFO[flag]['label']) or `label_map`"
        )

    @property
    def path(self) -> Path:
        return self.source.path(self.options.file)

    @cached_property
    def names(self) -> dict[int, str]:
        return dict(self.options.labels) or known_labels(dataset_flag(self.options.file))

    @cached_property
    def none_label(self) -> str | None:
        return self.options.none_label or MEDMNIST_NONE.get(dataset_flag(self.options.file))

    def array(self, key: str) -> np.ndarray:
        memo = self.__dict__.setdefault("_arrays", {})
        if key not in memo:
            path, limit = self.path, self.source.limits.max_decoded_bytes
            memo[key] = cached(f"npz:{key}", [path], lambda: npz_array(path, key, limit))
        return memo[key]

    def counts(self) -> dict[str, int]:
        """Images per npz split (read from the array headers only)."""

        def load() -> dict[str, int]:
            counts = {}
            try:
                with zipfile.ZipFile(self.path) as archive:
                    names = set(archive.namelist())
                    for split in self.options.splits:
                        if f"{split}_images.npy" not in names or f"{split}_labels.npy" not in names:
                            continue
                        with archive.open(f"{split}_images.npy") as member:
                            shape, _, dtype = _npy_header(member)
                        if (
                            len(shape) not in (3, 4)
                            or (len(shape) == 4 and shape[-1] != 3)
                            or dtype != np.uint8
                        ):
                            raise SourceError(
                                f"{self.what}: {split}_images has shape {shape} ({dtype}); expected uint8 "
                                "(N, H, W) or (N, H, W, 3) (3D MedMNIST is not read)"
                            )
                        counts[split] = int(shape[0])
            except (OSError, zipfile.BadZipFile, ValueError) as error:
                raise SourceError(f"{self.what}: cannot read {self.path} ({error})") from error
            if not counts:
                raise SourceError(
                    f"{self.what}: no <split>_images / <split>_labels arrays for {list(self.options.splits)}"
                )
            return counts

        return cached("npz-counts", [self.path], load)

    # -- planning ------------------------------------------------------------------------------
    def list_items(self) -> list[list[Any]]:
        return [[split, index] for split, count in self.counts().items() for index in range(count)]

    def shared_files(self) -> list[Path]:
        return [self.path]

    def item_files(self, item: list[Any]) -> list[Path]:
        return [self.path]

    def item_name(self, item: list[Any]) -> str:
        return f"{item[0]} image {item[1]}"

    def raw_label_space(self) -> list[str]:
        declared = super().raw_label_space()
        if declared:
            return declared
        return sorted({*self.names.values(), *([self.none_label] if self.none_label else [])})

    # -- reading -------------------------------------------------------------------------------
    def read_item(self, item: list[Any]) -> Iterator[Item]:
        split, index = item
        labels = np.asarray(self.array(f"{split}_labels")[index]).reshape(-1)
        if labels.size == 1:
            raw = [self.names.get(int(labels[0]), str(int(labels[0])))]
        else:
            raw = [self.names.get(k, str(k)) for k in np.flatnonzero(labels > 0).tolist()]
            if not raw and self.none_label:
                raw = [self.none_label]
            if not raw:
                yield Dropped(self.source.name, "no_positive_label")
                return
        plane = np.array(self.array(f"{split}_images")[index])
        rel = self.rel(self.path)
        published = self.options.splits.get(split, split)
        yield from labelled_records(
            self,
            rel,
            raw,
            published,
            key=f"{rel}/{split}/{index}",
            planes=[(plane, {}, self.source.modality)],
        )
