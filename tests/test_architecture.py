"""The core's shape, as docs/architecture.md draws it: no import circle, and imports only go down the layers."""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "benchbone"

# docs/architecture.md's layers, lowest first: a module may import its own layer and those below it.
LAYERS = {
    "foundation": ("benchbone.api", "benchbone.errors", "benchbone.kinds", "benchbone.digests", "benchbone.versions",
                   "benchbone.records", "benchbone.registry", "benchbone.hookspecs", "benchbone.plugins",
                   "benchbone.moved"),
    "compute": ("benchbone.compute",),
    "inputs": ("benchbone.inputs",),
    "reporting": ("benchbone.reporting",),
    "planning": ("benchbone.planning",),
    "execution": ("benchbone.execution",),
    "selection": ("benchbone.selection",),
    "front": ("benchbone", "benchbone.cli", "benchbone.doctor", "benchbone.helpers", "benchbone.testing"),
}


def module_name(path: pathlib.Path, root: pathlib.Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: pathlib.Path = PACKAGE) -> dict[str, pathlib.Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def layer(module: str) -> int:
    """The index in LAYERS of the most specific entry that holds ``module``."""
    best = max((prefix for names in LAYERS.values() for prefix in names
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return next(i for i, names in enumerate(LAYERS.values()) if best in names)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(source: str, name: str, known: set[str], is_package: bool = False) -> dict[str, set[str]]:
    """The benchbone modules that ``source`` (module ``name``) imports, by where: "module" (at import time,
    under ``if TYPE_CHECKING:`` too) and "deferred" (inside functions). Relative imports are resolved."""
    found: dict[str, set[str]] = {"module": set(), "deferred": set()}

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            anchor = name.split(".") if is_package else name.split(".")[:-1]
            anchor = anchor[:len(anchor) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]

    def walk(node, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found[where].update(t for t in targets(child) if t == "benchbone" or t.startswith("benchbone."))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                walk(child, "deferred")
            else:
                walk(child, where)

    walk(ast.parse(source), "module")
    return found


def import_graph(root: pathlib.Path = PACKAGE) -> dict[str, dict[str, set[str]]]:
    found = modules(root)
    return {name: imports(path.read_text(encoding="utf-8"), name, set(found), path.name == "__init__.py")
            for name, path in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (or one that imports itself), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                out.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def against_the_layers(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    return sorted(f"{module} ({list(LAYERS)[layer(module)]}) imports {target} ({list(LAYERS)[layer(target)]})"
                  for module, found in graph.items() for where in found.values() for target in where
                  if target != "benchbone" and layer(target) > layer(module))


def test_the_core_has_no_import_circle_counting_type_checking_imports():
    graph = {name: found["module"] for name, found in import_graph().items()}
    assert circles(graph) == []


def test_imports_go_down_the_layers_of_docs_architecture():
    assert against_the_layers(import_graph()) == []


def test_every_layer_of_the_test_is_in_docs_architecture():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name, members in LAYERS.items():
        assert f"**{name}**" in page
        for member in members:
            assert f"`{member}`" in page or f"`{member.split('.')[-1]}`" in page, member


def test_the_top_level_holds_at_most_15_modules_and_no_core_module_exceeds_400_lines():
    top = [p for p in PACKAGE.glob("*.py")]
    assert len(top) <= 15, sorted(p.name for p in top)
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


@pytest.mark.parametrize("case, expected", [
    ({"a": "import benchbone.b\n", "b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from benchbone import a\n"},
     [["benchbone.a", "benchbone.b"]]),
    ({"a": "from . import b\n", "b": "from .a import thing\n"}, [["benchbone.a", "benchbone.b"]]),
    ({"a": "import benchbone.b\n", "b": "def f():\n    import benchbone.a\n"}, []),  # deferred: no circle
])
def test_the_check_finds_a_circle_through_type_checking_and_relative_imports(tmp_path, case, expected):
    package = tmp_path / "benchbone"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, source in case.items():
        (package / f"{name}.py").write_text(source)
    graph = {name: found["module"] for name, found in import_graph(package).items()}
    assert circles(graph) == expected


def test_the_check_finds_an_import_against_the_layers():
    graph = {"benchbone.reporting.leaderboard": {"module": set(), "deferred": {"benchbone.execution.session"}}}
    assert against_the_layers(graph) == [
        "benchbone.reporting.leaderboard (reporting) imports benchbone.execution.session (execution)"]
