"""Declarative build specs (YAML): one small block per source, plus generation / QC / publish options.

A build spec looks like::

    name: my-corpus
    seed: 0
    sources:
      - name: fundus-dr               # becomes `source_dataset`
        type: class_folders           # see SOURCE_TYPES
        root: data/fundus             # relative to the spec file
        modality: fundus
        department: Ophthalmology
        clinical_task: Disease Diagnosis
        label_map: {DR: diabetic retinopathy, NORMAL: no abnormality}
      - include: more_sources.yaml    # a file holding one source or a list of sources
    generation: {backend: templates}
    qc: {min_image_side: 64}
    publish: {max_shard_size: 500MB}

New sources need no code: every supported layout is a `type`, everything else is data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

SOURCE_TYPES = ("class_folders", "csv", "coco", "mask_pairs", "nifti", "msd", "dicom", "text")
DEFAULT_TASK_TYPE = {
    "class_folders": "classification",
    "csv": "classification",
    "coco": "detection",
    "mask_pairs": "segmentation",
    "nifti": "segmentation",
    "msd": "segmentation",
    "dicom": "classification",
    "text": "text",
}
CONFIG_NAMES = ("caption", "instruct", "percept", "text_single", "text_multi")


class SpecError(ValueError):
    """An invalid spec: the message names the spec file and the field."""


@dataclass
class SourceSpec:
    name: str
    type: str
    root: str = "."
    modality: str = ""
    department: str = ""
    clinical_task: str = "Disease Diagnosis"
    task_type: str = ""
    split: str = "train"
    label: str | None = None
    label_map: dict[str, str] = field(default_factory=dict)
    strict_labels: bool = True
    window: str | list[float] | None = None
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    min_side: int | None = None
    max_side: int | None = 1024
    slices: dict[str, Any] = field(default_factory=dict)
    mask: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    unit_size: int = 64
    spec_file: str = ""

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
    spec_file: str = ""

    def fingerprint(self) -> str:
        """Hash of everything that changes the output; unit shards from another spec are not reused."""
        data = asdict(self)
        data.pop("spec_file")
        for source in data["sources"]:
            source.pop("spec_file")
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


_SOURCE_FIELDS = {f.name for f in fields(SourceSpec)}


def _source_from_dict(raw: dict[str, Any], spec_file: Path) -> SourceSpec:
    where = f"{spec_file}: source {raw.get('name', '?')!r}"
    if not isinstance(raw, dict):
        raise SpecError(f"{spec_file}: each source must be a mapping, got {type(raw).__name__}")
    for key in ("name", "type"):
        if not raw.get(key):
            raise SpecError(f"{where}: missing required field {key!r}")
    if raw["type"] not in SOURCE_TYPES:
        raise SpecError(f"{where}: unknown type {raw['type']!r}; supported: {', '.join(SOURCE_TYPES)}")
    known = {k: v for k, v in raw.items() if k in _SOURCE_FIELDS}
    # type-specific keys (csv file, coco annotations, ...) go to `options`
    options = dict(raw.get("options") or {})
    options.update({k: v for k, v in raw.items() if k not in _SOURCE_FIELDS})
    known["options"] = options
    known["label_map"] = {str(k): str(v) for k, v in (raw.get("label_map") or {}).items()}
    source = SourceSpec(**known, spec_file=str(spec_file))
    source.task_type = source.task_type or DEFAULT_TASK_TYPE[source.type]
    if source.type != "text" and not source.modality:
        raise SpecError(f"{where}: missing required field 'modality'")
    if source.type != "text" and not source.department:
        raise SpecError(f"{where}: missing required field 'department'")
    if source.unit_size < 1:
        raise SpecError(f"{where}: unit_size must be >= 1")
    return source


def load_build_spec(path: str | Path) -> BuildSpec:
    """Read a build spec YAML (with `include:` entries resolved) into a validated `BuildSpec`."""
    path = Path(path).resolve()
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SpecError(f"{path}: cannot read build spec ({error})") from error
    if not isinstance(raw, dict) or "sources" not in raw:
        raise SpecError(f"{path}: a build spec is a mapping with a 'sources' list")
    sources: list[SourceSpec] = []
    for entry in raw["sources"]:
        if isinstance(entry, str) or (isinstance(entry, dict) and "include" in entry):
            include = Path(entry if isinstance(entry, str) else entry["include"])
            include = include if include.is_absolute() else path.parent / include
            try:
                with open(include, encoding="utf-8") as handle:
                    loaded = yaml.safe_load(handle)
            except (OSError, yaml.YAMLError) as error:
                raise SpecError(f"{path}: cannot read included source spec {include} ({error})") from error
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
    unknown = set(raw) - {f.name for f in fields(BuildSpec)}
    if unknown:
        raise SpecError(f"{path}: unknown top-level keys {sorted(unknown)}")
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
        spec_file=str(path),
    )
