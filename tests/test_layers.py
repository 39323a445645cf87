"""The house's layers: a module imports only from its own part or from a lower layer.

    6  application   gmaivl.app (CLI, commands, quickstart, demo), gmaivl.__main__, benchmark scripts
    5  model cards   gmaivl.model_cards (reads the evaluator's results and the trainers' recipes)
    4  trainers      gmaivl.trainers (GRPO's accuracy reward reads answers with the evaluator's rules)
    3  evaluation    gmaivl.evaluation (builds benchmarks from built corpora)
    2  parts         gmaivl.kernels, gmaivl.dataset_builders (independent of each other)
    1  core          gmaivl (the public model API), gmaivl.core (files, datasets, endpoint client, TSV,
                     tiny models, composition, export)
    0  Hub code      gmaivl.modeling_gmaivl (torch + transformers only, travels to the Hub)

Every import counts, also inside functions; only `if TYPE_CHECKING:` blocks are left out, and a
module's import of its own package (which Python runs before the module anyway).
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]

LAYERS = {
    "gmaivl.modeling_gmaivl": 0,
    "gmaivl": 1,
    "gmaivl._checkout": 1,
    "gmaivl.core": 1,
    "gmaivl.kernels": 2,
    "gmaivl.dataset_builders": 2,
    "gmaivl.evaluation": 3,
    "gmaivl.trainers": 4,
    "gmaivl.model_cards": 5,
    "gmaivl.app": 6,
    "gmaivl.__main__": 6,
    "gmaivl.kernels.benchmarks": 6,  # scripts: `gmaivl kernels bench` and ../shared/gpu-check.sh run them
}


def part(module: str) -> str:
    """The longest LAYERS key that is `module` or a package above it."""
    candidates = [key for key in LAYERS if module == key or module.startswith(key + ".")]
    return max(candidates, key=len)


def package_modules() -> dict[str, Path]:
    """Every module of the distribution, by import name, from pyproject's packages and package-dir."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools["package-dir"]
    modules = {}
    for package in setuptools["packages"]:
        base = max((key for key in mapped if package == key or package.startswith(key + ".")), key=len)
        folder = ROOT / mapped[base] / Path(*package[len(base) :].split(".")[1:])
        for path in folder.glob("*.py"):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported gmaivl module, line) of every runtime import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            # `from gmaivl.core import files` imports the module gmaivl.core.files
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return [(module, line) for module, line in found if module == "gmaivl" or module.startswith("gmaivl.")]


def import_graph() -> nx.DiGraph:
    modules = package_modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for target, line in imports(name, path):
            if target in modules and not (name == target or name.startswith(target + ".")):
                graph.add_edge(name, target, line=line, file=path.relative_to(ROOT))
    return graph


def test_every_module_has_a_layer():
    assert len(package_modules()) > 90
    for name in package_modules():
        assert part(name) in LAYERS


def same_home(src: str, dst: str) -> bool:
    """The same part, or the same layer where that layer is one home (core, application)."""
    related = dst == src or dst.startswith(src + ".") or src.startswith(dst + ".")
    return related or (LAYERS[src] == LAYERS[dst] and LAYERS[src] in (1, 6))


def test_no_module_imports_a_higher_layer_or_a_sibling_part():
    wrong = []
    for source, target, data in import_graph().edges(data=True):
        src, dst = part(source), part(target)
        if same_home(src, dst):
            if LAYERS[dst] > LAYERS[src]:  # a part's scripts are above it
                wrong.append(f"{data['file']}:{data['line']}: {source} -> {target}")
            continue
        if LAYERS[dst] >= LAYERS[src]:
            wrong.append(
                f"{data['file']}:{data['line']}: {source} (layer {LAYERS[src]}) -> {target} (layer {LAYERS[dst]})"
            )
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_import_cycles_below_the_application():
    # the application dispatches lazily between a command and its script (`gmaivl kernels bench`
    # runs the benchmark, whose `python -m` entry reads the command's options): cycles there are by design
    graph = import_graph()
    graph.remove_nodes_from([name for name in list(graph) if LAYERS[part(name)] == 6])
    cycles = [" -> ".join([*cycle, cycle[0]]) for cycle in nx.simple_cycles(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles[:20])


def test_the_check_sees_a_planted_violation(tmp_path):
    planted = tmp_path / "bad.py"
    planted.write_text("from gmaivl.app.cli import run\n\ndef f():\n    from ..evaluation import metrics\n")
    found = dict(imports("gmaivl.dataset_builders.bad", planted))
    assert "gmaivl.app.cli" in found and "gmaivl.evaluation.metrics" in found
    assert LAYERS[part("gmaivl.app.cli")] > LAYERS[part("gmaivl.dataset_builders.bad")]
