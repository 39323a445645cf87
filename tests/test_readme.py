"""The README's Python examples run as written."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "my-gmai-vl" / "model.safetensors").exists()
    assert type(namespace["model"]).__name__ == "GMAIVLForConditionalGeneration"


def _pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pins}


def test_every_dependency_has_a_pin_inside_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for line in requirements:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"


def test_readme_and_ci_install_the_same_pinned_set():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = README.read_text()
    install = 'pip install -e ".[dev]" -c constraints.txt'
    assert install in ci and install in readme
    torch_pin = f"pip install torch=={_pins()['torch']}"
    assert torch_pin in ci and torch_pin in readme
