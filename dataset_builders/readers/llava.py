"""`type: llava`: LLaVA-format instruction data, as GMAI-VL's release and PubMedVision ship it.

Annotations are a JSON list or JSON Lines of
`{"id", "image": "a.png" | ["a.png", ...], "conversations": [{"from": "human" | "gpt", "value"}]}`.
Images lie in a folder (`image_folder`, relative to the root) or inside zip archives
(`image_zips`, PubMedVision's `images_*.zip`), read in place: a path is matched to a member by its
full name, else by its file name, as `unzip -j images_*.zip -d images/` lays them out. A GMAI-VL /
xtuner `example_list.json` (`meta`) names several annotation files, each with its `image_dir` and
`sample_ratio`.

Every row keeps its conversation: it becomes one `instruct` row with its images (`<image>`
placeholders are taken out; the trainers and the LLaVA export put the images before the first user
turn), nothing is generated for it. A row without an image and without `<image>` becomes a text row
(`text_single` / `text_multi`). A row whose image is missing, whose path is absolute, climbs out
(`..`) or resolves outside the image folder (symlinks), or whose placeholders do not match its
images, is a counted failure; the build goes on. Row `id`s and every other field stay unpublished;
the conversation text is published as it is.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..adapters import Item, ItemError, SourceReader, TextSample, register_source
from ..imaging import InputLimits, Oversize, SourceError, gray_to_rgb, resize_rgb
from ..lines import iter_json_lines, load_json
from ..records import MedicalRecord, encode_png
from ..source_spec import ReaderOptions, SourceSpec
from ._common import cached, decode_image, safe_relative, within

PLACEHOLDER = re.compile(r"[ \t]*<image>[ \t]*\n?")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class DialogueRecord(MedicalRecord):
    """A record whose source gave its dialogue: `generate.RowGenerator` publishes `given_messages`
    as one `instruct` row with this image and `extra_images` (PNG bytes), and generates nothing."""

    given_messages: list[dict[str, str]] = field(default_factory=list)
    extra_images: list[bytes] = field(default_factory=list)

    def to_row(self) -> dict[str, Any]:
        row = super().to_row()
        row.pop("given_messages", None)
        row.pop("extra_images", None)
        return row


@dataclass
class LlavaOptions(ReaderOptions):
    annotations: str | list[str] | None = None  # LLaVA JSON / JSONL file(s), relative to the root
    meta: str | None = None  # or a GMAI-VL / xtuner `example_list.json` naming the annotation files
    image_folder: str = "."  # `image` paths are relative to it (with `annotations`)
    image_zips: list[str] = field(default_factory=list)  # glob patterns: zip archives holding the images


@dataclass
class _Dataset:
    annotations: str
    image_dir: str
    sample_ratio: float = 1.0


def parse_meta(text: str, what: str) -> list[_Dataset]:
    """An `example_list.json`: `{name: {image_dir, annotations, sample_ratio, ...}}` or a list of such
    entries. Trailing commas (GMAI-VL's own example has one) are accepted; `length`,
    `data_augment` and other keys are ignored."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = json.loads(re.sub(r",(\s*[}\]])", r"\1", text))
        except json.JSONDecodeError as error:
            raise SourceError(f"{what}: the meta file is not JSON ({error})") from None
    entries = list(data.values()) if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise SourceError(f"{what}: the meta file must map dataset names to entries (or list entries)")
    datasets = []
    for number, entry in enumerate(entries, 1):
        entry = entry if isinstance(entry, dict) else {}
        annotations, image_dir = entry.get("annotations"), entry.get("image_dir") or ""
        ratio = entry.get("sample_ratio", 1.0)
        if not isinstance(annotations, str) or not annotations or not isinstance(image_dir, str):
            raise SourceError(f"{what}: meta entry {number} needs `annotations` (a file) and `image_dir`")
        if not isinstance(ratio, int | float) or isinstance(ratio, bool) or ratio <= 0:
            raise SourceError(f"{what}: meta entry {number}: sample_ratio must be a number > 0")
        datasets.append(_Dataset(annotations, image_dir, float(ratio)))
    return datasets


