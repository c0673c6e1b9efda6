"""The import graph points one way: no cycles, and the layering contracts of ``setup.cfg`` hold.

Two independent checks, each with a negative control that must fail: an AST scan of every import
statement in the package (lazy imports inside functions included) for cycles, and import-linter's
contracts (layers with the protocol at the bottom, generic engines that depend on the protocol
alone, no memory module importing another).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "varmem"


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}`` (any import statement, at any depth; an
    import of a module's own ancestor package is not counted: Python initialises it first)."""
    mods = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if node.level else []
                root = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
                targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in mods else root for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges[mod] |= {t for t in targets if t in mods and t != mod and not mod.startswith(t + ".")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    edges = import_graph(PACKAGE)
    assert len(edges) > 40 and sum(map(len, edges.values())) > 100  # the scan saw the package
    assert cycles(edges) == []


def test_a_cycle_through_a_lazy_import_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g  # lazy\n")
    (pkg / "c.py").write_text("from . import a\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.sub.b"]]


def _lint_imports(pythonpath: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), str(ROOT / "setup.cfg")], cwd=pythonpath, capture_output=True, text=True,
                          env={"PYTHONPATH": str(pythonpath), "PATH": ""}, timeout=300)


@pytest.fixture(scope="module")
def lint_imports_available():
    if not Path(sys.executable).with_name("lint-imports").exists():
        pytest.fail("lint-imports (import-linter, a test dependency) is not installed next to this Python")


def test_the_layering_contracts_hold(lint_imports_available):
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = (ROOT / "setup.cfg").read_text().count("[importlinter:contract:")  # every contract, kept
    assert f"{contracts} kept, 0 broken" in result.stdout and contracts >= 4


def test_an_upward_import_breaks_the_contracts(lint_imports_available, tmp_path):
    """Negative control: the same contracts on a copy of the package in which a generic engine
    imports a memory, and the protocol imports an engine."""
    shutil.copytree(PACKAGE, tmp_path / "varmem", ignore=shutil.ignore_patterns("__pycache__"))
    engine = tmp_path / "varmem" / "inference" / "exact.py"
    engine.write_text(engine.read_text() + "\nfrom ..memories import kernel_density  # upward\n")
    memory = tmp_path / "varmem" / "memory.py"
    lazy = "\n\ndef _late():\n    from .inference import retrieve_map  # lazy, upward\n"
    memory.write_text(memory.read_text() + lazy)
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    contracts = (ROOT / "setup.cfg").read_text().count("[importlinter:contract:")
    assert f"Contracts: {contracts - 3} kept, 3 broken." in result.stdout, result.stdout  # the others hold
    assert "varmem.inference.exact -> varmem.memories.kernel_density" in result.stdout
    assert "varmem.memory -> varmem.inference" in result.stdout  # the lazy import is seen too
