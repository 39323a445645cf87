"""Declarative build specs (YAML): one small block per source, plus generation / QC / publish options.

A build spec looks like::

    name: my-corpus
    seed: 0
    sources:
      - name: fundus-dr               # becomes `source_dataset`
        type: class_folders           # a registered source reader (see `adapters.source_types()`)
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

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml


class SpecError(ValueError):
    """An invalid spec: the message names the spec file and the field."""


# -------------------------------------------------------------------------------------------------
# typed options: mapping -> dataclass, with unknown keys and wrong types named
# -------------------------------------------------------------------------------------------------
def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"a list of {_describe(typing.get_args(annotation)[0])}"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"a mapping {_describe(key)} -> {_describe(value)}"
    if dataclasses.is_dataclass(annotation):
        return "a mapping with keys " + ", ".join(f.name for f in fields(annotation))
    if annotation is type(None):
        return "null"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


class _Mismatch(Exception):
    pass


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """`value` checked against (and converted to) `annotation`; raises `_Mismatch` or `SpecError`."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            try:
                return _coerce(value, arm, where)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in typing.get_args(annotation):
            return value
        raise _Mismatch
    if annotation is type(None):
        if value is None:
            return None
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch
        (inner,) = typing.get_args(annotation)
        return [_coerce(v, inner, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        key_type, value_type = typing.get_args(annotation)
        out = {}
        for key, item in value.items():
            if key_type is int and isinstance(key, str) and key.strip().lstrip("-").isdigit():
                key = int(key)
            elif key_type is str and isinstance(key, int | float | bool):
                key = str(key)
            out[_coerce(key, key_type, where)] = _coerce(item, value_type, where)
        return out
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise _Mismatch
        return options_from_mapping(annotation, value, where)
    raise TypeError(f"unsupported option annotation {annotation!r}")  # pragma: no cover


def closest_key(key: str, valid: list[str]) -> str:
    """' (did you mean 'label'?)' for a typo, '' when nothing is close."""
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def options_from_mapping(cls: type, raw: dict[str, Any], where: str, ignore: tuple[str, ...] = ()) -> Any:
    """Build the options dataclass `cls` from a mapping; unknown keys and wrong types raise SpecError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.init]
    kwargs = {}
    for key, value in raw.items():
        if key in ignore:
            continue
        if key not in names:
            raise SpecError(
                f"{where}: unknown key {key!r}{closest_key(str(key), names)}; valid keys: {', '.join(names)}"
            )
        try:
            kwargs[key] = _coerce(value, hints[key], f"{where}: {key}")
        except _Mismatch:
            raise SpecError(f"{where}: key {key!r} must be {_describe(hints[key])}, got {value!r}") from None
    options = cls(**kwargs)
    check = getattr(options, "validate", None)
    if check is not None:
        problem = check()
        if problem:
            raise SpecError(f"{where}: {problem}")
    return options


# -------------------------------------------------------------------------------------------------
# the spec
# -------------------------------------------------------------------------------------------------
@dataclass
class MaskOptions:
    """Segmentation masks -> boxes (one per label value and connected component)."""

    values: dict[int, str] = field(default_factory=dict)  # mask value -> raw label (0 = background)
    min_area: int = 16  # smaller components are dropped ("tiny_component")
    min_area_fraction: float = 0.0  # ... or smaller than this fraction of the image
    max_per_label: int = 0  # keep the largest N components per label (0 = all)
    connectivity: Literal[1, 2] = 2

    def validate(self) -> str | None:
        if self.min_area < 0 or not 0.0 <= self.min_area_fraction < 1.0 or self.max_per_label < 0:
            return "mask: min_area, max_per_label must be >= 0 and min_area_fraction in [0, 1)"
        return None


@dataclass
class SliceOptions:
    """3D volumes -> 2D slices."""

    axis: Literal[0, 1, 2] = 0  # 0 = axial in the RAS layout of the readers
    step: int = 1  # every `step`-th slice
    keep: Literal["foreground", "all", "middle"] | None = None  # default: foreground with labels, else middle
    max_per_volume: int = 0  # 0 = no limit

    def validate(self) -> str | None:
        if self.step < 1 or self.max_per_volume < 0:
            return "slices: step must be >= 1 and max_per_volume >= 0"
        return None


@dataclass
class ReaderOptions:
    """Base of every layout's options (a layout without own keys uses it as it is)."""


@dataclass
class SourceSpec:
    """The keys every source accepts; `options` holds the typed keys of its layout."""

    name: str
    type: str
    root: str = "."
    modality: str = ""
    department: str = ""
    clinical_task: str = "Disease Diagnosis"
    task_type: str = ""
    split: str = "train"
    label: str | None = None  # one label for every item of the source
    # where labels may come from a path: "folder" (the parent folder's name). Opt-in for every
    # layout but class_folders (whose folder names are class names by definition).
    label_from: Literal["folder"] | None = None
    label_map: dict[str, str] = field(default_factory=dict)
    strict_labels: bool = True
    granularity: Literal["image", "box", "mask", "contour"] | None = None
    window: str | list[float] | None = None
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    min_side: int | None = None
    max_side: int | None = 1024
    slices: SliceOptions = field(default_factory=SliceOptions)
    mask: MaskOptions = field(default_factory=MaskOptions)
    # publish relative paths as `source_file` / in ids instead of keyed hashes (opt-in, per source)
    publish_paths: bool = False
    unit_size: int = 64
    options: ReaderOptions = field(default_factory=ReaderOptions)
    spec_file: str = ""

    def validate(self) -> str | None:
        if self.window is not None and not isinstance(self.window, str) and len(self.window) != 2:
            return f"window must be a preset name or [level, width], got {self.window!r}"
        if len(self.percentiles) != 2 or not 0.0 <= self.percentiles[0] < self.percentiles[1] <= 100.0:
            return (
                f"percentiles must be [lower, upper] with 0 <= lower < upper <= 100, got {self.percentiles}"
            )
        for key in ("min_side", "max_side"):
            value = getattr(self, key)
            if value is not None and value < 1:
                return f"{key} must be >= 1, got {value}"
        if self.unit_size < 1:
            return "unit_size must be >= 1"
        return None

    @property
    def base_dir(self) -> Path:
        base = Path(self.spec_file).parent if self.spec_file else Path.cwd()
        root = Path(self.root)
        return root if root.is_absolute() else (base / root)

    def path(self, value: str) -> Path:
        """Resolve a path given in the spec relative to the source root."""
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path

    def where(self) -> str:
        return f"{self.spec_file or '<spec>'}: source {self.name!r}"


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
    license: str = "other"
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
    from .adapters import reader_class, source_types

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
    if (raw.get("generation") or {}).get("judge") is not None:
        _check_block(path, "generation.judge", raw["generation"]["judge"])
    return BuildSpec(
        name=str(raw.get("name") or path.stem),
        sources=sources,
        seed=int(raw.get("seed", 0)),
        description=str(raw.get("description", "")),
        license=str(raw.get("license", "other")),
        generation=dict(raw.get("generation") or {}),
        qc=dict(raw.get("qc") or {}),
        publish=dict(raw.get("publish") or {}),
        label_standardization=standardization,
        privacy=privacy,
        spec_file=str(path),
    )
