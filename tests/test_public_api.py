"""The public plugin API: plugins/ imports nothing else of benchbone, and the public names exist."""
import ast
from pathlib import Path

import pytest

import benchbone
import benchbone.compute.chunks
import benchbone.compute.lbfgs
import benchbone.compute.logistic
import benchbone.compute.sweep
import benchbone.compute.threads
import benchbone.helpers
import benchbone.testing

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
PUBLIC = {"benchbone": set(benchbone.__all__), "benchbone.helpers": set(benchbone.helpers.__all__),
          "benchbone.testing": set(benchbone.testing.__all__),
          **{m.__name__: set(m.__all__) for m in (benchbone.compute.chunks, benchbone.compute.lbfgs,
                                                  benchbone.compute.logistic, benchbone.compute.sweep,
                                                  benchbone.compute.threads)}}


def non_public_imports(source: str) -> list[str]:
    """``module.name`` for each benchbone name that ``source`` imports outside the public API."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "benchbone":
            allowed = PUBLIC.get(node.module, set())
            found += [f"{node.module}.{a.name}" for a in node.names if a.name not in allowed]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "benchbone" and a.name not in PUBLIC]
    return found


@pytest.mark.parametrize("path", sorted(PLUGINS.glob("*.py")), ids=lambda p: p.name)
def test_built_in_plugins_import_only_the_public_api(path):
    assert non_public_imports(path.read_text()) == []


def test_the_check_finds_private_imports():
    source = "from benchbone import hookimpl, Context\nfrom benchbone.planning.grid import Cell\nimport benchbone.inputs.weights\n" \
             "def f():\n    from benchbone.helpers import atomic_path, _private\n"
    assert non_public_imports(source) == ["benchbone.planning.grid.Cell", "benchbone.inputs.weights", "benchbone.helpers._private"]


def test_every_public_name_exists_and_context_is_exported():
    for module, names in PUBLIC.items():
        for name in names:
            assert getattr(__import__(module, fromlist=["x"]), name) is not None, f"{module}.{name}"
    from benchbone import Context
    from benchbone.execution.context import Context as Defined

    assert Context is Defined
    for attribute in ("device", "seed", "params", "classes", "backbone", "preprocess", "workdir", "info",
                      "extraction", "augmentation", "corruption", "features(split)", "batches(split"):
        assert attribute in Context.__doc__, attribute


@pytest.mark.parametrize("path", sorted(PLUGINS.glob("*.py")), ids=lambda p: p.name)
def test_no_built_in_plugin_imports_another(path):
    """Each built-in could move into a package of its own: what two share lives in a public module."""
    tree = ast.parse(path.read_text())
    others = [node.module or "." for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
              and ((node.module or "").split(".")[0] == "benchbone_plugins" or node.level)]
    others += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
               if a.name.split(".")[0] == "benchbone_plugins"]
    assert others == []
