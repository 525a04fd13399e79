"""What one plugin cannot do to the others (issue 28): write into arrays they read too, or take every command down
with a failing ``benchbone_configure``."""
from __future__ import annotations

import importlib
import json
import re
import warnings

import numpy as np
import pytest

from benchbone import hookimpl
from benchbone.errors import PluginError, PluginLoadError
from benchbone.plugins import announce_record, get_plugin_manager

_helpers = importlib.import_module("test_plugins")  # its fake entry points and module writer
fake_entry_points, write_module = _helpers.fake_entry_points, _helpers.write_module


# ---------------------------------------------------------------- arrays handed to plugins are read-only


def normalise_in_place(y_true, y_pred, y_score):
    """A hostile metric: turns the scores into probabilities in place, as if they were its own."""
    y_score -= y_score.max(axis=1, keepdims=True)
    np.exp(y_score, out=y_score)
    y_score /= y_score.sum(axis=1, keepdims=True)
    return float(y_score.max(axis=1).mean())


class Hostile:
    @hookimpl
    def benchbone_register_metrics(self, register):
        register("hostile/confidence", normalise_in_place, default=False, needs_scores=True)


def test_a_metric_writing_into_y_score_fails_its_cell_naming_it_and_changes_nothing(benchbone_pm, run_tiny_benchmark,
                                                                                     tmp_path):
    benchbone_pm.register(Hostile(), name="hostile")
    board = run_tiny_benchmark(strategies=["knn"], metrics=["hostile/confidence", "nll", "top1"], out=tmp_path / "bad")
    assert list(board["status"]) == ["failed"]
    assert (f"metric plugin 'hostile' (module {__name__}) wrote into y_score, which is read-only: copy it first"
            in board.loc[0, "error"])
    assert not list((tmp_path / "bad" / "artefacts").glob("*/predictions.npz"))  # nothing saved of altered scores



def test_metrics_after_a_hostile_one_see_the_strategys_numbers():
    from benchbone.execution.cell_run import score
    from benchbone.plugins import get_plugin_manager as manager

    pm = manager(entrypoints=False)
    pm.register(Hostile(), name="hostile")
    rng = np.random.default_rng(0)
    y_true, y_score = np.arange(20) % 4, rng.normal(size=(20, 4)) * 5
    y_pred = y_score.argmax(axis=1)
    expected = score(_cell(["nll", "top1"]), pm.registries(),
                     *_frozen(y_true, y_pred, y_score))
    arrays = _frozen(y_true, y_pred, y_score)
    with pytest.raises(PluginError, match=r"metric plugin 'hostile' \(module [\w.]+\) wrote into y_score, which is "
                                          "read-only: copy it first"):
        score(_cell(["hostile/confidence", "nll", "top1"]), pm.registries(), *arrays)
    assert np.array_equal(arrays[2], y_score)  # the strategy's scores, untouched
    assert score(_cell(["nll", "top1"]), pm.registries(), *arrays) == expected


def _cell(metrics):
    class FakeCell:  # score() reads only the metric names and the strategy
        strategy = "knn"
    cell = FakeCell()
    cell.metrics = tuple(metrics)
    return cell


def _frozen(y_true, y_pred, y_score):
    from benchbone.registry import read_only

    return read_only(y_true.copy()), read_only(y_pred.copy()), read_only(y_score.copy())


def test_checked_predictions_are_read_only():
    from benchbone.api import Predictions
    from benchbone.execution.cell_run import checked_predictions

    y_score = np.random.default_rng(0).normal(size=(6, 3))
    arrays = checked_predictions(_cell([]), Predictions(np.arange(6) % 3, y_score.argmax(1), y_score), 3, 6)
    assert all(not a.flags.writeable for a in arrays)
    y_score[0, 0] = 99.0  # the strategy's own array stays its own
    assert arrays[2][0, 0] != 99.0


