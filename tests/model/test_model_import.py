"""`gmaivl model import`: tiny checkpoints written and run by the source projects' own code
(fixtures/import/, see its README) come out as GMAI-VL folders with the same logits and tokens."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from gmaivl.app.cli import main

from .test_hub_roundtrip import load_without_the_package

FIXTURES = Path(__file__).parent / "fixtures" / "import"
ENHANCED = FIXTURES / "enhanced_llava_expected"
LLAVA = FIXTURES / "llava_original_expected"
LLAVA_IMAGE_TOKEN_INDEX = -200
SOURCES = {  # imported folder name -> (--from, checkpoint, expected outputs)
    "enhanced_llava": ("enhanced-llava", FIXTURES / "enhanced_llava", ENHANCED),
    "llava_llama": ("llava-original", FIXTURES / "llava_llama", LLAVA),
    "llava_mistral": ("llava-original", FIXTURES / "llava_mistral", LLAVA),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("imported")
    folders = {}
    for name, (source_format, src, _) in SOURCES.items():
        assert main(["model", "import", "--from", source_format, str(src), str(root / name)]) == 0
        folders[name] = root / name
    return folders


def _load(folder: Path):
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(folder, trust_remote_code=True)


def _expand(ids: list[int], source_image_id: int, processor) -> list[int]:
    """The source's ids with its single image id expanded as the legacy merge expands it."""
    out = []
    for i in ids:
        out.extend([processor.image_token_id] * processor.num_image_tokens if i == source_image_id else [i])
    return out


def _case(name: str) -> dict:
    """What the source's code was given and gave: prompt, messages, ids, pixel values, logits, greedy."""
    _, _, expected = SOURCES[name]
    record = json.loads((expected / "expected.json").read_text())
    tensors = load_file(expected / "outputs.safetensors")
    images = [Image.open(expected / f"image_{i}.png") for i in range(2)]
    if name == "enhanced_llava":
        return {
            "messages": record["messages"],
            "prompt": record["prompt"],
            "input_ids": record["input_ids"],
            "image_id": record["image_token_index"],
            "dialogue": (record["dialogue"], record["dialogue_prompt"], None),
            "pixel_values": tensors["pixel_values"],
            "logits": [tensors[f"logits_{i}"] for i in range(2)],
            "greedy": [record["greedy"][str(i)] for i in range(2)],
            "images": images,
        }
    family = record["families"][name]
    template = record["templates"][family["conv_mode"]]
    first = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": record["question"]}]}
    dialogue = [
        first,
        {"role": "assistant", "content": "A CT scan."},
        {"role": "user", "content": "Is there a fracture?"},
    ]
    return {
        "messages": [first],
        "prompt": template["prompt"],
        "input_ids": template["input_ids"],
        "image_id": LLAVA_IMAGE_TOKEN_INDEX,
        "dialogue": (dialogue, template["dialogue"], template["dialogue_input_ids"]),
        "pixel_values": tensors[f"{name}.pixel_values"],
        "logits": [tensors[f"{name}.logits_{i}"] for i in range(2)],
        "greedy": [family["greedy"][str(i)] for i in range(2)],
        "images": images,
    }


@pytest.mark.parametrize("name", list(SOURCES))
def test_imported_logits_and_greedy_tokens_equal_the_source_models(imported, name):
    model, processor = _load(imported[name])
    case = _case(name)
    text = processor.apply_chat_template(case["messages"], add_generation_prompt=True)
    for i, image in enumerate(case["images"]):
        inputs = processor(text=[text], images=[[image]], return_tensors="pt")
        # the processor's ids are the source's, its single image id expanded as its model expands it
        assert inputs["input_ids"][0].tolist() == _expand(case["input_ids"], case["image_id"], processor)
        pixel_values = case["pixel_values"][i : i + 1]  # what the source's preprocessing gave
        with torch.no_grad():
            logits = model(input_ids=inputs["input_ids"], pixel_values=pixel_values).logits[0]
            generated = model.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                pixel_values=pixel_values,
                max_new_tokens=8,
                do_sample=False,
            )
        reference = case["logits"][i]
        assert logits.shape[0] == reference.shape[0]
        # llava-original gains one column: the <image> token LLaVA never had (its id was -200)
        assert logits.shape[1] == reference.shape[1] + (name != "enhanced_llava")
        torch.testing.assert_close(logits[:, : reference.shape[1]], reference, rtol=0, atol=1e-5)
        assert generated[0, inputs["input_ids"].shape[1] :].tolist() == case["greedy"][i]


