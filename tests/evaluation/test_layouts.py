"""The four benchmarks in the layouts their authors publish, built tiny in tmp_path: VQA-RAD's
`VQA_RAD Dataset Public.json` + `VQA_RAD Image Folder/`, SLAKE's `test.json` + `imgs/`,
OmniMedVQA's `QA_information/<access>/*.json` (paths from the dataset root), PMC-VQA's CSVs +
`figures/`. Images stay inside the benchmark folder (`..`, absolute paths and links out fail their
row); scores follow each benchmark's published metric."""

import csv
import json
import os

import pytest
from PIL import Image

from gmaivl.core.tsv import ImageDecodeError
from gmaivl.evaluation.images import LazyImage, UnreadableImage
from gmaivl.evaluation.layouts import detect_layout, load_layout
from gmaivl.evaluation.loaders import BenchmarkFormatError, load_benchmark
from gmaivl.evaluation.runner import evaluate


def _image(path, color="red", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), color).save(path, format=fmt)
    return path


def _run(samples, tmp_path, reply):
    """Scores of `reply(sample)` for every question (no model: the metric is what is tested)."""
    return evaluate(samples, tmp_path / "p.jsonl", lambda batch: [reply(s) for s in batch],
                    benchmark="b", model_id="m", protocol={}, batch_size=4, progress=False)  # fmt: skip


# --------------------------------------------------------------------------- VQA-RAD


def _vqa_rad_entry(qid, image, question, answer, answer_type, phrase_type, **kw):
    # every key of the OSF release's JSON, as it spells them
    return {"qid": qid, "phrase_type": phrase_type, "qid_linked_id": f"link-{qid}",
            "image_case_url": "https://medpix.nlm.nih.gov/case?id=x", "image_name": image,
            "image_organ": kw.get("organ", "CHEST"), "evaluation": "not evaluated", "question": question,
            "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL",
            "question_type": kw.get("qtype", "PRES"), "answer": answer, "answer_type": answer_type}  # fmt: skip


@pytest.fixture
def vqa_rad(tmp_path):
    root = tmp_path / "VQA-RAD"
    folder = root / "VQA_RAD Image Folder"
    for name in ("synpic100.jpg", "synpic200.jpg"):
        _image(folder / name, fmt="JPEG")
    _image(tmp_path / "outside.jpg", fmt="JPEG")
    os.symlink(tmp_path / "outside.jpg", folder / "synpic_link.jpg")
    entries = [
        _vqa_rad_entry(0, "synpic100.jpg", "Is there a pneumothorax?", "Yes", "CLOSED", "freeform"),
        _vqa_rad_entry(1, "synpic100.jpg", "Is the heart enlarged?", "no", "CLOSED", "test_freeform"),
        _vqa_rad_entry(2, "synpic200.jpg", "Is this an MRI?", "yes", "CLOSED", "test_para", organ="HEAD"),
        _vqa_rad_entry(3, "synpic200.jpg", "Which side is the lesion on?", "left", "CLOSED", "test_freeform"),
        _vqa_rad_entry(4, "synpic200.jpg", "How many ribs are fractured?", 2, "OPEN", "test_freeform"),
        _vqa_rad_entry(5, "synpic100.jpg", "What organ is shown?", "the lung", "OPEN", "test_para"),
        _vqa_rad_entry(6, "../outside.jpg", "Is it normal?", "yes", "CLOSED", "test_freeform"),
        _vqa_rad_entry(7, str(tmp_path / "outside.jpg"), "Is it normal?", "yes", "CLOSED", "test_freeform"),
        _vqa_rad_entry(8, "synpic_link.jpg", "Is it normal?", "yes", "CLOSED", "test_freeform"),
        _vqa_rad_entry(9, "synpic999.jpg", "Is it normal?", "no", "CLOSED", "test_freeform"),
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(entries, indent=1))
    return root


def test_vqa_rad_original_release(vqa_rad):
    assert detect_layout(vqa_rad) == ("vqa-rad", vqa_rad)
    bench = load_benchmark(str(vqa_rad))  # the test split: phrase types test_freeform / test_para
    assert [s.index for s in bench] == ["1", "2", "3", "4", "5", "6", "7", "8", "9"]
    by = {s.index: s for s in bench}
    # closed = a yes/no reference (MedEvalKit's VQA-RAD split); "left" is open here
    assert [by[i].question_type for i in "12345"] == ["closed", "closed", "open", "open", "open"]
    assert by["4"].answer == "2"  # a number in the JSON
    assert by["2"].metadata == {"image_organ": "HEAD", "question_type": "PRES", "answer_type": "CLOSED",
                                "phrase_type": "test_para"}  # fmt: skip
    assert isinstance(by["1"].images[0], LazyImage) and by["1"].load_images()[0].size == (12, 10)
    train = load_benchmark(str(vqa_rad), split="train")
    assert [s.index for s in train] == ["0"]
    by_type = {s.index: s.question_type for s in load_benchmark(str(vqa_rad), preset="vqa-rad-answer-type")}
    assert by_type["3"] == "closed" and by_type["4"] == "open"  # the release's own answer_type


