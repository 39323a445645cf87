"""One way to open a dataset: local folders are never served from another folder's cache."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gmaivl.core.hf_datasets import open_dataset

CARD = "---\nconfigs:\n- config_name: cfg\n  data_files:\n  - split: train\n    path: cfg/train-*\n---\n"


def _corpus(root, values) -> str:
    folder = root / "corpus"
    (folder / "cfg").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": values}), folder / "cfg" / "train-00000-of-00001.parquet")
    (folder / "README.md").write_text(CARD)
    return str(folder)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")


def test_same_named_folders_and_rebuilds_are_read_anew(tmp_path):
    a, b = _corpus(tmp_path / "a", [1, 1]), _corpus(tmp_path / "b", [2, 2, 2])
    assert open_dataset(a, "cfg")["x"] == [1, 1]
    assert open_dataset(b, "cfg")["x"] == [2, 2, 2]  # plain load_dataset returns a's rows here
    _corpus(tmp_path / "a", [9, 9, 9, 9])  # rebuilt in place
    os.utime(tmp_path / "a" / "corpus" / "cfg" / "train-00000-of-00001.parquet", ns=(1, 2))
    assert open_dataset(a, "cfg")["x"] == [9, 9, 9, 9]


def test_files_save_to_disk_folders_and_errors(tmp_path):
    import datasets

    pq.write_table(pa.table({"x": [3]}), tmp_path / "rows.parquet")
    assert open_dataset(tmp_path / "rows.parquet", split="test")["x"] == [3]  # one file is one split
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"x": [4]})}).save_to_disk(tmp_path / "saved")
    assert open_dataset(tmp_path / "saved", split="test")["x"] == [4]
    with pytest.raises(ValueError, match=r"no split 'train'; it has \['test'\]"):
        open_dataset(tmp_path / "saved")
    with pytest.raises(ValueError, match="data source .*missing"):
        open_dataset(tmp_path / "missing")
