"""`gmaivl quickstart`: the chain must learn what it is taught, on held-out images.

The runs go through the same code as `gmaivl quickstart`: sources with planted lesions, the dataset
builders, bench-build on the test split (and on the training split for the training MCQs),
decontam, the packaged quickstart recipes (packing on) through `gmaivl.trainers`, the evaluator,
the blank-image control, reload and card.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gmaivl.app.quickstart import (
    ARMS,
    STAGES,
    QuickstartConfig,
    arms_config,
    chance_level,
    follows_donor,
    run_quickstart,
    shuffled_benchmark,
    small_config,
    task_chance,
    wilson_interval,
)

# Two runs go through the same code. The default suite runs `gmaivl quickstart --small`
# (`small_config`: half the images, 220 stage III steps; about 3 minutes on 2 cores) and asserts
# that it learns every task from the held-out images, well above chance but short of the whole
# run. The whole run (`gmaivl quickstart`, about 8 minutes) is `slow`:
# `pytest -m slow tests/test_quickstart.py`.
STAGE_KEYS = ("untrained", *(key for key, _, _ in STAGES[1:]))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("quickstart")
    results = run_quickstart(out, QuickstartConfig(progress=False))
    return out, results


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("quickstart-small")
    return out, run_quickstart(out, small_config(QuickstartConfig(progress=False)))


@pytest.fixture(scope="module")
def arms_run(tmp_path_factory) -> tuple[Path, dict]:
    """`--small --arms` cut to what the arms test asserts: stage 0 and stage I as in `--arms` (150
    steps each; stage I alone must answer), stage III only 10 steps per arm and no GRPO (the later
    arms' accuracy is not asserted here; the README's arms table is the whole `--small --arms`)."""
    out = tmp_path_factory.mktemp("quickstart-arms")
    cfg = arms_config(small_config(QuickstartConfig(progress=False)))
    cfg.max_steps["stage3_instruction_tuning"] = 10
    cfg.stages = tuple(key for key, _, _ in STAGES[:4])
    return out, run_quickstart(out, cfg)


def above_chance(entry: dict, chance: float, margin: float) -> bool:
    """Above `chance` with 95% confidence and by at least `margin`."""
    return entry["ci_low"] > chance and entry["accuracy"] >= chance + margin


def at_chance(entry: dict, chance: float) -> bool:
    return entry["ci_low"] <= chance <= entry["ci_high"] or entry["accuracy"] <= chance


def not_learned(entry: dict, chance_by_task: dict, shuffled: dict) -> list[str]:
    """What the learning bar finds missing, per task (empty: learned). The bar: the held-out
    accuracy's Wilson lower bound above the task's real chance (mean of 1 / options), and with the
    images shuffled across questions of the task, the share of answers that follow the donor
    image's label has its Wilson lower bound above the chance of picking that option."""
    from gmaivl.app.quickstart_data import TASKS

    missing = []
    for task in TASKS:
        own, donor = entry["by_task"][task], shuffled["follows_donor"]["by_task"][task]
        if not own["ci_low"] > chance_by_task[task]:
            missing.append(f"{task}: {own['correct']}/{own['n']}, chance {chance_by_task[task]:.3f}")
        if not donor["ci_low"] > donor["chance"]:
            missing.append(
                f"{task}, shuffled images: {donor['correct']}/{donor['n']} follow the donor, chance {donor['chance']:.3f}"
            )
    return missing


