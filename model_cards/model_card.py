"""Model cards written from a checkpoint folder and the evaluator's results.

The YAML metadata is built with `huggingface_hub.ModelCardData`: base models, datasets, license,
`pipeline_tag: image-text-to-text`, and a `model-index` holding one `EvalResult` per benchmark
metric, copied unrounded from the evaluator's `results.json` files (`metric_name` is the
evaluator's metric key, so the card can be checked against the JSON). The body comes from the Jinja
template `templates/model_card.md.jinja`: architecture (read from `config.json` and the safetensors
headers), the training recipe actually used (`gmaivl_recipe.yaml`, saved by the trainers), the data
mixture, evaluation tables, intended use, limitations and the not-a-medical-device statement.

Every value that reaches the Markdown body from a file (config, recipe, results, names) is escaped
here (`gmaivl.core.markdown`: `md_text` for text, `md_code` for code spans), so a `|` or an
`<img ...>` in a benchmark category, a model name or a recipe value stays text in its cell.
"""

from __future__ import annotations

import json
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from gmaivl.core.files import atomic_write_text
from gmaivl.core.markdown import md_code, md_text
from gmaivl.evaluation.report import load_results
from gmaivl.trainers.outputs import RECIPE_FILENAME

RESULTS_GLOB = "evaluation/*/results.json"
# Recipe keys shown in the card, in this order, when present.
RECIPE_KEYS = (
    "recipe_family", "stage", "trainer", "model_name_or_path", "trainable_modules", "module_learning_rates",
    "learning_rate", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay", "optim",
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "max_length", "vlm_packing", "packing_max_length", "attn_implementation", "bf16", "fp16",
    "activation_checkpointing", "image_size", "num_generations", "beta", "loss_type", "reward_funcs",
    "temperature", "max_completion_length", "seed",
)  # fmt: skip
_METRIC_TYPES = (
    (re.compile(r"bleu"), "bleu"),
    (re.compile(r"rouge"), "rouge"),
    (re.compile(r"cider"), "cider"),
    (re.compile(r"token_f1"), "f1"),
    (re.compile(r"exact_match"), "exact_match"),
    (re.compile(r"recall"), "recall"),
    (re.compile(r"acc"), "accuracy"),
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LOCAL_PREFIXES = ("data/", "runs/", "outputs/", "./", "../", "/")


def template_path() -> Path:
    return Path(str(resources.files("gmaivl.model_cards") / "templates" / "model_card.md.jinja"))


def _looks_like_hub_id(value: Any) -> bool:
    s = str(value or "")
    return bool(_HUB_ID.match(s)) and not s.startswith(_LOCAL_PREFIXES) and not Path(s).exists()


def metric_type(key: str) -> str:
    for pattern, name in _METRIC_TYPES:
        if pattern.search(key):
            return name
    return key


def count_parameters(checkpoint: Path) -> dict[str, int]:
    """Parameters per part, from the safetensors headers (no weights are loaded)."""
    from safetensors import safe_open

    parts = {"vision_tower": 0, "multi_modal_projector": 0, "language_model": 0, "lm_head": 0}
    for f in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                n = math.prod(fh.get_slice(name).get_shape())
                part = next((p for p in parts if p in name), None)
                if part:
                    parts[part] += n
    return parts


def _fmt_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def describe_architecture(checkpoint: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Table rows describing the model, and base-model ids recorded in the config."""
    cfg_path = checkpoint / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{checkpoint}: no config.json; is this a saved GMAI-VL checkpoint?")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    vision, text = cfg.get("vision_config", {}) or {}, cfg.get("text_config", {}) or {}
    image_size, patch = vision.get("image_size"), vision.get("patch_size")
    tokens = (image_size // patch) ** 2 if image_size and patch else None
    if tokens and cfg.get("vision_feature_select_strategy") == "full":
        tokens += 1
    params = count_parameters(checkpoint)
    t = md_text
    rows = [
        (
            "model type",
            f"{md_code(cfg.get('model_type', '?'))} ({t(', '.join(cfg.get('architectures') or []))})",
        ),
        (
            "vision encoder",
            f"{md_code(vision.get('model_type', '?'))}: {t(vision.get('num_hidden_layers', '?'))} layers, "
            f"hidden {t(vision.get('hidden_size', '?'))}, {t(image_size)} px input, patch {t(patch)}"
            + (f", {_fmt_count(params['vision_tower'])} parameters" if params["vision_tower"] else ""),
        ),
        (
            "projector",
            f"2-layer MLP ({t(cfg.get('projector_hidden_act', 'gelu'))}), vision layer "
            f"{t(cfg.get('vision_feature_layer', -2))}, {t(tokens)} tokens per image"
            + (
                f", {_fmt_count(params['multi_modal_projector'])} parameters"
                if params["multi_modal_projector"]
                else ""
            ),
        ),
        (
            "language model",
            f"{md_code(text.get('model_type', '?'))}: {t(text.get('num_hidden_layers', '?'))} layers, "
            f"hidden {t(text.get('hidden_size', '?'))}, {t(text.get('num_attention_heads', '?'))} heads "
            f"({t(text.get('num_key_value_heads', text.get('num_attention_heads', '?')))} KV), "
            f"vocabulary {t(text.get('vocab_size', '?'))}"
            + (
                f", {_fmt_count(params['language_model'] + params['lm_head'])} parameters"
                if params["language_model"]
                else ""
            ),
        ),
    ]
    total = sum(params.values())
    if total:
        rows.append(("total parameters", _fmt_count(total)))
    bases = [
        str(sub.get("_name_or_path"))
        for sub in (vision, text)
        if _looks_like_hub_id(sub.get("_name_or_path"))
    ]
    return rows, bases


def read_recipe(checkpoint: Path) -> dict[str, Any] | None:
    path = checkpoint / RECIPE_FILENAME
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping")
    return data


def recipe_table(recipe: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key in RECIPE_KEYS:
        if key in recipe and recipe[key] is not None:
            value = recipe[key]
            if isinstance(value, (list, dict)):
                value = json.dumps(value)
            rows.append((key, md_code(value)))
    return rows


def data_mixture(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for d in recipe.get("datasets") or []:
        if not isinstance(d, dict):
            d = {"path": str(d)}
        loc = str(d.get("path", ""))
        if d.get("name"):
            loc += f" ({d['name']})"
        out.append(
            {
                "source": d.get("source") or d.get("path"),
                "category": d.get("category", ""),
                "ratio": d.get("ratio", 1.0),
                "location": loc,
                "path": d.get("path"),
            }
        )
    return out


def _mixture_rows(mixture: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The mixture as the card's table shows it (escaped)."""
    return [
        {
            "source": md_text(d["source"]),
            "category": md_text(d["category"]),
            "ratio": md_text(d["ratio"]),
            "location": md_code(d["location"]),
        }
        for d in mixture
    ]


def _evaluation_rows(ev: dict[str, Any]) -> dict[str, Any]:
    """One results file as the card's template shows it (values escaped, numbers formatted)."""
    lead = ev.get("leaderboard_metric")
    return {
        "benchmark": md_text(ev["benchmark"]),
        "source": md_code(ev["source"]) if ev.get("source") else None,
        "split": md_code(ev["split"]) if ev.get("split") else None,
        "n": ev["n"],
        "unanswerable": ev.get("unanswerable", {}).get("count", 0),
        "failed": ev.get("failed_rows", {}).get("count", 0),
        "scored": ev.get("scored", True),
        "leaderboard_metric": md_text(lead) if lead else None,
        "leaderboard_code": md_code(lead) if lead else None,
        "metrics": [
            (md_text(k), f"{v:.2f}")
            for k, v in ev["metrics"].items()
            if not (isinstance(v, float) and math.isnan(v))
        ],
        "breakdowns": [
            (
                md_text(k),
                [(md_text(n), {"accuracy": f"{r['accuracy']:.2f}", "n": r["n"]}) for n, r in t.items()],
            )
            for k, t in ev.get("breakdowns", {}).items()
        ],
    }


def eval_results_for(result: dict[str, Any]) -> list[EvalResult]:
    """One `EvalResult` per metric of one evaluator results file (NaNs left out)."""
    name = result["benchmark"]
    dataset_type = result.get("source") if _looks_like_hub_id(result.get("source")) else name
    out = []
    for key, value in result["metrics"].items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        task = "image-to-text" if key.startswith("report_") else "visual-question-answering"
        out.append(
            EvalResult(
                task_type=task,
                dataset_type=str(dataset_type),
                dataset_name=name,
                dataset_split=result.get("split"),
                dataset_config=result.get("config"),
                metric_type=metric_type(key),
                metric_name=key,
                metric_value=value,
            )
        )
    return out


def build_model_card(
    checkpoint: str | os.PathLike,
    results: list[str | os.PathLike] | None = None,
    *,
    model_name: str | None = None,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    base_models: list[str] | None = None,
    datasets: list[str] | None = None,
    language: list[str] | None = None,
) -> ModelCard:
    """The card for `checkpoint`; `results` default to `<checkpoint>/evaluation/*/results.json`."""
    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {ckpt}")
    architecture, config_bases = describe_architecture(ckpt)
    recipe = read_recipe(ckpt)
    result_paths = [Path(p) for p in results] if results else sorted(ckpt.glob(RESULTS_GLOB))
    evaluations = [load_results(p) for p in result_paths]
    mixture = data_mixture(recipe) if recipe else []

    bases = list(base_models or [])
    if not bases:
        bases = list(config_bases)
        if recipe and _looks_like_hub_id(recipe.get("model_name_or_path")):
            bases.append(str(recipe["model_name_or_path"]))
    ds_ids = list(datasets or [])
    if not ds_ids:
        ds_ids = sorted({str(d["path"]) for d in mixture if _looks_like_hub_id(d["path"])})
    eval_results = [er for ev in evaluations for er in eval_results_for(ev)]
    name = model_name or ckpt.resolve().name
    card_data = ModelCardData(
        model_name=name,
        base_model=sorted(set(bases)) or None,
        datasets=ds_ids or None,
        license=license,
        language=language or ["en"],
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=["medical", "vision-language", "gmai-vl", "image-text-to-text"],
        metrics=sorted({er.metric_type for er in eval_results}) or None,
        eval_results=eval_results or None,
    )
    judges = sorted(
        {str(ev["protocol"]["judge"]) for ev in evaluations if ev.get("protocol", {}).get("judge")}
    )
    versions = sorted({str(ev.get("protocol", {}).get("prompt_version", "?")) for ev in evaluations})
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        model_name=md_text(name),
        repo_id=json.dumps(repo_id or name)[1:-1],  # inside a Python string literal of the usage code
        architecture=architecture,
        base_models=[md_code(b) for b in sorted(set(bases))],
        recipe_rows=recipe_table(recipe) if recipe else [],
        recipe_stage=md_code(recipe["stage"]) if recipe and recipe.get("stage") else None,
        mixture=_mixture_rows(mixture),
        evaluations=[_evaluation_rows(ev) for ev in evaluations],
        judges=md_code(", ".join(judges)) if judges else "",
        prompt_versions=md_code(", ".join(versions)),
    )


def write_model_card(
    checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, **kwargs: Any
) -> Path:
    """Render the card and write it atomically (default `<checkpoint>/README.md`)."""
    card = build_model_card(checkpoint, **kwargs)
    return atomic_write_text(Path(out) if out else Path(checkpoint) / "README.md", str(card))
