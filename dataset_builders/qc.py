"""Quality control (the Lingshu paper Sec. 2.1.4; the GMAI-VL paper Part 4): every drop is counted by reason.

- image size filter (short side below `min_image_side`, default 64 px);
- exact image duplicates by pixel md5 and near duplicates by perceptual hash (Hamming distance
  <= `phash_distance`, default 0 as in Lingshu), across sources; several records of one image
  (one per box) are not duplicates of each other;
- decontamination against benchmark images given as a folder or a VLMEvalKit-style TSV (base64
  `image` column): md5 or pHash within `decontamination_distance`;
- text length filters (tokens: words, numbers, punctuation, CJK characters): caption answers under
  `min_caption_tokens` (10) and any row over `max_tokens` (1024) are dropped;
- near-duplicate texts by MinHash LSH (Jaccard >= `minhash_threshold`, default 0.9) in the configs
  listed in `minhash_configs` (the text-only ones by default: template questions repeat on purpose).

State is kept as compact hashes only, so memory grows by a few dozen bytes per image, never by images.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .imaging import IMAGE_SUFFIXES, read_image, to_rgb8
from .records import image_phash, pixel_md5

_TOKEN = re.compile(r"[\u4e00-\u9fff]|\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Word-level token count (each CJK character is a token), tokenizer-independent."""
    return len(_TOKEN.findall(text))


#: pHash Hamming distance within which a training image counts as a benchmark image, both when
#: a build drops them (`qc.decontamination_distance`) and in `gmaivl eval decontam`: re-encoded
#: and slightly resized copies differ by a bit or two.
DECONTAMINATION_DISTANCE = 2


class HammingIndex:
    """64-bit hashes within Hamming distance d of a query (pigeonhole: d+1 bit bands, exact lookups).

    Two hashes within distance d agree exactly on at least one of d+1 disjoint bands, so a query
    only compares against the hashes that share one of its band values.
    """

    def __init__(self, distance: int = 0) -> None:
        if not 0 <= int(distance) < 64:
            raise ValueError(f"Hamming distance must be in [0, 63], got {distance}")
        self.distance = int(distance)
        self.bands = self.distance + 1
        self.width = 64 // self.bands
        self.tables: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        self.owners: dict[int, list[Any]] = {}

    def _band_keys(self, value: int) -> list[int]:
        keys = []
        for band in range(self.bands):
            shift = band * self.width
            bits = 64 - shift if band == self.bands - 1 else self.width
            keys.append((value >> shift) & ((1 << bits) - 1))
        return keys

    def _near(self, value: int) -> Iterator[tuple[int, int]]:
        """(stored hash, distance) for every stored hash within the distance, exact match first."""
        if value in self.owners:
            yield value, 0
        if self.distance == 0:
            return
        seen = {value}
        for band, key in enumerate(self._band_keys(value)):
            for candidate in self.tables[band].get(key, ()):
                if candidate not in seen:
                    seen.add(candidate)
                    distance = (candidate ^ value).bit_count()
                    if distance <= self.distance:
                        yield candidate, distance

    def find(self, value: int) -> Any | None:
        """The first owner of a stored hash within the distance, or None."""
        return next((self.owners[stored][0] for stored, _ in self._near(value)), None)

    def find_all(self, value: int) -> list[tuple[Any, int]]:
        """Every (owner, distance) within the distance."""
        return [(owner, d) for stored, d in self._near(value) for owner in self.owners[stored]]

    def add(self, value: int, owner: Any) -> None:
        if value in self.owners:
            self.owners[value].append(owner)
            return
        self.owners[value] = [owner]
        if self.distance:
            for band, key in enumerate(self._band_keys(value)):
                self.tables[band].setdefault(key, []).append(value)

    def __len__(self) -> int:
        return len(self.owners)


def owner_key(record_id: str) -> int:
    """The image a record belongs to: several boxes of one image share it."""
    image_id = record_id.split("#b", 1)[0].split("#a", 1)[0]
    return hash_int(image_id)


