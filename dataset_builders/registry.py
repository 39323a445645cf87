"""Which reader reads each YAML `type`.

Readers register themselves with `adapters.register_source`, one module each in `readers/` (the
built-in layouts first, then the published ones). Importing this module imports them all, so a
lookup here sees every reader; nothing below it imports this module (no cycle).
"""

from __future__ import annotations

from collections.abc import Iterator

from . import readers  # noqa: F401  (importing registers the layout readers)
from .adapters import _READERS, Item, SourceReader, WorkUnit
from .ids import IdHasher
from .labels import LabelStandardizer
from .source_spec import SourceSpec


def source_types() -> tuple[str, ...]:
    """The registered `type` names, built-in readers first."""
    return tuple(_READERS)


def reader_class(type_name: str) -> type[SourceReader]:
    return _READERS[type_name]


def make_reader(
    source: SourceSpec,
    standardizer: LabelStandardizer | None = None,
    label_space: list[str] | None = None,
    ids: IdHasher | None = None,
) -> SourceReader:
    return reader_class(source.type)(source, standardizer, label_space, ids)


def plan_units(source: SourceSpec) -> list[WorkUnit]:
    """A source's work units in deterministic order (file listing only)."""
    return make_reader(source).plan()


def read_unit(
    source: SourceSpec,
    unit: WorkUnit,
    standardizer: LabelStandardizer,
    space: list[str],
    ids: IdHasher | None = None,
) -> Iterator[Item]:
    """Turn one work unit into records; every failure is yielded, never raised."""
    yield from make_reader(source, standardizer, space, ids).read_unit(unit)
