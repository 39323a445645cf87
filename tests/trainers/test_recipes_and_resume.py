"""Recipes as in the papers, per-module learning rates, mixtures, and a real resume."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from gmaivl.trainers.chain import chain_recipes
from gmaivl.trainers.configs import StageFields
from gmaivl.trainers.mixture import build_mixture
from gmaivl.trainers.models import load_model_and_processor
from gmaivl.trainers.outputs import save_final_model
from gmaivl.trainers.recipes import packaged_recipe_dir, parse_recipe
from gmaivl.trainers.train import run_stage
from gmaivl.trainers.trainer import GMAIVLSFTTrainer


def _recipe(name, *overrides):
    return parse_recipe(packaged_recipe_dir() / name, list(overrides))


def _ratios(recipe):
    return {d["source"]: d["ratio"] for d in recipe.training_args.datasets}


def test_gmaivl_recipes_follow_the_paper():
    s1, s2, s3 = (
        _recipe(f"gmaivl/{n}.yaml")
        for n in ("stage1_shallow_alignment", "stage2_deep_alignment", "stage3_instruction_tuning")
    )
    assert s1.training_args.trainable_modules == ["projector"] and s1.training_args.learning_rate == 1e-3
    assert (s1.training_args.per_device_train_batch_size, s1.training_args.gradient_accumulation_steps) == (
        8,
        2,
    )
    assert s1.training_args.lr_scheduler_type.value == "cosine" and s1.training_args.optim.value.startswith(
        "adamw"
    )
    assert s1.model_args.image_size == 336 and s1.training_args.vlm_packing
    assert (
        s2.training_args.trainable_modules == ["vision", "projector"]
        and s2.training_args.learning_rate == 1e-4
    )
    assert (s2.training_args.per_device_train_batch_size, s2.training_args.gradient_accumulation_steps) == (
        4,
        4,
    )
    assert (
        set(s3.training_args.trainable_modules) == {"vision", "projector", "llm"}
        and s3.training_args.learning_rate == 1e-5
    )
    assert s3.training_args.max_quality_score == 3 and s3.training_args.min_response_chars > 0
    # Table 10: "ratio in stage 1&2" / "ratio in stage 3"
    r1, r3 = _ratios(s1), _ratios(s3)
    assert r1["ALLaVA"] == 1.0 and r3["ALLaVA"] == 0.5
    assert r3["PMC-OA"] == 0.05 and r3["MIMIC-CXR"] == 0.3 and r3["ChartQA"] == 0.75 and r3["SLAKE"] == 0.1
    assert "GMAI-Text-Single-1M" not in r1 and r3["GMAI-Text-Single-1M"] == 1.0  # text only in stage III


def test_lingshu_recipes_follow_the_paper():
    stages = [
        _recipe(f"lingshu/{n}.yaml")
        for n in (
            "stage1_medical_shallow_alignment",
            "stage2_medical_deep_alignment",
            "stage3_medical_instruction_tuning",
            "stage4_medical_rl_grpo",
        )
    ]
    lrs = {"vision": 2e-6, "projector": 1e-5, "llm": 1e-5}
    assert stages[0].training_args.trainable_modules == ["vision", "projector"]
    for s in stages[:3]:
        assert s.training_args.module_learning_rates == lrs and s.training_args.warmup_steps == 100
    assert [s.training_args.vlm_packing for s in stages[:3]] == [False, False, True]
    grpo = stages[3]
    assert grpo.trainer == "grpo"
    t = grpo.training_args
    assert (t.learning_rate, t.temperature, t.beta, t.num_generations) == (1e-6, 1.0, 1e-3, 16)
    assert t.max_completion_length == 4096 and t.reward_weights == [0.5, 1.0]
    assert grpo.training_args.grpo_yes_no_ratio == 0.05


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"trainer": "sft", "learning_rat": 1e-3}))
    with pytest.raises(
        ValueError, match=r"bad\.yaml: unknown recipe key 'learning_rat'; did you mean 'learning_rate'"
    ):
        parse_recipe(bad)
    with pytest.raises(ValueError, match=r"unknown override 'max_step'; did you mean 'max_steps'"):
        parse_recipe({"trainer": "sft"}, ["--max_step", "3"])
    with pytest.raises(
        ValueError, match=r"unknown override 'num_generation'; did you mean 'num_generations'"
    ):
        parse_recipe({"trainer": "grpo"}, ["--num-generation=4"])
    with pytest.raises(ValueError, match="trainable_modules"):
        parse_recipe({"trainable_modules": ["decoder"]})


@pytest.mark.parametrize(
    "path",
    sorted(str(p.relative_to(packaged_recipe_dir())) for p in packaged_recipe_dir().glob("*/stage*.yaml")),
)
def test_shipped_recipes_parse_without_deprecation_warnings(path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        recipe = parse_recipe(packaged_recipe_dir() / path)
    assert recipe.training_args.activation_checkpointing == recipe.values["activation_checkpointing"]


def test_dashed_overrides_are_recorded_in_the_saved_recipe(tmp_path):
    recipe = _recipe("tiny/stage1_shallow_alignment.yaml", "--max-steps", "3", "--output-dir", str(tmp_path))
    assert recipe.training_args.max_steps == 3 and recipe.training_args.output_dir == str(tmp_path)
    saved = yaml.safe_load(recipe.to_yaml())
    assert saved["max_steps"] == 3 and saved["output_dir"] == str(tmp_path)


@pytest.mark.parametrize("flags", [["--output_dir", "{out}"], ["--output_dir={out}"], ["--output-dir={out}"]])
def test_chain_stages_start_from_the_previous_stage(tmp_path, flags):
    chain = packaged_recipe_dir() / "tiny" / "chain.yaml"
    overrides = [f.format(out=tmp_path) for f in flags] + ["--model_name_or_path", "tiny:3"]
    recipes = chain_recipes(chain, overrides)
    outs = [r.training_args.output_dir for r in recipes]
    assert len(set(outs)) == 4 and all(o.startswith(str(tmp_path / "0")) for o in outs)
    starts = [r.model_args.model_name_or_path for r in recipes]
    assert starts == ["tiny:3", *outs[:-1]]  # the command line names the first stage's start only
    assert [yaml.safe_load(r.to_yaml())["model_name_or_path"] for r in recipes] == starts


class _FakeTrainer:
    """What `save_final_model` uses of a Trainer. Like transformers' `Trainer.save_model` under FSDP, it
    writes weights only with a full state dict; `writes=False` stands for ZeRO-3 without 16-bit gathering."""

    def __init__(self, fsdp: bool, writes: bool = True):
        self.is_fsdp_enabled, self.writes = fsdp, writes
        self.state_dict_type = "SHARDED_STATE_DICT" if fsdp else "FULL_STATE_DICT"
        plugin = SimpleNamespace(set_state_dict_type=lambda t: setattr(self, "state_dict_type", t))
        self.accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin))

    def save_model(self, output_dir):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        if self.writes and self.state_dict_type == "FULL_STATE_DICT":
            (Path(output_dir) / "model.safetensors").write_bytes(b"")

    def is_world_process_zero(self):
        return True


def test_final_save_gathers_fsdp_weights_and_fails_without_weights(tmp_path):
    save_final_model(_FakeTrainer(fsdp=True), tmp_path / "fsdp")
    assert (tmp_path / "fsdp" / "model.safetensors").is_file()
    with pytest.raises(RuntimeError, match="no-weights.*safetensors"):
        save_final_model(_FakeTrainer(fsdp=False, writes=False), tmp_path / "no-weights")


def test_per_module_learning_rates_reach_the_optimizer(tmp_path):
    recipe = parse_recipe(
        {
            "model_name_or_path": "tiny",
            "trainable_modules": ["vision", "projector"],
            "module_learning_rates": {"vision": 2e-6, "projector": 1e-5, "llm": 1e-5},
            "learning_rate": 1e-5,
            "output_dir": str(tmp_path),
            "report_to": "none",
            "datasets": [{"path": "toy:colours", "size": 4}],
        }
    )
    model, processor = load_model_and_processor(recipe.model_args)
    trainer = GMAIVLSFTTrainer(
        model=model,
        args=recipe.training_args,
        processing_class=processor,
        train_dataset=build_mixture(recipe.training_args),
    )
    optimizer = trainer.create_optimizer()
    lr_by_group = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lr_by_group["vision"] == 2e-6 and lr_by_group["projector"] == 1e-5
    assert not any(name.startswith("llm") for name in lr_by_group)  # frozen: not in the optimizer
    n_opt = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)


def test_mixture_ratios_and_quality_filter():
    args = StageFields(
        datasets=[
            {"path": "toy:colours", "size": 40, "ratio": 0.25},
            {"path": "toy:text", "size": 10, "ratio": 2.0},
        ]
    )
    mixed = build_mixture(args)
    assert len(mixed) == 10 + 20
    assert sorted(set(mixed["mixture_source"])) == ["toy:colours", "toy:text"]
    # answers of the toy text set: "No." (3 chars), "The liver." (10), "red" (3)
    filtered = build_mixture(StageFields(datasets=[{"path": "toy:text", "size": 30}], min_response_chars=5))
    assert 0 < len(filtered) < 30 and all(m[-1]["content"] == "The liver." for m in filtered["messages"])
    with pytest.raises(ValueError, match="no-such-folder"):
        build_mixture(StageFields(datasets=[{"path": "no-such-folder/x.parquet"}]))


def test_trl_packing_on_a_vlm_recipe_means_vlm_packing(tmp_path, caplog):
    recipe = _recipe(
        "tiny/stage1_shallow_alignment.yaml",
        *("--vlm_packing", "false", "--packing", "true", "--packing_max_length", "256"),
        *("--model_name_or_path", "tiny", "--max_steps", "1", "--output_dir", str(tmp_path)),
    )
    args = recipe.training_args
    assert args.vlm_packing and not args.packing and "using `vlm_packing`" in caplog.text
    assert parse_recipe({"packing": True, "max_length": 96}).training_args.packing_max_length == 96
    out = run_stage(recipe)  # TRL's own packing would stop: "Packing is not supported for vision datasets"
    assert (out / "model.safetensors").is_file()


def test_chain_dry_run_sizes_every_stage(capsys):
    from gmaivl.app.cli import main

    chain = str(packaged_recipe_dir() / "tiny" / "chain.yaml")
    assert main(["train-chain", "--config", chain, "--model_name_or_path", "tiny-llava", "--dry-run"]) == 0
    report = capsys.readouterr().out
    assert report.count("model: tiny-llava (LlavaForConditionalGeneration") == 4
    assert "trainer grpo" in report
