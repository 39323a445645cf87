"""The recipes on each model family: GMAI-VL, native LLaVA, Qwen2-VL / Qwen2.5-VL (tiny random configs)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from gmaivl.app.cli import main
from gmaivl.trainers.freezing import model_family, part_of_parameter
from gmaivl.trainers.models import build_tiny
from gmaivl.trainers.packing import GMAIVLDataCollator
from gmaivl.trainers.recipes import packaged_recipe_dir, parse_recipe
from gmaivl.trainers.train import run_stage

SFT_STAGES = {  # tiny recipe -> parts it trains
    "stage1_shallow_alignment": {"projector"},
    "stage2_deep_alignment": {"vision", "projector"},
    "stage3_instruction_tuning": {"vision", "projector", "llm"},
}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    """A saved stage's weights under the model's parameter names (LLaVA saves its legacy key layout)."""
    from gmaivl.trainers.configs import GMAIVLModelConfig
    from gmaivl.trainers.models import load_model_and_processor

    model, _ = load_model_and_processor(GMAIVLModelConfig(model_name_or_path=str(folder)))
    return model.state_dict()


def _gmaivl_generation_broken() -> bool:
    """The GMAI-VL model code before its re-derivation from LLaVA cannot generate on transformers 5.24
    (its output class lacks the `cache` field that transformers now passes); GRPO generates."""
    from gmaivl.modeling_gmaivl.modeling_gmaivl import GMAIVLCausalLMOutputWithPast

    return "cache" not in {f.name for f in dataclasses.fields(GMAIVLCausalLMOutputWithPast)}


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("tiny", "gmaivl"),
        ("tiny-llava", "llava"),
        ("tiny-qwen2-vl", "qwen2_vl"),
        ("tiny-qwen2.5-vl", "qwen2_vl"),
    ],
)
def test_every_parameter_has_its_part(name, family):
    model, _ = build_tiny(name)
    assert model_family(model) == family
    owner = part_of_parameter(model)
    assert set(owner.values()) == {"vision", "projector", "llm"}
    for param, part in owner.items():
        if family == "qwen2_vl":
            expected = (
                "projector"
                if param.startswith("model.visual.merger.")
                else "vision"
                if param.startswith("model.visual.")
                else "llm"
            )
        else:
            expected = (
                "vision"
                if param.startswith("model.vision_tower.")
                else "projector"
                if param.startswith("model.multi_modal_projector.")
                else "llm"
            )
        assert part == expected, param
        if part == "llm":
            assert param.startswith(("model.language_model.", "lm_head.")), param


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-qwen2-vl", "tiny-qwen2.5-vl"])
def test_packed_rows_equal_padded_rows_on_each_family(name, rows):
    model, processor = build_tiny(name)
    qwen = model_family(model) == "qwen2_vl"
    rope = model.model.get_rope_index if qwen else None
    padded = GMAIVLDataCollator(processor, max_length=256)(rows)
    packed = GMAIVLDataCollator(processor, max_length=256, packing=True, rope_index=rope)(rows)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
    torch.testing.assert_close(model(**packed).loss, model(**padded).loss, rtol=1e-5, atol=1e-5)
    if qwen:  # M-RoPE per sample matters: plain restarting positions give another loss
        assert packed["position_ids"].shape[0] == 4
        plain = GMAIVLDataCollator(processor, max_length=256, packing=True)(rows)
        assert not torch.allclose(model(**plain).loss, model(**padded).loss, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module", params=["tiny-llava", "tiny-qwen2.5-vl"])
def family_chain(request, tmp_path_factory) -> tuple[str, Path]:
    """The tiny chain I -> II -> III (packed rows) started from a tiny model of another family."""
    out = tmp_path_factory.mktemp(request.param)
    chain = {"output_dir": str(out), "stages": [{"recipe": f"tiny/{s}.yaml"} for s in SFT_STAGES]}
    (out / "chain.yaml").write_text(yaml.safe_dump(chain))
    overrides = ["--model_name_or_path", request.param, "--max_steps", "3"]
    assert main(["train-chain", "--config", str(out / "chain.yaml"), *overrides]) == 0
    return request.param, out


def test_sft_stages_freeze_tensor_by_tensor_on_each_family(family_chain):
    name, out = family_chain
    model, _ = build_tiny(name)
    owner = part_of_parameter(model)
    before = {k: v for k, v in model.state_dict().items() if k in owner}
    for i, (stage, trained) in enumerate(SFT_STAGES.items()):
        folder = (
            out
            / f"{i + 1:02d}_{yaml.safe_load((packaged_recipe_dir() / 'tiny' / f'{stage}.yaml').read_text())['stage']}"
        )
        after = _weights(folder)
        moved = {part: False for part in ("vision", "projector", "llm")}
        for tensor_name, part in owner.items():
            same = torch.equal(before[tensor_name], after[tensor_name])
            if part not in trained:
                assert same, f"{stage}: frozen {tensor_name} ({part}) changed"
            moved[part] |= not same
        assert {p for p, m in moved.items() if m} == trained, stage
        before = after
        history = json.loads((folder / "log_history.json").read_text())
        assert [e["step"] for e in history if "loss" in e] == [1, 2, 3]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "tiny",
            marks=pytest.mark.xfail(
                _gmaivl_generation_broken(), raises=TypeError, reason="GMAI-VL model code cannot generate yet"
            ),
        ),
        "tiny-llava",
        "tiny-qwen2.5-vl",
    ],
)
def test_lingshu_grpo_recipe_runs_on_each_family(name, tmp_path):
    """The shipped Lingshu GRPO recipe at toy scale, started from a tiny in-memory model with beta > 0
    (TRL builds its KL reference model from a folder: the stage gives it one)."""
    values = yaml.safe_load((packaged_recipe_dir() / "lingshu" / "stage4_medical_rl_grpo.yaml").read_text())
    values.update(
        model_name_or_path=name,
        trainable_modules=["llm"],
        datasets=[{"path": "toy:colour_qa", "size": 8, "seed": 2, "source": "toy-colour-qa"}],
        num_generations=2,
        max_completion_length=8,
        per_device_train_batch_size=4,
        steps_per_generation=1,
        max_steps=1,
        logging_steps=1,
        save_strategy="no",
        activation_checkpointing=False,
        output_dir=str(tmp_path),
    )
    recipe = parse_recipe(values)
    assert recipe.training_args.beta > 0 and not recipe.training_args.use_vllm  # CPU: generate()
    model, _ = build_tiny(name)
    out = run_stage(recipe)
    history = json.loads((out / "log_history.json").read_text())
    keys = set().union(*history)
    assert {"rewards/format_reward/mean", "rewards/accuracy_reward/mean", "reward"} <= keys
    after = _weights(out)
    owner = part_of_parameter(model)
    for tensor_name, value in model.state_dict().items():
        if owner.get(tensor_name) in ("vision", "projector"):
            assert torch.equal(value, after[tensor_name]), tensor_name