def test_results_json_has_the_issue_schema(small_run):
    out, _ = small_run
    on_disk = json.loads((out / "results.json").read_text())
    assert set(on_disk["stages"]) == set(STAGE_KEYS)
    shuffled = on_disk["shuffled_images"]
    entries = [*on_disk["stages"].values(), on_disk["blank_images"], shuffled, shuffled["follows_donor"]]
    for entry in [*entries, *shuffled["follows_donor"]["by_task"].values()]:
        assert 0.0 <= entry["ci_low"] <= entry["accuracy"] <= entry["ci_high"] <= 1.0
    assert on_disk["decontam_overlap"] == 0
    assert 0.2 < on_disk["chance"] < 0.6
    tsv = out / "benchmark" / "quickstart-heldout.tsv"
    assert on_disk["chance"] == pytest.approx(chance_level(tsv))
    chance = on_disk["chance_by_task"]
    assert chance == pytest.approx(task_chance(tsv))
    # 2 options for the two-label tasks; the quadrant is asked with 2-4 options, so not 1/4
    assert chance["lesion-presence"] == chance["lesion-size"] == 0.5
    assert 0.3 < chance["lesion-location"] < 0.45
    assert (out / "loss_curves.png").stat().st_size > 10_000
    assert "| stage3_instruction_tuning |" in (out / "results.md").read_text()


def test_benchmark_comes_from_held_out_sources_only(small_run):
    out, _ = small_run
    import pandas as pd

    bench = pd.read_csv(out / "benchmark" / "quickstart-heldout.tsv", sep="\t", dtype=str)
    assert bench["source_dataset"].str.endswith("-test").all()
    decontam = json.loads((out / "benchmark" / "decontam.json").read_text())
    assert decontam["n_benchmark_images"] == len(bench) and decontam["n_train_images"] > len(bench)
    assert decontam["n_contaminated_benchmark_images"] == 0
    # answers are balanced per task: the question text predicts nothing
    for _, group in bench.groupby("source_dataset"):
        counts = group["label"].value_counts()
        assert counts.max() - counts.min() <= 1


def test_small_run_learns_from_the_held_out_images(small_run):
    """The CI-sized learning check (`not_learned`): every task above its real chance with 95%
    confidence, and the answers follow the image when it is another question's (of the same task).
    With blank images the answers fall to chance (one fixed answer per task scores the label share
    on balanced labels, so that control alone proves little)."""
    from gmaivl.app.quickstart_data import TASKS

    out, results = small_run
    chance = results["chance_by_task"]
    final = results["stages"]["stage4_grpo"]
    assert not_learned(final, chance, results["shuffled_images"]) == []
    assert (
        not_learned(results["stages"]["stage3_instruction_tuning"], chance, results["shuffled_images"]) == []
    )
    blank = results["blank_images"]["by_task"]
    for task in TASKS:
        assert at_chance(blank[task], chance[task]), (task, blank[task])
    untrained = results["stages"]["untrained"]
    assert results["stages"]["stage3_instruction_tuning"]["accuracy"] > untrained["accuracy"] + 0.2
    history = json.loads((out / "stages" / "stage4_grpo" / "log_history.json").read_text())
    assert min(e["reward"] for e in history if "reward" in e) > 0


@pytest.mark.slow
def test_learns_from_the_images_on_held_out_sources(run):
    out, results = run
    chance, stages = results["chance"], results["stages"]
    final = stages["stage3_instruction_tuning"]
    assert above_chance(final, chance, 0.4) and final["accuracy"] >= 0.9, stages
    for task, entry in final["by_task"].items():
        assert entry["accuracy"] >= 0.85, (task, entry)
    assert final["accuracy"] > stages["untrained"]["accuracy"] + 0.4
    assert stages["stage2_deep_alignment"]["accuracy"] <= final["accuracy"]
    # GRPO: a positive reward, and no loss of accuracy beyond the interval
    history = json.loads((out / "stages" / "stage4_grpo" / "log_history.json").read_text())
    assert max(e["reward"] for e in history if "reward" in e) > 0
    assert stages["stage4_grpo"]["accuracy"] >= final["ci_low"]
    # with blank images the answers cannot come from the image: back to chance
    assert at_chance(results["blank_images"], chance), results["blank_images"]