def test_paired_tests_hand_plugins_read_only_items(tmp_path):
    from benchbone.reporting.statistics import load_items

    folder = tmp_path / "artefacts" / "c"
    folder.mkdir(parents=True)
    np.savez(folder / "predictions.npz", y_true=np.arange(6) % 3, y_pred=np.arange(6) % 3, y_score=np.eye(3)[np.arange(6) % 3])
    items = load_items([{"cell_id": "c", "seed": 0, "artefacts": {"predictions": "artefacts/c/predictions.npz"}}],
                       [tmp_path])
    assert not any(a.flags.writeable for a in (items.y_true, items.y_pred, items.y_score))


def scale_through_an_alias(y_true, y_pred, y_score):
    """A hostile metric: the read-only flag does not guard torch.from_numpy's tensor, which shares the memory."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "The given NumPy array is not writable": torch warns, then shares it
        torch.from_numpy(y_score).mul_(2)
        torch.from_numpy(y_pred).fill_(0)
    return 1.0


class Aliasing:
    @hookimpl
    def benchbone_register_metrics(self, register):
        register("hostile/alias", scale_through_an_alias, default=False, needs_scores=True,
                 per_item=lambda y_true, y_pred, y_score: np.full(len(y_true), scale_through_an_alias(
                     y_true, y_pred, y_score)))


ALIAS_ERROR = (f"metric plugin 'aliasing' (module {__name__}) wrote into y_pred and y_score through an alias "
               "(e.g. torch.from_numpy); copy them first")


def test_a_metric_writing_through_an_alias_fails_its_cell_naming_it_and_saves_nothing(benchbone_pm,
                                                                                      run_tiny_benchmark, tmp_path):
    clean = run_tiny_benchmark(strategies=["knn"], metrics=["nll", "top1"], out=tmp_path / "clean")
    benchbone_pm.register(Aliasing(), name="aliasing")
    board = run_tiny_benchmark(strategies=["knn"], metrics=["nll", "hostile/alias", "top1"], out=tmp_path / "bad")
    assert list(clean["status"]) == ["ok"] and list(board["status"]) == ["failed"]
    assert ALIAS_ERROR in board.loc[0, "error"]
    assert not list((tmp_path / "bad" / "artefacts").glob("*/predictions.npz"))  # nothing saved of altered scores


def test_metrics_after_an_aliasing_one_see_the_strategys_numbers():
    from benchbone.execution.cell_run import intervals, score

    pm = get_plugin_manager(entrypoints=False)
    pm.register(Aliasing(), name="aliasing")
    rng = np.random.default_rng(0)
    y_true, y_score = np.arange(20) % 4, rng.normal(size=(20, 4)) * 5
    y_pred = y_score.argmax(axis=1)
    expected = score(_cell(["nll", "top1"]), pm.registries(), *_frozen(y_true, y_pred, y_score))
    arrays = _frozen(y_true, y_pred, y_score)
    for measure in (score, intervals):
        with pytest.raises(PluginError) as caught:
            measure(_cell(["top1", "hostile/alias", "nll"]), pm.registries(), *arrays)
        assert str(caught.value) == ALIAS_ERROR
        assert np.array_equal(arrays[1], y_pred) and np.array_equal(arrays[2], y_score)  # put back
        assert not any(a.flags.writeable for a in arrays)
    assert score(_cell(["nll", "top1"]), pm.registries(), *arrays) == expected


def test_paired_tests_name_a_metric_writing_through_an_alias(tmp_path):
    from benchbone.reporting.statistics import MetricForm, Resampler, load_items

    pm = get_plugin_manager(entrypoints=False)
    pm.register(Aliasing(), name="aliasing")
    saved = tmp_path / "artefacts" / "c" / "predictions.npz"
    saved.parent.mkdir(parents=True)
    np.savez(saved, y_true=np.arange(6) % 3, y_pred=np.arange(6) % 3, y_score=np.eye(3)[np.arange(6) % 3])
    before = saved.read_bytes()
    items = load_items([{"cell_id": "c", "seed": 0, "artefacts": {"predictions": "artefacts/c/predictions.npz"}}],
                       [tmp_path])
    form = MetricForm.from_registry("hostile/alias", pm.registries().metrics)
    with pytest.raises(PluginError, match=re.escape(ALIAS_ERROR)):
        Resampler(6, 1, resamples=10).replicates([items], form)
    assert saved.read_bytes() == before


class Rewriting:
    """A hostile strategy: scales its training features and zeroes every label it is handed, in place."""

    @hookimpl
    def benchbone_register_strategies(self, register):
        register("hostile/rewrite", rewrite_in_place)


def rewrite_in_place(backbone, data, ctx):
    import torch

    from benchbone.api import Predictions

    X, y = ctx.features("train")
    torch.from_numpy(X.numpy()).mul_(-3)
    y.fill_(0)
    for split in ("train", "val", "test"):
        ctx.labels(split).fill_(0)
    Xt, yt = ctx.features("test")
    Xt.mul_(0)
    yt.fill_(0)
    scores = torch.zeros(len(yt), ctx.num_classes)
    return Predictions(ctx.labels("test"), scores.argmax(1), scores)


def test_a_strategy_writing_into_its_features_and_labels_changes_no_other_cell(benchbone_pm, run_tiny_benchmark,
                                                                              tmp_path):
    """Its features and labels are its own: the cells after it (same process, same in-memory features) get the
    numbers and predictions of a run without it."""
    clean = run_tiny_benchmark(strategies=["knn"], seeds=2, out=tmp_path / "clean",
                               cache_dir=tmp_path / "clean-cache")
    benchbone_pm.register(Rewriting(), name="rewriting")
    board = run_tiny_benchmark(strategies=["hostile/rewrite", "knn"], seeds=2, out=tmp_path / "run")
    assert set(board["status"]) == {"ok"}
    columns = ["strategy", "top1", "nll"]
    assert board[board["strategy"] != "hostile/rewrite"][columns].reset_index(drop=True).equals(
        clean[columns].reset_index(drop=True))
    saved = list((tmp_path / "clean" / "artefacts").glob("*/predictions.npz"))
    assert len(saved) == 2
    for path in saved:
        with np.load(path) as want, np.load(tmp_path / "run" / path.relative_to(tmp_path / "clean")) as got:
            assert all(np.array_equal(want[k], got[k]) for k in want.files)


class Scribbler:
    """A logger that edits the record it is given, as if it were its own."""

    def __init__(self, name, seen):
        self.name, self.seen = name, seen

    @hookimpl
    def benchbone_record_written(self, record, run_dir):
        self.seen.append((self.name, record["metrics"]["top1"]))
        record["metrics"]["top1"] = -1.0
        record["metrics"].clear()


def test_each_logger_gets_its_own_record(tmp_path):
    pm = get_plugin_manager(entrypoints=False)
    seen = []
    pm.register(Scribbler("first", seen), name="first")
    pm.register(Scribbler("second", seen), name="second")
    record_file = tmp_path / "records" / "c.json"
    record_file.parent.mkdir()
    record_file.write_text(json.dumps({"cell_id": "c", "metrics": {"top1": 0.75}}))
    announce_record(pm, record_file, tmp_path)
    assert sorted(seen) == [("first", 0.75), ("second", 0.75)]
    assert json.loads(record_file.read_text())["metrics"] == {"top1": 0.75}


# ---------------------------------------------------------------- a failing benchbone_configure


BAD_CONFIGURE = """
    from benchbone import hookimpl

    class Extra:
        @hookimpl
        def benchbone_register_metrics(self, register):
            register("badconf-extra", lambda *a: 1.0)

    @hookimpl
    def benchbone_register_metrics(register):
        register("badconf-own", lambda *a: 1.0)

    @hookimpl
    def benchbone_configure(config):
        config.pm.register(Extra(), name="badconf-extra")
        raise RuntimeError("boom in configure")
