"""The dataset card: YAML with one config per sub-dataset (and its splits), statistics, a plot, provenance."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from gmaivl.core.files import atomic_write_text

from .spec import LICENSE_ID, BuildSpec

if TYPE_CHECKING:
    from .build import BuildReport

CONFIG_TITLES = {
    "caption": "GMAI-MM-Caption: detailed captions of whole images and boxed regions",
    "instruct": "GMAI-MM-Instruct: free-form instruction question-answer dialogues",
    "percept": "GMAI-MM-Percept: single-choice and region perception questions from the labels",
    "text_single": "GMAI-Text-Single: single-turn medical dialogues",
    "text_multi": "GMAI-Text-Multi: multi-turn medical conversations",
    "records": "Standardised records <image, modality, label, department, bbox?> after image QC",
}
CONFIG_ORDER = ("caption", "instruct", "percept", "text_single", "text_multi", "records")

# What each column of the sub-dataset configs holds (the card's column table).
COLUMNS = {
    "images": "list of images (RGB PNG, embedded); empty for text-only rows",
    "messages": "the chat: `[{role, content}]`, user/assistant turns with string content (TRL's SFT format)",
    "prompt": "closed-form rows: TRL's conversational prompt, one user turn `[{type: image}, {type: text}]` "
    "holding the question with its options and answer instruction; empty list otherwise",
    "question": "closed-form rows: the question alone (no options, no instruction); empty otherwise",
    "options": "`mcq` rows: the option texts in letter order (A, B, ...); empty list otherwise",
    "answer": "the reference a reward checks: the option letter (`mcq`), `yes`/`no` (`closed`), the short "
    "answer text or box (`open`); empty for captions, instructions and dialogues",
    "question_type": "`mcq`, `closed` (yes/no) or `open` for closed-form questions (percept); else "
    "`caption`, `region_caption`, `instruct` or `dialogue`",
    "question_kind": "what the question asks: `classification`, `modality`, `anatomy`, `lesion`, `yes_no`, "
    "`region`, `grounding`, `caption`, `region_caption`, `instruct`, `dialogue`",
    "source_dataset": "the `name` of the source in the build spec",
    "split": "train / validation / test as given by the source",
    "language": "`en` or `zh` (Chinese translations and corpora)",
    "modality, department, label, task_type, clinical_task, granularity": "the annotation of the image "
    "(GMAI-MMBench lexical tree); `label` after label standardisation",
    "bbox": "`[x_min, y_min, x_max, y_max]` in pixels of the stored image, or null for image-level labels",
    "generator": "`template`, `import` (text corpora) or `llm:<backend>`",
    "row_id, record_id": "ids: `<source>/<keyed hash of the file's relative path>` plus frame/slice/box "
    "suffixes; no file or folder name is published",
}
RECORD_COLUMNS = (
    "The `records` config holds one row per standardised record: `record_id`, `image`, the annotation "
    "columns above, `label_space` (the source's labels), `source_file` (the keyed hash of the file, not its "
    "name), `width`, `height`, `image_md5` (of the decoded pixels), `phash` (64-bit perceptual hash) and "
    "`meta` (JSON: frame, slice, axis, spacing, mask value, area and the DICOM Modality, PixelSpacing, "
    "SliceThickness, PhotometricInterpretation only)."
)


# `license_name` of a card whose sources differ (or do not say): the card body lists each one
MIXED_LICENSE_NAME = "per-source-licenses"


def build_time() -> datetime.datetime:
    """Now, or `SOURCE_DATE_EPOCH` where set (the reproducible-builds convention): two builds of
    the same sources then publish the same bytes, card included."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    return datetime.datetime.now(datetime.UTC)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.+]+", "-", text.lower()).strip("-.+") or MIXED_LICENSE_NAME