def test_images_never_leave_the_benchmark_folder(vqa_rad):
    by = {s.index: s for s in load_benchmark(str(vqa_rad))}
    for index, why in [("6", r"'\.\./outside\.jpg' is absolute or leaves the benchmark folder"),
                       ("7", r"'/.*/outside\.jpg' is absolute or leaves"),
                       ("8", r"'synpic_link\.jpg' resolves to .*outside\.jpg, outside the benchmark folder"),
                       ("9", r"'synpic999\.jpg' does not exist in VQA_RAD Image Folder/")]:  # fmt: skip
        assert isinstance(by[index].images[0], UnreadableImage)
        with pytest.raises(
            ImageDecodeError, match=r"Public\.json entry \d+ \(qid \d\): image (path )?" + why
        ):
            by[index].load_images()


def test_vqa_rad_scores_by_the_published_definition(vqa_rad, tmp_path):
    bench = load_benchmark(str(vqa_rad))
    replies = {"1": "No.", "2": "Yes, it is.", "3": "left", "4": "two", "5": "lung"}
    result = _run(bench, tmp_path, lambda s: replies[s.index])
    # closed accuracy over the yes/no references: both right; the bad-image rows fail, left out
    assert result["metrics"]["closed_accuracy"] == 100.0
    assert result["failed_rows"]["indices"] == ["6", "7", "8", "9"] and result["n"] == 5
    # open recall: share of the reference's tokens in the reply ("left" 1, "2" vs "two" 0, "the lung" -> "lung" 1)
    assert result["metrics"]["open_recall"] == pytest.approx(100 * 2 / 3, abs=1e-3)
    assert result["metrics"]["open_exact_match"] == pytest.approx(100 * 2 / 3, abs=1e-3)


# --------------------------------------------------------------------------- SLAKE


def _slake_entry(qid, img_id, question, answer, answer_type, lang, **kw):
    return {"img_id": img_id, "img_name": f"xmlab{img_id}/source.jpg", "question": question,
            "answer": answer, "q_lang": lang, "location": kw.get("location", "Lung"),
            "modality": kw.get("modality", "X-Ray"), "answer_type": answer_type, "base_type": "vqa",
            "content_type": kw.get("content", "Abnormality"), "triple": ["vhead", "_", "_"], "qid": qid}  # fmt: skip


@pytest.fixture
def slake(tmp_path):
    root = tmp_path / "Slake1.0"
    for img_id in (1, 2):
        _image(root / "imgs" / f"xmlab{img_id}" / "source.jpg", fmt="JPEG")
    entries = [
        _slake_entry(11, 1, "Is the lung healthy?", "No", "CLOSED", "en"),
        _slake_entry(12, 1, "Which is bigger, the liver or the spleen?", "Liver", "CLOSED", "en"),
        _slake_entry(13, 2, "What modality is used?", "CT", "OPEN", "en", modality="CT"),
        _slake_entry(14, 2, "图中是否有异常?", "是", "CLOSED", "zh"),
        _slake_entry(15, 2, "这是什么器官?", "肝脏", "OPEN", "zh"),
    ]
    (root / "test.json").write_text(json.dumps(entries, ensure_ascii=False))
    (root / "train.json").write_text(json.dumps(entries[:1]))
    return tmp_path  # the folder holding Slake1.0/, as the archive unpacks


def test_slake_test_json(slake, tmp_path):
    root = slake / "Slake1.0"
    assert detect_layout(slake) == ("slake", root) and detect_layout(root / "test.json") == (
        "slake",
        root / "test.json",
    )
    en = load_benchmark(str(slake))  # English only by default (the papers' tables)
    assert [s.index for s in en] == ["11", "12", "13"]
    assert [s.question_type for s in en] == ["closed", "closed", "open"]  # SLAKE's own answer_type
    assert en[0].metadata == {"answer_type": "CLOSED", "content_type": "Abnormality", "modality": "X-Ray",
                              "location": "Lung"}  # fmt: skip
    both = load_benchmark(str(slake), preset="slake")  # both languages, as MedEvalKit and the HF preset
    assert [s.index for s in both] == ["11", "12", "13", "14", "15"] and both[3].metadata["q_lang"] == "zh"
    result = _run(both, tmp_path, lambda s: {"11": "no", "12": "The liver is bigger.", "13": "MRI",
                                             "14": "否", "15": "肝脏"}[s.index])  # fmt: skip
    # closed: yes/no read as yes/no (11 right, 14 wrong), others right when the reply contains the
    # reference (12 right): 2 of 3; open exact match 1 of 2
    assert result["metrics"]["closed_accuracy"] == pytest.approx(100 * 2 / 3, abs=1e-3)
    assert result["metrics"]["open_exact_match"] == 50.0
    assert result["breakdowns"]["q_lang"] == {"en": {"accuracy": pytest.approx(200 / 3, abs=1e-3), "n": 3},
                                              "zh": {"accuracy": 50.0, "n": 2}}  # fmt: skip
    assert [s.index for s in load_benchmark(str(slake), split="train")] == ["11"]


