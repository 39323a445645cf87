"""`gmaivl train --dry-run` on every shipped recipe and model family; one-line errors for bad input."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gmaivl.app.cli import main
from gmaivl.trainers.dry_run import Launch, memory_per_gpu
from gmaivl.trainers.recipes import packaged_recipe_dir

from ._helpers import published_rows, write_hub_corpus

RECIPES = sorted(
    str(p.relative_to(packaged_recipe_dir()))
    for p in packaged_recipe_dir().rglob("*.yaml")
    # the quickstart's recipes read data its own run derives (tests/test_quickstart.py runs them)
    if p.name != "chain.yaml" and p.parent.name != "quickstart"
)
FAMILIES = ["tiny", "tiny-llava", "tiny-qwen2.5-vl"]
ROWS = 10  # rows per source in the world below (8 closed-form questions + 2 captions)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder holding every data source the shipped recipes name: `data/*` as `save_to_disk` folders, and
    the GMAI-VL-5.5M Hub id as a local folder in the Hub layout (datasets looks for a local folder first)."""
    root = tmp_path_factory.mktemp("world")
    rows = published_rows()
    template = root / "template"
    rows.save_to_disk(str(template))
    hub_configs = set()
    for recipe in RECIPES:
        for source in yaml.safe_load((packaged_recipe_dir() / recipe).read_text()).get("datasets", []):
            if source["path"].startswith("data/") and not (root / source["path"]).exists():
                shutil.copytree(template, root / source["path"])
            elif source["path"] == "GMAI/GMAI-VL-5.5M":
                hub_configs.add(source["name"])
    write_hub_corpus(root / "GMAI" / "GMAI-VL-5.5M", dict.fromkeys(sorted(hub_configs), rows))
    return root


def _rows_used(recipe: str) -> int:
    values = yaml.safe_load((packaged_recipe_dir() / recipe).read_text())
    total = 0
    for source in values["datasets"]:
        if source["path"].startswith("toy:"):
            n = int(source.get("size", 32))
            if source["path"] == "toy:text" and values.get("min_response_chars", 0) > 3:
                return -1  # filtered toy text: not counted here
        else:
            n = ROWS
            if values.get("min_response_chars", 0) > 1:  # the filter drops the one-letter answers
                n -= sum(len(a) < values["min_response_chars"] for a in published_rows()["answer"][:8])
        ratio = float(source.get("ratio", 1.0))
        total += math.floor(ratio) * n + round((ratio - math.floor(ratio)) * n)
    return total


@pytest.mark.parametrize("recipe", RECIPES)
def test_dry_run_of_every_shipped_recipe_on_every_family(recipe, world, monkeypatch, capsys):
    monkeypatch.chdir(world)
    for family in FAMILIES:
        args = ["train", "--config", recipe, "--model_name_or_path", family, "--dry-run"]
        assert main([*args, "--accelerate-config", "deepspeed_zero3.yaml"]) == 0
        report = capsys.readouterr().out
        assert f"model: {family} (" in report, report
        for part in ("vision", "projector", "llm"):
            assert f"  {part} " in report
        expected = _rows_used(recipe)
        if expected >= 0:
            assert f"total {expected:,} rows" in report, report
        assert (
            "steps:" in report and "global batch:" in report and "DeepSpeed ZeRO-3 on 8 processes" in report
        )
        if "grpo" in recipe:
            generation = "vLLM (colocate mode)" if recipe.startswith("lingshu") else "model.generate()"
            assert f"generation with {generation}" in report, report


def test_dry_run_reports_the_paper_batch_and_frozen_parts(world, monkeypatch, capsys):
    monkeypatch.chdir(world)
    main(
        [
            "train",
            "--config",
            "gmaivl/stage1_shallow_alignment.yaml",
            "--model_name_or_path",
            "tiny",
            "--dry-run",
        ]
    )
    report = capsys.readouterr().out
    # stage I: 8 per device x 2 accumulation; the paper's 512 needs 32 processes
    assert "= 16 (paper: 512, which needs 32 processes" in report
    vision = next(line for line in report.splitlines() if line.startswith("  vision"))
    assert vision.rstrip().endswith(" 0 trainable")  # stage I trains the projector only
    main(["train", "--config", "gmaivl/stage1_shallow_alignment.yaml", "--model_name_or_path", "tiny", "--dry-run",
          "--accelerate-config", "deepspeed_zero2.yaml"])  # fmt: skip
    assert "x 8 processes = 128 (paper: 512, which needs 32 processes" in capsys.readouterr().out