def card_license(spec: BuildSpec) -> dict[str, str]:
    """The card's `license`, plus `license_name` and `license_link` when it is `other`.

    Without a build-level `license`, sources that all give one Hub licence id share it; sources
    under differing (or unstated, or non-Hub) licences make it `other`, linked to the card, whose
    "Licenses" section lists each source's terms."""
    named = {s.license for s in spec.sources}
    shared = next(iter(named)) if len(named) == 1 and None not in named else None
    license = spec.license or (shared if shared and LICENSE_ID.fullmatch(shared) else "other")
    if license != "other":
        return {"license": license}
    links = {s.license_link for s in spec.sources}
    shared_link = next(iter(links)) if shared and len(links) == 1 and None not in links else None
    return {
        "license": "other",
        "license_name": spec.license_name or (_slug(shared) if shared else MIXED_LICENSE_NAME),
        "license_link": spec.license_link or shared_link or "README.md",
    }


def _cell(text: str | None) -> str:
    return " ".join((text or "–").split()).replace("|", "\\|")


def licenses_section(spec: BuildSpec) -> list[str]:
    """The card's "Licenses" and "Citations" sections: each source's licence, link and citation."""
    stated = [s for s in spec.sources if s.license]
    if not stated:
        intro = (
            "The build spec states no source licence (`license:` of each source): check the terms of "
            "every source before using or redistributing this dataset."
        )
    else:
        intro = (
            "Each row comes from one source (`source_dataset`) and stays under that source's licence; "
            "using or redistributing this dataset means following the terms of every source below."
        )
    table = [
        "| source | license | license link | homepage |",
        "| --- | --- | --- | --- |",
        *(
            f"| {_cell(s.name)} | {_cell(s.license or 'not stated')} | {_cell(s.license_link)} | {_cell(s.homepage)} |"
            for s in spec.sources
        ),
    ]
    citations = []
    for source in spec.sources:
        text = (source.citation or "").strip()
        if text:
            ticks = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", text)), default=0))
            kind = "bibtex" if text.startswith("@") else "text"
            citations.append(f"**{source.name}**\n\n{ticks}{kind}\n{text}\n{ticks}")
        else:
            citations.append(f"**{source.name}**: no citation given")
    return [
        "## Licenses",
        intro,
        "\n".join(table),
        "## Citations",
        "If you use this dataset, cite the sources you use:",
        *citations,
    ]


