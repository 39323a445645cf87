"""Loaders for the benchmarks' own published layouts: the folders their authors release, read as is.

- **VQA-RAD** (Lau et al. 2018, the OSF release): `VQA_RAD Dataset Public.json` (a list of objects:
  `qid`, `image_name`, `image_organ`, `question`, `answer` (a string or a number), `answer_type`
  (`CLOSED`/`OPEN`), `question_type`, `phrase_type` (`freeform`, `para`, `test_freeform`,
  `test_para`), ...) beside `VQA_RAD Image Folder/<image_name>`. The test split is the `test_*`
  phrase types (451 questions); closed = a yes/no reference (MedEvalKit's split, as the Hugging
  Face preset does), or the release's own `answer_type` with `vqa-rad-answer-type`
  (LLaVA-Med's split).
- **SLAKE** (Liu et al. 2021, `Slake1.0`): `train.json` / `validate.json` / `test.json` (objects
  with `qid`, `img_id`, `img_name` such as `xmlab102/source.jpg`, `question`, `answer`, `q_lang`
  (`en`/`zh`), `answer_type` (`OPEN`/`CLOSED`), `location`, `modality`, `content_type`, ...) and
  `imgs/<img_name>`. Closed/open by `answer_type`; English only by default (the papers' tables),
  both languages with the `slake` preset (as the Hugging Face preset of that name).
- **OmniMedVQA** (Hu et al. 2024): `QA_information/Open-access/*.json` and
  `QA_information/Restricted-access/*.json` (lists of objects with `dataset`, `question_id`,
  `question_type`, `question`, `gt_answer` (the text of one option), `image_path` relative to the
  dataset root such as `Images/<dataset>/...`, `option_A`..`option_D` (two to four of them),
  `modality_type`). Multiple choice; the split picks the access folder (`test`: Open-access).
- **PMC-VQA** (Zhang et al. 2023): `train.csv` / `test.csv` / `test_clean.csv` with columns
  `Figure_path,Question,Answer,Choice A,Choice B,Choice C,Choice D,Answer_label` (choices written
  `A:text`), images in `figures/` (or `images/`) beside them; the split names the CSV
  (`test_clean` for `test_clean.csv`). Version 2's `test_2.csv` (`index,Figure_path,Caption,
  Question,Choice A..D,Answer,split`, `Answer` a letter) reads the same way.

Every image path is resolved relative to the benchmark's own folder and must stay inside it: an
absolute path, a `..` component or a symbolic link that leads outside is refused, and so is a path
whose file does not exist. Such a row fails alone: its image is an `UnreadableImage` whose reason
names the file, the row and the path; the run records it under `failed_rows` and asks the others.
(A folder in which not one image is found is refused at load time: the images were not unpacked.)
Images are `LazyImage`s of the resolved file, decoded only when their batch is generated.

Scores follow the metric each benchmark's authors (and MedEvalKit) publish, through `metrics.py`:
VQA-RAD closed accuracy over yes/no references and open recall over the rest; SLAKE closed accuracy
over its `answer_type == CLOSED` questions (yes/no read as yes/no, other closed references counted
when the reply contains them) and open recall over `OPEN`; OmniMedVQA and PMC-VQA plain
multiple-choice accuracy (`accuracy`, the figure their leaderboards report).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .errors import BenchmarkFormatError
from .images import LazyImage, UnreadableImage
from .question_types import infer_question_type
from .samples import Benchmark, EvalSample

__all__ = [
    "LAYOUTS",
    "LAYOUT_PRESETS",
    "detect_layout",
    "inside_root",
    "load_layout",
    "load_omnimedvqa",
    "load_pmc_vqa",
    "load_slake",
    "load_vqa_rad",
    "resolve_image",
]

VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
SLAKE_SPLITS = {"train": "train.json", "validation": "validate.json", "validate": "validate.json",
                "val": "validate.json", "test": "test.json"}  # fmt: skip
OMNI_ACCESS = {"test": ("Open-access",), "open-access": ("Open-access",),
               "restricted-access": ("Restricted-access",)}  # fmt: skip
PMC_IMAGE_FOLDERS = ("figures", "images")
LAYOUTS: tuple[str, ...] = ("vqa-rad", "slake", "omnimedvqa", "pmc-vqa")
# preset name -> (layout, options of its loader). `vqa-rad`, `slake`, `slake-en` and `pmc-vqa` are
# also Hugging Face column presets (loaders.PRESETS): on a folder in the published layout they
# pick this loader, with the same meaning (`slake`: both languages, `slake-en`: English).
LAYOUT_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "vqa-rad": ("vqa-rad", {"closed": "yes-no"}),
    "vqa-rad-answer-type": ("vqa-rad", {"closed": "answer-type"}),
    "slake": ("slake", {"languages": ("en", "zh")}),
    "slake-en": ("slake", {"languages": ("en",)}),
    "omnimedvqa": ("omnimedvqa", {}),
    "pmc-vqa": ("pmc-vqa", {}),
}
_TYPES = {"CLOSED": "closed", "OPEN": "open"}


def _error(message: str) -> Exception:
    return BenchmarkFormatError(message)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value).strip() in {"", "nan"}


def _text(value: Any) -> str:
    return "" if _missing(value) else str(value).strip()


# --------------------------------------------------------------------------- images inside the root


def inside_root(root: Path, folder: Path, value: Any, where: str) -> Path:
    """`folder / value` resolved (symbolic links followed), refused unless it stays inside `root`.

    `value` must be a relative path without `..` (in POSIX or Windows spelling); `root` is
    resolved too, so a benchmark folder that is itself a link works. Raises `BenchmarkFormatError`
    naming `where` and the path otherwise. The file need not exist (see `resolve_image`).
    """
    text = _text(value)
    if not text:
        raise _error(f"{where}: no image path")
    posix, windows = PurePosixPath(text.replace("\\", "/")), PureWindowsPath(text)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts:
        raise _error(
            f"{where}: image path {text!r} is absolute or leaves the benchmark folder ('..'); refused"
        )
    base = root.resolve()
    full = (folder / posix).resolve()
    if base not in full.parents:
        raise _error(
            f"{where}: image path {text!r} resolves to {full}, outside the benchmark folder {base} "
            "(a symbolic link); refused"
        )
    return full


def resolve_image(root: Path, folder: Path, value: Any, where: str) -> Path:
    """`inside_root(...)`, which must also be an existing file."""
    full = inside_root(root, folder, value, where)
    if not full.is_file():
        raise _error(f"{where}: image {_text(value)!r} does not exist in {folder}")
    return full


def _row_image(root: Path, folders: list[Path], value: Any, where: str) -> LazyImage | UnreadableImage:
    """The row's image, from the first of `folders` that has it; a path that leaves `root` or a
    missing file becomes an `UnreadableImage`: that question fails with the reason, the others
    are asked (every candidate path is checked against the root before anything is looked up)."""
    try:
        candidates = [inside_root(root, folder, value, where) for folder in folders]
    except BenchmarkFormatError as exc:
        return UnreadableImage(str(exc))
    for full in candidates:
        if full.is_file():
            return LazyImage(str(full), where=where)
    shown = " or ".join(f"{f.name}/" for f in folders)
    return UnreadableImage(f"{where}: image {_text(value)!r} does not exist in {shown}")


# --------------------------------------------------------------------------- shared helpers


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise _error(f"{path}: expected a list of objects, found {type(data).__name__}")
    return data


def _require(entry: dict[str, Any], keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in entry]
    if missing:
        raise _error(f"{where}: missing key(s) {missing}; found {sorted(entry)}")


def _question_id(value: Any, fallback: str, seen: dict[str, str], where: str) -> str:
    """The benchmark's own id (predictions are keyed by it); a repeated id is refused."""
    index = _text(value) or fallback
    if index in seen:
        raise _error(f"{where}: id {index!r} already used by {seen[index]}")
    seen[index] = where
    return index


