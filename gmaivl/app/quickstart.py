"""`gmaivl quickstart`: the GMAI-VL stage ablation (GMAI-VL paper, Table 7) in miniature, on a CPU.

1. Data: real medical files shipped in pydicom / nibabel / scikit-image, cut into slices, crops and
   augmentations, with planted lesions of known presence, quadrant and size
   (`gmaivl.app.quickstart_data`), written as builder sources and built by the dataset builders
   (`gmaivl data build`): caption, instruct, percept and text configs, train and test splits.
2. Benchmark: GMAI-MMBench-style MCQs by `gmaivl bench-build` from the test split only (other
   files and volume slices than any training image); `gmaivl decontam` must find no overlap.
3. Model: a small GMAI-VL built from config (CLIP ViT + MLP projector + Qwen2 LM, a byte-level BPE
   trained on the corpus), trained from scratch with the packaged recipes
   (`trainers/recipes/quickstart/`) through the trainers' own code path, packing on: stage 0
   pre-trains the LM on text (the pretrained LLM of the paper), then stage I (projector), II
   (+ vision), III (everything) and GRPO (format + accuracy rewards).
4. Report: held-out accuracy before training and after every stage with Wilson 95% intervals and
   the chance level (`results.json`, `results.md`, `loss_curves.png`), blank-image control, the
   final model reloaded with `AutoModelForImageTextToText(trust_remote_code=True)` answering the
   same, and its model card by `gmaivl card`.
5. `--arms` (`arms_config`): Table 7's four arms, stage1, 1+2, 1+3 and 1+2+3, all from the chain's
   one stage I checkpoint (stage III also runs from stage I), each with the same held-out
   evaluation, in `results.json["arms"]` in the paper's order; stage 0 and stage I are longer so
   that stage I alone answers (`ARMS_STEPS`, `ARMS_OVERRIDES`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STAGES: tuple[tuple[str, str, str], ...] = (
    # (results key, recipe file, what trains)
    (
        "stage0_language_pretraining",
        "stage0_language_pretraining.yaml",
        "LLM on text (stands in for a pretrained LLM)",
    ),
    ("stage1_shallow_alignment", "stage1_shallow_alignment.yaml", "projector"),
    ("stage2_deep_alignment", "stage2_deep_alignment.yaml", "vision encoder + projector"),
    ("stage3_instruction_tuning", "stage3_instruction_tuning.yaml", "vision encoder + projector + LLM"),
    ("stage4_grpo", "stage4_grpo.yaml", "everything, GRPO (format + accuracy rewards)"),
)
BENCHMARK_NAME = "quickstart-heldout"
#: Token budget of a multiple-choice reply (the option texts are at most three words).
MCQ_TOKENS = 8
#: The paper's Table 7 (GMAI-MMBench test accuracy, %), for the report.
PAPER_TABLE7 = {
    "stage1_shallow_alignment": 53.69,
    "stage2_deep_alignment": 58.28,
    "stage3_instruction_tuning": 62.43,
}
#: Stage III trains the vision tower and the projector at a tenth of the LLM's rate. At the recipe's
#: 1e-3 for everything, the image tokens grew while the LLM had not yet learned to read them
#: (measured, `--small`: the projector's output per token 0.29 -> 3.48, seed 2, and -> 5.93, seed 0,
#: against text embeddings at 0.24, with the projector's own weights changed by 4%: the vision
#: tower's residual stream grew along what the projector amplifies), and the runs that learned
#: nothing or only presence were those (see README, quickstart, seeds).
STAGE_OVERRIDES: dict[str, dict[str, Any]] = {
    "stage3_instruction_tuning": {"module_learning_rates": {"vision": 1e-4, "projector": 1e-4}},
}
REASONING_FORMAT = "<think>The image shows {label}.</think><answer>{label}</answer>"
#: The four arms of Table 7 (`--arms`), in the paper's order: (name, stages after stage 0, paper's
#: GMAI-MMBench test accuracy in %). All four branch from one stage I checkpoint.
ARMS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("stage1", ("stage1_shallow_alignment",), 53.69),
    ("stage1+2", ("stage1_shallow_alignment", "stage2_deep_alignment"), 58.28),
    ("stage1+3", ("stage1_shallow_alignment", "stage3_instruction_tuning"), 60.70),
    ("stage1+2+3", ("stage1_shallow_alignment", "stage2_deep_alignment", "stage3_instruction_tuning"), 62.43),
)
#: What `--arms` changes so that stage I alone answers, as the paper's does (its LLM is a chat model
#: that answers from the aligned image features). Stage 0 runs 150 steps instead of 30 (`--small`)
#: or 60: measured on a `--small` corpus (seed 0, one thread), the language model then answers 80%
#: of held-out text questions whose finding is written in the context (16% after 30 steps, not yet
#: in a form the evaluator reads). Stage I trains the projector on the training MCQs only (no
#: captions, whose wording stage 0 never saw), 150 steps at a constant 3e-3: with that language
#: model, on the same corpus, held-out presence 80/80 and size 78/80 after stage I alone (location
#: 44/160, at chance), against 44/80 and 39/80 after 60 steps at 1e-3 with the captions and 51/80,
#: 40/80 at 1e-4.
ARMS_STEPS = {"stage0_language_pretraining": 150, "stage1_shallow_alignment": 150}
ARMS_OVERRIDES: dict[str, dict[str, Any]] = {
    "stage1_shallow_alignment": {
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant_with_warmup",
        "datasets": [{"path": "derived/mcq_text", "ratio": 1.0, "source": "quickstart-percept-mcq"}],
    },
}


@dataclass
class QuickstartConfig:
    """Sizes of one quickstart run (the defaults are the full run; tests shrink them)."""

    seed: int = 0
    train_per_label: int = 48
    test_per_label: int = 8
    text_dialogues: int = 2000
    image_size: int = 112
    #: 64 image tokens. Measured, seed 0, one thread: stage III 0.825 held-out with 64 tokens, 0.566
    #: with 16 (patch 28), with the plain bright lesion; with the mottled one, 16 tokens still learned
    #: more slowly (0.47-0.66 after 300 steps of a plain training loop).
    patch_size: int = 14
    vision: dict[str, int] = field(
        default_factory=lambda: dict(
            hidden_size=96, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4
        )
    )
    text: dict[str, int] = field(
        default_factory=lambda: dict(
            hidden_size=128,
            intermediate_size=384,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    vocab_size: int = 800
    #: Position embeddings of the vision tower at initialisation: `None` keeps CLIP's init (normal,
    #: std 0.02, about 5% of a patch token's norm here, so the quadrant is barely in the tokens); a
    #: number writes 2D sine-cosine embeddings (MAE's) of that std per dimension.
    vision_position_std: float | None = 0.2
    max_steps: dict[str, int] = field(default_factory=dict)  # per results key, overrides the recipe
    #: other recipe keys per results key (e.g. {"stage3_instruction_tuning": {"learning_rate": 1e-3}})
    recipe_overrides: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {k: dict(v) for k, v in STAGE_OVERRIDES.items()}
    )
    cases_per_answer: int = 30
    eval_batch_size: int = 64
    stages: tuple[str, ...] = tuple(s[0] for s in STAGES)
    #: torch intra-op threads; at most 2: the matrices of this model are small. Measured on the
    #: 2-core machine with nothing else running, one forward + backward of a stage III batch
    #: (32 questions, 9 x 512 tokens): 0.72 s with 1 thread, 0.42 s with 2. Set 1 when another
    #: job shares the cores: with a second job running, 2 x 512 tokens took 2.3 s on 2 threads
    #: against 0.21 s on 1.
    num_threads: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    #: Table 7's four arms (`ARMS`): stage III also runs from the stage I checkpoint, and every arm
    #: is evaluated (`arms_config` sets this with the stage 0 / stage I recipe the arms need).
    arms: bool = False
    progress: bool = True


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------
def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (scipy's `binomtest(...).proportion_ci`)."""
    if n == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def accuracy_entry(correct: int, n: int) -> dict[str, float]:
    low, high = wilson_interval(correct, n)
    return {"accuracy": correct / n if n else 0.0, "ci_low": low, "ci_high": high, "correct": correct, "n": n}