"""
WARNING = ("benchbone: warning: plugin badconf failed to load: badconf failed in benchbone_configure: "
           "RuntimeError: boom in configure")


def test_an_installed_plugin_whose_configure_fails_is_skipped_with_one_warning(tmp_path, monkeypatch, cli,
                                                                               run_tiny_benchmark):
    run_tiny_benchmark(strategies=["knn"], out=tmp_path / "run")
    write_module(tmp_path, monkeypatch, "bb_badconf", BAD_CONFIGURE)
    fake_entry_points(monkeypatch, ("badconf", "bb_badconf"))
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "1")
    for args in (["list", "metrics"], ["leaderboard", tmp_path / "run"],
                 ["report", tmp_path / "run", "-o", tmp_path / "report.html"]):
        result = cli(*args)
        assert result.code == 0, (args, result.err)
        assert result.err.count(WARNING) == 1, (args, result.err)
        assert "badconf-own" not in result.out and "badconf-extra" not in result.out
        assert "Traceback" not in result.err
    doctor = cli("doctor")  # says it in its own list, as for a plugin that fails to import
    assert doctor.code == 0 and "Traceback" not in doctor.err
    assert ("plugin FAILED to load: badconf: badconf failed in benchbone_configure: RuntimeError: boom in configure"
            in doctor.out)
    plugins = cli("plugins")
    assert plugins.code == 1 and "badconf: FAILED to load: badconf failed in benchbone_configure" in plugins.out
    debug = cli("list", "metrics", "--debug")
    assert debug.code == 0 and "Traceback" in debug.err and 'raise RuntimeError("boom in configure")' in debug.err

    pm = get_plugin_manager()
    assert not pm.has_plugin("badconf") and not pm.has_plugin("badconf-extra")  # with what it registered
    assert "badconf-own" not in pm.registries().metrics
    with pytest.raises(PluginLoadError, match="badconf failed in benchbone_configure: RuntimeError: boom"):
        get_plugin_manager(strict=True)


def test_a_p_plugin_whose_configure_fails_is_one_line_naming_it(tmp_path, monkeypatch, cli):
    write_module(tmp_path, monkeypatch, "bb_badconf", BAD_CONFIGURE)
    result = cli("list", "metrics", "-p", "bb_badconf")
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.strip() == ("benchbone: error: plugin bb_badconf failed in benchbone_configure: "
                                  "RuntimeError: boom in configure")


class Configured:
    """A plugin whose benchbone_configure registers its metric, as a plugin author's test registers it."""

    def __init__(self):
        self.options = None

    @hookimpl
    def benchbone_configure(self, config):
        self.options = dict(config.options)
        config.pm.register(ConfiguredMetric(), name="configured-metric")