def test_each_stage_trains_only_its_modules(small_run):
    out, _ = small_run

    def weights(stage: str) -> dict[str, torch.Tensor]:
        folder = out / ("untrained" if stage == "untrained" else f"stages/{stage}")
        return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}

    def changed(a: str, b: str) -> set[str]:
        wa, wb = weights(a), weights(b)
        parts = set()
        for name, tensor in wa.items():
            if not torch.equal(tensor, wb[name]):
                parts.add(
                    "projector"
                    if "multi_modal_projector" in name
                    else "vision"
                    if "vision" in name
                    else "llm"
                )
        return parts

    assert changed("untrained", "stage0_language_pretraining") == {"llm"}
    assert changed("stage0_language_pretraining", "stage1_shallow_alignment") == {"projector"}
    assert changed("stage1_shallow_alignment", "stage2_deep_alignment") == {"vision", "projector"}
    assert changed("stage2_deep_alignment", "stage3_instruction_tuning") == {"vision", "projector", "llm"}


def test_final_model_reloads_as_hub_folder_with_a_card(small_run):
    out, results = small_run
    assert results["reload"]["identical_answers"] is True
    assert (out / "model" / "config.json").is_file()
    card = (out / "model" / "README.md").read_text()
    assert "model-index" in card and "quickstart-heldout" in card


def test_wilson_interval_matches_the_formula():
    low, high = wilson_interval(45, 50)
    z, n, p = 1.959963984540054, 50, 0.9
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    assert (low, high) == pytest.approx((centre - half, centre + half))


def test_training_mcqs_read_like_the_held_out_ones(small_run):
    """bench-build on the training split: the evaluator's prompt layout, answered with an option's text,
    and no training image among the benchmark's."""
    import datasets

    from gmaivl.evaluation.prompts import INSTRUCTIONS

    out, _ = small_run
    rows = datasets.load_from_disk(str(out / "derived" / "mcq_text"))
    assert len(rows) > 0
    for row in rows:
        user, assistant = (m["content"] for m in row["messages"])
        lines = user.split("\n")
        assert (
            lines[0].startswith("Question: ") and lines[1] == "Options:" and lines[-1] == INSTRUCTIONS["mcq"]
        )
        options = [line.split(". ", 1)[1] for line in lines[2:-1]]
        assert assistant in options and 2 <= len(options) <= 5
        assert len(row["images"]) == 1


def test_planted_lesion_is_the_only_full_brightness_region(tmp_path):
    import numpy as np
    from PIL import Image

    from gmaivl.app.quickstart_data import BACKGROUND_RANGE, write_sources

    write_sources(tmp_path, train_per_label=2, test_per_label=1, text_dialogues=4, progress=False)
    brightest = {"lesion": [], "none": []}
    for png in (tmp_path / "sources").glob("lesion-*/*/*.png"):
        kind = "none" if png.parent.name == "no_lesion" else "lesion"
        brightest[kind].append(np.asarray(Image.open(png)).max() / 255)
    assert brightest["lesion"] and brightest["none"]
    assert max(brightest["none"]) <= BACKGROUND_RANGE[1] + 1 / 255
    assert min(brightest["lesion"]) > 0.95


def test_same_seed_same_benchmark_and_training_questions(tmp_path):
    """The corpus ids are keyed from the seed (not the builders' random per-folder key), so the
    benchmark's sample and the training questions, hence the whole run, repeat for a seed."""
    from gmaivl.app.quickstart import write_derived_data
    from gmaivl.app.quickstart_data import write_sources
    from gmaivl.dataset_builders.engine import run_build
    from gmaivl.dataset_builders.records import iter_records
    from gmaivl.evaluation.bench_build import build_benchmark

    outputs = []
    for name in ("a", "b"):
        root = tmp_path / name
        spec = write_sources(
            root / "sources", train_per_label=2, test_per_label=2, text_dialogues=8, progress=False
        )
        run_build(spec, root / "corpus", workers=1, progress=False)
        build_benchmark(
            iter_records(root / "corpus", split="test"), root / "bench.tsv", seed=0, progress=False
        )
        write_derived_data(root / "corpus", root / "derived", 0)
        outputs.append(((root / "bench.tsv").read_bytes(), (root / "derived" / "train_mcq.tsv").read_bytes()))
    assert outputs[0] == outputs[1]


