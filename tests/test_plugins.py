import importlib.metadata
import sys
import textwrap

import pytest

from benchbone import hookimpl
from benchbone.errors import DuplicateNameError, PluginLoadError
from benchbone.plugins import DEFAULT_PLUGINS, get_plugin_manager

GOOD = """
from benchbone import hookimpl
@hookimpl
def benchbone_register_metrics(register):
    register("always-one", lambda y_true, y_pred, y_score: 1.0)
"""


def write_module(tmp_path, monkeypatch, name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)


def fake_entry_points(monkeypatch, *pairs):
    eps = [importlib.metadata.EntryPoint(name, value, "benchbone") for name, value in pairs]
    real = importlib.metadata.entry_points

    def entry_points(group=None, **kwargs):  # other groups (torch's, on first import) stay as they are
        if group == "benchbone":
            return importlib.metadata.EntryPoints(eps)
        return real(**kwargs, **({"group": group} if group else {}))

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_builtins_register_through_the_same_path_under_short_names():
    pm = get_plugin_manager(entrypoints=False)
    names = {name for name, _ in pm.list_name_plugin()}
    assert {m.rsplit(".", 1)[-1] for m in DEFAULT_PLUGINS} <= names
    regs = pm.registries()
    assert "resnet50" in regs.backbones and "timm/resnet50" in regs.backbones
    assert {"cifar10", "digits"} <= set(regs.datasets.names())
    assert {"linear-probe", "finetune"} <= set(regs.strategies.names())
    assert {"top1", "precision", "recall", "f1"} <= set(regs.metrics.names())


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    write_module(tmp_path, monkeypatch, "bb_good", GOOD)
    fake_entry_points(monkeypatch, ("good", "bb_good"))
    pm = get_plugin_manager(entrypoints=True)
    assert pm.has_plugin("good")
    assert pm.registries().metrics.get("always-one").plugin == "good"


def test_environment_variable_switches_entry_points_off(tmp_path, monkeypatch):
    write_module(tmp_path, monkeypatch, "bb_good", GOOD)
    fake_entry_points(monkeypatch, ("good", "bb_good"))
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "")
    assert not get_plugin_manager().has_plugin("good")
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "1")
    assert get_plugin_manager().has_plugin("good")


def test_broken_plugin_is_reported_and_does_not_break_other_commands(tmp_path, monkeypatch, cli):
    write_module(tmp_path, monkeypatch, "bb_broken", "raise RuntimeError('boom at import')")
    write_module(tmp_path, monkeypatch, "bb_good", GOOD)
    fake_entry_points(monkeypatch, ("broken", "bb_broken"), ("good", "bb_good"))
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "1")
    result = cli("plugins")
    assert result.code == 1  # listed, but not a clean bill of health
    assert "broken: FAILED to load: broken = bb_broken: RuntimeError: boom at import" in result.out
    assert "good" in result.out
    listed = cli("list", "metrics")
    assert listed.code == 0 and "always-one" in listed.out
    with pytest.raises(PluginLoadError, match="boom at import"):
        get_plugin_manager(entrypoints=True, strict=True)


def test_plugin_failing_in_its_registration_hook_is_reported(tmp_path, monkeypatch, cli):
    write_module(tmp_path, monkeypatch, "bb_halfway", """
        from benchbone import hookimpl
        @hookimpl
        def benchbone_register_metrics(register):
            register("halfway", lambda *a: 0.0)
            raise ValueError("registration went wrong")
    """)
    fake_entry_points(monkeypatch, ("halfway", "bb_halfway"))
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "1")
    result = cli("plugins")
    assert "halfway: FAILED to load: halfway failed in benchbone_register_metrics" in result.out
    assert "halfway" not in cli("list", "metrics").out  # nothing half-registered


def test_colliding_names_are_an_error_naming_both_plugins(tmp_path, monkeypatch, cli):
    write_module(tmp_path, monkeypatch, "bb_clash", """
        from benchbone import hookimpl
        @hookimpl
        def benchbone_register_datasets(register):
            register("digits", lambda data_dir, download: None)
    """)
    with pytest.raises(DuplicateNameError, match="both plugin 'digits' and plugin 'bb_clash'"):
        get_plugin_manager(extra=[str(tmp_path / "bb_clash.py")]).registries().datasets
    result = cli("run", "-p", tmp_path / "bb_clash.py", "-b", "resnet50", "-d", "digits", "-s", "linear-probe")
    assert result.code == 2 and "both plugin 'digits' and plugin 'bb_clash'" in result.err
    assert result.err.count("\n") == 1 and not (tmp_path / "benchbone-runs").exists()