def _meta(entry: dict[str, Any], keys: Iterable[str]) -> dict[str, str]:
    return {k: _text(entry[k]) for k in keys if k in entry and not _missing(entry[k])}


def _answer_letter(options: dict[str, str], label: Any, text: Any, where: str) -> str:
    """The reference letter: `label` when it names an option, else the one option whose text is
    `text` (exactly, then ignoring case and runs of white space)."""
    letter = _text(label).upper()
    if letter:
        if letter not in options:
            raise _error(f"{where}: answer label {letter!r} is not among the options {sorted(options)}")
        return letter
    answer = _text(text)
    if re.fullmatch(r"[A-J]", answer) and answer in options:
        return answer
    for norm in (str.strip, lambda s: " ".join(s.split()).casefold()):
        match = [k for k, v in options.items() if norm(v) == norm(answer)]
        if len(match) == 1:
            return match[0]
        if len(match) > 1:
            raise _error(f"{where}: answer {answer!r} is the text of several options {match}")
    raise _error(f"{where}: answer {answer!r} is neither an option letter nor the text of an option")


def _finish(samples: list[EvalSample], source: Path, what: str) -> Benchmark:
    if not samples:
        raise _error(f"{source}: no {what} questions")
    bad = [s for s in samples if any(isinstance(im, UnreadableImage) for im in s.images)]
    if len(bad) == len(samples):  # not one image found: the images were not unpacked there
        raise _error(f"{source}: no question has a readable image; the first: {bad[0].images[0].reason}")
    return Benchmark(samples, source=str(source))


# --------------------------------------------------------------------------- VQA-RAD


def load_vqa_rad(
    root: str | Path, split: str = "test", closed: str = "yes-no", limit: int | None = None
) -> Benchmark:
    """VQA-RAD's original release: `root/VQA_RAD Dataset Public.json` + `root/VQA_RAD Image Folder/`.

    `split`: `test` (phrase types `test_freeform`, `test_para`), `train` (the others) or `all`.
    `closed`: `yes-no` (a question is closed when its reference is yes/no) or `answer-type` (the
    release's `answer_type`; closed references that are not yes/no then count when the reply
    contains them, as `metrics.py` scores SLAKE's).
    """
    root = Path(root)
    if split not in {"test", "train", "all"}:
        raise _error(f"{root}: VQA-RAD split {split!r} unknown; choose test, train or all")
    if closed not in {"yes-no", "answer-type"}:
        raise ValueError(f"closed={closed!r}: choose 'yes-no' or 'answer-type'")
    path = root / VQA_RAD_JSON
    folder = root / VQA_RAD_IMAGES
    if not folder.is_dir():
        raise _error(f"{root}: no {VQA_RAD_IMAGES!r} folder beside {VQA_RAD_JSON!r}")
    samples: list[EvalSample] = []
    seen: dict[str, str] = {}
    for k, entry in enumerate(_read_json_list(path)):
        if limit is not None and len(samples) >= limit:
            break
        where = f"{path} entry {k + 1} (qid {entry.get('qid')})"
        _require(entry, ("qid", "image_name", "question", "answer", "answer_type", "phrase_type"), where)
        is_test = _text(entry["phrase_type"]).lower().startswith("test")
        if (split == "test" and not is_test) or (split == "train" and is_test):
            continue
        answer = _text(entry["answer"])  # some answers are numbers in the JSON
        if not answer:
            raise _error(f"{where}: empty answer")
        answer_type = _text(entry["answer_type"]).upper()
        if answer_type not in _TYPES:
            raise _error(f"{where}: answer_type {entry['answer_type']!r} is neither CLOSED nor OPEN")
        qtype = _TYPES[answer_type] if closed == "answer-type" else infer_question_type(answer)
        image = _row_image(root, [folder], entry["image_name"], where)
        samples.append(
            EvalSample(
                index=_question_id(entry["qid"], str(k), seen, where),
                question=_text(entry["question"]),
                answer=answer,
                question_type=qtype,
                images=[image],
                metadata=_meta(
                    {**entry, "answer_type": answer_type},
                    ("image_organ", "question_type", "answer_type", "phrase_type"),
                ),
            )
        )
    return _finish(samples, path, f"{split!r}")