class ConfiguredMetric:
    @hookimpl
    def benchbone_register_metrics(self, register):
        register("configured/always-one", lambda *a: 1.0, default=False)


def test_the_pytest_plugin_configures_a_plugin_registered_in_a_test(benchbone_pm, run_tiny_benchmark):
    plugin = Configured()
    benchbone_pm.register(plugin, name="configured")
    assert plugin.options == {"log_to": []}
    board = run_tiny_benchmark(strategies=["knn"], metrics=["configured/always-one"])
    assert board.loc[0, "configured/always-one"] == 1.0

    class Broken:
        @hookimpl
        def benchbone_configure(self, config):
            raise RuntimeError("boom in configure")

    with pytest.raises(PluginLoadError, match="plugin broken failed in benchbone_configure: RuntimeError: boom"):
        benchbone_pm.register(Broken(), name="broken")
    assert not benchbone_pm.has_plugin("broken")


class Reordering:
    """A strategy whose y_true is the test labels in another order than the test split's."""

    @hookimpl
    def benchbone_register_strategies(self, register):
        register("hostile/reorder", reorder)


def reorder(backbone, data, ctx):
    import torch

    from benchbone.api import Predictions

    y = ctx.labels("test").flip(0)
    return Predictions(y, y, torch.nn.functional.one_hot(y, ctx.num_classes).float())


def test_a_strategy_whose_y_true_is_not_the_test_splits_labels_fails_its_cell_naming_it(benchbone_pm,
                                                                                      run_tiny_benchmark):
    """Its own y_true would score it 100% and pair its items with other strategies' wrong ones."""
    benchbone_pm.register(Reordering(), name="reordering")
    board = run_tiny_benchmark(strategies=["hostile/reorder", "knn"])
    hostile = board[board["strategy"] == "hostile/reorder"].iloc[0]
    assert hostile["status"] == "failed" and set(board[board["strategy"] == "knn"]["status"]) == {"ok"}
    assert "strategy 'hostile/reorder' returned y_true that differs from the test split's labels at 48 of 48" in \
        hostile["error"]
