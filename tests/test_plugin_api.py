"""Plugin API 1.1: typed register callbacks, registration through pluggy, lifecycle hooks, plugin versions."""
import importlib
import json
import os
import subprocess
import sys

import pytest

from benchbone import hookimpl
from benchbone.errors import DuplicateNameError, PluginLoadError, UsageError
from benchbone.planning.grid import GridSpec, expand
from benchbone.plugins import get_plugin_manager

_helpers = importlib.import_module("test_plugins")  # its fake entry points and module writer
fake_entry_points, write_module = _helpers.fake_entry_points, _helpers.write_module


def predict_nothing(backbone, data, ctx):
    raise AssertionError("never run")


def check_steps(params):
    if params["steps"] < 1:
        raise UsageError("api/new: steps >= 1")


class Strategies:
    """A 1.1 strategy beside a v1 one, registered by one plugin."""

    @hookimpl
    def benchbone_register_strategies(self, register):
        register("api/new", predict_nothing, params={"alpha": None, "steps": 3}, types={"alpha": float},
                 check=check_steps,
                 description="a 1.1 strategy", aliases=("api-new",))
        register("api/old", predict_nothing, description="v1 style", depth=2)


@pytest.fixture
def pm(benchbone_pm):
    benchbone_pm.register(Strategies(), name="api")
    return benchbone_pm


def grid(pm, strategy, **overrides):
    return expand(GridSpec(["test/tiny-cnn"], ["test/blobs"], [strategy], ["top1"], 1, overrides), pm.registries())


def test_metadata_is_keyword_only_and_never_a_parameter(pm):
    new, old = pm.registries().strategies.get("api-new"), pm.registries().strategies.get("api/old")
    assert new.params == {"alpha": None, "steps": 3} and new.meta["description"] == "a 1.1 strategy"
    assert old.params == {"depth": 2} and old.meta["description"] == "v1 style"  # v1 keywords stay parameters
    with pytest.raises(UsageError, match="has no parameter 'description'"):
        grid(pm, "api/old", **{"api/old.description": "x"})


def test_parameters_are_typed_and_checked_when_the_grid_is_expanded(pm):
    assert dict(grid(pm, "api/new", alpha=2)[0].params) == {"alpha": 2.0, "steps": 3}
    with pytest.raises(UsageError, match=r"--set alpha='abc': expected float"):
        grid(pm, "api/new", alpha="abc")
    with pytest.raises(UsageError, match="steps >= 1"):
        grid(pm, "api/new", steps=0)
    with pytest.raises(UsageError, match="epochs"):  # a built-in's check, before the first cell
        grid(pm, "finetune", **{"finetune.epochs": 0})
    with pytest.raises(UsageError, match="expected float"):
        grid(pm, "linear-probe", C="abc")


def test_unknown_metadata_fails_the_plugin_and_names_it(pm):
    class Typo:
        @hookimpl
        def benchbone_register_metrics(self, register):
            register("typo", lambda *a: 0.0, higher_is_beter=True)

    pm.register(Typo(), name="typo")
    with pytest.raises(PluginLoadError, match="typo failed in benchbone_register_metrics: TypeError.*higher_is_beter"):
        pm.registries().metrics


def test_registering_a_name_again_with_other_settings_is_an_error(pm):
    class Twice:
        @hookimpl
        def benchbone_register_strategies(self, register):
            register("twice", predict_nothing, params={"k": 1})
            register("twice", predict_nothing, params={"k": 2})

    pm.register(Twice(), name="twice")
    with pytest.raises(DuplicateNameError, match="registered strategy 'twice' twice with different settings"):
        pm.registries().strategies


def test_registries_follow_register_and_unregister(pm):
    assert "api/new" in pm.registries().strategies
    pm.unregister(name="api")
    assert "api/new" not in pm.registries().strategies
    pm.register(Strategies(), name="api")
    assert "api/new" in pm.registries().strategies


def test_registration_goes_through_pluggy_so_monitoring_sees_it(pm):
    calls = []
    undo = pm.add_hookcall_monitoring(lambda name, impls, kwargs: calls.append((name, [i.plugin_name for i in impls])),
                                      lambda outcome, name, impls, kwargs: None)
    pm.registries().strategies
    undo()
    assert ("benchbone_register_strategies", ["api"]) in calls  # one plugin per call: all or nothing each


def test_trace_plugins_traces_registration():
    result = subprocess.run([sys.executable, "-m", "benchbone.cli", "list", "metrics"], capture_output=True, text=True,
                            env={**os.environ, "BENCHBONE_TRACE_PLUGINS": "1"}, timeout=300)
    assert result.returncode == 0
    assert "benchbone_register_metrics [hook]" in result.stderr
    assert "<register metric for plugin 'classification_metrics'>" in result.stderr


