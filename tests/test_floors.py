"""The floors: `core <- probes <- monitor`, one way, one installed name, no import circle.

A small AST check of every import (function-level and TYPE_CHECKING ones included), so a
change that runs an import against the floors fails here with the file and line.
docs/architecture.md draws the same map.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "probes", "monitor", "lab")
"""The repo folders installed under `vigie.`: each may import only what its floor allows."""

MAY_IMPORT: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "probes": frozenset({"core", "probes"}),
    "monitor": frozenset({"core", "probes", "monitor"}),
    "lab": frozenset({"core", "probes", "monitor", "lab"}),
}
DEMO_MODULES = frozenset({"monitor/demo.py"})
"""The one daemon module that starts the simulated hospital (`vigie demo`)."""


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line, absolute module name) for every import in a file, wherever it stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, "." * node.level + (node.module or "")
            else:
                yield node.lineno, node.module or ""


def _floor(module: str) -> str | None:
    """Return which of our packages a module name belongs to, None for stdlib or third party."""
    parts = module.split(".")
    if parts[0] == "vigie" and len(parts) > 1 and parts[1] in PACKAGES:
        return parts[1]
    return None


def test_every_import_keeps_to_its_floor() -> None:
    """core imports neither side, probes never the daemon, the lab only from the demo."""
    wrong: list[str] = []
    for package in PACKAGES:
        for path in _modules(package):
            rel = path.relative_to(ROOT).as_posix()
            for line, module in _imports(path):
                floor = _floor(module)
                if module.startswith("."):
                    wrong.append(f"{rel}:{line}: relative import {module!r}: write vigie.*")
                elif module.split(".")[0] in PACKAGES:
                    wrong.append(f"{rel}:{line}: {module!r} is not installed: write vigie.*")
                elif floor == "lab" and package != "lab" and rel not in DEMO_MODULES:
                    wrong.append(f"{rel}:{line}: {module!r}: only the demo starts the lab")
                elif floor is not None and floor != "lab" and floor not in MAY_IMPORT[package]:
                    wrong.append(f"{rel}:{line}: {package} may not import {module!r}")
    assert not wrong, "\n".join(wrong)


def test_tests_import_the_installed_names() -> None:
    """Tests import Vigie as `vigie.*` too, so no module is loaded under two names."""
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {module!r}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for line, module in _imports(path)
        if module.split(".")[0] in PACKAGES
    ]
    assert not wrong, "\n".join(wrong)
    assert not [m for m in sys.modules if m.split(".")[0] in PACKAGES]


def _top_level_graph(package: Path, prefix: str) -> dict[str, set[str]]:
    """Return the module-level import graph inside one package (what runs at import time)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        name = ".".join([prefix, *parts])
        edges: set[str] = set()
        for node in ast.parse(path.read_text()).body:  # module level only, not TYPE_CHECKING
            if isinstance(node, ast.ImportFrom) and node.module:
                edges.add(node.module)
                edges.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
        graph[name] = edges
    return {name: {e for e in edges if e in graph and e != name} for name, edges in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import circle of the graph, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", ["core", "probes/snmp"])
def test_no_import_circle_within(package: str) -> None:
    """Each module of the base and of the SNMP package imports only modules below it."""
    path = ROOT / package
    if not path.is_dir():
        pytest.skip(f"{package}/ is not a package yet")
    prefix = "vigie." + package.replace("/", ".")
    graph = _top_level_graph(path, prefix)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_cycle_finder_sees_a_circle() -> None:
    """The circle check itself can fail."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_core_module_has_its_test_file() -> None:
    """The shared base is small and everything stands on it: each module is tested on its own."""
    missing = [
        path.name
        for path in _modules("core")
        if path.name != "__init__.py" and not (ROOT / "tests/core" / f"test_{path.name}").exists()
    ]
    assert not missing


def test_installed_namespace_from_outside_the_repo(tmp_path: Path) -> None:
    """From any other folder `import vigie.monitor` works and `import monitor` does not."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import importlib.util, vigie.monitor.cli, vigie.probes, vigie.core, vigie.lab\n"
        "print([n for n in ('monitor', 'probes', 'core', 'lab') if importlib.util.find_spec(n)])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