def hash_int(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class BenchmarkIndex:
    """md5 and pHash of benchmark images, for decontamination."""

    def __init__(self, distance: int = 2) -> None:
        self.md5: set[str] = set()
        self.phash = HammingIndex(distance)
        self.count = 0

    def add_image(self, rgb: np.ndarray) -> None:
        self.md5.add(pixel_md5(rgb))
        self.phash.add(int(image_phash(rgb), 16), self.count)
        self.count += 1

    def add_folder(self, folder: str | Path) -> None:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
                self.add_image(to_rgb8(read_image(path), "other"))

    def add_tsv(self, path: str | Path, column: str = "image") -> None:
        """VLMEvalKit TSV: base64 images in `image` (rows that reference another index are skipped)."""
        from gmaivl.core.tsv import iter_tsv_rows, tsv_images

        for line, row in iter_tsv_rows(path):
            for image in tsv_images(row.get(column), f"{path}:{line}: column {column!r}"):
                self.add_image(np.asarray(image))

    def matches(self, md5: str, phash: str) -> bool:
        return md5 in self.md5 or self.phash.find(int(phash, 16)) is not None


class QCRules:
    """The checks of one row that need no other row: image size and benchmark decontamination of a
    record, the token limits of a row, and the MinHash LSH band keys of a text. Every publish stage
    that needs them builds its own (the benchmark index is small); `QualityControl` adds the
    cross-row state of the sequential checks, `publish` the distributed ones."""

    def __init__(self, options: dict[str, Any], base_dir: Path | None = None) -> None:
        self.min_side = int(options.get("min_image_side", 64))
        self.phash_distance = int(options.get("phash_distance", 0))
        self.min_caption_tokens = int(options.get("min_caption_tokens", 10))
        self.max_tokens = int(options.get("max_tokens", 1024))
        self.minhash_configs = set(options.get("minhash_configs", ["text_single", "text_multi"]))
        self.minhash_threshold = float(options.get("minhash_threshold", 0.9))
        self.num_perm = int(options.get("minhash_num_perm", 128))
        self.benchmarks = BenchmarkIndex(
            int(options.get("decontamination_distance", DECONTAMINATION_DISTANCE))
        )
        for entry in options.get("decontaminate", []) or []:
            path = Path(entry)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            if path.is_dir():
                self.benchmarks.add_folder(path)
            elif path.suffix.lower() == ".tsv":
                self.benchmarks.add_tsv(path)
            else:
                raise ValueError(f"qc.decontaminate: {path} is neither a folder of images nor a .tsv file")
        self._bands: list[tuple[int, int]] | None = None

    def record_reason(self, record: dict[str, Any]) -> str | None:
        """`image_too_small` or `benchmark_contamination` (checked in this order), else None."""
        if min(int(record["width"]), int(record["height"])) < self.min_side:
            return "image_too_small"
        if self.benchmarks.count and self.benchmarks.matches(record["image_md5"], record["phash"]):
            return "benchmark_contamination"
        return None

    def row_reason(self, row: dict[str, Any]) -> str | None:
        """`text_too_long` or `caption_too_short`, else None."""
        messages = row["messages"]
        if count_tokens(row_text(row)) > self.max_tokens:
            return "text_too_long"
        if row["config"] == "caption":
            answer = " ".join(m["content"] for m in messages if m["role"] == "assistant")
            if count_tokens(answer) < self.min_caption_tokens:
                return "caption_too_short"
        return None

    def minhash(self, text: str):
        from datasketch import MinHash

        tokens = [t.lower() for t in _TOKEN.findall(text)]
        shingles = {" ".join(tokens[i : i + 3]) for i in range(max(1, len(tokens) - 2))}
        signature = MinHash(num_perm=self.num_perm, seed=1)
        signature.update_batch([s.encode() for s in shingles])
        return signature

    def band_keys(self, text: str) -> list[bytes]:
        """One 16-byte key per LSH band of `MinHashLSH(minhash_threshold, num_perm)`: two texts are
        candidates of that index's `query` exactly when they share a key of the same band."""
        import hashlib

        if self._bands is None:
            from datasketch import MinHashLSH

            self._bands = MinHashLSH(threshold=self.minhash_threshold, num_perm=self.num_perm).hashranges
        values = self.minhash(text).hashvalues
        return [
            hashlib.blake2b(bytes(values[start:end].byteswap().data), digest_size=16).digest()
            for start, end in self._bands
        ]


def row_text(row: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in row["messages"])


class QualityControl:
    """Streaming QC state in one process (the checks of `QCRules`, then md5, pHash and MinHash
    against every earlier kept item); `check_record` / `check_row` return a drop reason or None.
    The build publishes with `publish`, which gives the same decisions from distributed stages."""

    def __init__(self, options: dict[str, Any], base_dir: Path | None = None) -> None:
        self.rules = QCRules(options, base_dir)
        self.md5_owner: dict[str, int] = {}
        self.phash = HammingIndex(self.rules.phash_distance)
        self.minhash_configs = self.rules.minhash_configs
        self._lsh: dict[str, Any] = {}
        self.dropped: Counter[str] = Counter()
        self.benchmarks = self.rules.benchmarks

    def check_record(self, record: dict[str, Any]) -> str | None:
        reason = self._record_reason(record)
        if reason:
            self.dropped[reason] += 1
        return reason

    def _record_reason(self, record: dict[str, Any]) -> str | None:
        reason = self.rules.record_reason(record)
        if reason:
            return reason
        owner = owner_key(record["record_id"])
        md5_owner = self.md5_owner.get(record["image_md5"])
        if md5_owner is not None and md5_owner != owner:
            return "duplicate_image_md5"
        phash = int(record["phash"], 16)
        phash_owner = self.phash.find(phash)
        if phash_owner is not None and phash_owner != owner:
            return "near_duplicate_image_phash"
        self.md5_owner.setdefault(record["image_md5"], owner)
        self.phash.add(phash, owner)
        return None

    def check_row(self, row: dict[str, Any]) -> str | None:
        reason = self._row_reason(row)
        if reason:
            self.dropped[reason] += 1
        return reason

    def _row_reason(self, row: dict[str, Any]) -> str | None:
        reason = self.rules.row_reason(row)
        if reason:
            return reason
        if row["config"] in self.minhash_configs and self._near_duplicate_text(
            row["config"], row["row_id"], row_text(row)
        ):
            return "near_duplicate_text"
        return None

    def _near_duplicate_text(self, config: str, key: str, text: str) -> bool:
        from datasketch import MinHashLSH

        lsh = self._lsh.get(config)
        if lsh is None:
            lsh = self._lsh[config] = MinHashLSH(
                threshold=self.rules.minhash_threshold, num_perm=self.rules.num_perm
            )
        signature = self.rules.minhash(text)
        if lsh.query(signature):
            return True
        lsh.insert(key, signature)
        return False
