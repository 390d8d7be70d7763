"""The import graph of the project's packages: core at the bottom, harness on top, no cycle.

Every ``import`` statement of every module (module level and inside functions) is read with ``ast``.
Allowed arrows between top-level packages (anything else fails):

- ``backends``, ``workloads``, ``results`` -> ``core``; ``harness`` -> everything;
- ``workloads`` -> ``backends`` (a workload runs on the backends' public family modules: configs,
  NumPy initial weights, data sets, the ``Backend`` type);
- ``workloads`` -> ``results.plots`` only inside a function: a ``Custom`` figure's ``draw`` uses the
  report's plotting helpers when the report calls it (plotly is loaded by the report only).

``core`` imports no other package of the project: the registry finds workloads and backends by
importing their package by name on first use (``importlib``), so results never import ``workloads``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "backends", "workloads", "results", "harness")
ALLOWED = {
    "core": set(),
    "backends": {"core"},
    "workloads": {"core", "backends"},
    "results": {"core"},
    "harness": {"core", "backends", "workloads", "results"},
}
LAZY_ALLOWED = {("workloads", "results.plots")}


def _imports(path: Path, root: Path = ROOT) -> list[tuple[str, bool]]:
    """(absolute module, inside a function) for each import in ``path``."""
    package = ".".join(path.relative_to(root).with_suffix("").parts)
    if path.name == "__init__.py":
        package += ".__init__"
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: -child.level]
                    module = ".".join([*base, child.module] if child.module else base)
                else:
                    module = child.module or ""
                found.append((module, in_function))
                found.extend((f"{module}.{a.name}", in_function) for a in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def _graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the modules (file: import) that import it."""
    graph: dict[str, dict[str, list[str]]] = {p: {} for p in PACKAGES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module, lazy in _imports(path):
                top = module.split(".")[0]
                if top not in PACKAGES or top == package:
                    continue
                if lazy and any(package == a and module.startswith(b) for a, b in LAZY_ALLOWED):
                    continue
                where = f"{path.relative_to(ROOT)}: {module}"
                graph[package].setdefault(top, []).append(where)
    return graph


def test_every_package_exists() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").exists(), package


def test_packages_import_only_what_the_layering_allows() -> None:
    graph = _graph()
    bad = [w for p, deps in graph.items() for d, where in deps.items() if d not in ALLOWED[p] for w in where]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_arrow_up_to_harness_from_backends_workloads_results() -> None:
    graph = _graph()
    for package in ("core", "backends", "workloads", "results"):
        assert "harness" not in graph[package], graph[package].get("harness")


def test_no_cycle_between_packages() -> None:
    graph = {p: set(d) for p, d in _graph().items()}
    state: dict[str, int] = {}

    def visit(p: str, stack: list[str]) -> None:
        state[p] = 1
        for q in graph[p]:
            assert state.get(q) != 1, f"cycle: {' -> '.join([*stack, p, q])}"
            if q not in state:
                visit(q, [*stack, p])
        state[p] = 2

    for p in graph:
        if p not in state:
            visit(p, [])


def test_the_checker_sees_an_arrow_it_must_refuse(tmp_path: Path) -> None:
    bad = tmp_path / "results" / "mod.py"
    bad.parent.mkdir()
    bad.write_text("from ..harness import cli\n\ndef f():\n    from harness.cli import app\n")
    found = _imports(bad, tmp_path)
    assert ("harness.cli", True) in found
    assert ("harness", False) in found