def conversation(row: dict[str, Any]) -> tuple[list[dict[str, str]], int]:
    """LLaVA turns -> `[{"role", "content"}]` without `<image>` placeholders, and their count."""
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ItemError("bad_conversation", "no `conversations` list")
    messages, placeholders = [], 0
    for turn in turns:
        role = (
            ROLES.get(str(turn.get("from", turn.get("role", ""))).lower()) if isinstance(turn, dict) else None
        )
        value = turn.get("value", turn.get("content")) if isinstance(turn, dict) else None
        if role is None or not isinstance(value, str):
            raise ItemError(
                "bad_conversation", "a turn without a known `from` (human, gpt) or a text `value`"
            )
        placeholders += value.count("<image>")
        text = PLACEHOLDER.sub("", value).strip()
        if role == "assistant" and not text:
            raise ItemError("bad_conversation", "an empty gpt turn")
        messages.append({"role": role, "content": text})
    roles = {m["role"] for m in messages}
    if "user" not in roles or "assistant" not in roles:
        raise ItemError("bad_conversation", "the conversation needs a human and a gpt turn")
    return messages, placeholders


class ZipImages:
    """The members of zip archives, by full name and by file name; read in place, never extracted."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        try:
            self.archives = [zipfile.ZipFile(path) for path in paths]
        except (OSError, zipfile.BadZipFile) as error:
            raise SourceError(f"cannot open the image archives ({error})") from error
        self.by_path: dict[str, tuple[int, zipfile.ZipInfo]] = {}
        self.by_name: dict[str, list[tuple[int, zipfile.ZipInfo]]] = {}
        for index, archive in enumerate(self.archives):
            for info in archive.infolist():
                if info.is_dir():
                    continue
                self.by_path.setdefault(info.filename, (index, info))
                self.by_name.setdefault(PurePosixPath(info.filename).name, []).append((index, info))

    def find(self, value: str) -> tuple[int, zipfile.ZipInfo]:
        if value in self.by_path:
            return self.by_path[value]
        matches = self.by_name.get(PurePosixPath(value).name, [])
        if not matches:
            raise ItemError("missing_image", "no zip member has the image's path or file name")
        if len(matches) > 1:
            raise ItemError("ambiguous_image", f"{len(matches)} zip members have the image's file name")
        return matches[0]

    def read(self, index: int, info: zipfile.ZipInfo, limits: InputLimits) -> bytes:
        declared = info.file_size
        if declared > limits.max_decoded_bytes or (
            declared > limits.ratio_floor_bytes
            and declared / max(info.compress_size, 1) > limits.max_compression_ratio
        ):
            raise Oversize(f"a zip member declares {declared:,} bytes, over the input limits")
        return self.archives[index].read(info)


@register_source
class Llava(SourceReader):
    """LLaVA JSON / JSONL instruction data (images in a folder or in zip archives), or a GMAI-VL /
    xtuner `example_list.json` of such files; the given conversations become `instruct` rows."""

    type_name = "llava"
    Options = LlavaOptions
    task_type = "instruction"
    needs_image_fields = False  # LLaVA corpora mix modalities; `modality`/`department` are optional

    @classmethod
    def check_spec(cls, source: SourceSpec) -> str | None:
        options = source.options
        if (options.annotations is None) == (options.meta is None):
            return "a llava source needs exactly one of `annotations` (LLaVA JSON / JSONL) or `meta` (example_list.json)"
        return None

    # -- the datasets of the source ------------------------------------------------------------
    @cached_property
    def datasets(self) -> list[_Dataset]:
        options = self.options
        if options.meta is not None:
            path = self.source.path(options.meta)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise SourceError(f"{self.what}: cannot read {path} ({error})") from error
            return parse_meta(text, self.what)
        files = [options.annotations] if isinstance(options.annotations, str) else list(options.annotations)
        return [_Dataset(name, options.image_folder) for name in files]

    def annotation_path(self, k: int) -> Path:
        return self.source.path(self.datasets[k].annotations)

    def image_root(self, k: int) -> Path:
        return self.source.path(self.datasets[k].image_dir or ".")

    def rows(self, k: int) -> list[Any]:
        memo = self.__dict__.setdefault("_rows", {})
        if k not in memo:
            path = self.annotation_path(k)
            memo[k] = cached("llava-rows", [path], lambda: self._load(path))
        return memo[k]

    def _load(self, path: Path) -> list[Any]:
        limits = self.source.limits
        try:
            if path.name.lower().endswith(".jsonl"):
                return [row for _, row in iter_json_lines(path, limits.max_line_bytes)]
            data = load_json(path, limits)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SourceError(f"{self.what}: cannot read {path} ({error})") from error
        if not isinstance(data, list):
            raise SourceError(f"{self.what}: {path} is not a JSON list of LLaVA entries")
        return data

    def selected(self, k: int) -> list[int]:
        """Row indices of dataset k: all, or a deterministic `sample_ratio` share (without repeats;
        ratios above 1, oversampling, are a training choice: every row is kept once)."""
        count = len(self.rows(k))
        ratio = self.datasets[k].sample_ratio
        if ratio >= 1.0:
            return list(range(count))
        seed = hashlib.sha256(
            f"{self.source.name}\x1f{k}\x1f{self.datasets[k].annotations}".encode()
        ).digest()
        return sorted(random.Random(int.from_bytes(seed[:8], "big")).sample(range(count), int(count * ratio)))

    @cached_property
    def zip_paths(self) -> list[Path]:
        base = self.source.base_dir
        paths = sorted({p for pattern in self.options.image_zips for p in base.glob(pattern) if p.is_file()})
        if self.options.image_zips and not paths:
            raise SourceError(f"{self.what}: no zip archive matches image_zips {self.options.image_zips}")
        return paths

    @cached_property
    def zips(self) -> ZipImages:
        return cached("llava-zips", self.zip_paths, lambda: ZipImages(self.zip_paths), per_process=True)

    # -- planning ------------------------------------------------------------------------------
    def list_items(self) -> list[list[int]]:
        return [[k, i] for k in range(len(self.datasets)) for i in self.selected(k)]

    def shared_files(self) -> list[Path]:
        meta = [self.source.path(self.options.meta)] if self.options.meta is not None else []
        return [*meta, *(self.annotation_path(k) for k in range(len(self.datasets))), *self.zip_paths]

    def image_values(self, item: list[int]) -> list[str]:
        k, i = item
        row = self.rows(k)[i]
        value = row.get("image", row.get("images")) if isinstance(row, dict) else None
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        return [v for v in values if isinstance(v, str) and v.strip()]

    def item_files(self, item: list[int]) -> list[Path]:
        if self.options.image_zips:
            return []  # the zips are shared files
        files = []
        for value in self.image_values(item):
            try:
                files.append(self.image_root(item[0]) / safe_relative(value))
            except ItemError:
                continue
        return files

    def item_name(self, item: list[int]) -> str:
        k, i = item
        return f"entry {i + 1}" if len(self.datasets) == 1 else f"annotations {k + 1} entry {i + 1}"

    def raw_label_space(self) -> list[str]:
        return [self.source.label] if self.source.label else []

    # -- reading -------------------------------------------------------------------------------
    def read_item(self, item: list[int]) -> Iterator[Item]:
        k, i = item
        row = self.rows(k)[i]
        if isinstance(row, dict) and "__error__" in row:
            raise ItemError(row.get("__kind__", "invalid_json"), row["__error__"])
        if not isinstance(row, dict):
            raise ItemError("bad_row", "the entry is not a JSON object")
        messages, placeholders = conversation(row)
        raw = row.get("image", row.get("images"))
        if raw is None or raw == "" or raw == []:
            if placeholders:
                raise ItemError("missing_image", "the conversation has <image> but the entry names no image")
            yield TextSample(f"{self.source.name}/{k}.{i}", self.source.name, messages, self.source.split)
            return
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
            raise ItemError("missing_image", "`image` must be a path or a list of paths")
        if placeholders not in (0, len(values)):
            raise ItemError(
                "image_count_mismatch", f"{placeholders} <image> placeholders and {len(values)} image paths"
            )
        images = [self.image(k, value) for value in values]
        for _, meta, modality, _ in images[:1]:
            yield from self.notices(meta, modality)
        pixels = [self.pixels(plane, modality) for plane, _, modality, _ in images]
        label = self.label(self.source.label) if self.source.label else ""
        first_rel = images[0][3]
        record = self.record(
            self.record_id(first_rel, f"#a{k}.{i}"), pixels[0], label, first_rel, meta=images[0][1]
        )
        extra = []
        for more in pixels[1:]:
            resized, _, _ = resize_rgb(more, self.source.min_side, self.source.max_side)
            extra.append(encode_png(gray_to_rgb(resized)))
        fields = {name: getattr(record, name) for name in MedicalRecord.__dataclass_fields__}
        yield DialogueRecord(**fields, given_messages=messages, extra_images=extra)

    def image(self, k: int, value: str) -> tuple[np.ndarray, dict[str, Any], str, str]:
        """(pixels, meta, modality, rel) of one image of a row."""
        value = safe_relative(value)
        if self.options.image_zips:
            archives = self.zips
            index, info = archives.find(value)
            data = archives.read(index, info, self.source.limits)
            plane = decode_image(data, self.source.limits, "a zip member")
            return plane, {}, self.source.modality, f"{self.rel(archives.paths[index])}/{info.filename}"
        root = self.image_root(k)
        path = within(root / value, root)
        if not path.is_file():
            raise ItemError("missing_image", "no image file at the row's path")
        plane, meta, modality = self.frames(path)[0]
        return plane, meta, modality, self.rel(path)
