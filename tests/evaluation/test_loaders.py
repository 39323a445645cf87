"""Benchmark loaders: VLMEvalKit TSV and Hugging Face datasets, and their error messages."""

import base64
import io

import pandas as pd
import pytest
from PIL import Image

from gmaivl.core.tsv import ImageDecodeError, ImageTooLargeError
from gmaivl.evaluation.images import UnreadableImage
from gmaivl.evaluation.loaders import (
    BenchmarkFormatError,
    load_benchmark,
    load_hf_benchmark,
    load_vlmevalkit_tsv,
)


def _b64(color):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _write(df, path):
    df.to_csv(path, sep="\t", index=False)
    return path


def _rows():
    return pd.DataFrame(
        {
            "index": [10, 11, 12],
            "question": ['Which organ is "marked"?', "Which\tone?", "Is it normal?"],
            "A": ["liver", "CT", ""],
            "B": ["kidney", "MR", ""],
            "C": ["spleen", "", ""],
            "answer": ["C", "A,B", "yes"],
            "image": [_b64("red"), "10", _b64("blue")],
            "modality": ["CT", "MR", "X-ray"],
            "clinical vqa task": [
                "Organ Recognition - Abdomen",
                "Attribute Recognition",
                "Disease Diagnosis",
            ],
            "department": ["Radiology", "Radiology", "Pulmonary Medicine"],
            "perceptual granularity": ["image", "image", "image"],
        }
    )


def test_tsv_round_trip(bench_tsv, tmp_path):
    samples = load_vlmevalkit_tsv(_write(_rows(), tmp_path / "b.tsv"))
    mcq, multi, closed = samples
    assert mcq.question_type == "mcq" and mcq.options == {"A": "liver", "B": "kidney", "C": "spleen"}
    assert mcq.question == 'Which organ is "marked"?'
    assert mcq.metadata["clinical vqa task"] == "Organ Recognition - Abdomen"
    assert (
        multi.options == {"A": "CT", "B": "MR"}
        and multi.answer_letters == ["A", "B"]
        and multi.is_multi_answer
    )
    # row 11 stores "10": the image of row 10, VLMEvalKit's way of storing a repeated image once
    assert multi.load_images()[0].getpixel((0, 0)) == (255, 0, 0)
    assert closed.question_type == "closed" and closed.options == {}


def test_tsv_missing_columns_named(tmp_path):
    path = _write(_rows().drop(columns=["question"]), tmp_path / "b.tsv")
    with pytest.raises(BenchmarkFormatError, match=r"b\.tsv: missing required column\(s\) \['question'\]"):
        load_vlmevalkit_tsv(path)


def test_tsv_undecodable_image_fails_its_row_only(tmp_path):
    df = _rows()
    df.loc[2, "image"] = base64.b64encode(b"not an image at all" * 8).decode()
    samples = load_vlmevalkit_tsv(_write(df, tmp_path / "b.tsv"))
    assert len(samples) == 3 and samples[0].load_images()[0].getpixel((0, 0)) == (255, 0, 0)
    with pytest.raises(ImageDecodeError, match=r"b\.tsv row 4 \(index 12\): image is not a decodable"):
        samples[2].load_images()
    df["image"] = base64.b64encode(b"not an image at all" * 8).decode()  # no row readable: refused
    with pytest.raises(BenchmarkFormatError, match=r"no row has a readable image; the first: .*row 2"):
        load_vlmevalkit_tsv(_write(df, tmp_path / "c.tsv"))


def test_tsv_oversize_image_cell_fails_its_row_at_load_time(tmp_path, monkeypatch):
    df = _rows()
    df.loc[2, "image"] = _b64("blue") + "A" * 4000  # a cell over GMAIVL_MAX_IMAGE_BYTES
    monkeypatch.setenv("GMAIVL_MAX_IMAGE_BYTES", "2000")
    samples = load_vlmevalkit_tsv(_write(df, tmp_path / "b.tsv"))
    assert isinstance(samples[2].images[0], UnreadableImage)  # the cell was not kept or parsed
    with pytest.raises(ImageTooLargeError, match=r"row 4 \(index 12\): image cell of 4,\d{3} bytes is over"):
        samples[2].load_images()
    assert samples[0].load_images()[0].size == (8, 8)