def test_slake_missing_split_and_wrong_preset(slake):
    with pytest.raises(
        BenchmarkFormatError, match=r"Slake1\.0: no validate\.json \(SLAKE's validation split\)"
    ):
        load_benchmark(str(slake), split="validation")
    with pytest.raises(BenchmarkFormatError, match=r"preset 'mmmu' does not apply to the slake layout"):
        load_benchmark(str(slake), preset="mmmu")
    with pytest.raises(
        BenchmarkFormatError, match=r"the pmc-vqa loader was asked for, but the folder holds the slake layout"
    ):
        load_benchmark(str(slake), preset="pmc-vqa")


# --------------------------------------------------------------------------- OmniMedVQA


def _omni_entry(qid, dataset, image_path, question, answer, options, **kw):
    entry = {"dataset": dataset, "question_id": qid, "question_type": kw.get("qtype", "Modality Recognition"),
             "question": question, "gt_answer": answer, "image_path": image_path}  # fmt: skip
    entry.update({f"option_{k}": v for k, v in options.items()})
    entry["modality_type"] = kw.get("modality", "CT(Computed Tomography)")
    return entry


@pytest.fixture
def omni(tmp_path):
    root = tmp_path / "OmniMedVQA"
    _image(root / "Images" / "ACRIMA" / "Im001.png")
    _image(root / "Images" / "Chest CT" / "scan 1.png", "blue")
    qa = root / "QA_information"
    (qa / "Open-access").mkdir(parents=True)
    (qa / "Restricted-access").mkdir(parents=True)
    open_entries = [
        _omni_entry("ACRIMA_0001", "ACRIMA", "Images/ACRIMA/Im001.png", "Is glaucoma present?", "No",
                    {"A": "Yes", "B": "No"}, modality="Fundus Photography"),
        _omni_entry("Chest_0001", "Chest CT", "Images/Chest CT/scan 1.png", "What modality is this?",
                    "CT", {"A": "MRI", "B": "X-Ray", "C": "CT", "D": "PET"}),
        _omni_entry("Chest_0002", "Chest CT", "Images/../../escape.png", "Which organ?", "Lung",
                    {"A": "Lung", "B": "Liver"}),
    ]  # fmt: skip
    (qa / "Open-access" / "ACRIMA.json").write_text(json.dumps(open_entries[:1]))
    (qa / "Open-access" / "Chest CT.json").write_text(json.dumps(open_entries[1:]))
    restricted = [
        _omni_entry("R_0001", "Restricted", "Images/ACRIMA/Im001.png", "Q?", "B", {"A": "x", "B": "y"})
    ]
    (qa / "Restricted-access" / "R.json").write_text(json.dumps(restricted))
    return root


def test_omnimedvqa_open_access(omni, tmp_path):
    assert detect_layout(omni.parent) == ("omnimedvqa", omni)
    bench = load_benchmark(str(omni), preset="omnimedvqa")
    assert [s.index for s in bench] == ["ACRIMA_0001", "Chest_0001", "Chest_0002"]
    acrima, chest, escape = bench
    assert acrima.options == {"A": "Yes", "B": "No"} and acrima.answer == "B"  # gt_answer is option text
    assert chest.options == {"A": "MRI", "B": "X-Ray", "C": "CT", "D": "PET"} and chest.answer == "C"
    assert chest.metadata == {"question_type": "Modality Recognition", "modality_type": "CT(Computed Tomography)",
                              "dataset": "Chest CT"}  # fmt: skip
    assert chest.load_images()[0].getpixel((0, 0)) == (0, 0, 255)  # image_path from the dataset root
    with pytest.raises(ImageDecodeError, match=r"escape\.png' is absolute or leaves the benchmark folder"):
        escape.load_images()
    result = _run(
        bench, tmp_path, lambda s: {"ACRIMA_0001": "B", "Chest_0001": "The answer is A."}.get(s.index, "")
    )
    assert result["metrics"]["accuracy"] == 50.0 and result["leaderboard_metric"] == "accuracy"
    both = load_layout(omni, split="all")
    assert len(both) == 4 and both[-1].metadata["access"] == "Restricted-access"


