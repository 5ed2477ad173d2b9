"""The package layering holds: pure packages never reach the store, and no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "trapline"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every trapline module ``path`` imports, at any depth (lazy and TYPE_CHECKING ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("trapline"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trapline"):
            names.add(str(node.module))
            # ``from trapline.x import y`` may name a submodule y
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path) & modules.keys() - {name} for name, path in modules.items()}


@pytest.mark.parametrize("package", ["routing", "enrich", "fingerprint", "ingest"])
def test_pure_packages_do_not_import_the_store(package: str) -> None:
    graph = _graph()
    offenders = {
        m: sorted(i for i in imported if i.startswith("trapline.store"))
        for m, imported in graph.items()
        if m.startswith(f"trapline.{package}")
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_trap_address_codec_imports_without_the_trap_servers() -> None:
    code = (
        "import sys, trapline.traps.addresses; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiosmtpd', 'starlette', 'jinja2', 'duckdb') or m.startswith('trapline.traps.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['trapline.traps.addresses', 'trapline.traps.names']"


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []
