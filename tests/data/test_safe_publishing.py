"""Private and safe by construction: `push` uploads an allow-list, a build refuses an output folder
inside a source, id keys are private files and long enough, the card names every source's licence."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import DatasetCard
from PIL import Image

from gmaivl.app.cli import main
from gmaivl.dataset_builders.build import BuildReport
from gmaivl.dataset_builders.card import write_card
from gmaivl.dataset_builders.engine import run_build
from gmaivl.dataset_builders.hub import publishable_files
from gmaivl.dataset_builders.ids import resolve_id_key
from gmaivl.dataset_builders.spec import SpecError, load_build_spec

KEY_32 = "0123456789abcdef0123456789abcdef"


def texture(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def class_folders(root: Path, seed: int) -> None:
    for label in ("normal", "pneumonia"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(texture(seed + 10 * i + len(label))).save(root / label / f"{i}.png")


def write_spec(folder: Path, sources: list[dict], **top) -> Path:
    path = folder / "build.yaml"
    path.write_text(yaml.safe_dump({"name": "safe", "sources": sources, **top}, sort_keys=False))
    return path


def source(name: str, root: str, **extra) -> dict:
    return {"name": name, "type": "class_folders", "root": root, "modality": "X-ray", "department": "Radiology", **extra}  # fmt: skip


# -------------------------------------------------------------------------------------------------
# push: the allow-list
# -------------------------------------------------------------------------------------------------
def fake_hub(monkeypatch, remote: list[str]) -> dict:
    """Intercept the Hub calls of `upload_folder`; returns what they received."""
    import huggingface_hub.hf_api as hf_api
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    captured: dict = {}
    monkeypatch.setattr(hf_api, "is_xet_available", lambda: False)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(HfApi, "list_repo_files", lambda self, repo_id, **kw: list(remote))
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda self, content, **kw: None)

    def fake_commit(self, repo_id, operations, **kwargs):
        captured["added"] = sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd))
        captured["deleted"] = sorted(
            op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)
        )
        return "commit-url"

    monkeypatch.setattr(HfApi, "create_commit", fake_commit)
    return captured


def test_push_uploads_the_allow_list_not_the_folder(built, tmp_path, monkeypatch, capsys):
    out, _ = built
    corpus = tmp_path / "corpus"
    shutil.copytree(out, corpus, symlinks=True)
    parquet = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet") if "_work" not in p.parts)
    assert parquet and (out / "statistics.png").is_file()
    expected = sorted(["README.md", "build_report.json", "statistics.png", *parquet])
    # plant what a working folder collects: secrets, hidden files, links out, nested work areas, strays
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "DOE_JANE_12345.parquet").write_bytes(b"PAR1 patient data")
    (outside / "notes.txt").write_text("ZZSMITH")
    (corpus / ".env").write_text("HF_TOKEN=hf_PLANTED\n")
    (corpus / "id.key").write_text(KEY_32)
    (corpus / ".hidden").mkdir()
    (corpus / ".hidden" / "train-00000-of-00001.parquet").write_bytes(b"x")
    (corpus / "caption" / ".train-00000-of-00001.parquet").write_bytes(b"x")
    (corpus / "caption" / "train-99999-of-99999.parquet").symlink_to(outside / "DOE_JANE_12345.parquet")
    (corpus / "caption" / "linked").symlink_to(outside, target_is_directory=True)
    (corpus / "notes.txt").symlink_to(outside / "notes.txt")
    (corpus / "sub" / "_work").mkdir(parents=True)
    (corpus / "sub" / "_work" / "id_key").write_text(KEY_32)
    (corpus / "caption" / "_work").mkdir()
    (corpus / "caption" / "_work" / "train-00000-of-00001.parquet").write_bytes(b"x")
    (corpus / "caption" / "stray.txt").write_text("stray")
    (corpus / "records" / "debug.parquet").write_bytes(b"x")
    (corpus / "build_report.json.bak").write_text("{}")
    (corpus / "copied_source.dcm").write_bytes(b"DICM")
    assert publishable_files(corpus) == expected

    stale = "caption/train-00007-of-00009.parquet"  # a shard of an earlier, larger build
    captured = fake_hub(monkeypatch, [".gitattributes", "README.md", stale, "notes/keep.txt"])
    assert main(["data", "push", "--corpus", str(corpus), "--repo-id", "org/safe"]) == 0
    assert captured["added"] == expected
    assert captured["deleted"] == [stale]
    capsys.readouterr()
    assert main(["data", "push", "--corpus", str(corpus), "--repo-id", "org/safe", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[:-1] == expected


def test_push_needs_a_card_that_matches_the_folder(tmp_path, cli_exit):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    card = "---\nconfigs:\n- config_name: caption\n  data_files:\n  - split: train\n    path: caption/train-*.parquet\n---\n# x\n"  # fmt: skip
    (tmp_path / "card.md").write_text(card)
    (corpus / "README.md").symlink_to(tmp_path / "card.md")  # a link is not the card
    with pytest.raises(FileNotFoundError, match="no README.md dataset card"):
        publishable_files(corpus)
    (corpus / "README.md").unlink()
    (corpus / "README.md").write_text(card)
    code, line = cli_exit(["data", "push", "--corpus", str(corpus), "--repo-id", "org/x", "--dry-run"])
    assert code == 2 and "config 'caption' names caption/train-*.parquet" in line
    (corpus / "caption").mkdir()
    (corpus / "caption" / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    assert publishable_files(corpus) == ["README.md", "caption/train-00000-of-00001.parquet"]


# -------------------------------------------------------------------------------------------------
# the output folder must lie outside every source
# -------------------------------------------------------------------------------------------------
def test_output_folder_inside_a_source_root_is_refused(tmp_path, cli_exit):
    class_folders(tmp_path / "src", 1)
    spec = write_spec(tmp_path, [source("cls", "src")], privacy={"id_key_file": "id.key"})
    (tmp_path / "id.key").write_text(KEY_32)
    for out in (tmp_path / "src" / "corpus", tmp_path / "src"):
        with pytest.raises(SpecError) as error:
            run_build(spec, out, progress=False)
        message = str(error.value)
        assert str(out.resolve()) in message and str((tmp_path / "src").resolve()) in message
        assert "source 'cls'" in message and "\n" not in message
    assert not (tmp_path / "src" / "corpus").exists() and not (tmp_path / "src" / "_work").exists()
    for command in ("build", "ingest"):
        code, line = cli_exit(
            ["data", command, "--spec", str(spec), "--output-dir", str(tmp_path / "src" / "o")]
        )
        assert code == 2 and line.startswith("gmaivl: error: ") and "lies inside the root" in line
    assert not (tmp_path / "src" / "o").exists()


# -------------------------------------------------------------------------------------------------
# id keys
# -------------------------------------------------------------------------------------------------
def minimal_spec(tmp_path: Path, **privacy) -> Path:
    return write_spec(tmp_path, [source("cls", "src")], privacy=privacy)


def test_generated_id_key_is_private(tmp_path):
    spec = load_build_spec(minimal_spec(tmp_path))
    old = os.umask(0)  # even under a permissive umask
    try:
        key = resolve_id_key(spec, tmp_path / "out" / "_work")
    finally:
        os.umask(old)
    path = tmp_path / "out" / "_work" / "id_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 64
    assert resolve_id_key(spec, tmp_path / "out" / "_work") == key
    assert [p.name for p in path.parent.iterdir()] == ["id_key"]  # no temporary file left
    path.chmod(0o644)  # a key made by an older version is tightened on use
    assert resolve_id_key(spec, tmp_path / "out" / "_work") == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_demo_id_key_is_private(demo_spec):
    assert stat.S_IMODE((demo_spec.parent / "id.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("value", ["Q", KEY_32[:31]])
def test_short_env_key_is_refused_naming_the_variable(tmp_path, monkeypatch, value):
    monkeypatch.setenv("GMAIVL_ID_KEY", value)
    spec = load_build_spec(minimal_spec(tmp_path))
    with pytest.raises(ValueError, match=r"\$GMAIVL_ID_KEY .*id key too short") as error:
        resolve_id_key(spec, tmp_path / "_work")
    assert KEY_32[:31] not in str(error.value)
    monkeypatch.setenv("GMAIVL_ID_KEY", KEY_32)
    assert resolve_id_key(spec, tmp_path / "_work") == KEY_32.encode()
    assert not (tmp_path / "_work").exists()  # a key from the environment writes no file


def test_short_key_file_is_refused_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("GMAIVL_ID_KEY", raising=False)
    spec = load_build_spec(minimal_spec(tmp_path, id_key_file="id.key"))
    (tmp_path / "id.key").write_text(KEY_32[:31] + "\n")
    with pytest.raises(ValueError, match="id key too short") as error:
        resolve_id_key(spec, tmp_path / "_work")
    assert f"privacy.id_key_file {tmp_path / 'id.key'}" in str(error.value)
    assert KEY_32[:31] not in str(error.value)
    (tmp_path / "id.key").write_text(KEY_32 + "\n")
    assert resolve_id_key(spec, tmp_path / "_work") == KEY_32.encode()
    # a hand-edited `_work/id_key` is checked too
    (tmp_path / "w").mkdir()
    work_spec = load_build_spec(minimal_spec(tmp_path / "w"))
    (tmp_path / "w" / "_work").mkdir()
    (tmp_path / "w" / "_work" / "id_key").write_text("short")
    with pytest.raises(ValueError, match=r"_work/id_key: id key too short"):
        resolve_id_key(work_spec, tmp_path / "w" / "_work")


# -------------------------------------------------------------------------------------------------
# the card's licences
# -------------------------------------------------------------------------------------------------
CITATION_A = "@article{chest2020,\n  title = {A chest X-ray set},\n  year = {2020}\n}"


def test_sources_under_different_licences_give_license_other_with_name_and_link(tmp_path, monkeypatch):
    monkeypatch.delenv("GMAIVL_ID_KEY", raising=False)
    class_folders(tmp_path / "a", 1)
    class_folders(tmp_path / "b", 50)
    sources = [
        source("chest-a", "a", license="cc-by-4.0", license_link="https://example.org/a/LICENSE",
               citation=CITATION_A, homepage="https://example.org/a"),
        source("chest-b", "b", license="TCIA Restricted | Data Usage Policy",
               license_link="https://example.org/b/terms", citation="Doe et al., Chest B (2021)."),
    ]  # fmt: skip
    spec = write_spec(tmp_path, sources)
    out = tmp_path / "out"
    run_build(spec, out, progress=False)
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "other"
    assert card.data.license_name == "per-source-licenses" and card.data.license_link == "README.md"
    header = (out / "README.md").read_text().split("---")[1]
    assert "license_name: per-source-licenses" in header and "license_link: README.md" in header
    body = card.text
    assert "## Licenses" in body and "## Citations" in body
    licence_rows = [line for line in body.splitlines() if line.startswith("| chest-")]
    assert licence_rows[-2:] == [
        "| chest-a | cc-by-4.0 | https://example.org/a/LICENSE | https://example.org/a |",
        "| chest-b | TCIA Restricted \\| Data Usage Policy | https://example.org/b/terms | – |",
    ]
    assert f"**chest-a**\n\n```bibtex\n{CITATION_A}\n```" in body
    assert "**chest-b**\n\n```text\nDoe et al., Chest B (2021).\n```" in body
    # a source's terms reach the card only: editing them rewrites the card and re-ingests nothing
    sources[1]["citation"] = "Doe et al., Chest B, 2nd edition (2022)."
    write_spec(tmp_path, sources)
    again = run_build(spec, out, progress=False)
    assert again.ingest["processed"] == 0
    assert "2nd edition" in DatasetCard.load(out / "README.md").text


def card_of(tmp_path: Path, sources: list[dict], **top) -> DatasetCard:
    spec = load_build_spec(write_spec(tmp_path, sources, **top))
    report = BuildReport(name="safe", spec_fingerprint="f", rows_published={"caption": 1}, splits={"caption": ["train"]})  # fmt: skip
    return DatasetCard.load(write_card(spec, tmp_path, report))


def test_card_licence_from_sources_and_from_the_build(tmp_path):
    shared = [source("a", "a", license="cc-by-4.0"), source("b", "b", license="cc-by-4.0")]
    card = card_of(tmp_path, shared)
    assert card.data.license == "cc-by-4.0" and card.data.to_dict().get("license_name") is None
    named = [source("a", "a", license="TCIA Data Usage Policy", license_link="https://x.org/t")]
    card = card_of(tmp_path, named)
    assert (card.data.license, card.data.license_name, card.data.license_link) == (
        "other", "tcia-data-usage-policy", "https://x.org/t",
    )  # fmt: skip
    card = card_of(
        tmp_path, [*shared, source("c", "c")], license_name="gmai-terms-1.0", license_link="TERMS.md"
    )
    assert (card.data.license, card.data.license_name, card.data.license_link) == (
        "other",
        "gmai-terms-1.0",
        "TERMS.md",
    )
    assert "| c | not stated | – | – |" in card.text and "**c**: no citation given" in card.text
    card = card_of(tmp_path, [*shared, source("c", "c")], license="cc-by-nc-4.0")  # the build's choice
    assert card.data.license == "cc-by-nc-4.0" and card.data.to_dict().get("license_link") is None
    with pytest.raises(SpecError, match="license_name must be an id"):
        load_build_spec(write_spec(tmp_path, shared, license_name="My Licence"))
