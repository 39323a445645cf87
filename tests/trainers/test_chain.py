"""The tiny chain I -> II -> III through `gmaivl train-chain`, on CPU (GRPO: test_families.py)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from gmaivl.app.cli import main
from gmaivl.trainers.freezing import part_of_parameter

STAGES = ["01_shallow_alignment", "02_deep_alignment", "03_instruction_tuning"]


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chain")
    chain = {
        "output_dir": str(out),
        "stages": [
            {"recipe": "tiny/stage1_shallow_alignment.yaml"},
            {"recipe": "tiny/stage2_deep_alignment.yaml"},
            {"recipe": "tiny/stage3_instruction_tuning.yaml"},
        ],
    }
    path = out / "chain.yaml"
    path.write_text(yaml.safe_dump(chain))
    assert main(["train-chain", "--config", str(path)]) == 0
    return out


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _parts():
    from gmaivl.core.tiny import build_tiny_gmaivl

    model, _ = build_tiny_gmaivl(seed=0)
    return model.state_dict(), part_of_parameter(model)


def _moved(before, after, names):
    return {n: not torch.equal(before[n], after[n]) for n in names}


def test_every_stage_folder_is_complete(chain_dir):
    from gmaivl import GMAIVLForConditionalGeneration, GMAIVLProcessor

    for name in STAGES:
        folder = chain_dir / name
        for f in ("gmaivl_recipe.yaml", "loss_curve.png", "log_history.json", "model.safetensors"):
            assert (folder / f).is_file(), f"{name}/{f}"
        recipe = yaml.safe_load((folder / "gmaivl_recipe.yaml").read_text())
        assert recipe["output_dir"] == str(folder)
    # each stage started from the previous folder, and that folder loads with from_pretrained
    for prev, name in itertools.pairwise(STAGES):
        recipe = yaml.safe_load((chain_dir / name / "gmaivl_recipe.yaml").read_text())
        assert recipe["model_name_or_path"] == str(chain_dir / prev)
    model = GMAIVLForConditionalGeneration.from_pretrained(chain_dir / STAGES[-1])
    processor = GMAIVLProcessor.from_pretrained(chain_dir / STAGES[-1])
    assert model.config.image_token_id == processor.image_token_id


def test_freezing_of_each_stage(chain_dir):
    init, owner = _parts()
    w = [_weights(chain_dir / s) for s in STAGES]
    by_part = {p: [n for n in owner if owner[n] == p and n in init] for p in ("vision", "projector", "llm")}
    assert all(by_part.values())

    def check(before, after, trained):
        for part, names in by_part.items():
            moved = _moved(before, after, names)
            if part in trained:
                assert any(moved.values()), f"{part} should have trained"
            else:
                assert not any(moved.values()), f"{part} must stay bit-identical"

    check(init, w[0], {"projector"})  # stage I: projector only
    check(w[0], w[1], {"vision", "projector"})  # stage II: + vision encoder
    check(w[1], w[2], {"vision", "projector", "llm"})  # stage III: everything


def test_loss_decreases_on_the_toy_task(chain_dir):
    for name in STAGES[:3]:
        history = json.loads((chain_dir / name / "log_history.json").read_text())
        losses = [e["loss"] for e in history if "loss" in e]
        assert len(losses) >= 4
        assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, (name, losses)


def test_rerunning_the_chain_skips_finished_stages(chain_dir):
    stamp = {s: (chain_dir / s / "model.safetensors").stat().st_mtime_ns for s in STAGES}
    assert main(["train-chain", "--config", str(chain_dir / "chain.yaml")]) == 0
    assert stamp == {s: (chain_dir / s / "model.safetensors").stat().st_mtime_ns for s in STAGES}


def _stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*/model.safetensors")}


def test_a_changed_recipe_does_not_silently_reuse_a_finished_stage(chain_dir):
    before = _stamps(chain_dir)
    config = str(chain_dir / "chain.yaml")
    with pytest.raises(ValueError, match=r"01_shallow_alignment.*learning_rate: 0\.01 -> 0\.5"):
        main(["train-chain", "--config", config, "--learning_rate", "0.5"])
    assert _stamps(chain_dir) == before  # refused before anything trained
    # the same folder named by another path is the same recipe
    assert main(["train-chain", "--config", config, "--output_dir", str(chain_dir.resolve())]) == 0
    assert _stamps(chain_dir) == before


def test_stages_after_a_retrained_stage_are_not_reused(chain_dir, tmp_path):
    import shutil

    for name in STAGES[1:]:
        shutil.copytree(chain_dir / name, tmp_path / name)
    with pytest.raises(ValueError, match=r"02_deep_alignment holds a finished stage.*01_shallow_alignment"):
        main(["train-chain", "--config", str(chain_dir / "chain.yaml"), "--output_dir", str(tmp_path)])
    assert not (tmp_path / STAGES[0]).exists()  # nothing trained, nothing deleted
    assert all((tmp_path / name / "model.safetensors").is_file() for name in STAGES[1:])