def test_two_installed_plugins_claiming_a_name_lose_it_both(tmp_path, monkeypatch, cli):
    for module in ("bb_one", "bb_two"):
        write_module(tmp_path, monkeypatch, module, f"""
            from benchbone import hookimpl
            @hookimpl
            def benchbone_register_metrics(register):
                register("shared", lambda *a: 0.0)
                register("{module}-own", lambda *a: 1.0)
        """)
    fake_entry_points(monkeypatch, ("one", "bb_one"), ("two", "bb_two"))
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "1")
    result = cli("plugins")
    assert result.code == 1
    for plugin in ("one", "two"):
        assert (f"{plugin}: FAILED to load: metric name 'shared' is registered by both plugin 'one' and plugin 'two' "
                "(left out of both)") in result.out
    listed = cli("list", "metrics")
    assert "bb_one-own" in listed.out and "bb_two-own" in listed.out and "shared" not in listed.out
    with pytest.raises(UsageError, match="metric 'shared' is not available: 'shared' is registered by both"):
        get_plugin_manager().registries().metrics.get("shared")


def test_hook_benchbone_configure(tmp_path, monkeypatch):
    write_module(tmp_path, monkeypatch, "bb_configured", """
        from benchbone import hookimpl
        class Extra:
            @hookimpl
            def benchbone_register_metrics(self, register):
                register("configured", lambda *a: 1.0)

        @hookimpl
        def benchbone_configure(config):
            config.pm.register(Extra(), name="extra")
            config.pm.seen_options = dict(config.options)
    """)
    pm = get_plugin_manager(entrypoints=False, extra=["bb_configured"])
    assert pm.seen_options == {"log_to": []} and pm.registries().metrics.get("configured").plugin == "extra"
    with pytest.raises(UsageError, match="--log-to 'nowhere:x': give KIND:TARGET"):  # the built-in user, log_to
        get_plugin_manager(entrypoints=False, log_to=["nowhere:x"])
    pm = get_plugin_manager(entrypoints=False, log_to=[f"tensorboard:{tmp_path / 'tb'}"])
    assert pm.has_plugin(f"tensorboard:{tmp_path / 'tb'}") and pm.load_args["log_to"] == [f"tensorboard:{tmp_path / 'tb'}"]


class Annotate:
    @hookimpl(wrapper=True)
    def benchbone_run_cell(self, cell, run_dir):
        record = yield
        record["strategy_info"]["wrapped"] = cell.id
        return record


def test_hook_benchbone_run_cell(benchbone_pm, run_tiny_benchmark, tmp_path):
    benchbone_pm.register(Annotate(), name="annotate")
    run_tiny_benchmark(strategies=["knn"], out=tmp_path / "run")
    record = json.loads(next((tmp_path / "run" / "records").glob("*.json")).read_text())
    assert record["strategy_info"]["wrapped"] == record["cell_id"]
    timings = record["timings"]  # the built-in wrapper, cell_timing: the whole cell, wrappers inside it included
    assert timings["cell_s"] >= timings["total_s"] > 0 and timings["cpu_s"] > 0


def test_every_plugin_version_is_recorded_and_checked_by_workers(run_tiny_benchmark, tmp_path):
    from benchbone.execution.resume import check_plugin_versions

    run_tiny_benchmark(strategies=["knn"], out=tmp_path / "run")
    record = json.loads(next((tmp_path / "run" / "records").glob("*.json")).read_text())
    versions = record["plugin_versions"]
    assert versions["benchbone.testing"] == "local" and versions["knn"] == versions["cifar"] != "unknown"
    check_plugin_versions(versions, versions)
    with pytest.raises(PluginLoadError, match=r"knn 1\.0 \(here 0\.9\), mine 2 \(here not loaded\)"):
        check_plugin_versions({"knn": "1.0", "mine": "2"}, {"knn": "0.9"})


def test_every_command_needing_plugins_names_one_that_failed_to_import(tmp_path, monkeypatch, cli, run_tiny_benchmark):
    run_tiny_benchmark(strategies=["knn"], out=tmp_path / "run")
    write_module(tmp_path, monkeypatch, "bb_broken", "raise RuntimeError('boom at import')")
    fake_entry_points(monkeypatch, ("broken", "bb_broken"))
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "1")
    for args in (["list", "strategies"], ["leaderboard", tmp_path / "run"],
                 ["report", tmp_path / "run", "-o", tmp_path / "report.html"]):
        result = cli(*args)
        assert result.code == 0, result.err
        assert "benchbone: warning: plugin broken failed to load: broken = bb_broken: RuntimeError: boom at import" \
               in result.err, args


def test_mcnemar_pairs_every_metric_with_0_1_values_per_item_not_only_top1(benchbone_pm):
    import numpy as np

    from benchbone.reporting.groups import binary_items
    from benchbone.reporting.statistics import Items, MetricForm

    metrics = benchbone_pm.registries().metrics
    y_true, y_pred = np.arange(8) % 8, np.array([[0, 1, 2, 0, 0, 0, 0, 0]])
    scores = np.full((1, 8, 8), 0.01)
    scores[0, np.arange(8), y_pred[0]] = 0.93
    items = Items([0], y_true, y_pred, scores, ("t",))
    forms = {name: MetricForm.from_registry(name, metrics) for name in ("top1", "top5", "nll")}
    assert binary_items(forms["top1"], items).tolist() == [True, True, True] + [False] * 5
    assert binary_items(forms["top5"], items).dtype == bool
    assert binary_items(forms["nll"], items) is None  # not right-or-wrong per item: no McNemar
    assert binary_items(forms["top1"], Items([0, 1], y_true, np.vstack([y_pred, y_pred]), None, ("t",))) is None
