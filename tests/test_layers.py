"""The architecture as a test: layers import only downward, and the config layer stays light.

Layers, lowest first (docs/architecture.md): core -> config -> data -> models -> protocol -> federation ->
methods / audit -> runner -> evaluation -> report -> the entry points (cli, experiment, export, deploy).
An import of a higher layer from a lower one, anywhere in a module (function-level imports included), fails.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fedrisk"

LAYERS = {
    "fedrisk.core": 0,
    "fedrisk.config": 1,
    "fedrisk.data": 2,
    "fedrisk.models": 3,
    "fedrisk.protocol": 4,
    "fedrisk.federation": 5,
    "fedrisk.methods": 6,
    "fedrisk.audit": 7,
    "fedrisk.runner": 8,
    "fedrisk.evaluation": 9,
    "fedrisk.report": 10,
    "fedrisk.experiment": 11,
    "fedrisk.export": 11,
    "fedrisk.deploy": 11,
    "fedrisk.cli": 12,
    "fedrisk.__main__": 13,
    "fedrisk": 0,  # the package's __init__: version and the Flower environment only
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _imports() -> list[tuple[str, str, int]]:
    """(importing module, imported fedrisk module, line) for every import in the package."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        here = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                elif node.module:
                    targets = [node.module]
            found += [(module, t, node.lineno) for t in targets if t == "fedrisk" or t.startswith("fedrisk.")]
    return found


def test_every_subpackage_has_a_layer():
    units = {_unit(m) for m, _, _ in _imports()} | {_unit(t) for _, t, _ in _imports()}
    units |= {
        f"fedrisk.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if p.suffix == ".py" or p.is_dir()
    }
    units -= {"fedrisk.__init__", "fedrisk.__pycache__"}
    assert units <= set(LAYERS), (
        f"give these a layer in LAYERS and docs/architecture.md: {sorted(units - set(LAYERS))}"
    )


def test_no_upward_import():
    upward = [
        f"{module}:{line} imports {target}"
        for module, target, line in _imports()
        if LAYERS[_unit(target)] > LAYERS[_unit(module)]
    ]
    assert not upward, "lower layers must not import upper ones:\n" + "\n".join(sorted(upward))


def test_no_cycle_between_subpackages():
    edges: dict[str, set[str]] = {}
    for module, target, _ in _imports():
        if _unit(module) != _unit(target):
            edges.setdefault(_unit(module), set()).add(_unit(target))
    state: dict[str, int] = {}

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        for v in edges.get(u, ()):
            assert state.get(v) != 1, "cycle: " + " -> ".join([*stack, u, v])
            if not state.get(v):
                visit(v, [*stack, u])
        state[u] = 2

    for u in sorted(edges):
        if not state.get(u):
            visit(u, [])


@pytest.mark.parametrize("module", ["fedrisk.config", "fedrisk.config.reference"])
def test_reading_a_config_loads_neither_torch_nor_flower(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'flwr', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_modules_stay_small():
    """One concern per module: nothing over 400 lines outside the tests."""
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long, f"split these modules: {long}"
