"""What a fresh machine meets: declared dependencies, packaged suites, and measurements that survive missing extras."""
import ast
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
OWN = {"benchbone", "benchbone_plugins", "benchbone_sample",
       *(path.stem for path in Path(__file__).parent.glob("*.py"))}  # conftest and test modules that share helpers


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    """Distribution names of pyproject.toml: {"": the dependencies, extra: its requirements}."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    return {group: {_normal(re.match(r"[A-Za-z0-9_.\-]+", r).group(0)) for r in reqs} for group, reqs in groups.items()}


def imported_modules(folder: Path) -> dict[str, str]:
    """Top-level third-party modules imported anywhere under ``folder``, each with one place that imports it."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        if "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN:
                    found.setdefault(top, f"{path.relative_to(REPO)}:{node.lineno}")
    return found


@pytest.mark.parametrize("folder", ["benchbone", "plugins", "tests"])
def test_every_imported_module_is_declared(folder):
    """Every third-party module imported is a dependency or in an extra (tests' in the test extra)."""
    ok = set().union(*declared().values())
    dists = importlib.metadata.packages_distributions()
    missing = []
    for module, where in imported_modules(REPO / folder).items():
        names = {_normal(d) for d in dists.get(module, [])} or {_normal(module)}  # not installed: its own name
        if not names & ok:
            missing.append(f"{module} (distribution {', '.join(sorted(names))}, imported at {where})")
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)


def test_the_guard_sees_an_undeclared_import(tmp_path, monkeypatch):
    """The guard reads real imports: a module importing a package nobody declared is caught."""
    (tmp_path / "x.py").write_text("import os\nfrom yaml import safe_load\nfrom . import sibling\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert set(imported_modules(tmp_path)) == {"yaml"}


def test_builtin_suites_ship_inside_the_package():
    from benchbone.planning.suites import SUITES_DIR, load_suite

    assert SUITES_DIR.parent == Path(sys.modules["benchbone"].__file__).parent
    spec = load_suite("quickstart")
    assert spec.datasets == ["digits"] and "pixels" in spec.backbones
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "suites/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["benchbone"]


def test_unknown_builtin_suite_is_one_line(cli, tmp_path):
    result = cli("run", "--suite", "quickstrat", "--out", tmp_path / "r")
    assert result.code == 2 and result.err.count("\n") == 1
    assert "no built-in suite 'quickstrat' (built-in: " in result.err and "quickstart" in result.err
    assert not (tmp_path / "r").exists()


def test_cells_stay_ok_when_matplotlib_cannot_be_imported(cli, tmp_path, monkeypatch):
    """The confusion PNG and the HTML page are secondary: without matplotlib the metrics, records and the
    leaderboard are complete, and the record and stderr name what is missing and why."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ModuleNotFoundError
    result = cli("run", "-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-s", "knn",
                 "--out", tmp_path / "r", "-q")
    assert result.code == 0, result.err
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "records").glob("*.json")]
    assert record["status"] == "ok" and 0 <= record["metrics"]["top1"] <= 1
    assert record["artefacts_missing"] == {"confusion_png": "matplotlib is not installed (pip install matplotlib)"}
    assert set(record["artefacts"]) == {"confusion_csv", "per_class_csv", "predictions"}
    assert (tmp_path / "r" / record["artefacts"]["predictions"]).is_file()
    board = json.loads((tmp_path / "r" / "leaderboard.json").read_text())
    assert [row["status"] for row in board] == ["ok"]
    lines = [line for line in result.err.splitlines() if "confusion.png not written" in line]
    assert lines == ["benchbone: warning: test/tiny-cnn x test/blobs x knn (seed 0): confusion.png not written: "
                     "matplotlib is not installed (pip install matplotlib)"]
    assert "Traceback" not in result.err


def test_doctor_reports_what_an_issue_needs(cli, tmp_path):
    import torch

    versions = {d: importlib.metadata.version(d) for d in ("torch", "timm")}
    from PIL import Image

    data = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (data / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(data / split / cls / "0.png")
    result = cli("doctor", "--data-dir", data, "--cache-dir", tmp_path / "cache")
    assert result.code == 0, result.err
    out = result.out
    assert f"torch {versions['torch']}" in out and f"timm {versions['timm']}" in out and "benchbone " in out
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert re.search(rf"^device: {expected}", out, re.M)
    assert re.search(r"^extra slurm: submitit \S+", out, re.M)  # the test extra brings it
    assert f"feature cache: {tmp_path / 'cache'} (not created yet)" in out
    assert re.search(r"^  digits: 1257 train, 540 test", out, re.M)
    assert re.search(r"^  cifar10: not found: cifar10: .*train has 2 class folders, not 10", out, re.M)
    assert re.search(r"^pretrained downloads: (possible|not possible \(offline\))", out, re.M)


def test_every_subpackage_of_the_core_is_packaged():
    """A folder of benchbone/ with an __init__.py that pyproject.toml does not list would be missing from the wheel."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "benchbone").rglob("__init__.py")}
    assert found - listed == set()
