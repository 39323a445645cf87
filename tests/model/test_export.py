"""`gmaivl export`: a GMAI-VL checkpoint as a native LLaVA folder (same logits and greedy tokens in a
process without this package), and a LLaVA folder as a GMAI-VL one."""

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from transformers import LlavaConfig, LlavaForConditionalGeneration

from gmaivl.app.cli import main, run
from gmaivl.core.export import export_to_llava, import_from_llava
from gmaivl.core.tiny import build_tiny_gmaivl

from ._helpers import conversation, random_image

# Runs where `gmaivl` cannot be imported and remote code is refused: only native transformers.
CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockGmaivl(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "gmaivl" or name.startswith("gmaivl."):
                raise ImportError("gmaivl must not be importable in this process")
    sys.meta_path.insert(0, BlockGmaivl())
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder, inputs_path, out_path = sys.argv[1:4]
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=False).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
    saved = torch.load(inputs_path)
    with torch.no_grad():
        logits = model(input_ids=saved["input_ids"], pixel_values=saved["pixel_values"]).logits
        generated = model.generate(input_ids=saved["input_ids"], pixel_values=saved["pixel_values"],
                                   max_new_tokens=8, min_new_tokens=8, do_sample=False)
        served = [dict(processor(text=saved["text"], images=[Image.open(path)], return_tensors="pt"))
                  for path in saved["images"]]
    torch.save({"logits": logits, "generated": generated, "served": served}, out_path)
    print(json.dumps({"model": type(model).__name__, "processor": type(processor).__name__,
                      "model_type": model.config.model_type,
                      "modules": sorted(m for m in sys.modules if m.startswith(("gmaivl", "transformers_modules")))}))
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model, processor = build_tiny_gmaivl(seed=4)
    folder = tmp_path_factory.mktemp("gmaivl") / "ckpt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor, folder


def test_export_to_llava_serves_the_same_model(checkpoint, tmp_path):
    model, processor, folder = checkpoint
    dst = tmp_path / "llava"
    previous = os.umask(0o022)
    try:
        assert main(["model", "export", "--format", "llava", str(folder), str(dst)]) == 0
    finally:
        os.umask(previous)
    config = json.loads((dst / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaForConditionalGeneration"]
    assert not list(dst.glob("*.py"))
    for path in dst.glob("*.json"):  # no pointer to GMAI-VL code, which is not exported
        assert "auto_map" not in json.loads(path.read_text()), path.name
    assert "GMAIVL" not in (dst / "tokenizer_config.json").read_text()
    assert config["image_token_index"] == model.config.image_token_id and config["image_seq_length"] == 16
    # What vLLM and SGLang read: the LM's class, llava-hf's key layout, files other users can read.
    assert config["text_config"]["architectures"] == ["Qwen2ForCausalLM"]
    assert config["vision_feature_select_strategy"] == "default"
    with safe_open(dst / "model.safetensors", framework="pt") as weights:
        keys = set(weights.keys())
    vision = {k for k in keys if k.startswith("vision_tower.")}
    assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)
    assert len(keys) == len(model.state_dict())
    assert stat.S_IMODE(dst.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in dst.iterdir()} == {0o644}

    text = processor.apply_chat_template(conversation("What modality is this?"), add_generation_prompt=True)
    images = [random_image(0, (56, 56)), random_image(1, (40, 60)), random_image(2, (90, 33))]
    for index, image in enumerate(images):
        image.save(tmp_path / f"image{index}.png")
    inputs = processor(text=text, images=[images[0]], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    paths = [str(tmp_path / f"image{index}.png") for index in range(len(images))]
    torch.save({**inputs, "text": text, "images": paths}, tmp_path / "inputs.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(dst), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report == {
        "model": "LlavaForConditionalGeneration",
        "processor": "LlavaProcessor",
        "model_type": "llava",
        "modules": [],
    }
    out = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(out["logits"], logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(out["generated"], generated)
    # LLaVA's own processor makes the same prompt and, for 8-bit images square or not, the same pixels.
    for image, served in zip(images, out["served"], strict=True):
        ours = processor(text=text, images=[image], return_tensors="pt")
        assert torch.equal(served["input_ids"], ours["input_ids"])
        torch.testing.assert_close(served["pixel_values"], ours["pixel_values"], atol=1e-5, rtol=0)


def test_export_refuses_a_language_model_with_its_own_code(checkpoint, tmp_path, monkeypatch, capsys):
    _, _, folder = checkpoint
    remote = tmp_path / "remote"
    remote.mkdir()
    values = json.loads((folder / "config.json").read_text())
    values["text_config"]["model_type"] = "internlm2"
    (remote / "config.json").write_text(json.dumps(values))
    with pytest.raises(
        ValueError, match=r"'internlm2'\) ships its own code.*only LMs native to transformers"
    ):
        export_to_llava(remote, tmp_path / "out")
    with pytest.raises(ValueError, match="not a LLaVA checkpoint"):
        import_from_llava(folder, tmp_path / "out")
    # The console entry point: one line on stderr, exit status 2, nothing written.
    monkeypatch.setattr(
        sys, "argv", ["gmaivl", "model", "export", "--format", "llava", str(remote), str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gmaivl: error: ") and "internlm2" in err[0]
    assert not (tmp_path / "o").exists()


def test_llava_folder_imports_as_gmaivl(checkpoint, tmp_path):
    model, processor, folder = checkpoint
    exported = export_to_llava(folder, tmp_path / "llava")
    llava = LlavaForConditionalGeneration.from_pretrained(exported)
    assert isinstance(llava.config, LlavaConfig)
    dst = tmp_path / "gmaivl"
    assert main(["model", "export", "--format", "gmaivl", str(exported), str(dst)]) == 0
    assert {"modeling_gmaivl.py", "configuration_gmaivl.py", "processing_gmaivl.py"} <= {
        p.name for p in dst.iterdir()
    }
    from transformers import AutoModelForImageTextToText, AutoProcessor

    back = AutoModelForImageTextToText.from_pretrained(dst)
    back_processor = AutoProcessor.from_pretrained(dst)
    assert type(back).__name__ == "GMAIVLForConditionalGeneration"
    assert back_processor.num_image_tokens == 16
    text = processor.apply_chat_template(conversation("Any lesion?"), add_generation_prompt=True)
    inputs = processor(text=text, images=[random_image(3)], return_tensors="pt")
    again = back_processor(text=text, images=[random_image(3)], return_tensors="pt")
    assert torch.equal(again["input_ids"], inputs["input_ids"])
    assert torch.equal(again["pixel_values"], inputs["pixel_values"])
    with torch.no_grad():
        reference = model(**inputs).logits
        torch.testing.assert_close(back(**inputs).logits, reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(llava(**inputs).logits, reference, atol=1e-5, rtol=1e-5)
    assert back.state_dict().keys() == model.state_dict().keys()
