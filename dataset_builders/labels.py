"""Label standardisation and the lexical tree (the GMAI-MMBench paper).

A source's own `label_map` turns raw names (folder names, CSV values, mask values, COCO categories)
into its label vocabulary; `LabelStandardizer` then expands abbreviations, unifies synonyms and merges
left/right variants, from a YAML mapping file (`resources/label_standardization.yaml` by default).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def _resource(name: str) -> Path:
    return Path(str(resources.files("gmaivl.dataset_builders") / "resources" / name))


@cache
def lexicon() -> dict[str, Any]:
    """The lexical tree: clinical tasks, departments, granularities, modality names."""
    with open(_resource("lexicon.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def modality_name(modality: str) -> str:
    """Readable modality used in questions ("MR" -> "MRI", "US" -> "ultrasound")."""
    names = lexicon()["modalities"]
    return names.get(modality, names.get(modality.upper(), modality))


class LabelStandardizer:
    """Apply the abbreviation, synonym and laterality rules of a mapping file to labels."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else _resource("label_standardization.yaml")
        with open(self.path, encoding="utf-8") as handle:
            rules = yaml.safe_load(handle) or {}
        self.abbreviations = {k.lower(): v for k, v in (rules.get("abbreviations") or {}).items()}
        self.synonyms = {k.lower(): v for k, v in (rules.get("synonyms") or {}).items()}
        words = (rules.get("laterality") or {}).get("words") or []
        self._laterality = (
            re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b[\s_\-]*", re.IGNORECASE)
            if words
            else None
        )

    def __call__(self, label: str) -> str:
        text = re.sub(r"[\s_]+", " ", str(label)).strip()
        key = text.lower()
        if key in self.abbreviations:
            text = self.abbreviations[key]
        if self._laterality is not None:
            merged = self._laterality.sub("", text).strip(" -_")
            if merged and merged != text:
                text = merged
        key = text.lower()
        text = self.synonyms.get(key, text)
        key = text.lower()
        text = self.abbreviations.get(key, text)
        # one case convention: sentence-case words are lower-cased, acronyms ("COVID-19") stay
        return " ".join(w.lower() if w[1:2].islower() else w for w in text.split(" "))
