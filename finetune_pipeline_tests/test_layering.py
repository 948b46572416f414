"""The import layering of finetune_pipeline: the [tool.importlinter] contracts of pyproject.toml, and no import cycle.

`lint-imports` checks the contracts (lib's packages layered, lib free of Dagster,
definitions -> defs -> lib one way, no cycle between sibling packages); a
failure prints its report. The cycle check below is module by module, so it
also sees a cycle through a package's own __init__, which the sibling contract
does not look at.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp
import importlinter  # noqa: F401  (the dev extra; a missing install fails here, by name)

from finetune_pipeline.lib import PROJECT_ROOT

PACKAGE = "finetune_pipeline"


def test_import_contracts_of_pyproject_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint_imports), "--no-cache", "--no-logo", str(PROJECT_ROOT / "pyproject.toml")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    report = proc.stdout + proc.stderr
    assert "Contracts: " in report, report  # it ran and read the contracts
    assert proc.returncode == 0, report


def strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def shortest_cycle(start: str, edges: dict[str, list[str]], within: set[str]) -> list[str]:
    """The shortest import path from `start` back to itself, through modules of `within` only."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in edges[node]:
                if child not in within:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")


def test_no_import_cycle_between_any_two_modules():
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    cycles = []
    for component in strongly_connected(edges):
        if len(component) < 2:
            continue
        cycle = shortest_cycle(component[0], edges, set(component))
        steps = []
        for importer, imported in zip(cycle, cycle[1:]):
            lines = ", ".join(f"l.{d['line_number']}: {d['line_contents'].strip()}"
                              for d in graph.get_import_details(importer=importer, imported=imported))
            steps.append(f"  {importer} -> {imported} ({lines})")
        cycles.append(f"{len(component)} modules in a cycle: {', '.join(component)}\n" + "\n".join(steps))
    assert not cycles, "import cycles in finetune_pipeline:\n" + "\n".join(cycles)


def test_the_cycle_finder_finds_a_planted_cycle():
    """The check above is only as good as its search: a cycle through three modules, and one self-standing module."""
    edges = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": []}
    assert strongly_connected(edges) == [["d"], ["a", "b", "c"]]
    assert shortest_cycle("a", edges, {"a", "b", "c"}) == ["a", "b", "c", "a"]
