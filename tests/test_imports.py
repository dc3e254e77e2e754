"""The package's import graph: no cycles, and no module imports from a layer above its
own, lazy imports inside functions included (they hide a cycle, they do not remove it).

The layers, lowest first (README, "Architecture"); a module may import from its own
layer and those below:

0. ``patcc.errors``, ``patcc.text``, ``patcc.fileio``, ``patcc.progress``, ``patcc.version``
1. ``patcc.ir``
2. ``patcc.passes``
3. ``patcc.frontends`` and ``patcc.backends``, which never import each other
4. ``patcc.runtime``, ``patcc.models``
5. ``patcc.compiler``, ``patcc.tuning``, ``patcc.report``, ``patcc.stats``
6. ``patcc.cli`` and the command modules, and the package itself (``patcc``)

Written with the standard library only (``ast``), so it runs before anything is built.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "patcc"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("patcc.errors", "patcc.text", "patcc.fileio", "patcc.progress", "patcc.version"),
    ("patcc.ir",),
    ("patcc.passes",),
    ("patcc.frontends", "patcc.backends"),
    ("patcc.runtime", "patcc.models"),
    ("patcc.compiler", "patcc.tuning", "patcc.report", "patcc.stats"),
    ("patcc.cli", "patcc.prune_command", "patcc"),
)
APART = (("patcc.frontends", "patcc.backends"),)
"""Pairs of packages on one layer that must not import each other."""


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # ``import patcc.a.b`` names patcc.a.b; the nearest module it names is enough
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    """The layer of module ``name``: that of the longest prefix listed in LAYERS."""
    best, level = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    if level < 0:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS")
    return level


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_upward_imports() -> None:
    wrong = []
    for name, targets in sorted(graph().items()):
        for target in sorted(targets):
            if layer_of(target) > layer_of(name):
                wrong.append(f"{name} (layer {layer_of(name)}) imports {target} "
                             f"(layer {layer_of(target)})")
            for a, b in APART:
                for x, y in ((a, b), (b, a)):
                    if name.startswith(x + ".") and target.startswith(y + "."):
                        wrong.append(f"{name} imports {target}: {x} and {y} stay apart")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("source, expected", [
    ("import patcc.ir.layers\n", {"patcc.ir.layers"}),
    ("from patcc.ir import layers\n", {"patcc.ir", "patcc.ir.layers"}),
    ("def f():\n    from patcc.compiler import build\n", {"patcc.compiler"}),
    ("from . import graph\n", {"patcc.ir", "patcc.ir.graph"}),
    ("from ..passes import fold\n", {"patcc.passes"}),
])
def test_the_checker_sees_every_import(tmp_path: Path, source: str,
                                       expected: set[str]) -> None:
    """The checker itself: absolute, relative and lazy imports all count."""
    path = tmp_path / "verify.py"
    path.write_text(source)
    known = {name: path for name in ("patcc.ir", "patcc.ir.layers", "patcc.ir.graph",
                                     "patcc.compiler", "patcc.passes", "patcc.ir.verify")}
    assert imports("patcc.ir.verify", path, known) == expected


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("patcc.backends.llvm.gemm") == 3
    assert layer_of("patcc") == 6


def test_each_backend_package_exports_the_contract() -> None:
    """A backend package exports ``build`` and the artifact class it returns (with
    ``save`` and ``info``), and its targets are in the one registry."""
    import inspect

    from patcc.backends import llvm, opencl
    from patcc.backends.target import find_target, target_tags

    for backend, artifact, tags in ((llvm, llvm.Library, ["x86_64-avx2", "aarch64-android"]),
                                    (opencl, opencl.OpenCLPackage, list(opencl.OPENCL_TARGETS))):
        assert inspect.signature(backend.build).return_annotation in (artifact.__name__,
                                                                      artifact)
        assert callable(artifact.save) and hasattr(artifact, "info")
        for tag in tags:
            assert tag in target_tags() and find_target(tag).tag == tag