def _size_category(rows: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if rows < limit:
            return name
    return "10M<n<100M"


def _table(counter: dict[str, int], title: str) -> str:
    total = sum(counter.values()) or 1
    lines = [f"| {title} | rows | share |", "| --- | ---: | ---: |"]
    lines += [f"| {key} | {value} | {100 * value / total:.1f}% |" for key, value in counter.items()]
    return "\n".join(lines)


def plot_statistics(stats: dict[str, dict[str, int]], path: Path) -> None:
    """Bar charts of the modality / department / task / clinical-task distributions (Table 3 style)."""
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's import and global state

    panels = [d for d in ("modality", "department", "task_type", "clinical_task") if stats.get(d)]
    figure = Figure(figsize=(4.5 * max(1, len(panels)), 4))
    axes = figure.subplots(1, max(1, len(panels)), squeeze=False)
    for axis, dimension in zip(axes[0], panels):
        items = list(stats[dimension].items())[:15]
        axis.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#4C72B0")
        axis.set_title(dimension.replace("_", " "))
        axis.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    tmp.replace(path)


def write_card(spec: BuildSpec, out: Path, report: BuildReport) -> Path:
    from huggingface_hub import DatasetCard, DatasetCardData

    from gmaivl.dataset_builders import __name__ as package_name

    published = report.rows_published
    configs = [c for c in CONFIG_ORDER if report.splits.get(c)]
    card_configs = [
        {
            "config_name": config,
            "data_files": [
                {"split": split, "path": f"{config}/{split}-*.parquet"} for split in report.splits[config]
            ],
            **({"default": True} if config == configs[0] else {}),
        }
        for config in configs
    ]
    languages = sorted(report.stats.get("language", {}) or {"en": 1})
    data = DatasetCardData(
        configs=card_configs,
        **card_license(spec),
        language=languages,
        task_categories=["image-text-to-text", "visual-question-answering"],
        tags=["medical", "gmai-vl", "image-text"],
        pretty_name=spec.name,
        size_categories=[_size_category(sum(published.values()))],
    )
    stats = report.stats
    if any(stats.get(d) for d in ("modality", "department", "task_type", "clinical_task")):
        plot_statistics(stats, out / "statistics.png")
    sections = [
        f"# {spec.name}",
        spec.description or "Medical image-text corpus built with `gmaivl data build` (GMAI-VL-5.5M recipe).",
        "## Configs",
        "\n".join(
            [
                "| config | contents | rows |",
                "| --- | --- | ---: |",
                *(
                    f"| `{c}` | {CONFIG_TITLES[c]} | "
                    f"{published.get(c, report.records_kept if c == 'records' else 0)} |"
                    for c in configs
                ),
            ]
        ),
        '```python\nfrom datasets import load_dataset\n\nds = load_dataset("<this repo or folder>", "'
        + (configs[0] if configs else "caption")
        + '", split="train")\n```',
        "Rows follow the training format of TRL: `images` (list of images) and `messages` (chat turns). "
        "Closed-form questions (the `percept` config) also carry `prompt`, `question`, `options`, `answer` and "
        "`question_type`, so `trl grpo --dataset_name <this repo> --dataset_config percept` and the GRPO recipes "
        "of `gmaivl train` read them as they are.",
        "### Columns",
        "\n".join(
            ["| column | contents |", "| --- | --- |", *(f"| `{k}` | {v} |" for k, v in COLUMNS.items())]
        ),
        "### Privacy",
        "Ids are keyed hashes of the source files' relative paths; no file or folder name and no DICOM header "
        "value other than Modality, PixelSpacing, SliceThickness and PhotometricInterpretation reaches this "
        "dataset, unless a source opted in (`label_from: folder`, the default of class-folder sources, publishes "
        "folder names as labels; `publish_paths: true` publishes relative paths). Text burned into the pixels "
        "(annotations, names on scanned films) is not detected.",
        "## Statistics",
        "![distributions](statistics.png)" if (out / "statistics.png").exists() else "",
    ]
    for dimension in ("modality", "department", "task_type", "clinical_task", "language"):
        if stats.get(dimension):
            sections += [
                f"### {dimension.replace('_', ' ').capitalize()}",
                _table(stats[dimension], dimension),
            ]
    errors = sum(report.errors_by_kind.values())
    provenance = [
        f"- built: {build_time().strftime('%Y-%m-%d %H:%M UTC')} by `{package_name}`",
        f"- spec fingerprint: `{report.spec_fingerprint}`; work units: {report.units}",
        f"- records ingested: {report.records_ingested}, kept after image QC: {report.records_kept}",
        f"- input errors: {errors} ({', '.join(f'{k}: {v}' for k, v in report.errors_by_kind.items()) or 'none'}); "
        "`build_report.json` lists them by source, item id and reason",
        f"- dropped at ingest: {', '.join(f'{k}: {v}' for k, v in report.dropped_ingest.items()) or 'none'}",
        f"- dropped by quality control: {', '.join(f'{k}: {v}' for k, v in report.dropped_qc.items()) or 'none'}",
        f"- to review: {', '.join(f'{k}: {v}' for k, v in report.notices.items()) or 'none'}"
        + (
            " (images of modalities that often carry burned-in text, without a `BurnedInAnnotation` tag)"
            if report.notices.get("burned_in_tag_missing")
            else ""
        ),
        "- text generation: " + spec.generation.get("backend", "templates"),
    ]
    if report.judge:
        provenance.append(
            "- quality judge (mean score of sampled rows, 1 = best; accepted when <= threshold):"
        )
        provenance += [
            f"  - {source}: {r['mean_score']} ({'accepted' if r['accepted'] else 'rejected'}, {r['scored']} scored)"
            for source, r in report.judge.items()
        ]
    sections += ["## Build provenance", "\n".join(provenance)]
    sections += [
        "### Sources",
        "\n".join(
            [
                "| source | type | modality | department | clinical task |",
                "| --- | --- | --- | --- | --- |",
                *(
                    f"| {s.name} | {s.type} | {s.modality} | {s.department} | {s.clinical_task} |"
                    for s in spec.sources
                ),
            ]
        ),
    ]
    sections += licenses_section(spec)
    card = DatasetCard(
        f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(x for x in sections if x is not None) + "\n"
    )
    path = out / "README.md"
    atomic_write_text(path, str(card))
    return path
