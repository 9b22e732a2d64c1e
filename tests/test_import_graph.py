"""The import graph of the four packages, read from the sources with ``ast``.

Every ``import`` and ``from ... import`` counts, at module level and inside
functions alike (a function-level import is a dependency all the same, only a
later one). ``from package import name`` is an edge to ``package.name`` when
that is a module, else to the package itself; importing a submodule is not
counted as importing its parent package's ``__init__`` (Python runs that
first, and a package re-exporting its submodules is no cycle).

The tests: no cycle anywhere; the inference core of :mod:`cotracker3` reaches
neither training, evaluation, the synthetic engine nor the baseline, and
imports no OpenCV; the model file imports only torch and the package's
errors; ``cotracker3`` never imports the packages above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cotracker3", "track3d", "recon", "viz")
CORE = ("cotracker3.model", "cotracker3.predictor", "cotracker3.weights", "cotracker3.embedded", "cotracker3.errors")
"""The inference core: what loading and running a tracker needs."""
NOT_CORE = ("cotracker3.train", "cotracker3.eval", "cotracker3.synthetic", "cotracker3.baseline")


def _modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the packages (a package is its ``__init__``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports_of(name: str) -> dict[str, list[int]]:
    """The project modules that module ``name`` imports: ``{module: [line, ...]}``."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    edges: dict[str, list[int]] = {}

    def add(target: str, line: int) -> None:
        while target and target not in MODULES:  # "cotracker3.model.CoTracker3" -> "cotracker3.model"
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.setdefault(target, []).append(line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                add(sub if sub in MODULES else source, node.lineno)
    return edges


GRAPH = {name: imports_of(name) for name in MODULES}


def third_party_imports(name: str) -> set[str]:
    """Top-level names of the modules outside the packages that module ``name`` imports."""
    tree = ast.parse(MODULES[name].read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out - set(PACKAGES) - {"__future__"}


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def find_cycle(graph: dict[str, dict[str, list[int]]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_is_read():
    # The reader sees the edges it must: module level, function level, relative and "from package import module".
    assert "cotracker3.predictor" in GRAPH["cotracker3.baseline"]
    assert "cotracker3.eval.scoring" in GRAPH["cotracker3.train.loop"]  # inside evaluate_model
    assert "cotracker3.eval.tapvid" in GRAPH["cotracker3.eval.scoring"]  # from cotracker3.eval import tapvid
    assert "cotracker3.synthetic" in GRAPH["cotracker3.eval.scoring"]  # from cotracker3 import synthetic (a package)
    assert {"cotracker3.model", "cotracker3.train.loop", "track3d.cli", "viz.overlay"} <= set(MODULES)


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (line {GRAPH[a][b][0]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_find_cycle_finds_one():
    graph = {"a": {"b": [1]}, "b": {"c": [2]}, "c": {"a": [3]}, "d": {"a": [4]}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": [1]}, "b": {}}) is None


@pytest.mark.parametrize("core", CORE)
def test_the_inference_core_stands_alone(core):
    reached = reachable(core)
    outside = sorted(m for m in reached if m.startswith(NOT_CORE) or not m.startswith("cotracker3."))
    assert not outside, f"{core} reaches {outside}"
    assert "cv2" not in set().union(*(third_party_imports(m) for m in reached | {core}))


def test_the_model_file_imports_only_torch_and_the_errors():
    assert set(GRAPH["cotracker3.model"]) <= {"cotracker3.errors"}
    assert third_party_imports("cotracker3.model") <= {"torch", "dataclasses", "math", "typing"}


def test_cotracker3_never_imports_the_packages_above_it():
    for name in MODULES:
        if name.startswith("cotracker3"):
            above = sorted(t for t in GRAPH[name] if t.split(".")[0] in ("track3d", "recon", "viz"))
            assert not above, f"{name} imports {above}"