def chance_level(tsv: str | os.PathLike) -> float:
    """Expected accuracy of uniform guessing: the mean of 1 / (number of options) over questions."""
    from gmaivl.evaluation.loaders import load_benchmark

    samples = load_benchmark(str(tsv))
    return sum(1.0 / len(s.options) for s in samples) / len(samples)


# ------------------------------------------------------------------------------------------------
# model from config
# ------------------------------------------------------------------------------------------------
def corpus_texts(corpus: Path, limit: int = 4000) -> list[str]:
    """User and assistant texts of the training split (to train the tokenizer on)."""
    from gmaivl.core.hf_datasets import open_dataset

    texts = []
    for config in ("caption", "instruct", "percept", "text_single"):
        ds = open_dataset(corpus, config).select_columns(["messages"])
        for row in ds.select(range(min(limit, len(ds)))):
            texts.extend(m["content"] for m in row["messages"])
    return texts


def build_untrained_model(corpus: Path, out: Path, cfg: QuickstartConfig) -> Path:
    """A random GMAI-VL built from config with a BPE tokenizer trained on the corpus, saved as a Hub folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import CLIPVisionConfig, PreTrainedTokenizerFast, Qwen2Config

    from gmaivl.core.compose import SPECIAL_TOKENS, build_processor, finalize_generation_config
    from gmaivl.evaluation.prompts import INSTRUCTIONS
    from gmaivl.modeling_gmaivl import GMAIVLConfig, GMAIVLForConditionalGeneration
    from gmaivl.trainers.grpo_data import REASONING_INSTRUCTION

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    extra = [
        *INSTRUCTIONS.values(),
        REASONING_INSTRUCTION,
        "Question: Options: <think></think><answer></answer>",
    ]
    tokenizer.train_from_iterator(corpus_texts(corpus) + extra * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=SPECIAL_TOKENS["im_end"],
        pad_token=SPECIAL_TOKENS["pad"],
        extra_special_tokens={"image_token": SPECIAL_TOKENS["image"]},
        model_max_length=4096,
    )
    vision = CLIPVisionConfig(
        image_size=cfg.image_size, patch_size=cfg.patch_size, projection_dim=32, **cfg.vision
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **cfg.text,
    )
    config = GMAIVLConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["image"]),
    )
    torch.manual_seed(cfg.seed)
    model = GMAIVLForConditionalGeneration(config)
    if cfg.vision_position_std is not None:
        init_vision_positions(model, cfg.vision_position_std)
    model.set_attn_implementation("sdpa")
    finalize_generation_config(model, tokenizer)
    processor = build_processor(tokenizer, config)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def sincos_positions(grid: int, dim: int) -> Any:
    """2D sine-cosine position embeddings of a `grid` x `grid` patch grid (MAE's
    `get_2d_sincos_pos_embed`): half the dimensions encode the row, half the column, each with
    `dim / 4` frequencies; shape `(grid * grid, dim)`, unit variance per dimension on average."""
    import torch

    if dim % 4:
        raise ValueError(f"2D sine-cosine positions need a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij"
    )

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([encode(rows), encode(cols)], dim=1)
    return (table / table.std()).float()


def init_vision_positions(model: Any, std: float) -> None:
    """Write 2D sine-cosine position embeddings of `std` into the vision tower (CLS: zero position)."""
    import torch

    tower = model.model.vision_tower
    embeddings = getattr(tower, "vision_model", tower).embeddings
    weight = embeddings.position_embedding.weight
    grid = round((weight.shape[0] - 1) ** 0.5)
    with torch.no_grad():
        weight[1:] = std * sincos_positions(grid, weight.shape[1])
        weight[0] = 0.0


# ------------------------------------------------------------------------------------------------
# data derived from the built corpus for the RL stage
# ------------------------------------------------------------------------------------------------
def write_derived_data(corpus: Path, out: Path, seed: int) -> dict[str, Path]:
    """Training rows in the held-out benchmark's own format, from the *training* split.

    `gmaivl bench-build` is run on the training records (every record, not a sample), so the
    training questions read exactly like the held-out ones (GMAI-MMBench's question pools, 2-5
    options, the evaluator's prompt layout) while their images stay disjoint from the benchmark's.
    Three datasets come out of it: `mcq_text` (the evaluator's prompt, answered with the option's
    *text*, which the evaluator's extraction reads as that option: a model of this size does not
    learn, within minutes of CPU, to point from an answer to its letter), `grpo` (question /
    options / letter for the RL stage) and `cold_start` (the RL prompt answered in the
    `<think>/<answer>` format, a small SFT warm-up for GRPO)."""
    import datasets

    from gmaivl.dataset_builders.records import iter_records
    from gmaivl.evaluation.bench_build import build_benchmark
    from gmaivl.evaluation.loaders import load_benchmark
    from gmaivl.evaluation.prompts import prompt_text
    from gmaivl.trainers.grpo_data import build_prompt

    out.mkdir(parents=True, exist_ok=True)
    tsv = out / "train_mcq.tsv"
    build_benchmark(
        iter_records(corpus, split="train"), tsv, cases_per_answer=10**9, seed=seed + 1, progress=False
    )
    samples = load_benchmark(str(tsv))
    images = datasets.List(datasets.Image())
    chat = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
    mcq_text, grpo, cold_start = [], [], []
    for sample in samples:
        pixels = sample.load_images()
        answer = sample.options[sample.answer]
        mcq_text.append({"images": pixels, "messages": [
            {"role": "user", "content": prompt_text(sample)}, {"role": "assistant", "content": answer}]})  # fmt: skip
        options = [f"{k}. {v}" for k, v in sample.options.items()]
        grpo.append({"images": pixels, "question": sample.question, "options": options,
                     "answer": sample.answer, "question_type": "mcq"})  # fmt: skip
        prompt = build_prompt(sample.question, sample.options, 0)[0]["content"][-1]["text"]
        cold_start.append({"images": pixels, "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": REASONING_FORMAT.format(label=answer)}]})  # fmt: skip
    paths = {name: out / name for name in ("mcq_text", "grpo", "cold_start")}
    features = {
        "mcq_text": datasets.Features({"images": images, "messages": chat}),
        "cold_start": datasets.Features({"images": images, "messages": chat}),
        "grpo": datasets.Features({"images": images, "question": datasets.Value("string"),
                                   "options": datasets.List(datasets.Value("string")),
                                   "answer": datasets.Value("string"), "question_type": datasets.Value("string")}),
    }  # fmt: skip
    for name, rows in (("mcq_text", mcq_text), ("grpo", grpo), ("cold_start", cold_start)):
        dataset = datasets.Dataset.from_list(rows, features=features[name])
        dataset.shuffle(seed=seed).save_to_disk(str(paths[name]))
    return paths


# ------------------------------------------------------------------------------------------------
# stages and evaluation
# ------------------------------------------------------------------------------------------------
def stage_recipe(
    key: str,
    recipe_file: str,
    root: Path,
    previous: Path,
    cfg: QuickstartConfig,
    output_dir: Path | None = None,
):
    """The packaged quickstart recipe with its paths placed under `root` (and the run's sizes);
    it writes to `root/stages/<key>` unless `output_dir` is given."""
    from gmaivl.trainers.recipes import packaged_recipe_dir, parse_recipe, read_yaml_mapping

    path = packaged_recipe_dir() / "quickstart" / recipe_file
    values = read_yaml_mapping(path)
    values["model_name_or_path"] = str(previous)
    values["output_dir"] = str(output_dir or root / "stages" / key)
    values["seed"] = cfg.seed
    values["data_seed"] = cfg.seed
    values["disable_tqdm"] = not cfg.progress
    values.update(cfg.recipe_overrides.get(key, {}))
    if key in cfg.max_steps:
        values["max_steps"] = cfg.max_steps[key]
    values["datasets"] = [{**d, "path": str(root / d["path"])} for d in values["datasets"]]
    return parse_recipe(values, source=str(path))


def evaluate(model: Any, processor: Any, tsv: Path, out_dir: Path, cfg: QuickstartConfig) -> dict[str, Any]:
    """Score `model` on the held-out benchmark with the evaluator (`gmaivl eval`'s protocol)."""
    from gmaivl.app.quickstart_data import TASKS
    from gmaivl.evaluation.loaders import load_benchmark
    from gmaivl.evaluation.report import write_reports
    from gmaivl.evaluation.runner import run_benchmark

    samples = load_benchmark(str(tsv))
    out_dir.mkdir(parents=True, exist_ok=True)
    result = run_benchmark(
        model,
        processor,
        samples,
        out_dir / "predictions.jsonl",
        benchmark=BENCHMARK_NAME,
        batch_size=cfg.eval_batch_size,
        max_new_tokens={"mcq": MCQ_TOKENS},
        progress=cfg.progress,
    )
    write_reports({**result, "source": str(tsv), "split": None}, out_dir, print_tables=False)
    n = result["n"]
    correct = round(result["metrics"]["accuracy"] / 100 * n)
    per_task = result["breakdowns"].get("clinical vqa task", {})
    by_task = {
        task: accuracy_entry(round(row["accuracy"] / 100 * row["n"]), row["n"])
        for task, spec in TASKS.items()
        if (row := per_task.get(spec["clinical_task"]))
    }
    return {**accuracy_entry(correct, n), "unanswerable": result["unanswerable"]["count"], "by_task": by_task}


def blank_benchmark(tsv: Path, out: Path) -> Path:
    """The same questions with every image replaced by a blank (mid-grey) one of the same size."""
    import base64
    import io

    import pandas as pd
    from PIL import Image

    frame = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)

    def blank(b64: str) -> str:
        if not b64 or b64.isdigit():
            return b64
        size = Image.open(io.BytesIO(base64.b64decode(b64))).size
        buffer = io.BytesIO()
        Image.new("RGB", size, (128, 128, 128)).save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    frame["image"] = frame["image"].map(blank)
    frame.to_csv(out, sep="\t", index=False)
    return out


def task_chance(tsv: str | os.PathLike) -> dict[str, float]:
    """Chance level of each task (`quickstart_data.TASKS` key): the mean of 1 / (number of options)
    over its questions. Not 1 / (number of labels): bench-build gives a question 2-5 options, so a
    four-label task asked with 2-4 options has a chance near 0.35, not 0.25."""
    from gmaivl.app.quickstart_data import TASKS
    from gmaivl.evaluation.loaders import load_benchmark

    names = {spec["clinical_task"]: task for task, spec in TASKS.items()}
    per_task: dict[str, list[float]] = {}
    for s in load_benchmark(str(tsv)):
        task = names.get(s.metadata.get("clinical vqa task") or s.source_row.get("clinical vqa task", ""))
        if task is not None:
            per_task.setdefault(task, []).append(1.0 / len(s.options))
    return {task: sum(v) / len(v) for task, v in per_task.items()}


def shuffled_benchmark(tsv: Path, out: Path, seed: int) -> Path:
    """The same questions with every image replaced by another question's image of the same task
    (its *donor*: a cyclic shift of a seeded random order of the task's rows, so never its own).
    The donor's index and label are written to the columns `donor_index` and `donor_label`."""
    import random

    import pandas as pd

    frame = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    if frame["image"].str.fullmatch(r"\d*").any():
        raise ValueError(f"{tsv}: rows that refer to another row's image cannot be shuffled")
    rng = random.Random(seed)
    donor = pd.Series(index=frame.index, dtype=object)
    for _, group in frame.groupby("clinical vqa task", sort=True):
        order = list(group.index)
        rng.shuffle(order)
        if len(order) > 1:
            donor[order] = order[1:] + order[:1]
        else:
            donor[order] = order
    donor = donor.astype(int)
    shuffled = frame.copy()
    shuffled["image"] = frame.loc[donor, "image"].to_numpy()
    shuffled["donor_index"] = frame.loc[donor, "index"].to_numpy()
    shuffled["donor_label"] = frame.loc[donor, "label"].to_numpy()
    shuffled.to_csv(out, sep="\t", index=False)
    return out


def follows_donor(tsv: Path, predictions: Path) -> dict[str, Any]:
    """How often the answers to `shuffled_benchmark` questions follow the donor image: over the
    questions whose donor's label is one of their options and differs from their own answer, the
    share answered with the donor's label, overall and per task, each with the chance of hitting
    that option by guessing (mean of 1 / options over those questions)."""
    from gmaivl.app.quickstart_data import TASKS
    from gmaivl.evaluation.extraction import extract_choice
    from gmaivl.evaluation.loaders import load_benchmark

    names = {spec["clinical_task"]: task for task, spec in TASKS.items()}
    replies = {}
    for line in Path(predictions).read_text().splitlines()[1:]:
        record = json.loads(line)
        replies[str(record["index"])] = record.get("prediction", "")
    counts: dict[str, list[int]] = {}
    chance: dict[str, list[float]] = {}
    for s in load_benchmark(str(tsv)):
        donor_label = s.source_row["donor_label"]
        own = s.options[s.answer]
        if donor_label == own or donor_label not in s.options.values():
            continue
        letters = extract_choice(replies.get(s.index, ""), s.options).letters
        hit = len(letters) == 1 and s.options[letters[0]] == donor_label
        for key in (
            "all",
            names.get(s.metadata.get("clinical vqa task") or s.source_row.get("clinical vqa task")),
        ):
            if key is None:
                continue
            counts.setdefault(key, [0, 0])
            counts[key][0] += int(hit)
            counts[key][1] += 1
            chance.setdefault(key, []).append(1.0 / len(s.options))

    def entry(key: str) -> dict[str, float]:
        return {**accuracy_entry(*counts[key]), "chance": sum(chance[key]) / len(chance[key])}

    return {**entry("all"), "by_task": {t: entry(t) for t in TASKS if t in counts}}


def _load(folder: Path):
    from gmaivl import GMAIVLForConditionalGeneration, GMAIVLProcessor

    return GMAIVLForConditionalGeneration.from_pretrained(folder), GMAIVLProcessor.from_pretrained(folder)


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def results_table(results: dict[str, Any], timings: dict[str, float]) -> str:
    rows = [
        "| model | trains | held-out accuracy | 95% CI (Wilson) | correct per task | paper, Table 7 (GMAI-MMBench) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    names = {"untrained": ("untrained (after LM pre-training, before stage I)", "-")}
    names.update({key: (key, trains) for key, _, trains in STAGES})
    for key, entry in results["stages"].items():
        label, trains = names[key]
        paper = PAPER_TABLE7.get(key)
        rows.append(
            f"| {label} | {trains} | {entry['accuracy']:.3f} ({entry['correct']}/{entry['n']}) "
            f"| {entry['ci_low']:.3f}-{entry['ci_high']:.3f} | {_per_task(entry)} | {paper if paper is not None else '-'} |"
        )
    blank = results["blank_images"]
    rows.append(
        f"| final model, blank images | - | {blank['accuracy']:.3f} | {blank['ci_low']:.3f}-{blank['ci_high']:.3f} "
        f"| {_per_task(blank)} | - |"
    )
    shuffled = results.get("shuffled_images")
    if shuffled:
        rows.append(
            f"| final model, shuffled images (each question gets another one's image of its task) | - "
            f"| {shuffled['accuracy']:.3f} | {shuffled['ci_low']:.3f}-{shuffled['ci_high']:.3f} "
            f"| {_per_task(shuffled)} | - |"
        )
    lines = [
        "# gmaivl quickstart: held-out accuracy after each stage",
        "",
        *rows,
        "",
        f"Chance level (mean of 1/options): {results['chance']:.3f}. Benchmark images overlapping the training "
        f"corpus (`gmaivl decontam`, md5 or pHash distance 0): {results['decontam_overlap']}.",
        "Chance per task: "
        + ", ".join(
            f"{t.removeprefix('lesion-')} {c:.3f}" for t, c in results.get("chance_by_task", {}).items()
        )
        + ".",
        *(
            [
                "",
                "Shuffled images, answers that follow the donor image (questions whose options hold the "
                "donor's label, other than their own answer): "
                + ", ".join(
                    f"{t.removeprefix('lesion-')} {e['correct']}/{e['n']} (chance {e['chance']:.3f})"
                    for t, e in shuffled["follows_donor"]["by_task"].items()
                )
                + ".",
            ]
            if shuffled
            else []
        ),
        *(
            [
                "",
                "Table 7's arms, all from the one stage I checkpoint:",
                "",
                *arms_table(results["arms"], results.get("chance_by_task", {})),
            ]
            if results.get("arms")
            else []
        ),
        "",
        "Wall / CPU seconds per step: "
        + ", ".join(f"{k} {v['wall']:.0f}/{v['cpu']:.0f}" for k, v in timings.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _per_task(entry: dict[str, Any]) -> str:
    by_task = entry.get("by_task", {})
    return (
        ", ".join(f"{task.removeprefix('lesion-')} {e['correct']}/{e['n']}" for task, e in by_task.items())
        or "-"
    )


def plot_curves(root: Path, keys: list[str], path: Path) -> None:
    """Training loss of every stage on one step axis (GRPO: reward on a second axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax2 = None
    offset = 0
    for key in keys:
        history_file = root / "stages" / key / "log_history.json"
        if not history_file.is_file():
            continue
        history = json.loads(history_file.read_text())
        loss = [(offset + e["step"], e["loss"]) for e in history if "loss" in e and "step" in e]
        reward = [(offset + e["step"], e["reward"]) for e in history if "reward" in e and "step" in e]
        if loss and key != "stage4_grpo":
            ax.plot(*zip(*loss), marker=".", label=key)
        if reward:
            ax2 = ax2 or ax.twinx()
            ax2.plot(*zip(*reward), color="black", marker="o", label=f"{key} reward")
            ax2.set_ylabel("GRPO reward")
            ax2.legend(loc="upper center")
        steps = [e["step"] for e in history if "step" in e]
        offset += max(steps, default=0)
        ax.axvline(offset, color="grey", lw=0.5)
    ax.set_xlabel("optimizer step (stages in order)")
    ax.set_ylabel("training loss")
    ax.set_title("gmaivl quickstart: loss per stage")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# the pipeline
# ------------------------------------------------------------------------------------------------
class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, dict[str, float]] = {}

    def __call__(self, name: str):
        timer = self

        class _Block:
            def __enter__(self):
                self.wall, self.cpu = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                timer.times[name] = {
                    "wall": time.perf_counter() - self.wall,
                    "cpu": time.process_time() - self.cpu,
                }

        return _Block()


def run_quickstart(output_dir: str | Path, cfg: QuickstartConfig | None = None) -> dict[str, Any]:
    """Run the whole quickstart into `output_dir`; returns the contents of `results.json`."""
    import torch

    cfg = cfg or QuickstartConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
        return _run_quickstart(output_dir, cfg)
    finally:
        torch.set_num_threads(threads)


def _run_quickstart(output_dir: str | Path, cfg: QuickstartConfig) -> dict[str, Any]:
    from transformers import set_seed

    from gmaivl.app.quickstart_data import write_sources
    from gmaivl.core.files import atomic_write_text
    from gmaivl.dataset_builders.engine import run_build
    from gmaivl.dataset_builders.records import iter_records
    from gmaivl.evaluation.bench_build import build_benchmark
    from gmaivl.evaluation.decontam import decontamination_report
    from gmaivl.trainers.outputs import is_stage_done
    from gmaivl.trainers.train import run_stage

    root = Path(output_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # seeds only: torch's CPU kernels used here are deterministic for a fixed thread count (30 stage III
    # steps gave bit-identical weights twice), and `torch.use_deterministic_algorithms(True)` made
    # each step 1.39x slower (measured: 1.12 s against 0.81 s)
    set_seed(cfg.seed)
    timer = _Timer()
    logging.getLogger("gmaivl").setLevel(logging.WARNING)

    # 1. data
    with timer("data"):
        spec = write_sources(
            root / "sources",
            train_per_label=cfg.train_per_label,
            test_per_label=cfg.test_per_label,
            text_dialogues=cfg.text_dialogues,
            image_size=cfg.image_size,
            seed=cfg.seed,
            progress=cfg.progress,
        )
        run_build(spec, root / "corpus", workers=1, progress=cfg.progress)
    # 2. held-out benchmark + decontamination
    with timer("benchmark"):
        tsv = root / "benchmark" / f"{BENCHMARK_NAME}.tsv"
        build_benchmark(
            iter_records(root / "corpus", split="test"),
            tsv,
            cases_per_answer=cfg.cases_per_answer,
            seed=cfg.seed,
            progress=cfg.progress,
        )
        decontam = decontamination_report(
            str(tsv), str(root / "corpus"), root / "benchmark" / "decontam.json", train_split="train",
            progress=cfg.progress,
        )  # fmt: skip
        overlap = int(decontam["n_contaminated_benchmark_images"])
        if overlap:
            raise RuntimeError(
                f"{overlap} held-out benchmark images overlap the training corpus ({root / 'benchmark' / 'decontam.json'})"
            )
        write_derived_data(root / "corpus", root / "derived", cfg.seed)
        chance = chance_level(tsv)
    # 3. model and stages
    results: dict[str, Any] = {
        "chance": chance,
        "chance_by_task": task_chance(tsv),
        "decontam_overlap": overlap,
        "stages": {},
    }
    previous = root / "untrained"
    with timer("model"):
        if not (previous / "config.json").is_file():
            build_untrained_model(root / "corpus", previous, cfg)
    for key, recipe_file, _ in STAGES:
        if key not in cfg.stages:
            continue
        recipe = stage_recipe(key, recipe_file, root, previous, cfg)
        with timer(key):
            if not is_stage_done(recipe.training_args.output_dir):
                run_stage(recipe)
        previous = Path(recipe.training_args.output_dir)
        if key == "stage0_language_pretraining":
            key = "untrained"  # the composed model: pretrained (text-only) LLM, untrained vision side
        with timer(f"eval {key}"):
            model, processor = _load(previous)
            results["stages"][key] = evaluate(model, processor, tsv, root / "evaluation" / key, cfg)
    final = previous
    if cfg.arms:
        results["arms"] = run_arms(root, tsv, results["stages"], cfg, timer)
    # 4. controls, reload, card
    with timer("controls"):
        model, processor = _load(final)
        blank_tsv = blank_benchmark(tsv, root / "benchmark" / f"{BENCHMARK_NAME}-blank.tsv")
        results["blank_images"] = evaluate(
            model, processor, blank_tsv, root / "evaluation" / "blank_images", cfg
        )
        # blank images only show that one fixed answer per task scores chance on balanced labels;
        # an image of the same task from another question shows that the answers follow the image
        shuffled_tsv = shuffled_benchmark(
            tsv, root / "benchmark" / f"{BENCHMARK_NAME}-shuffled.tsv", cfg.seed
        )
        shuffled_dir = root / "evaluation" / "shuffled_images"
        results["shuffled_images"] = evaluate(model, processor, shuffled_tsv, shuffled_dir, cfg)
        results["shuffled_images"]["follows_donor"] = follows_donor(
            shuffled_tsv, shuffled_dir / "predictions.jsonl"
        )
        results["reload"] = check_reload(model, processor, final, tsv, root / "evaluation" / "reload", cfg)
        # the card reads CHECKPOINT/evaluation/*/results.json
        card_eval = final / "evaluation"
        shutil.rmtree(card_eval, ignore_errors=True)
        shutil.copytree(root / "evaluation" / list(results["stages"])[-1], card_eval / BENCHMARK_NAME)
        from gmaivl.model_cards.model_card import write_model_card

        write_model_card(final, model_name="gmai-vl-quickstart", license="apache-2.0")
        model_dir = root / "model"
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.copytree(final, model_dir)
    results["timings"] = timer.times
    results["config"] = {k: v for k, v in cfg.__dict__.items() if k != "progress"}
    atomic_write_text(root / "results.json", json.dumps(results, indent=2, default=list))
    atomic_write_text(root / "results.md", results_table(results, timer.times))
    plot_curves(root, [s[0] for s in STAGES], root / "loss_curves.png")
    return results


def run_arms(
    root: Path, tsv: Path, stages: dict[str, Any], cfg: QuickstartConfig, timer: Any
) -> list[dict[str, Any]]:
    """Table 7's four arms (`ARMS`), in the paper's order, from the one stage I checkpoint of the
    chain: stage1, stage1+2 and stage1+2+3 are the chain's own checkpoints; stage1+3 is stage III
    (same recipe, seed and steps) run from the stage I checkpoint into `stages/arm_stage1+3`. Each
    arm's entry is its held-out evaluation (the chain's for the first, second and last)."""
    from gmaivl.trainers.outputs import is_stage_done
    from gmaivl.trainers.train import run_stage

    needed = {"stage1_shallow_alignment", "stage2_deep_alignment", "stage3_instruction_tuning"}
    if missing := needed - set(stages):
        raise ValueError(f"the arms need stages {sorted(missing)} in the run")
    key = "stage3_instruction_tuning"
    recipe_file = dict((k, f) for k, f, _ in STAGES)[key]
    start, out = root / "stages" / "stage1_shallow_alignment", root / "stages" / "arm_stage1+3"
    recipe = stage_recipe(key, recipe_file, root, start, cfg, output_dir=out)
    with timer("arm stage1+3"):
        if not is_stage_done(recipe.training_args.output_dir):
            run_stage(recipe)
    with timer("eval arm stage1+3"):
        model, processor = _load(Path(recipe.training_args.output_dir))
        skip_three = evaluate(model, processor, tsv, root / "evaluation" / "arm_stage1+3", cfg)
    entries = {
        "stage1": stages["stage1_shallow_alignment"],
        "stage1+2": stages["stage2_deep_alignment"],
        "stage1+3": skip_three,
        "stage1+2+3": stages["stage3_instruction_tuning"],
    }
    return [
        {"arm": name, "stages": list(keys), "paper_table7": paper, **entries[name]}
        for name, keys, paper in ARMS
    ]


def arms_table(arms: list[dict[str, Any]], chance_by_task: dict[str, float]) -> list[str]:
    """Markdown rows of the arms (results.md), each task's Wilson lower bound beside its chance."""
    rows = [
        "| arm (after stage 0) | held-out accuracy | 95% CI (Wilson) | correct per task | "
        "task lower bound > chance | paper, Table 7 (GMAI-MMBench) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm in arms:
        above = [
            t.removeprefix("lesion-")
            for t, e in arm["by_task"].items()
            if t in chance_by_task and e["ci_low"] > chance_by_task[t]
        ]
        rows.append(
            f"| {arm['arm']} | {arm['accuracy']:.3f} ({arm['correct']}/{arm['n']}) "
            f"| {arm['ci_low']:.3f}-{arm['ci_high']:.3f} | {_per_task(arm)} | {', '.join(above) or 'none'} "
            f"| {arm['paper_table7']} |"
        )
    return rows


def check_reload(
    model: Any, processor: Any, folder: Path, tsv: Path, out: Path, cfg: QuickstartConfig
) -> dict:
    """Reload `folder` through the auto classes with trust_remote_code and compare answers."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from gmaivl.evaluation.loaders import load_benchmark
    from gmaivl.evaluation.runner import run_benchmark

    samples = load_benchmark(str(tsv))[:64]
    reloaded = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    reloaded_processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    answers = {}
    for name, (m, p) in {"in_memory": (model, processor), "reloaded": (reloaded, reloaded_processor)}.items():
        path = out / f"{name}.jsonl"
        path.unlink(missing_ok=True)
        run_benchmark(m, p, samples, path, benchmark=BENCHMARK_NAME, batch_size=cfg.eval_batch_size,
                      max_new_tokens={"mcq": MCQ_TOKENS}, progress=False)  # fmt: skip
        lines = [json.loads(x) for x in path.read_text().splitlines()[1:]]
        answers[name] = {r["index"]: r["prediction"] for r in lines}
    same = answers["in_memory"] == answers["reloaded"]
    if not same:
        raise RuntimeError(f"{folder}: the reloaded model answers differently from the trained one")
    return {"questions": len(samples), "identical_answers": same, "class": type(reloaded).__name__}


def small_config(cfg: QuickstartConfig | None = None) -> QuickstartConfig:
    """A reduced run (`gmaivl quickstart --small`, the CI learning test): half the training images
    and 220 stage III steps, about 3 minutes on 2 idle cores. Measured with `STAGE_OVERRIDES` and the
    sine-cosine vision positions, seeds 0-4, one thread: every task's Wilson lower bound above its
    chance (README, quickstart, seeds)."""
    cfg = cfg or QuickstartConfig()
    cfg.train_per_label, cfg.test_per_label, cfg.text_dialogues = 24, 8, 600
    arms = cfg.arms
    cfg.max_steps = {
        "stage0_language_pretraining": 30,
        "stage1_shallow_alignment": 5,
        "stage2_deep_alignment": 5,
        "stage3_instruction_tuning": 220,
        "stage4_grpo": 2,
    }
    return arms_config(cfg) if arms else cfg


def arms_config(cfg: QuickstartConfig | None = None) -> QuickstartConfig:
    """`gmaivl quickstart --arms`: Table 7's four arms (`run_arms`), with the longer stage 0 and the
    stage I recipe under which stage I alone answers (`ARMS_STEPS`, `ARMS_OVERRIDES`). Apply after
    `small_config` (whose step counts it replaces for stages 0 and I)."""
    cfg = cfg or QuickstartConfig()
    cfg.arms = True
    cfg.max_steps = {**cfg.max_steps, **ARMS_STEPS}
    for key, values in ARMS_OVERRIDES.items():
        cfg.recipe_overrides[key] = {**cfg.recipe_overrides.get(key, {}), **values}
    return cfg
