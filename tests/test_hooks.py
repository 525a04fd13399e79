"""Meta-tests: every hook is documented with its arguments and has a test of its own."""
import re
from pathlib import Path

import pytest

from benchbone import hookspecs
from benchbone.plugins import get_plugin_manager

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
SPECS = sorted(name for name in dir(hookspecs) if name.startswith("benchbone_"))


@pytest.mark.parametrize("name", SPECS)
def test_every_hook_is_documented_with_its_arguments(name):
    pm = get_plugin_manager(entrypoints=False)
    argnames = getattr(pm.hook, name).spec.argnames
    assert f"### {name}({', '.join(argnames)})" in DOCS


@pytest.mark.parametrize("name", SPECS)
def test_every_hook_has_a_test(name):
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    assert re.search(rf"def test_hook_{name}\b", tests), f"add test_hook_{name}"


def test_hook_benchbone_register_backbones(benchbone_pm):
    entry = benchbone_pm.registries().backbones.get("test/tiny-cnn")
    backbone = entry.obj(pretrained=True)
    import torch

    assert backbone.model(torch.zeros(2, 3, 16, 16)).shape == (2, backbone.num_features)


def test_hook_benchbone_register_datasets(benchbone_pm):
    data = benchbone_pm.registries().datasets.get("digits").obj(data_dir=None, download=False)
    assert len(data.classes) == 10 and len(data.train) + len(data.test) == 1797
    image, label = data.train[0]
    assert image.dtype.is_floating_point is False and tuple(image.shape) == (1, 8, 8) and 0 <= label < 10


def test_hook_benchbone_register_strategies(run_tiny_benchmark):
    board = run_tiny_benchmark(strategies=["linear-probe"])
    assert board.loc[0, "status"] == "ok"


def test_hook_benchbone_register_metrics(benchbone_pm):
    import numpy as np

    metrics = benchbone_pm.registries().metrics
    y_true, y_pred = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])
    assert metrics.get("top1").obj(y_true, y_pred, None) == 0.75
    assert metrics.get("top1").meta["higher_is_better"] is True


def test_hook_benchbone_pick_device(benchbone_pm):
    assert benchbone_pm.hook.benchbone_pick_device(requested=None) in ("cpu", "cuda", "mps")
    assert benchbone_pm.hook.benchbone_pick_device(requested="cpu") == "cpu"