def test_tsv_answer_outside_options_named(tmp_path):
    df = _rows()
    df.loc[0, "answer"] = "E"
    with pytest.raises(BenchmarkFormatError, match=r"index 10\): answer 'E' is not among"):
        load_vlmevalkit_tsv(_write(df, tmp_path / "b.tsv"))


def test_tsv_repeated_index_named(tmp_path):
    df = _rows()
    df.loc[2, "index"] = 10  # predictions are keyed by index: two questions would share one answer
    with pytest.raises(BenchmarkFormatError, match=r"row 4 \(index 10\): index 10 already used by row 2"):
        load_vlmevalkit_tsv(_write(df, tmp_path / "b.tsv"))


def test_built_benchmark_loads(bench_tsv):
    samples = load_benchmark(str(bench_tsv))
    assert all(s.question_type == "mcq" and len(s.images) == 1 for s in samples)


def test_hf_dataset_vqa_rad_style(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (8, 8), c) for c in ("red", "green", "blue")],
            "question": ["Is there a fracture?", "Which organ is shown?", "Is the heart enlarged?"],
            "answer": ["no", "Liver", "yes"],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
            }
        ),
    )
    ds.save_to_disk(tmp_path / "vqa-rad")
    samples = load_benchmark(str(tmp_path / "vqa-rad"), preset="vqa-rad")
    assert [s.question_type for s in samples] == ["closed", "open", "closed"]
    assert samples[1].load_images()[0].getpixel((0, 0)) == (0, 128, 0)


def test_hf_dataset_mmmu_style(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "id": ["q1", "q2"],
            "question": ["<image 1> Which stain is used?", "<image 1> Name the structure."],
            "options": ["['H&E', 'PAS', 'Gram']", "[]"],
            "answer": ["B", "alveolus"],
            "question_type": ["multiple-choice", "open"],
            "image_1": [Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")],
            "image_2": [None, None],
            "subfield": ["Pathology", "Anatomy"],
        },
    )
    ds = ds.cast_column("image_1", datasets.Image()).cast_column("image_2", datasets.Image())
    ds.save_to_disk(tmp_path / "mmmu")
    q1, q2 = load_hf_benchmark(str(tmp_path / "mmmu"), preset="mmmu")
    assert q1.index == "q1" and q1.question == "Which stain is used?" and q1.options["B"] == "PAS"
    assert q1.answer_letters == ["B"] and len(q1.images) == 1
    assert q2.question_type == "open" and q2.options == {}
    assert q1.metadata == {"subfield": "Pathology"}


def test_hf_missing_column_named(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"image": [Image.new("RGB", (4, 4))], "question": ["?"]}).save_to_disk(
        tmp_path / "d"
    )
    with pytest.raises(BenchmarkFormatError, match="no answer column"):
        load_hf_benchmark(str(tmp_path / "d"))


def test_hf_images_stay_in_the_dataset_until_needed(tmp_path):
    import datasets

    from gmaivl.evaluation.images import DatasetImage

    ds = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (8, 8), "red"), None, Image.new("RGB", (8, 8), "blue")],
         "question": ["Is it red?", "Is it there?", "Which colour?"], "answer": ["yes", "no", "blue"]},
        features=datasets.Features(
            {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
        ),
    )  # fmt: skip
    ds.save_to_disk(tmp_path / "d")
    bench = load_hf_benchmark(str(tmp_path / "d"))
    assert [s.index for s in bench] == ["0", "2"] and bench.skipped == {"row without an image": 1}
    assert isinstance(bench[1].images[0], DatasetImage)
    assert bench[1].load_images()[0].getpixel((0, 0)) == (0, 0, 255)