def test_misspelled_hook_is_an_error(tmp_path, monkeypatch, cli):
    write_module(tmp_path, monkeypatch, "bb_typo", """
        from benchbone import hookimpl
        @hookimpl
        def benchbone_register_metric(register):
            pass
    """)
    result = cli("list", "metrics", "-p", "bb_typo")
    assert result.code == 2 and "benchbone_register_metric" in result.err


def test_blocked_plugins_are_not_loaded(monkeypatch):
    pm = get_plugin_manager(entrypoints=False, blocked=["finetune"])
    assert "finetune" not in pm.registries().strategies
    monkeypatch.setenv("BENCHBONE_DISABLE_PLUGINS", "finetune,digits")
    regs = get_plugin_manager(entrypoints=False).registries()
    assert "finetune" not in regs.strategies and "digits" not in regs.datasets


def test_plugin_from_a_file_with_the_p_flag(tmp_path, monkeypatch, cli):
    (tmp_path / "my_metric.py").write_text(GOOD)
    result = cli("list", "metrics", "-p", tmp_path / "my_metric.py")
    assert result.code == 0 and "always-one" in result.out and "[my_metric]" in result.out
    missing = cli("list", "metrics", "-p", tmp_path / "nope.py")
    assert missing.code == 2 and "nope.py does not exist" in missing.err


def test_later_plugins_override_a_firstresult_default():
    class ForceDevice:
        @hookimpl
        def benchbone_pick_device(self, requested):
            return "meta"

    pm = get_plugin_manager(entrypoints=False)
    assert pm.hook.benchbone_pick_device(requested=None) in ("cpu", "cuda", "mps")  # the built-in's answer
    pm.register(ForceDevice(), name="force")
    assert pm.hook.benchbone_pick_device(requested=None) == "meta"


CLASH = """
from benchbone import hookimpl
@hookimpl
def benchbone_register_datasets(register):
    register("digits", lambda data_dir, download: None)
    register("clash/own", lambda data_dir, download: None)
"""


def test_an_installed_plugin_colliding_with_a_built_in_breaks_nothing_else(tmp_path, monkeypatch, cli):
    write_module(tmp_path, monkeypatch, "bb_clash", CLASH)
    write_module(tmp_path, monkeypatch, "bb_good", GOOD)
    fake_entry_points(monkeypatch, ("clash", "bb_clash"), ("digits", "bb_good"))  # a name and a plugin name
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "1")
    result = cli("plugins")
    assert result.code == 1
    assert ("clash: FAILED to load: dataset name 'digits' is registered by both plugin 'digits' and plugin 'clash'"
            in result.out)
    assert "digits: FAILED to load: digits = bb_good: not loaded, plugin 'digits' has the same name" in result.out
    listed = cli("list", "datasets")
    assert listed.code == 0 and "clash/own" in listed.out  # only the colliding name is left out
    regs = get_plugin_manager().registries()
    assert regs.datasets.get("digits").plugin == "digits" and regs.datasets.get("clash/own").plugin == "clash"
    run = cli("run", "-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-s", "knn", "-q",
              "--out", tmp_path / "run")
    assert run.code == 0, run.err
    warnings = [line for line in run.err.splitlines() if "failed to load" in line]
    assert len(warnings) == 2 and all(w.startswith("benchbone: warning: plugin ") for w in warnings)


def test_an_unknown_name_says_which_plugin_failed_to_load(tmp_path, monkeypatch, cli):
    write_module(tmp_path, monkeypatch, "bb_broken", "raise RuntimeError('boom at import')")
    fake_entry_points(monkeypatch, ("broken", "bb_broken"))
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "1")
    result = cli("run", "-b", "broken/net", "-d", "digits", "-s", "knn", "--out", tmp_path / "run")
    assert result.code == 2 and result.err.count("\n") == 2  # the warning line, then the error line
    assert ("benchbone: error: unknown backbone 'broken/net' (plugin broken failed to load: broken = bb_broken: "
            "RuntimeError: boom at import)." in result.err)
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "")
    assert "failed to load" not in cli("run", "-b", "broken/net", "-d", "digits", "-s", "knn").err
