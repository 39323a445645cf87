"""`gmaivl eval` then `gmaivl card` on a saved tiny checkpoint: the card's model-index must hold
exactly the evaluator's numbers."""

import json
import os
import shutil

import pytest
import yaml
from huggingface_hub import ModelCard

from gmaivl.app.cli import main
from gmaivl.model_cards.model_card import build_model_card, metric_type


@pytest.fixture(scope="module")
def evaluated_checkpoint(tiny_checkpoint, bench_tsv, tmp_path_factory):
    """A copy of the tiny checkpoint with a saved recipe and `gmaivl eval` results inside it."""
    folder = tiny_checkpoint
    ckpt = tmp_path_factory.mktemp("card") / "tiny-gmaivl"
    shutil.copytree(folder, ckpt)
    from gmaivl.trainers.recipes import packaged_recipe_dir

    recipe = yaml.safe_load((packaged_recipe_dir() / "gmaivl" / "stage3_instruction_tuning.yaml").read_text())
    recipe["learning_rate"] = 2.0e-5  # an override, as the trainers save "the recipe actually used"
    (ckpt / "gmaivl_recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    code = main(["eval", "--model", str(ckpt), "--benchmark", str(bench_tsv), "--benchmark-name", "tiny-mmbench",
                 "--out", str(ckpt / "evaluation"), "--batch-size", "8", "--max-new-tokens", "mcq=3",
                 "--device", "cpu", "--quiet"])  # fmt: skip
    assert code == 0
    return ckpt


def test_eval_command_writes_reports(evaluated_checkpoint):
    out = evaluated_checkpoint / "evaluation" / "tiny-mmbench"
    result = json.loads((out / "results.json").read_text())
    assert result["n"] == len((out / "predictions.jsonl").read_text().splitlines()) - 1
    assert result["source"].endswith("tiny_mmbench.tsv") and result["model"] == str(evaluated_checkpoint)
    assert (out / "results.md").exists() and (out / "accuracy_by_modality.png").exists()
    # a random tiny model mostly babbles: whatever it said was scored, and unanswerable replies counted
    assert result["unanswerable"]["count"] == result["extraction_methods"].get("none", 0)


def test_card_model_index_equals_evaluator_numbers(evaluated_checkpoint):
    assert main(["card", str(evaluated_checkpoint), "--repo-id", "org/tiny-gmaivl"]) == 0
    card = ModelCard.load(evaluated_checkpoint / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "image-text-to-text" and data["license"] == "apache-2.0"
    assert data["library_name"] == "transformers"
    # Hub datasets named in the saved recipe's mixture become the card's datasets
    assert data["datasets"] == ["GMAI/GMAI-VL-5.5M"]
    result = json.loads((evaluated_checkpoint / "evaluation" / "tiny-mmbench" / "results.json").read_text())
    index = card.data.eval_results
    got = {(r.dataset_name, r.metric_name): r.metric_value for r in index}
    want = {("tiny-mmbench", k): v for k, v in result["metrics"].items()}
    assert got == want
    assert all(r.metric_type == metric_type(r.metric_name) for r in index)
    assert data["model-index"][0]["name"] == "tiny-gmaivl"
    body = card.text
    assert "not a medical device" in body.lower()
    assert "| learning_rate | `2e-05` |" in body  # the recipe actually used, override included
    assert "GMAI-MM-Caption-1.7M" in body  # the data mixture
    assert "clip_vision_model" in body and "qwen2" in body  # architecture from config.json
    assert "### tiny-mmbench" in body and "Accuracy by perceptual granularity" in body


def test_card_without_recipe_or_results(tiny_checkpoint, tmp_path):
    folder = tiny_checkpoint
    card = build_model_card(folder, model_name="bare")
    assert card.data.eval_results is None
    assert "No `gmaivl_recipe.yaml` was found" in card.text and "No evaluation results" in card.text
    assert "`<image>`) never count in the loss" in card.text  # what the model does to image labels


def test_card_rejects_foreign_results(tiny_checkpoint, tmp_path):
    folder = tiny_checkpoint
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"accuracy": 1}))
    with pytest.raises(ValueError, match=r"results\.json: not a gmaivl evaluation results file"):
        build_model_card(folder, results=[bad])


def test_card_names_the_leaderboard_figure_and_skips_prediction_only_runs(evaluated_checkpoint, tmp_path):
    result = json.loads((evaluated_checkpoint / "evaluation" / "tiny-mmbench" / "results.json").read_text())
    test_run = {**result, "benchmark": "gmai-test", "scored": False, "metrics": {}, "breakdowns": {}}
    (tmp_path / "test.json").write_text(json.dumps(test_run))
    paths = [evaluated_checkpoint / "evaluation" / "tiny-mmbench" / "results.json", tmp_path / "test.json"]
    card = build_model_card(evaluated_checkpoint, results=paths)
    assert {r.dataset_name for r in card.data.eval_results} == {"tiny-mmbench"}  # no scores, no model-index
    assert "The leaderboard figure is `accuracy`" in card.text
    assert f"| **accuracy** | **{result['metrics']['accuracy']:.2f}** |" in card.text
    assert "### gmai-test" in card.text and "predictions only" in card.text


def test_card_usage_snippet_runs_as_written(tiny_checkpoint, tmp_path, monkeypatch):
    import re
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    card = build_model_card(tiny_checkpoint, model_name="tiny", repo_id=str(tiny_checkpoint))
    assert "gmaivl card " not in card.text and "`gmaivl card`" not in card.text  # the old command name
    (snippet,) = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(
        tmp_path / "scan.png"
    )
    # a Hub user's process: transformers only, the model code from the folder
    ran = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
