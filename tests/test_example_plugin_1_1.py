"""The plugin API 1.1 example package of docs/plugins.md (tests/plugins/benchbone-shapes), installed for real
and run; its module is the one the docs show, and its strategy is unit-tested with benchbone.testing."""
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_subprocess

PACKAGE = Path(__file__).parent / "plugins" / "benchbone-shapes"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def test_the_docs_show_the_package_as_it_is():
    blocks = re.findall(r"```(?:python|toml)\n# (\S+)\n(.*?)```", DOCS.read_text(), re.S)
    shown = {name: text for name, text in blocks}
    for name in ("pyproject.toml", "benchbone_shapes.py"):
        assert shown[name] == (PACKAGE / name).read_text(), f"docs/plugins.md shows another {name}"


@pytest.fixture(scope="module")
def shapes():
    """The package's module, imported from its folder (not installed)."""
    sys.path.insert(0, str(PACKAGE))
    try:
        return importlib.import_module("benchbone_shapes")
    finally:
        sys.path.remove(str(PACKAGE))


def test_its_strategy_on_a_fake_context(shapes):
    benchbone_shapes = shapes
    from benchbone import Backbone
    from benchbone.testing import make_context

    ctx = make_context(features={"train": [[0.0, 0.0], [0.0, 1.0], [4.0, 4.0], [4.0, 5.0]], "test": [[0.5, 0.0], [4.0, 3.0]]},
                       labels={"train": [0, 0, 1, 1], "test": [0, 1]}, params={"shrinkage": 0.0})
    backbone = benchbone_shapes.build_pooled(pretrained=False)
    assert isinstance(backbone, Backbone)
    predictions = benchbone_shapes.nearest_centroid(backbone, None, ctx)
    assert predictions.y_pred.tolist() == [0, 1] and len(ctx.info["backbone_digest"]) == 64


def test_its_strategy_in_a_tiny_grid(shapes, benchbone_pm, run_tiny_benchmark):
    benchbone_pm.register(shapes, name="shapes")
    board = run_tiny_benchmark(strategies=["shapes/centroid"], overrides={"shrinkage": 0.1})
    assert board.loc[0, "status"] == "ok" and board.loc[0, "top1"] > 0.5
    assert benchbone_pm.registries().strategies.get("centroid").params == {"shrinkage": 0.0}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package installed without dependencies into a folder of its own, and the environment that loads it."""
    site = str(tmp_path_factory.mktemp("site"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", site]
    subprocess.run([*pip, str(PACKAGE)], check=True, capture_output=True, timeout=300)
    return {"PYTHONPATH": site, "BENCHBONE_LOAD_PLUGINS": "1"}


@pytest.mark.slow
def test_installed_1_1_plugin_runs_with_declared_parameters(installed, tmp_path):
    listed = run_subprocess("plugins", env=installed)
    assert listed.returncode == 0, listed.stderr
    assert "shapes 1.1.0: benchbone_register_backbones, benchbone_register_datasets, benchbone_register_metrics, " \
           "benchbone_register_strategies, benchbone_run_cell" in listed.stdout
    bad = run_subprocess("run", "-b", "shapes/pooled", "-d", "shapes/squares", "-s", "centroid",
                         "--set", "shrinkage=1.5", "--out", str(tmp_path / "bad"), env=installed)
    assert bad.returncode == 2 and "shrinkage=1.5 must be in [0, 1)" in bad.stderr
    assert not (tmp_path / "bad").exists()  # checked before the first cell
    result = run_subprocess("run", "-b", "shapes/pooled", "-d", "shapes/squares", "-s", "centroid", "-s", "knn",
                            "-m", "top1", "-m", "shapes/error-rate", "--set", "shrinkage=0.2", "--set", "size=6",
                            "-q", "--out", str(tmp_path / "run"), env=installed)
    assert result.returncode == 0, result.stderr
    board = {row["strategy"]: row for row in json.loads((tmp_path / "run" / "leaderboard.json").read_text())}
    assert board["shapes/centroid"]["top1"] > 0.9
    assert board["shapes/centroid"]["shapes/error-rate"] == pytest.approx(1 - board["shapes/centroid"]["top1"])
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]
    mine = next(r for r in records if r["strategy"] == "shapes/centroid")
    assert mine["params"] == {"shrinkage": 0.2} and mine["cell"]["dataset_params"] == [["size", 6]]
    assert mine["strategy_info"]["shapes_saw"] == mine["cell_id"]
    assert mine["plugin_versions"]["shapes"] == "1.1.0" and "shapes/error-rate" in mine["ci"]