# --------------------------------------------------------------------------- SLAKE


def load_slake(
    source: str | Path,
    split: str = "test",
    languages: Iterable[str] = ("en",),
    limit: int | None = None,
) -> Benchmark:
    """SLAKE (`Slake1.0`): `<split>.json` and `imgs/<img_name>` in `source` (or `source` is one of
    the JSON files). `languages`: the `q_lang` values kept (`("en",)`, as the papers report; `("en",
    "zh")` for both). Closed/open follow SLAKE's `answer_type`."""
    source = Path(source)
    if source.is_file():
        path, root = source, source.parent
    else:
        if split not in SLAKE_SPLITS:
            raise _error(f"{source}: SLAKE split {split!r} unknown; choose {sorted(SLAKE_SPLITS)}")
        root, path = source, source / SLAKE_SPLITS[split]
        if not path.is_file():
            raise _error(f"{source}: no {SLAKE_SPLITS[split]} (SLAKE's {split} split)")
    langs = {str(x).strip().lower() for x in languages}
    folder = root / "imgs"
    samples: list[EvalSample] = []
    seen: dict[str, str] = {}
    keys = ["answer_type", "content_type", "modality", "location"]
    if len(langs) > 1:
        keys.insert(0, "q_lang")
    for k, entry in enumerate(_read_json_list(path)):
        if limit is not None and len(samples) >= limit:
            break
        where = f"{path} entry {k + 1} (qid {entry.get('qid')})"
        _require(entry, ("qid", "img_name", "question", "answer", "answer_type", "q_lang"), where)
        if _text(entry["q_lang"]).lower() not in langs:
            continue
        answer = _text(entry["answer"])
        if not answer:
            raise _error(f"{where}: empty answer")
        answer_type = _text(entry["answer_type"]).upper()
        if answer_type not in _TYPES:
            raise _error(f"{where}: answer_type {entry['answer_type']!r} is neither CLOSED nor OPEN")
        image = _row_image(root, [folder], entry["img_name"], where)
        samples.append(
            EvalSample(
                index=_question_id(entry["qid"], str(k), seen, where),
                question=_text(entry["question"]),
                answer=answer,
                question_type=_TYPES[answer_type],  # type: ignore[arg-type]
                images=[image],
                metadata=_meta({**entry, "answer_type": answer_type}, keys),
            )
        )
    return _finish(samples, path, f"q_lang {sorted(langs)}")


# --------------------------------------------------------------------------- OmniMedVQA