def test_omnimedvqa_bad_answer_named(omni):
    path = omni / "QA_information" / "Open-access" / "ACRIMA.json"
    entries = json.loads(path.read_text())
    entries[0]["gt_answer"] = "Maybe"
    path.write_text(json.dumps(entries))
    with pytest.raises(
        BenchmarkFormatError, match=r"ACRIMA\.json entry 1 \(question_id ACRIMA_0001\): answer 'Maybe'"
    ):
        load_benchmark(str(omni))


# --------------------------------------------------------------------------- PMC-VQA


def _write_csv(path, header, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture
def pmc(tmp_path):
    root = tmp_path / "PMC-VQA"
    _image(root / "figures" / "PMC1064097_F1.jpg", fmt="JPEG")
    _image(root / "images" / "PMC2000000_F2.jpg", fmt="JPEG")  # the second archive unpacks here
    header = [
        "Figure_path",
        "Question",
        "Answer",
        "Choice A",
        "Choice B",
        "Choice C",
        "Choice D",
        "Answer_label",
    ]
    _write_csv(root / "test_clean.csv", header, [
        ["PMC1064097_F1.jpg", "What is the uptake pattern in the breast?", "Focal uptake pattern",
         "A:Diffuse uptake pattern", "B:Focal uptake pattern", "C:No uptake pattern",
         "D:Cannot determine from the information given", "B"],
        ["PMC2000000_F2.jpg", "Which imaging was used?", "CT", "A:MRI ", "B: CT", "C:PET", "D:US", "B"],
    ])  # fmt: skip
    header2 = ["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D",
               "Answer", "split"]  # fmt: skip
    _write_csv(root / "test_2.csv", header2, [
        ["7", "PMC1064097_F1.jpg", "a caption", "Where is the lesion?", "A:Left", "B:Right", "C:Both",
         "D:Neither", "C", "test"],
        ["8", "/etc/passwd", "a caption", "Which?", "A:x", "B:y", "C:z", "D:w", "A", "test"],
    ])  # fmt: skip
    return root


def test_pmc_vqa_csv(pmc, tmp_path):
    assert detect_layout(pmc)[0] == "pmc-vqa"
    bench = load_benchmark(str(pmc), split="test_clean", preset="pmc-vqa")
    first, second = bench
    assert first.options == {"A": "Diffuse uptake pattern", "B": "Focal uptake pattern",
                             "C": "No uptake pattern", "D": "Cannot determine from the information given"}  # fmt: skip
    assert first.answer == "B" and second.options["B"] == "CT" and second.answer == "B"
    assert second.load_images()[0].size == (12, 10)  # found under images/
    result = _run(bench, tmp_path, lambda s: "B" if s.question.startswith("What") else "A")
    assert result["metrics"]["accuracy"] == 50.0
    v2 = load_benchmark(str(pmc / "test_2.csv"))  # version 2: Answer is the letter, index its own
    assert [(s.index, s.answer) for s in v2] == [("7", "C"), ("8", "A")]
    with pytest.raises(ImageDecodeError, match=r"test_2\.csv row 3: image path '/etc/passwd' is absolute"):
        v2[1].load_images()


def test_pmc_vqa_missing_column_named(pmc):
    _write_csv(pmc / "test.csv", ["Figure_path", "Question", "Choice A"], [["PMC1064097_F1.jpg", "Q", "A:x"]])
    with pytest.raises(BenchmarkFormatError, match=r"test\.csv: missing column\(s\) \['Choice B'\]"):
        load_benchmark(str(pmc))


def test_no_image_at_all_is_refused_at_load_time(pmc):
    for f in (pmc / "figures").iterdir():
        f.unlink()
    for f in (pmc / "images").iterdir():
        f.unlink()
    with pytest.raises(
        BenchmarkFormatError, match=r"no question has a readable image; the first: .*does not exist"
    ):
        load_benchmark(str(pmc), split="test_clean")


def test_eval_run_on_a_published_layout(tiny_checkpoint, slake, tmp_path):
    from gmaivl.app.cli import main

    args = ["eval", "--model", str(tiny_checkpoint), "--benchmark", str(slake), "--preset", "slake-en",
            "--out", str(tmp_path / "out"), "--max-new-tokens", "closed=2,open=2", "--quiet"]  # fmt: skip
    assert main(args) == 0
    result = json.loads((tmp_path / "out" / "slake-en-test" / "results.json").read_text())
    assert result["n"] == 3 and result["counts"] == {"closed": 2, "open": 1}
    assert result["protocol"]["batch_size"] == 8