@pytest.mark.parametrize("name", list(SOURCES))
def test_imported_processor_reproduces_the_source_preprocessing_and_template(imported, name):
    _, processor = _load(imported[name])
    case = _case(name)
    messages, prompt, ids = case["dialogue"]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    if ids is None:  # xtuner's internlm2 template: the same text
        assert text == prompt
    else:  # LLaVA tokenizes around the image itself: the same ids (the text may differ by a space)
        assert text.replace("<image> \n", "<image>\n") == prompt
        got = processor(text=[text], images=[[case["images"][1]]], return_tensors="pt")["input_ids"][0]
        assert got.tolist() == _expand(ids, LLAVA_IMAGE_TOKEN_INDEX, processor)
    pixels = processor.image_processor(case["images"], return_tensors="pt")["pixel_values"]
    # a square image at the tower's size: CLIP's rescale + normalise, bit for bit
    torch.testing.assert_close(pixels[1], case["pixel_values"][1], rtol=0, atol=1e-6)
    # a non-square one: padded with the mean colour and resized in float, where the source pads
    # with int(mean * 255) and resizes 8-bit pixels; measured 0.019 at most (normalised units)
    assert (pixels[0] - case["pixel_values"][0]).abs().max() < 0.025


def test_the_imported_folder_loads_without_the_package(imported, tmp_path):
    folder = imported["enhanced_llava"]
    files = {p.name for p in folder.iterdir()}
    assert {"modeling_gmaivl.py", "configuration_gmaivl.py", "processing_gmaivl.py"} <= files
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gmai_vl" and config["text_config"]["model_type"] == "llama"
    case = _case("enhanced_llava")
    _, processor = _load(folder)
    texts = [processor.apply_chat_template(case["messages"], add_generation_prompt=True)]
    report, out = load_without_the_package(folder, texts, [[case["images"][1]]], tmp_path)
    assert report["model"] == "GMAIVLForConditionalGeneration" and report["modules"] == []
    # the square image's pixels are the source's bit for bit, so the logits are the source model's
    torch.testing.assert_close(out["logits"][0], case["logits"][1], rtol=0, atol=1e-5)
    assert out["generated"][0, out["input_ids"].shape[1] :].tolist() == case["greedy"][1]


