"""The import graph of ``reseller_webhooks``, built from the source with ``ast``: no cycle at all
(imports inside functions count as much as those at the top), the producer side never reaches
into the worker, and the worker's core (delivery, records, HTTP, configuration) never imports
Celery, so it can be read, tested and reused without it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "reseller_webhooks"
#: Source folder -> the installed package it becomes (pyproject.toml's package-dir mapping).
FOLDERS = {"producers": f"{PACKAGE}.producers", "worker": f"{PACKAGE}.worker"}
#: No Celery below these.
CELERY_FREE = ("worker.delivery", "worker.records", "worker.http", "worker.config")


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def imported_names(module: str, path: Path) -> Iterator[tuple[str, str | None]]:
    """(module, name) for every import statement anywhere in the file, relative ones resolved;
    name is what a ``from`` import takes (it may be a submodule)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield base, alias.name


def graph() -> dict[str, set[str]]:
    """Each of our modules -> the modules it imports (ours and third-party, by full name)."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for module, path in known.items():
        targets: set[str] = set()
        for base, name in imported_names(module, path):
            if name and f"{base}.{name}" in known:
                targets.add(f"{base}.{name}")
            else:
                targets.add(base)
        edges[module] = targets
    return edges


def ours(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph restricted to our modules (an import of ``a.b.c`` counts as one of the longest
    module of ours it names)."""
    known = set(edges)
    inner: dict[str, set[str]] = {}
    for module, targets in edges.items():
        inner[module] = set()
        for target in targets:
            parts = target.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in known:
                    inner[module].add(candidate)
                    break
    return inner


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one importing itself
    (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"a"}}, [["a"]]),
    ],
)
def test_cycles_finds_what_it_should(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_the_graph_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("import os\ndef f():\n    from .sibling import thing\n    import a.b\n")
    assert sorted(imported_names("pkg.sub.mod", source), key=str) == [
        ("a.b", None),
        ("os", None),
        ("pkg.sub.sibling", "thing"),
    ]


def test_the_graph_covers_the_package() -> None:
    edges = ours(graph())
    assert f"{PACKAGE}.worker.queue.app" in edges
    assert f"{PACKAGE}.worker.queue.app" in edges[f"{PACKAGE}.worker.queue.tasks"]


def test_no_import_cycle() -> None:
    assert cycles(ours(graph())) == []


def test_the_producer_side_never_imports_the_worker() -> None:
    reaching = {
        module: sorted(t for t in targets if t.startswith(f"{PACKAGE}.worker"))
        for module, targets in graph().items()
        if module.startswith(f"{PACKAGE}.producers")
    }
    assert {m: t for m, t in reaching.items() if t} == {}


def test_the_worker_core_never_imports_celery() -> None:
    prefixes = tuple(f"{PACKAGE}.{p}" for p in CELERY_FREE)
    importing = {
        module: sorted(t for t in targets if t == "celery" or t.startswith("celery."))
        for module, targets in graph().items()
        if module.startswith(prefixes)
    }
    assert {m: t for m, t in importing.items() if t} == {}
