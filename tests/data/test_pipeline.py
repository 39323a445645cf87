"""End to end: real medical files -> records -> rows -> QC -> Parquet -> load_dataset."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard
from PIL import Image

from gmaivl.dataset_builders import MedicalRecord, iter_records
from gmaivl.dataset_builders.demo import PLANTED_IDENTIFIERS, demo_spec
from gmaivl.dataset_builders.writer import default_limits, size_to_bytes

IMAGE_SOURCES = {s["name"] for s in demo_spec()["sources"] if s["type"] != "text"}


@pytest.mark.parametrize("config", ["caption", "instruct", "percept"])
def test_load_dataset_decodes_images_and_messages(built, config):
    out, _ = built
    ds = load_dataset(str(out), config, split="train")
    assert len(ds) > 0
    row = ds[0]
    assert isinstance(row["images"][0], Image.Image) and row["images"][0].mode == "RGB"
    assert [m["role"] for m in row["messages"]][:2] == ["user", "assistant"]
    assert all(m["content"].strip() for m in row["messages"])
    for column in (
        "modality",
        "department",
        "label",
        "task_type",
        "clinical_task",
        "source_dataset",
        "language",
    ):
        assert row[column], column


def test_every_source_and_format_reaches_the_corpus(built):
    out, report = built
    sources = set(load_dataset(str(out), "caption", split="train")["source_dataset"])
    sources |= set(load_dataset(str(out), "caption", split="test")["source_dataset"])
    # demo-msd repeats the NIfTI volume of demo-mr-nifti: its slices are all exact duplicates
    assert IMAGE_SOURCES - {"demo-msd"} <= sources
    assert report["dropped"]["qc"]["duplicate_image_md5"] >= 1
    text = load_dataset(str(out), "text_single", split="train")
    multi = load_dataset(str(out), "text_multi", split="train")
    assert text[0]["images"] == [] and len(multi[0]["messages"]) == 4
    assert "zh" in set(text["language"])


def test_percept_rows_follow_the_option_rule(built):
    out, _ = built
    ds = load_dataset(str(out), "percept", split="train")
    choice_rows = [r for r in ds if r["question_type"] == "mcq"]
    assert {r["question_kind"] for r in choice_rows} >= {"classification", "modality", "lesion"}
    for row in choice_rows:
        question, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        options = [
            line[3:]
            for line in question.splitlines()
            if len(line) > 2 and line[1:3] == ". " and line[0].isupper()
        ]
        assert 2 <= len(options) <= 5  # answer + 1..4 distractors
        assert options == row["options"]
        assert answer[0] == row["answer"] and options["ABCDE".index(row["answer"])] == answer[3:]
        if row["question_kind"] != "modality":
            assert answer[3:] == row["label"]
    boxed = [r for r in ds if r["question_kind"] == "grounding"]
    assert boxed and all(r["bbox"] is not None for r in boxed)


def test_closed_form_rows_are_rl_ready(built):
    """Every percept row carries what `trl grpo` and the GRPO recipes read: a conversational prompt
    with the image, the question, options, the reference answer and its type."""
    out, _ = built
    ds = load_dataset(str(out), "percept", split="train")
    kinds = {}
    for row in ds:
        kinds.setdefault(row["question_type"], set()).add(row["question_kind"])
        assert row["question_type"] in ("mcq", "closed", "open")
        (turn,) = row["prompt"]
        assert turn["role"] == "user" and [p["type"] for p in turn["content"]] == ["image", "text"]
        text = turn["content"][1]["text"]
        assert text == row["messages"][0]["content"] and text.startswith(row["question"])
        assert len(row["images"]) == 1
        if row["question_type"] == "mcq":
            assert row["answer"] in "ABCDE"[: len(row["options"])] and len(row["options"]) >= 2
        elif row["question_type"] == "closed":
            assert row["answer"] in ("yes", "no") and row["options"] == []
            assert row["messages"][1]["content"].lower().startswith(row["answer"])
        else:
            assert row["answer"] and row["options"] == []
    assert kinds["closed"] == {"yes_no"} and {"region", "grounding"} <= kinds["open"]
    answers = [r["answer"] for r in ds if r["question_type"] == "closed"]
    assert 0.2 < answers.count("yes") / len(answers) < 0.8  # both references occur
    # TRL's GRPOTrainer path: a conversational prompt whose image placeholder takes the row's image
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    row = ds[0]
    assert is_conversational(row)
    filled = prepare_multimodal_messages(row["prompt"], images=row["images"])
    assert filled[0]["content"][0]["image"] is row["images"][0]
    # the trainers' GRPO data step and its rewards accept the rows as they are
    from gmaivl.trainers.grpo_data import prepare_grpo_dataset
    from gmaivl.trainers.rewards import accuracy_reward

    rl = prepare_grpo_dataset(ds, open_from_mcq=False, yes_no_ratio=0.05)
    assert len(rl) > 0
    rows = [ds[i] for i in range(len(ds))]
    perfect = [
        [{"role": "assistant", "content": f"<think>.</think><answer>{r['answer']}</answer>"}] for r in rows
    ]
    rewards = accuracy_reward(
        perfect,
        answer=[r["answer"] for r in rows],
        question_type=[r["question_type"] for r in rows],
        options=[r["options"] for r in rows],
    )
    assert rewards == [1.0] * len(rows)
    caption = load_dataset(str(out), "caption", split="train")
    assert all(r["prompt"] == [] and r["question"] == "" for r in caption)


def test_bad_inputs_are_counted_and_named(built):
    out, report = built
    kinds = report["errors"]["by_kind"]
    assert kinds["unreadable"] == 3  # truncated PNG, NIfTI and DICOM
    assert kinds["unknown_label"] == 1 and kinds["shape_mismatch"] == 1
    assert kinds["invalid_bbox"] == 1 and kinds["invalid_json"] == 1
    items = report["errors"]["items"]
    assert len(items) == sum(kinds.values())
    assert all(set(item) == {"source", "item", "kind", "message"} for item in items)
    published = json.dumps(items)
    local = (out / "_work" / "failures.jsonl").read_text(encoding="utf-8")
    # the published report names items by id; the local work area keeps the file names
    for name in ("truncated.png", "broken.nii", "truncated.dcm", "wrong_shape.png", "single.jsonl"):
        assert name not in published and name in local
    assert "unlisted stain" in published and "row 6" in published and "line 6: invalid JSON" in published
    by_item = {(i["source"], i["item"]): i["kind"] for i in items}
    local_rows = [json.loads(line) for line in local.splitlines()]
    assert {(r["source"], r["item"]): r["kind"] for r in local_rows} == by_item


def test_qc_decontaminates_and_dedups(built):
    _, report = built
    qc = report["dropped"]["qc"]
    assert qc["benchmark_contamination"] == 2  # one image from the folder, one from the TSV
    assert qc["near_duplicate_text"] == 1
    assert report["dropped"]["ingest"]["tiny_component"] > 0
    published, generated = report["rows"]["published"], report["rows"]["generated"]
    assert all(published[c] <= generated[c] for c in published)


def test_parquet_within_viewer_limits(built):
    out, report = built
    spec = demo_spec()["publish"]
    limits = default_limits()
    files = sorted(p for p in out.rglob("*.parquet") if "_work" not in p.parts)
    assert files and report["parquet"]["files"] == len(files)
    for path in files:
        assert path.stat().st_size <= size_to_bytes(spec["max_shard_size"]) <= limits["max_shard_bytes"]
        metadata = pq.ParquetFile(path).metadata
        assert b"huggingface" in metadata.metadata  # features travel with the file
        for index in range(metadata.num_row_groups):
            group = metadata.row_group(index)
            assert group.num_rows <= spec["row_group_rows"]
            assert group.total_byte_size <= limits["max_row_group_bytes"]
            assert all(group.column(c).has_offset_index for c in range(group.num_columns))
    assert len({p.parent for p in files}) >= 5 and max(len(list(p.parent.iterdir())) for p in files) < 10_000


def test_no_patient_identifier_anywhere(built, demo_spec):
    out, _ = built
    import pydicom
    from pydicom.data import get_testdata_file

    secrets = set(PLANTED_IDENTIFIERS.values())
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        secrets |= {str(ds.PatientName), str(ds.PatientID)}
    secrets = {s for s in secrets if len(s) >= 4}
    checked = 0
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            columns = [c for c in table.column_names if c not in ("image", "images")]
            text = json.dumps(table.select(columns).to_pylist(), default=str, ensure_ascii=False)
        elif path.suffix == ".png":
            text = str(Image.open(path).info)
        else:
            text = path.read_bytes().decode("utf-8", "replace")
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{path}: {leaked}"
        checked += 1
    assert checked > 20
    ct_records = [r for r in iter_records(out) if r.source_dataset in ("demo-ct", "demo-ct-series")]
    assert ct_records
    for record in ct_records:
        assert set(record.meta) <= {
            "Modality",
            "PixelSpacing",
            "SliceThickness",
            "PhotometricInterpretation",
            "frame",
            "slice",
            "axis",
            "spacing",
        }
        assert "planted" not in record.source_file.lower() and "planted" not in record.record_id.lower()


def test_records_iterator_and_card(built):
    out, report = built
    records = list(iter_records(out))
    assert len(records) == report["records"]["kept"]
    assert all(isinstance(r, MedicalRecord) and len(r.image_md5) == 32 for r in records)
    boxed = [r for r in records if r.bbox is not None]
    assert boxed and all(
        0 <= r.bbox[0] < r.bbox[2] <= r.width and 0 <= r.bbox[1] < r.bbox[3] <= r.height for r in boxed
    )
    assert {r.granularity for r in records} >= {"image", "box", "mask"}
    assert records[0].image().size == (records[0].width, records[0].height)
    volume = [r for r in records if r.source_dataset == "demo-mr-nifti"]
    assert volume and all("slice" in r.meta and r.meta["spacing"] == [2.0, 2.0, 2.0] for r in volume)
    card = DatasetCard.load(out / "README.md")
    configs = {c["config_name"]: c for c in card.data.configs}
    assert {"caption", "instruct", "percept", "text_single", "text_multi", "records"} <= set(configs)
    assert {f["split"] for f in configs["caption"]["data_files"]} == {"train", "test"}
    assert (out / "statistics.png").is_file() and "statistics.png" in card.text
    assert "Build provenance" in card.text and report["spec_fingerprint"] in card.text
    # every published column is described in the card's column table
    from gmaivl.dataset_builders.generate import row_features

    columns = next(
        t for t in re.findall(r"((?:^\|.*\|\n)+)", card.text, flags=re.M) if t.startswith("| column |")
    )
    described = {n.strip() for line in columns.splitlines()[2:] for n in line.split("`")[1].split(",")}
    assert described == set(row_features())
    # Markdown tables render only when their rows are contiguous: no blank line inside a table.
    lines = card.text.splitlines()
    for i in range(len(lines) - 2):
        assert not (lines[i].startswith("|") and not lines[i + 1] and lines[i + 2].startswith("| ---")), i
    tables = re.findall(r"((?:^\|.*\|\n)+)", card.text, flags=re.M)
    configs_table = next(t for t in tables if t.startswith("| config |"))
    assert len(configs_table.strip().splitlines()) == 2 + len(configs)
    sources = {r.source_dataset for r in records}
    sources_table = next(t for t in tables if t.startswith("| source |"))
    assert {row.split("|")[1].strip() for row in sources_table.strip().splitlines()[2:]} >= sources
