"""Source readers: a new layout is one registered class; its typed options are checked like the
built-in ones; the per-item error guard, ids and labels come from the base class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import yaml
from PIL import Image

from gmaivl.dataset_builders import iter_records
from gmaivl.dataset_builders.adapters import (
    _READERS,
    ReaderOptions,
    SourceReader,
    register_source,
)
from gmaivl.dataset_builders.engine import run_build
from gmaivl.dataset_builders.registry import source_types
from gmaivl.dataset_builders.spec import SpecError, load_build_spec


@dataclass
class FileListOptions(ReaderOptions):
    list_file: str = "list.txt"  # one "<image path> <label>" per line


class FileList(SourceReader):
    """The README's example layout: a text file listing images and their labels."""

    type_name = "file_list"
    Options = FileListOptions

    def lines(self) -> list[list[str]]:
        text = self.source.path(self.options.list_file).read_text(encoding="utf-8")
        return [line.split() for line in text.splitlines() if line.strip()]

    def list_items(self) -> list[int]:
        return list(range(len(self.lines())))

    def shared_files(self):
        return [self.source.path(self.options.list_file)]

    def item_files(self, index):
        return [self.source.path(self.lines()[index][0])]

    def item_name(self, index):
        return f"line {index + 1}"

    def read_item(self, index):
        rel, label = self.lines()[index]
        yield from self.image_records(rel, label)


@pytest.fixture()
def file_list_layout():
    register_source(FileList)
    yield FileList
    _READERS.pop("file_list")


def test_a_new_layout_is_one_registered_class(tmp_path, file_list_layout):
    assert "file_list" in source_types()
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    lines = []
    for i in range(3):
        small = rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)
        Image.fromarray(small).resize((80, 80), Image.Resampling.BICUBIC).save(data / "imgs" / f"DOE_{i}.png")
        lines.append(f"imgs/DOE_{i}.png {'polyp' if i else 'ulcer'}")
    lines.append("imgs/missing_DOE.png polyp")
    (data / "list.txt").write_text("\n".join(lines))
    source = {
        "name": "fl",
        "type": "file_list",
        "root": "data",
        "modality": "endoscopy",
        "department": "Gastroenterology",
    }
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"sources": [{**source, "list_fil": "x"}]}))
    with pytest.raises(SpecError, match="unknown key 'list_fil' \\(did you mean 'list_file'\\?\\)"):
        load_build_spec(spec)
    spec.write_text(yaml.safe_dump({"sources": [source], "qc": {"min_image_side": 32}}))
    report = run_build(spec, tmp_path / "out", progress=False)
    records = list(iter_records(tmp_path / "out"))
    assert sorted(r.label for r in records) == ["polyp", "polyp", "ulcer"]
    assert all("DOE" not in r.record_id and "DOE" not in r.source_file for r in records)
    assert report.errors == [
        {"source": "fl", "item": "line 4", "kind": "unreadable", "message": report.errors[0]["message"]}
    ]
    assert "DOE" not in report.errors[0]["message"]
    assert report.rows_published["percept"] > 0


def test_every_builtin_layout_declares_typed_documented_options():
    import typing
    from dataclasses import fields

    from gmaivl.dataset_builders.registry import reader_class

    assert set(source_types()) >= {
        "class_folders",
        "csv",
        "coco",
        "mask_pairs",
        "nifti",
        "msd",
        "dicom",
        "text",
    }
    for name in source_types():
        reader = reader_class(name)
        assert issubclass(reader.Options, ReaderOptions) and reader.__doc__
        hints = typing.get_type_hints(reader.Options)
        for option in fields(reader.Options):
            assert option.name in hints  # typed, so the spec loader can check values


def test_dicom_is_recognised_by_content_whatever_its_suffix(tmp_path):
    import shutil

    from pydicom.data import get_testdata_file

    from gmaivl.dataset_builders.adapters import is_image_file

    for name in ("1.2.840.113619.2.55.3.604688119", "scan.dicom", "noext", "scan.DCM"):
        shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / name)
        assert is_image_file(tmp_path / name), name
    (tmp_path / "notes.txt").write_text("not a scan " * 20)
    (tmp_path / "tiny").write_bytes(b"DICM")
    assert not is_image_file(tmp_path / "notes.txt") and not is_image_file(tmp_path / "tiny")


def test_mask_pairs_match_uid_named_dicom_images_by_their_whole_name(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    uids = ["1.2.840.113619.2.55.1", "1.2.840.113619.2.55.2"]
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k, uid in enumerate(uids):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PixelData = np.roll(ds.pixel_array, 11 * k, axis=1).tobytes()
        ds.save_as(tmp_path / "images" / uid)
        mask = np.zeros((128, 128), np.uint8)
        mask[10 + 40 * k : 40 + 40 * k, 20:60] = 1
        Image.fromarray(mask).save(tmp_path / "masks" / f"{uid}.png")
    source = {"name": "m", "type": "mask_pairs", "modality": "CT", "department": "Radiology"}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"sources": [{**source, "mask": {"values": {1: "liver"}}}]}))
    out = tmp_path.with_name(tmp_path.name + "_out")  # outside the source root (the spec folder)
    report = run_build(spec, out, progress=False)
    boxes = sorted(r.bbox[1] for r in iter_records(out))
    assert report.errors_by_kind == {} and boxes == [10.0, 50.0]  # each image got its own mask
