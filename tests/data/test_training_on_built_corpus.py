"""The data flow of DESIGN.md: a built corpus folder feeds a training stage directly."""

import json

import yaml
from safetensors.torch import load_file

from gmaivl.trainers.recipes import packaged_recipe_dir, parse_recipe
from gmaivl.trainers.train import run_stage


def test_stage_one_trains_on_the_built_caption_and_instruct_configs(built, tmp_path):
    folder, _ = built
    values = yaml.safe_load((packaged_recipe_dir() / "tiny" / "stage1_shallow_alignment.yaml").read_text())
    values.update(
        datasets=[
            {"path": str(folder), "name": "caption", "split": "train", "ratio": 1.0, "source": "caption"},
            {"path": str(folder), "name": "instruct", "split": "train", "ratio": 0.5, "source": "instruct"},
        ],
        packing_max_length=512,
        max_steps=2,
        per_device_train_batch_size=4,
        output_dir=str(tmp_path / "stage1"),
    )
    out = run_stage(parse_recipe(values))
    history = json.loads((out / "log_history.json").read_text())
    assert [row["step"] for row in history if "loss" in row] == [1, 2]
    used = yaml.safe_load((out / "gmaivl_recipe.yaml").read_text())
    assert [d["name"] for d in used["datasets"]] == ["caption", "instruct"]
    weights = load_file(out / "model.safetensors")
    assert any(name.startswith("model.multi_modal_projector") for name in weights)
