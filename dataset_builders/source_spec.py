"""One source of a build spec: `SourceSpec` (the keys every source has), `ReaderOptions` (the base of
each reader's layout options), `MaskOptions`, `SliceOptions`, and the typed coercion with "did you
mean" errors that reads them. Apart from `spec` (the whole build spec) so that the readers
(`adapters`, `readers/`) and the spec loader both import it and neither imports the other at load time.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .imaging import InputLimits


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
    # where labels may come from a path: "folder" (a folder's name). Opt-in for every layout but
    # class_folders (whose class folders are class names by definition).
    label_from: Literal["folder"] | None = None
    # which folder under the root names the class (1: `root/<class>/...`); deeper folders
    # (`root/<class>/<patient>/image.png`) are never label text, only part of the hashed id
    label_depth: int = 1
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
    # the source's terms, shown on the dataset card (not part of the unit fingerprints): a Hub
    # licence id (`cc-by-4.0`) or the licence's name, a link to its text, how to cite it, its home
    license: str | None = None
    license_link: str | None = None
    citation: str | None = None
    homepage: str | None = None
    # DICOM images whose header says `BurnedInAnnotation = YES` (a name or date drawn into the
    # pixels) are held back and counted unless the source opts in after review
    publish_burned_in: bool = False
    # checked from headers before decoding; an input over a limit is refused and counted
    limits: InputLimits = field(default_factory=InputLimits)
    # what tells a rebuild that a file changed: "stat" (size and mtime, the default) or "content"
    # (a digest of every file's bytes: for copies that keep both, at the cost of reading them)
    fingerprint: Literal["stat", "content"] = "stat"
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
        if self.label_depth < 1:
            return f"label_depth must be >= 1 (1: the first folder under the root), got {self.label_depth}"
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
