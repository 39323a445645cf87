"""A pinned Hub revision pins the language model's own code too, and the Hub arguments reach it.

The "Hub" is huggingface_hub's own cache layout (`models--org--name/{refs,snapshots}`) read with
`local_files_only=True`: two commits of one repository whose language-model code differs, `main`
pointing at the older one. What `from_pretrained(..., revision=...)` loads is what transformers'
real resolution (`cached_file` -> `hf_hub_download`) finds for that revision; nothing is downloaded.
"""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForImageTextToText

from gmaivl.core.compose import compose_gmaivl

from .test_remote_code_lm import remote_code_llm, save_vision_tower

REPO = "hospital-lab/gmai-vl-toy"
OLD, NEW = "a" * 40, "b" * 40


def _hub_cache(tmp_path):
    """A cache holding commits OLD (main) and NEW of REPO; NEW's LM code scales its embeddings by 2."""
    remote_code_llm(tmp_path / "llm")
    save_vision_tower(tmp_path / "vision", num_hidden_layers=1)
    model, processor = compose_gmaivl(
        str(tmp_path / "vision"), str(tmp_path / "llm"), trust_remote_code=True, dtype=torch.float32
    )
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    repo = tmp_path / "cache" / f"models--{REPO.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / OLD)
    new = shutil.copytree(folder, repo / "snapshots" / NEW)
    code = (new / "modeling_toylm.py").read_text()
    assert "class ToyLMModel(Qwen2Model):\n    config_class = ToyLMConfig\n" in code
    (new / "modeling_toylm.py").write_text(
        code.replace(
            "class ToyLMModel(Qwen2Model):\n    config_class = ToyLMConfig\n",
            "class ToyLMModel(Qwen2Model):\n    config_class = ToyLMConfig\n    CODE_REVISION = 'new'\n",
        )
    )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(OLD)
    return tmp_path / "cache"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return _hub_cache(tmp_path)


def _load(cache, **kwargs):
    return AutoModelForImageTextToText.from_pretrained(
        REPO, cache_dir=str(cache), local_files_only=True, trust_remote_code=True, **kwargs
    )


def test_pinned_revision_pins_the_language_model_code(hub_cache, tmp_path):
    main = _load(hub_cache)
    assert not hasattr(type(main.model.language_model), "CODE_REVISION")
    pinned = _load(hub_cache, revision=NEW)
    assert type(pinned.model.language_model).CODE_REVISION == "new"
    # Saving the pinned model copies the pinned code, not main's.
    pinned.save_pretrained(tmp_path / "resaved")
    assert "CODE_REVISION = 'new'" in (tmp_path / "resaved" / "modeling_toylm.py").read_text()
    assert (
        json.loads((tmp_path / "resaved" / "config.json").read_text())["text_config"]["auto_map"]["AutoModel"]
        == "modeling_toylm.ToyLMModel"
    )


def test_hub_arguments_reach_the_language_model_code(hub_cache, monkeypatch):
    import transformers.dynamic_module_utils as dynamic

    seen = {}
    real = dynamic.cached_file

    def spy(path_or_repo_id, filename, **kwargs):
        seen.setdefault(filename, []).append(kwargs)
        return real(path_or_repo_id, filename, **kwargs)

    # Every file of remote code is fetched through this one function (transformers' own path).
    monkeypatch.setattr(dynamic, "cached_file", spy)
    _load(hub_cache, revision=NEW, token="hf_not_a_real_token", code_revision=NEW)
    for filename in ("configuration_toylm.py", "modeling_toylm.py"):
        assert seen[filename], filename
        for kwargs in seen[filename]:
            assert kwargs["token"] == "hf_not_a_real_token"
            assert kwargs["revision"] == NEW
            assert kwargs["cache_dir"] == str(hub_cache)
            assert kwargs["local_files_only"] is True