def test_lesion_texture_survives_the_vision_towers_layer_norm():
    """Why the planted lesion is mottled rather than a plain bright disc: CLIP embeds each patch
    linearly, without bias, then layer-normalises it, so uniform patches of different brightness
    become the same token, while the lesion's texture gives a token of its own."""
    import numpy as np
    from PIL import Image
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from gmaivl import GMAIVLImageProcessor
    from gmaivl.app.quickstart_data import lesion_texture

    cfg = QuickstartConfig()
    torch.manual_seed(0)
    tower = CLIPVisionModel(
        CLIPVisionConfig(**cfg.vision, image_size=cfg.image_size, patch_size=cfg.patch_size)
    ).eval()
    size = cfg.image_size
    images = {
        "dim": np.full((size, size), 0.6, np.float32),
        "bright": np.full((size, size), 1.0, np.float32),
        "lesion": lesion_texture(size),
    }
    pixels = GMAIVLImageProcessor(size=size)(
        [Image.fromarray((v * 255).round().astype(np.uint8)).convert("RGB") for v in images.values()],
        return_tensors="pt",
    )["pixel_values"]
    with torch.no_grad():
        tokens = tower.pre_layrnorm(tower.embeddings(pixels))[:, 1:]
    dim, bright, lesion = torch.nn.functional.normalize(tokens, dim=-1)
    assert (dim * bright).sum(-1).min() > 0.95  # brightness alone is (almost) invisible
    assert (lesion * bright).sum(-1).abs().max() < 0.9
    assert (lesion * dim).sum(-1).abs().max() < 0.9