def load_omnimedvqa(source: str | Path, split: str = "test", limit: int | None = None) -> Benchmark:
    """OmniMedVQA: `source/QA_information/<access>/*.json`, `image_path` relative to `source`.

    `split`: `test` or `open-access` (`Open-access`, the part published with its images, as
    MedEvalKit evaluates it), `restricted-access`, or `all` (every folder under `QA_information`).
    `source` may also be one of the JSON files (`.../QA_information/<access>/<dataset>.json`).
    """
    source = Path(source)
    if source.is_file():
        root, files = source.parents[2], [source]
    else:
        root = source
        qa = root / "QA_information"
        if split == "all":
            folders = sorted(p.name for p in qa.iterdir() if p.is_dir()) if qa.is_dir() else []
        elif split in OMNI_ACCESS:
            folders = list(OMNI_ACCESS[split])
        else:
            raise _error(
                f"{root}: OmniMedVQA split {split!r} unknown; choose test (Open-access), "
                "open-access, restricted-access or all"
            )
        missing = [f for f in folders if not (qa / f).is_dir()]
        if missing or not folders:
            raise _error(f"{root}: no QA_information/{missing[0] if missing else '<access>'} folder")
        files = [p for f in folders for p in sorted((qa / f).glob("*.json"))]
    several = len({p.parent.name for p in files}) > 1
    samples: list[EvalSample] = []
    seen: dict[str, str] = {}
    entries = ((path, k, entry) for path in files for k, entry in enumerate(_read_json_list(path)))
    for path, k, entry in entries:
        if limit is not None and len(samples) >= limit:
            break
        where = f"{path} entry {k + 1} (question_id {entry.get('question_id')})"
        _require(entry, ("question_id", "question", "gt_answer", "image_path"), where)
        options = {
            letter: _text(entry[f"option_{letter}"])
            for letter in "ABCD"
            if not _missing(entry.get(f"option_{letter}"))
        }
        if len(options) < 2:
            raise _error(f"{where}: fewer than two options ({sorted(options)})")
        answer = _answer_letter(options, None, entry["gt_answer"], where)
        if "modality_type" not in entry and "modality" in entry:  # one entry spells it so
            entry = {**entry, "modality_type": entry["modality"]}
        meta = _meta(entry, ("question_type", "modality_type", "dataset"))
        if several:
            meta["access"] = path.parent.name
        image = _row_image(root, [root], entry["image_path"], where)
        samples.append(
            EvalSample(
                index=_question_id(entry["question_id"], f"{path.stem}/{k}", seen, where),
                question=_text(entry["question"]),
                answer=answer,
                question_type="mcq",
                images=[image],
                options=options,
                metadata=meta,
            )
        )
    return _finish(samples, source, "OmniMedVQA")


# --------------------------------------------------------------------------- PMC-VQA


def _pmc_csv(source: Path, split: str) -> Path:
    if source.is_file():
        return source
    for name in (f"{split}.csv", f"{split.replace('_', '')}.csv", f"{split.replace('2', '_2')}.csv"):
        if (source / name).is_file():
            return source / name
    found = sorted(p.name for p in source.glob("*.csv"))
    raise _error(f"{source}: no {split}.csv (PMC-VQA's split {split!r}); found {found}")


def load_pmc_vqa(source: str | Path, split: str = "test", limit: int | None = None) -> Benchmark:
    """PMC-VQA: `source/<split>.csv` (or `source` is the CSV) with its images in `figures/` or
    `images/` beside it. Choices `A:text` lose their `A:`; the reference is `Answer_label` (version
    1), else `Answer` as a letter or the text of one choice (version 2)."""
    path = _pmc_csv(Path(source), split)
    root = path.parent
    folders = [root / f for f in PMC_IMAGE_FOLDERS if (root / f).is_dir()]
    if not folders:
        raise _error(f"{root}: no figures/ or images/ folder beside {path.name}")
    samples: list[EvalSample] = []
    seen: dict[str, str] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            need = ["Figure_path", "Question", "Choice A", "Choice B"]
            missing = [c for c in need if c not in header]
            if missing or not ({"Answer", "Answer_label"} & set(header)):
                raise _error(
                    f"{path}: missing column(s) {missing or ['Answer or Answer_label']}; found {header}"
                )
            for k, row in enumerate(reader):
                if limit is not None and len(samples) >= limit:
                    break
                where = f"{path} row {k + 2}"
                options = {}
                for letter in "ABCDEFGHIJ":
                    value = row.get(f"Choice {letter}")
                    if not _missing(value):
                        options[letter] = re.sub(rf"^\s*{letter}\s*[:.)]\s*", "", str(value)).strip()
                answer = _answer_letter(options, row.get("Answer_label"), row.get("Answer"), where)
                image = _row_image(root, folders, row["Figure_path"], where)
                samples.append(
                    EvalSample(
                        index=_question_id(row.get("index"), str(k), seen, where),
                        question=_text(row["Question"]),
                        answer=answer,
                        question_type="mcq",
                        images=[image],
                        options=options,
                    )
                )
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _error(f"{path}: cannot be read as a CSV ({exc})") from exc
    return _finish(samples, path, "PMC-VQA")


