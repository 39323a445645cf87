"""save_pretrained -> a fresh process without this package -> identical logits and generation."""

import json
import os
import re
import subprocess
import sys
import textwrap

import torch

from ._helpers import conversation, random_image

# Runs in a child process in which any import of `gmaivl` fails: what loads there comes only from
# the saved folder's own files, through transformers' trust_remote_code machinery.
CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockGmaivl(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "gmaivl" or name.startswith("gmaivl."):
                raise ImportError("gmaivl must not be importable in this process")
    sys.meta_path.insert(0, BlockGmaivl())

    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    folder, inputs_path, out_path = sys.argv[1:4]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    backbone = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    from PIL import Image
    saved = json.load(open(inputs_path))
    images = [[Image.open(path) for path in row] for row in saved["images"]]
    inputs = processor(text=saved["text"], images=images, padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        hidden = backbone(**inputs).last_hidden_state
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    torch.save({"input_ids": inputs["input_ids"], "pixel_values": inputs["pixel_values"],
                "logits": logits, "hidden": hidden, "generated": generated}, out_path)
    print(json.dumps({"config": type(config).__name__, "model": type(model).__name__,
                      "backbone": type(backbone).__name__, "processor": type(processor).__name__,
                      "modules": sorted(m for m in sys.modules if m.startswith("gmaivl"))}))
    """
)


def load_without_the_package(folder, texts, images, tmp_path) -> tuple[dict, dict]:
    """Run CHILD on `folder`: what it loaded (class names) and its outputs for the given inputs."""
    paths = []
    for i, row in enumerate(images):
        paths.append([])
        for j, image in enumerate(row):
            image.save(tmp_path / f"image_{i}_{j}.png")
            paths[-1].append(str(tmp_path / f"image_{i}_{j}.png"))
    (tmp_path / "inputs.json").write_text(json.dumps({"text": texts, "images": paths}))
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(tmp_path / "inputs.json"), str(tmp_path / "out.pt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.strip().splitlines()[-1]), torch.load(tmp_path / "out.pt")


def test_saved_folder_loads_without_the_package(tiny, tmp_path):
    model, processor = tiny
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    files = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_gmaivl.py", "configuration_gmaivl.py"} <= files
    assert {"processing_gmaivl.py", "image_processing_gmaivl.py", "processor_config.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files), (
        "weights must be safetensors only"
    )
    for code in folder.glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", code.read_text(), flags=re.M)
        assert not [m for m in imports if m.split(".")[0] == "gmaivl"], f"{code.name} imports the package"
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"}

    texts = [
        processor.apply_chat_template(conversation("What modality is this?"), add_generation_prompt=True),
        processor.apply_chat_template(
            conversation("Compare the two images.", n_images=2), add_generation_prompt=True
        ),
    ]
    images = [[random_image(1)], [random_image(2, (64, 48)), random_image(3)]]
    inputs = processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        hidden = model.model(**inputs).last_hidden_state
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)

    report, out = load_without_the_package(folder, texts, images, tmp_path)
    assert report == {
        "config": "GMAIVLConfig",
        "model": "GMAIVLForConditionalGeneration",
        "backbone": "GMAIVLModel",
        "processor": "GMAIVLProcessor",
        "modules": [],
    }
    out = torch.load(tmp_path / "out.pt")
    assert torch.equal(out["input_ids"], inputs["input_ids"])
    assert torch.equal(out["pixel_values"], inputs["pixel_values"])
    assert torch.equal(out["logits"], logits)
    assert torch.equal(out["hidden"], hidden)
    assert torch.equal(out["generated"], generated)