def test_learning_bar_fails_when_the_model_cannot_see_the_image(small_run, monkeypatch, tmp_path):
    """Planted fault: the final model's image features zeroed (what a model that never learned to
    read the image gives), on every third question of the shuffled control. `not_learned` must
    then find every task short of its donor bar."""
    import pandas as pd

    from gmaivl import GMAIVLForConditionalGeneration, GMAIVLProcessor
    from gmaivl.app.quickstart import evaluate

    out, results = small_run
    model = GMAIVLForConditionalGeneration.from_pretrained(out / "model")
    processor = GMAIVLProcessor.from_pretrained(out / "model")
    hidden = model.config.text_config.hidden_size
    monkeypatch.setattr(model.model.multi_modal_projector, "forward", lambda features: torch.zeros(
        *features.shape[:-1], hidden, dtype=features.dtype))  # fmt: skip
    frame = pd.read_csv(
        out / "benchmark" / "quickstart-heldout-shuffled.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    tsv = tmp_path / "shuffled-third.tsv"
    frame.iloc[::3].to_csv(tsv, sep="\t", index=False)
    blind = evaluate(model, processor, tsv, tmp_path / "evaluation", QuickstartConfig(progress=False))
    blind["follows_donor"] = follows_donor(tsv, tmp_path / "evaluation" / "predictions.jsonl")
    missing = not_learned(blind, results["chance_by_task"], blind)
    assert len([m for m in missing if "shuffled images" in m]) == 3, missing


def test_shuffled_benchmark_gives_each_question_a_donor_of_its_task(small_run, tmp_path):
    import pandas as pd

    out, _ = small_run
    tsv = out / "benchmark" / "quickstart-heldout.tsv"
    frame = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    shuffled = pd.read_csv(
        shuffled_benchmark(tsv, tmp_path / "s.tsv", 3), sep="\t", dtype=str, keep_default_na=False
    )
    by_index = frame.set_index("index")
    assert (shuffled["donor_index"] != shuffled["index"]).all()
    assert shuffled["donor_index"].is_unique
    donors = by_index.loc[shuffled["donor_index"]]
    assert (donors["image"].to_numpy() == shuffled["image"].to_numpy()).all()
    assert (donors["label"].to_numpy() == shuffled["donor_label"].to_numpy()).all()
    assert (donors["clinical vqa task"].to_numpy() == shuffled["clinical vqa task"].to_numpy()).all()
    assert (
        (shuffled.drop(columns=["image", "donor_index", "donor_label"]) == frame.drop(columns=["image"]))
        .all()
        .all()
    )
    # the share that follows the donor, on hand-written replies: the donor's label, then the own answer
    from gmaivl.evaluation.loaders import load_benchmark

    samples = load_benchmark(str(tmp_path / "s.tsv"))
    for reply, expected in (("donor", 1.0), ("own", 0.0)):
        lines = [json.dumps({"header": True})]
        for s in samples:
            text = s.source_row["donor_label"] if reply == "donor" else s.options[s.answer]
            lines.append(json.dumps({"index": s.index, "prediction": text}))
        (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
        share = follows_donor(tmp_path / "s.tsv", tmp_path / "p.jsonl")
        assert share["accuracy"] == expected and share["n"] > len(samples) / 4
        assert set(share["by_task"]) == {"lesion-presence", "lesion-location", "lesion-size"}
        assert share["by_task"]["lesion-presence"]["chance"] == 0.5


def test_arms_branch_from_one_stage_one_and_stage_one_alone_answers(arms_run):
    """Table 7's arms in the paper's order, each a held-out evaluation with Wilson intervals, all
    from the one stage I checkpoint. With `--arms` the language model is pre-trained long enough to
    answer from a written finding, and stage I (projector only) alone lifts held-out accuracy
    above chance: overall, and on at least two tasks by their Wilson lower bound (measured, seed 0:
    presence and size; the quadrant stays at chance after stage I)."""
    import yaml

    out, results = arms_run
    arms = results["arms"]
    assert [a["arm"] for a in arms] == ["stage1", "stage1+2", "stage1+3", "stage1+2+3"]
    assert [a["paper_table7"] for a in arms] == [53.69, 58.28, 60.70, 62.43] == [p for _, _, p in ARMS]
    n = results["stages"]["untrained"]["n"]
    for arm in arms:
        assert arm["n"] == n and set(arm["by_task"]) == set(results["chance_by_task"])
        for entry in [arm, *arm["by_task"].values()]:
            assert 0.0 <= entry["ci_low"] <= entry["accuracy"] <= entry["ci_high"] <= 1.0
    on_disk = json.loads((out / "results.json").read_text())
    assert [a["arm"] for a in on_disk["arms"]] == [a["arm"] for a in arms]
    # the arms without stage II start from stage I, those with it from stage II of the same chain

    def start(folder: str) -> Path:
        return Path(
            yaml.safe_load((out / "stages" / folder / "gmaivl_recipe.yaml").read_text())["model_name_or_path"]
        )

    stage1 = (out / "stages" / "stage1_shallow_alignment").resolve()
    assert start("arm_stage1+3") == stage1 == start("stage2_deep_alignment")
    assert start("stage3_instruction_tuning") == (out / "stages" / "stage2_deep_alignment").resolve()
    assert (out / "evaluation" / "arm_stage1+3" / "predictions.jsonl").is_file()
    # stage I alone answers from the image
    chance, stage_one = results["chance_by_task"], arms[0]
    assert stage_one["ci_low"] > results["chance"], stage_one
    readable = [t for t, e in stage_one["by_task"].items() if e["ci_low"] > chance[t]]
    assert len(readable) >= 2, stage_one["by_task"]
    assert stage_one["accuracy"] > results["stages"]["untrained"]["accuracy"] + 0.15
    table = (out / "results.md").read_text()
    rows = [table.index(f"| {name} |") for name, _, _ in ARMS]
    assert rows == sorted(rows)