def test_dry_run_of_a_saved_folder_builds_it_on_the_meta_device(world, tmp_path, monkeypatch, capsys):
    from gmaivl.trainers.models import build_tiny

    model, processor = build_tiny("tiny-llava")
    model.save_pretrained(tmp_path / "llava")
    processor.save_pretrained(tmp_path / "llava")
    monkeypatch.chdir(world)
    main(["train", "--config", "lingshu/stage2_medical_deep_alignment.yaml", "--model_name_or_path",
          str(tmp_path / "llava"), "--dry-run"])  # fmt: skip
    assert "(LlavaForConditionalGeneration, family llava), meta device" in capsys.readouterr().out


def test_memory_estimate_of_a_7b_model():
    seven_b = 7_000_000_000
    ddp = memory_per_gpu(seven_b, seven_b, 4, Launch(8, "DDP", 0), reference=False)
    zero3 = memory_per_gpu(seven_b, seven_b, 2, Launch(8, "DeepSpeed ZeRO-3", 3, True), reference=False)
    assert ddp["total (no activations)"] == pytest.approx(seven_b * 16 / 1024**3)  # 4 + 4 + 8 bytes
    assert zero3["total (no activations)"] == pytest.approx(seven_b * 16 / 8 / 1024**3)  # (2 + 2 + 12) / 8


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    """`gmaivl ARGS` as the console script runs it: exit status and stderr lines."""
    from gmaivl.app.cli import run

    monkeypatch.setattr(sys, "argv", ["gmaivl", *args])
    with pytest.raises(SystemExit) as exit_info:
        run()
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_bad_input_is_one_line_and_exit_2(world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cases = {
        # the 7B stage II starts from stage I's folder, which does not exist here
        ("train", "--config", "gmaivl/stage2_deep_alignment.yaml", "--dry-run"): "runs/gmaivl/stage1_shallow_alignment: no such folder",
        ("train", "--config", "gmaivl/stage2_deep_alignment.yaml"): "runs/gmaivl/stage1_shallow_alignment: no such folder",
        ("train", "--config", "tiny/stage1_shallow_alignment.yaml", "--learning_rat", "1"): "learning_rat",
        ("train", "--config", "tiny/stage1_shallow_alignment.yaml", "--dry-run", "--accelerate-config", "x.yaml"): "accelerate config x.yaml",
        ("train", "--config", "no/such/recipe.yaml"): "recipe no/such/recipe.yaml not found",
        ("train",): "needs --config",
        ("train", "--config", "lingshu/stage1_medical_shallow_alignment.yaml", "--model_name_or_path", "tiny", "--dry-run"): "data source 'data/pmc-oa'",
    }  # fmt: skip
    for args, message in cases.items():
        code, lines = _cli(list(args), monkeypatch, capsys)
        assert code == 2 and lines[-1].startswith("gmaivl: error:") and message in lines[-1], (
            args,
            lines[-3:],
        )
        assert not any(line.startswith("Traceback") for line in lines), args


def test_the_console_script_exits_2_in_one_line(tmp_path):
    # outside the repository: its `kernels/` folder would shadow Hugging Face's `kernels` package
    proc = subprocess.run(
        [sys.executable, "-m", "gmaivl.app.cli", "train", "--config", "gmaivl/stage3_instruction_tuning.yaml", "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and not any(line.startswith("Traceback") for line in lines)
    assert lines[-1] == (
        "gmaivl: error: model_name_or_path runs/gmaivl/stage2_deep_alignment: no such folder (train the stage that "
        "writes it first, or override --model_name_or_path)"
    )


def test_grpo_prompt_tokens_count_the_template_the_instruction_and_the_images(world, monkeypatch, capsys):
    from gmaivl.trainers.grpo_data import REASONING_INSTRUCTION
    from gmaivl.trainers.models import build_tiny

    monkeypatch.chdir(world)
    main(["train", "--config", "tiny/stage4_grpo.yaml", "--model_name_or_path", "tiny", "--dry-run"])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("prompt tokens:"))
    mean, longest = (float(x) for x in re.match(r"prompt tokens: mean (\d+), max (\d+)", line).groups())
    _, processor = build_tiny("tiny")
    # every GRPO prompt of these rows has one image and the reasoning instruction
    floor = processor.num_image_tokens + len(processor.tokenizer(REASONING_INSTRUCTION)["input_ids"])
    assert floor < mean <= longest, (line, floor)