@pytest.mark.parametrize("name", ["enhanced_llava", "llava_mistral"])
def test_the_imported_model_enters_the_staged_recipe(imported, name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["train", "run", "--config", "tiny/stage1_shallow_alignment.yaml", "--model_name_or_path"]
    assert main([*args, str(imported[name]), "--dry-run"]) == 0
    report = capsys.readouterr().out
    assert f"model: {imported[name]} (GMAIVLForConditionalGeneration, family gmaivl)" in report, report
    projector = next(line for line in report.splitlines() if line.startswith("  projector"))
    assert not projector.rstrip().endswith(" 0 trainable")  # stage I trains the imported projector
    assert "steps: 8" in report


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    from gmaivl.app.cli import run

    monkeypatch.setattr(sys, "argv", ["gmaivl", *args])
    with pytest.raises(SystemExit) as exit_info:
        run()
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def _variant(tmp_path: Path, name: str, src: Path, **changes) -> Path:
    folder = tmp_path / name
    shutil.copytree(src, folder)
    values = json.loads((folder / "config.json").read_text())
    values.update(changes)
    (folder / "config.json").write_text(json.dumps(values))
    return folder


def test_other_formats_are_refused_in_one_line(imported, tmp_path, monkeypatch, capsys):
    llama = FIXTURES / "llava_llama"
    (tmp_path / "empty").mkdir()
    cases = {
        # a GMAI-VL folder, a native transformers LLaVA, a plain LM: not the format asked for
        ("enhanced-llava", str(imported["llava_llama"])): "not an enhanced-llava checkpoint: config.json has model_type 'gmai_vl'",
        ("llava-original", str(_variant(tmp_path, "hf-llava", FIXTURES / "enhanced_llava", model_type="llava"))): "a transformers 'llava' folder",
        ("llava-original", str(_variant(tmp_path, "llava-next", llama, model_type="llava_next"))): "model_type 'llava_next' is an original-LLaVA variant the importer does not read",
        ("llava-original", str(_variant(tmp_path, "qwen2", FIXTURES / "clip", model_type="qwen2"))): "no mm_projector_type / mm_vision_tower",
        ("enhanced-llava", str(tmp_path / "empty")): "no config.json",
        # the right format, with a part the importer cannot reproduce: which one
        ("llava-original", str(_variant(tmp_path, "linear", llama, mm_projector_type="linear"))): "mm_projector_type is 'linear'",
        ("llava-original", str(_variant(tmp_path, "anyres", llama, image_aspect_ratio="anyres"))): "image_aspect_ratio is 'anyres'",
        ("llava-original", str(_variant(tmp_path, "hub-tower", llama, mm_vision_tower="openai/clip-vit-large-patch14-336"))): "pass --vision-tower FOLDER",
        ("enhanced-llava", str(_variant(tmp_path, "no-index", FIXTURES / "enhanced_llava", image_token_index=7))): "image_token_index is 7",
    }  # fmt: skip
    for (source_format, src), message in cases.items():
        code, lines = _cli(
            ["model", "import", "--from", source_format, src, str(tmp_path / "out")], monkeypatch, capsys
        )
        assert code == 2 and len(lines) == 1 and lines[0].startswith("gmaivl: error:"), (src, lines[-3:])
        assert message in lines[0], (src, lines[0])
        assert not (tmp_path / "out").exists()
    # with the tower's folder given, the Hub-named checkpoint imports
    hub = tmp_path / "hub-tower"
    assert main(["model", "import", "--from", "llava-original", str(hub), str(tmp_path / "ok"),
                 "--vision-tower", str(FIXTURES / "clip")]) == 0  # fmt: skip
    assert (tmp_path / "ok" / "model.safetensors").is_file()


def test_a_release_tokenizer_that_prepends_bos_tokenizes_as_xtuner_trained(tmp_path):
    """InternLM2's tokenizer adds <s>; the release trained on `encode(..., add_special_tokens=False)`."""
    src = tmp_path / "release"
    shutil.copytree(FIXTURES / "enhanced_llava", src)
    values = json.loads((src / "tokenizer.json").read_text())
    values["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    (src / "tokenizer.json").write_text(json.dumps(values))
    assert main(["model", "import", "--from", "enhanced-llava", str(src), str(tmp_path / "out")]) == 0
    _, processor = _load(tmp_path / "out")
    case = _case("enhanced_llava")
    text = processor.apply_chat_template(case["messages"], add_generation_prompt=True)
    ids = processor(text=[text], images=[[case["images"][1]]], return_tensors="pt")["input_ids"][0]
    assert ids.tolist() == _expand(case["input_ids"], case["image_id"], processor)


def test_pytorch_bin_weights_and_a_trained_vision_tower(tmp_path):
    """liuhaotian's releases ship pytorch_model*.bin; with `unfreeze_mm_vision_tower` LLaVA runs the
    tower copy inside the checkpoint, otherwise the one in the folder `mm_vision_tower` names."""
    state = load_file(FIXTURES / "llava_llama" / "model.safetensors")
    key = "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"
    frozen = state[key]
    state[key] = frozen + 1.0  # the tower as its fine-tuning left it
    for name, unfreeze in (("frozen", False), ("unfrozen", True)):
        src = tmp_path / name
        shutil.copytree(FIXTURES / "llava_llama", src, ignore=shutil.ignore_patterns("*.safetensors"))
        torch.save(state, src / "pytorch_model.bin")
        values = json.loads((src / "config.json").read_text())
        values.update(mm_vision_tower=str(FIXTURES / "clip"), unfreeze_mm_vision_tower=unfreeze)
        (src / "config.json").write_text(json.dumps(values))
        assert (
            main(["model", "import", "--from", "llava-original", str(src), str(tmp_path / f"{name}-out")])
            == 0
        )
        model, _ = _load(tmp_path / f"{name}-out")
        fc1 = model.model.vision_tower.encoder.layers[0].mlp.fc1.weight
        torch.testing.assert_close(fc1, state[key] if unfreeze else frozen, rtol=0, atol=0)
        if not unfreeze:  # the frozen import is the fixture's model: its logits
            case = _case("llava_llama")
            ids = torch.tensor(
                [_expand(case["input_ids"], case["image_id"], _load(tmp_path / f"{name}-out")[1])]
            )
            with torch.no_grad():
                logits = model(input_ids=ids, pixel_values=case["pixel_values"][:1]).logits[0, :, :-1]
            torch.testing.assert_close(logits, case["logits"][0], rtol=0, atol=1e-5)


def test_stage_one_trains_the_imported_projector_only(imported, tmp_path, monkeypatch):
    """Two real stage I steps on an imported LLaVA-Med-style model: only the projector moves."""
    from safetensors.torch import load_file as load

    monkeypatch.chdir(tmp_path)
    folder = imported["llava_mistral"]
    args = ["train", "run", "--config", "tiny/stage1_shallow_alignment.yaml", "--model_name_or_path"]
    assert main([*args, str(folder), "--max_steps", "2", "--output_dir", "out"]) == 0
    before, after = load(folder / "model.safetensors"), load(tmp_path / "out" / "model.safetensors")
    assert before.keys() == after.keys()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("model.multi_modal_projector.") for k in moved), sorted(moved)[:4]