# --------------------------------------------------------------------------- detection


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _is_slake_root(folder: Path) -> bool:
    return (folder / "imgs").is_dir() and any((folder / n).is_file() for n in set(SLAKE_SPLITS.values()))


def detect_layout(source: str | Path) -> tuple[str, Path] | None:
    """(layout, the path its loader takes) when `source` is one of the published layouts, else None.

    A folder holding `VQA_RAD Dataset Public.json`; a SLAKE folder (`imgs/` and `test.json`,
    `train.json` or `validate.json`; or a folder holding `Slake1.0/`); an OmniMedVQA folder
    (`QA_information/`, or a folder holding `OmniMedVQA/`); a folder with a CSV whose header has
    `Figure_path` and a `figures/` or `images/` folder (PMC-VQA). Files: the VQA-RAD JSON, a SLAKE
    split JSON (beside `imgs/`), an OmniMedVQA JSON (under `QA_information/<access>/`), a PMC-VQA CSV.
    """
    path = Path(source).expanduser()
    if path.is_file():
        if path.name == VQA_RAD_JSON:
            return "vqa-rad", path.parent
        if path.suffix.lower() == ".csv" and "Figure_path" in _csv_header(path):
            return "pmc-vqa", path
        if path.suffix.lower() == ".json":
            if len(path.parents) > 2 and path.parents[1].name == "QA_information":
                return "omnimedvqa", path
            if (path.parent / "imgs").is_dir():
                return "slake", path
        return None
    if not path.is_dir():
        return None
    if (path / VQA_RAD_JSON).is_file():
        return "vqa-rad", path
    for root in (path, path / "OmniMedVQA"):
        if (root / "QA_information").is_dir():
            return "omnimedvqa", root
    for root in (path, path / "Slake1.0"):
        if _is_slake_root(root):
            return "slake", root
    if any((path / f).is_dir() for f in PMC_IMAGE_FOLDERS) and any(
        "Figure_path" in _csv_header(p) for p in sorted(path.glob("*.csv"))
    ):
        return "pmc-vqa", path
    return None


_LOADERS: dict[str, Callable[..., Benchmark]] = {
    "vqa-rad": load_vqa_rad,
    "slake": load_slake,
    "omnimedvqa": load_omnimedvqa,
    "pmc-vqa": load_pmc_vqa,
}


def load_layout(
    source: str | Path,
    layout: str | None = None,
    *,
    split: str = "test",
    preset: str | None = None,
    limit: int | None = None,
) -> Benchmark:
    """Load `source` in its published layout (`layout`, else the detected one). `preset` (one of
    `LAYOUT_PRESETS`) picks the layout and its options; without one a layout gets its defaults
    (VQA-RAD: yes/no closed; SLAKE: English only)."""
    options: dict[str, Any] = {}
    if preset is not None:
        if preset not in LAYOUT_PRESETS:
            raise ValueError(f"preset {preset!r} has no folder layout; choose from {sorted(LAYOUT_PRESETS)}")
        wanted, options = LAYOUT_PRESETS[preset]
        if layout is not None and layout != wanted:
            raise _error(f"{source}: preset {preset!r} is for the {wanted} layout, not {layout}")
        layout = wanted
    found = detect_layout(source)
    if layout is None:
        if found is None:
            raise _error(f"{source}: not one of the published layouts {list(LAYOUTS)}")
        layout = found[0]
    if layout not in _LOADERS:
        raise ValueError(f"unknown layout {layout!r}; choose from {list(LAYOUTS)}")
    if found is None or found[0] != layout:
        what = f"the {found[0]} layout" if found else "none of the published layouts"
        raise _error(f"{source}: the {layout} loader was asked for, but the folder holds {what}")
    return _LOADERS[layout](found[1], split=split, limit=limit, **options)
