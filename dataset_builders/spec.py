"""Declarative build specs (YAML): one small block per source, plus generation / QC / publish options.

A build spec looks like::

    name: my-corpus
    seed: 0
    sources:
      - name: fundus-dr               # becomes `source_dataset`
        type: class_folders           # a registered source reader (see `registry.source_types()`)
        root: data/fundus             # relative to the spec file
        modality: fundus
        department: Ophthalmology
        clinical_task: Disease Diagnosis
        label_map: {DR: diabetic retinopathy, NORMAL: no abnormality}
      - include: more_sources.yaml    # a file holding one source or a list of sources
    generation: {backend: templates}
    qc: {min_image_side: 64}
    publish: {max_shard_size: 500MB}
    privacy: {id_key_file: id.key}    # optional: the key of the hashed ids (see README)

Every key is typed: the common keys are the fields of `SourceSpec` (`mask` and `slices` are the
dataclasses `MaskOptions` and `SliceOptions`), the keys of one layout are the fields of its reader's
`Options` dataclass. An unknown or mistyped key fails when the spec is loaded, before anything runs,
naming the key and the closest valid one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .source_spec import (
    SourceSpec,
    SpecError,
    closest_key,
    options_from_mapping,
)


@dataclass
class PrivacyOptions:
    """Where the key of the hashed ids comes from (see `ids.resolve_id_key`)."""

    id_key_file: str | None = None  # relative to the spec file
    id_key_env: str = "GMAIVL_ID_KEY"


@dataclass
class BuildSpec:
    name: str
    sources: list[SourceSpec]
    seed: int = 0
    description: str = ""
    # the card's licence: a Hub licence id, or `other` with `license_name` (an id such as
    # `my-license-1.0`) and `license_link` (a URL or a file of the repo); by default derived from
    # the sources' `license` (one shared Hub id, else `other`), see `card.card_license`
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    qc: dict[str, Any] = field(default_factory=dict)
    publish: dict[str, Any] = field(default_factory=dict)
    label_standardization: str | None = None
    privacy: PrivacyOptions = field(default_factory=PrivacyOptions)
    spec_file: str = ""

    def fingerprint_label_rules(self) -> str | None:
        """Content hash of the label standardisation file (its edits change the labels)."""
        if self.label_standardization and Path(self.label_standardization).is_file():
            return hashlib.sha256(Path(self.label_standardization).read_bytes()).hexdigest()
        return self.label_standardization

    def fingerprint(self) -> str:
        """Hash of the spec's content (paths as written, the label rules file's content included)."""
        data = asdict(self)
        data.pop("spec_file")
        for source in data["sources"]:
            source.pop("spec_file")
        data["label_standardization"] = self.fingerprint_label_rules()
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The keys the build reads from the spec's other blocks (checked for typos like the source keys).
BLOCK_KEYS: dict[str, tuple[str, ...]] = {
    "generation": (
        "backend",
        "openai",
        "transformers",
        "configs",
        "translate_fraction",
        "instruct_pairs",
        "send_image",
        "max_attempts",
        "backoff",
        "breaker_failures",
        "judge",
    ),
    "generation.judge": ("enabled", "samples", "threshold", "configs", "drop_rejected"),
    "qc": (
        "min_image_side",
        "phash_distance",
        "min_caption_tokens",
        "max_tokens",
        "minhash_configs",
        "minhash_threshold",
        "minhash_num_perm",
        "decontaminate",
        "decontamination_distance",
    ),
    "publish": ("max_shard_size", "max_row_group_size", "row_group_rows"),
}


def _check_block(path: Path, name: str, block: Any) -> None:
    if not isinstance(block, dict):
        raise SpecError(f"{path}: {name!r} must be a mapping, got {block!r}")
    valid = list(BLOCK_KEYS[name])
    for key in block:
        if key not in valid:
            raise SpecError(
                f"{path}: {name}: unknown key {key!r}{closest_key(str(key), valid)}; valid keys: {', '.join(valid)}"
            )


_COMMON_KEYS = [f.name for f in fields(SourceSpec) if f.name not in ("spec_file", "options")]


def _source_from_dict(raw: Any, spec_file: Path) -> SourceSpec:
    from .registry import reader_class, source_types

    if not isinstance(raw, dict):
        raise SpecError(f"{spec_file}: each source must be a mapping, got {type(raw).__name__}")
    where = f"{spec_file}: source {raw.get('name', '?')!r}"
    for key in ("name", "type"):
        if not raw.get(key):
            raise SpecError(f"{where}: missing required field {key!r}")
    if raw["type"] not in source_types():
        raise SpecError(
            f"{where}: unknown type {raw['type']!r}{closest_key(str(raw['type']), list(source_types()))}; "
            f"supported: {', '.join(source_types())}"
        )
    reader = reader_class(raw["type"])
    option_keys = [f.name for f in fields(reader.Options)]
    common = {k: v for k, v in raw.items() if k in _COMMON_KEYS}
    layout = dict(raw.get("options") or {})
    for key, value in raw.items():
        if key in _COMMON_KEYS or key == "options":
            continue
        if key not in option_keys:
            valid = _COMMON_KEYS + option_keys
            raise SpecError(
                f"{where}: unknown key {key!r}{closest_key(str(key), valid)} for type {raw['type']!r}; "
                f"its own keys: {', '.join(option_keys) or 'none'}"
            )
        layout[key] = value
    source = options_from_mapping(SourceSpec, common, where)
    source.options = options_from_mapping(reader.Options, layout, f"{where} ({raw['type']} options)")
    source.spec_file = str(spec_file)
    source.task_type = source.task_type or reader.task_type
    if reader.needs_image_fields:
        for key in ("modality", "department"):
            if not getattr(source, key):
                raise SpecError(f"{where}: missing required field {key!r}")
    problem = reader.check_spec(source)
    if problem:
        raise SpecError(f"{where}: {problem}")
    return source


def _read_yaml(path: Path, what: str, context: Path | None = None) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        prefix = f"{context}: " if context else f"{path}: "
        raise SpecError(f"{prefix}cannot read {what} {path} ({error})") from error


LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]*")


def _optional_str(raw: dict[str, Any], key: str, path: Path) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise SpecError(f"{path}: key {key!r} must be a string, got {value!r}")
    return value or None


def load_build_spec(path: str | Path) -> BuildSpec:
    """Read a build spec YAML (with `include:` entries resolved) into a validated `BuildSpec`."""
    path = Path(path).resolve()
    raw = _read_yaml(path, "build spec") or {}
    if not isinstance(raw, dict) or "sources" not in raw:
        raise SpecError(f"{path}: a build spec is a mapping with a 'sources' list")
    top_keys = [f.name for f in fields(BuildSpec) if f.name != "spec_file"]
    for key in raw:
        if key not in top_keys:
            raise SpecError(f"{path}: unknown top-level key {key!r}{closest_key(str(key), top_keys)}")
    if not isinstance(raw["sources"], list):
        raise SpecError(f"{path}: 'sources' must be a list")
    sources: list[SourceSpec] = []
    for entry in raw["sources"]:
        if isinstance(entry, str) or (isinstance(entry, dict) and "include" in entry):
            include = Path(entry if isinstance(entry, str) else entry["include"])
            include = include if include.is_absolute() else path.parent / include
            loaded = _read_yaml(include, "included source spec", path)
            for item in loaded if isinstance(loaded, list) else [loaded]:
                sources.append(_source_from_dict(item, include.resolve()))
        else:
            sources.append(_source_from_dict(entry, path))
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{path}: duplicate source names {duplicates}")
    standardization = raw.get("label_standardization")
    if standardization and not Path(standardization).is_absolute():
        standardization = str(path.parent / standardization)
    privacy = options_from_mapping(PrivacyOptions, dict(raw.get("privacy") or {}), f"{path}: privacy")
    if privacy.id_key_file and not Path(privacy.id_key_file).is_absolute():
        privacy.id_key_file = str(path.parent / privacy.id_key_file)
    for block in ("generation", "qc", "publish"):
        _check_block(path, block, raw.get(block) or {})
    license_name = _optional_str(raw, "license_name", path)
    if license_name and not LICENSE_ID.fullmatch(license_name):
        raise SpecError(
            f"{path}: license_name must be an id of lowercase letters, digits, '.', '+' and '-' "
            f"(e.g. my-license-1.0), got {license_name!r}"
        )
    if (raw.get("generation") or {}).get("judge") is not None:
        _check_block(path, "generation.judge", raw["generation"]["judge"])
    return BuildSpec(
        name=str(raw.get("name") or path.stem),
        sources=sources,
        seed=int(raw.get("seed", 0)),
        description=str(raw.get("description", "")),
        license=_optional_str(raw, "license", path),
        license_name=license_name,
        license_link=_optional_str(raw, "license_link", path),
        generation=dict(raw.get("generation") or {}),
        qc=dict(raw.get("qc") or {}),
        publish=dict(raw.get("publish") or {}),
        label_standardization=standardization,
        privacy=privacy,
        spec_file=str(path),
    )
