"""Imports point one way (docs/architecture.md): contracts <- sim <- compiler <- hdl <- boards <-
api/cli. Every module's imports are read from its source (ast), function-level ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder -> package, as pyproject.toml's package-dir maps them
FOLDERS = {"spikeforge": "spikeforge", "sim": "spikeforge.sim", "compiler": "spikeforge.compiler",
           "hdl": "spikeforge.hdl", "boards": "spikeforge.boards"}
CONTRACTS = {"spikeforge.image", "spikeforge.protocol", "spikeforge.lfsr"}
# Layers from the bottom up; a module may import its own layer's modules and lower layers only.
LAYERS = ("contracts", "sim", "compiler", "hdl", "boards", "api")


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> str:
    if module in CONTRACTS:
        return "contracts"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS[1:-1]:
        return parts[1]
    return "api"  # spikeforge itself, api, cli, demo, digits, ...


def _resolve(name: str) -> str | None:
    """The project module (or package) an imported name lives in, or None if not ours."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Project modules ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            # `from a import b` may import the module a.b, or the name b of a
            names = [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_the_graph_is_read():
    assert len(MODULES) > 30
    assert "spikeforge.image" in GRAPH["spikeforge.hdl.core"]
    assert "spikeforge.sim.golden" in GRAPH["spikeforge.api"]  # a function-level import


def test_contracts_import_nothing_of_the_project():
    for module in CONTRACTS:
        assert GRAPH[module] == set(), module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    rank = LAYERS.index(layer_of(module))
    wrong = sorted(target for target in GRAPH[module]
                   if LAYERS.index(layer_of(target)) > rank)
    assert not wrong, (f"{module} ({layer_of(module)}) imports "
                       + ", ".join(f"{t} ({layer_of(t)})" for t in wrong))


def test_no_import_cycles():
    """No cycle between modules, so none between subpackages either."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
