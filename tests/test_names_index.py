"""`benchbone list` from a cached name index: current when nothing it depends on changed, rebuilt otherwise."""
from __future__ import annotations

import json
import os

import pytest

from benchbone.planning import names_index
from benchbone.plugins import PluginManager

KIND = "datasets"  # the index works alike for every kind; backbones would import torchvision and timm here


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHBONE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "")
    return tmp_path / "cache"


@pytest.fixture
def listed(cli, monkeypatch):
    """Run `benchbone list KIND ARGS`: what it printed, and whether it filled the registry to print it."""
    original, filled = PluginManager.registries, []

    def counting(self):
        filled.append(True)
        return original(self)

    monkeypatch.setattr(PluginManager, "registries", counting)

    def run(*args: str) -> tuple[str, bool]:
        filled.clear()
        result = cli("list", KIND, *args)
        assert result.code == 0, result.err
        return result.out, bool(filled)

    return run


def test_the_second_listing_comes_from_the_index_and_is_the_same(cache, listed):
    first, filled = listed()
    assert filled and (cache / "index" / f"{KIND}.json").exists()
    again, filled = listed()
    assert again == first and not filled
    assert listed("cifar*") == ("".join(line + "\n" for line in first.splitlines() if line.startswith("cifar")),
                                     False)


def test_a_changed_version_rebuilds_the_index(cache, listed, monkeypatch):
    first, _ = listed()
    version = names_index.package_version
    monkeypatch.setattr(names_index, "package_version", lambda dist: "99.0" if dist == "timm" else version(dist))
    again, filled = listed()
    assert filled and again == first
    assert json.loads((cache / "index" / f"{KIND}.json").read_text())["stamp"]["versions"]["timm"] == "99.0"
    assert not listed()[1]


def test_an_edited_or_added_plugin_rebuilds_the_index(cache, listed, tmp_path):
    listed()
    plugin = tmp_path / "extra_data.py"
    plugin.write_text("from benchbone import hookimpl\n\n\n@hookimpl\ndef benchbone_register_datasets(register):\n"
                      "    register('extra/one', lambda data_dir, download: None)\n")
    out, filled = listed("-p", str(plugin))
    assert filled and "extra/one" in out
    plugin.write_text(plugin.read_text().replace("extra/one", "extra/two"))
    os.utime(plugin, ns=(1, 1))  # an edit that a cached index must not hide
    out, filled = listed("-p", str(plugin))
    assert filled and "extra/two" in out and "extra/one" not in out
    out, filled = listed()
    assert filled and "extra/" not in out


@pytest.mark.parametrize("corrupt", ["truncated", "edited-name", "not-json", "stamp-of-another-kind"])
def test_a_corrupted_index_is_rebuilt_not_trusted(corrupt, cache, listed):
    first, _ = listed()
    path = cache / "index" / f"{KIND}.json"
    data = json.loads(path.read_text())
    if corrupt == "truncated":
        path.write_text(path.read_text()[:200])
    elif corrupt == "edited-name":
        data["rows"][0]["line"] = "planted " + data["rows"][0]["line"]
        path.write_text(json.dumps(data))
    elif corrupt == "not-json":
        path.write_bytes(b"\x00\xff" * 10)
    else:
        data["stamp"]["kind"] = "metrics"
        path.write_text(json.dumps(data))
    again, filled = listed()
    assert filled and again == first and "planted" not in again
    assert not listed()[1]  # whole again


def test_without_a_cache_directory_nothing_is_kept(tmp_path, monkeypatch, listed):
    monkeypatch.setenv("BENCHBONE_CACHE_DIR", "")
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "")
    monkeypatch.chdir(tmp_path)
    assert listed()[1] and listed()[1]
    assert list(tmp_path.iterdir()) == []


RUN = """
import sys
from benchbone.cli import main
code = main(["run", "-p", "benchbone.testing", "-b", {backbone!r}, "-d", "test/blobs", "-s", "knn", "-q", "--out", {out!r}])
print(code, *(name for name in ("torchvision", "timm") if name in sys.modules))
"""


@pytest.mark.slow
def test_a_run_with_a_current_index_fills_only_its_backbones_plugins(tmp_path, cli):
    import subprocess
    import sys

    env = {**os.environ, "BENCHBONE_CACHE_DIR": str(tmp_path / "cache"), "BENCHBONE_LOAD_PLUGINS": ""}

    def run(backbone: str, out: str) -> list[str]:
        result = subprocess.run([sys.executable, "-c", RUN.format(backbone=backbone, out=str(tmp_path / out))],
                                capture_output=True, text=True, env=env, timeout=300)
        return result.stdout.splitlines()[-1].split()  # after the leaderboard table

    assert run("test/tiny-cnn", "a") == ["0", "torchvision", "timm"]  # no index yet: every plugin's names
    assert (tmp_path / "cache" / "index" / "backbones.json").exists()
    assert run("test/tiny-cnn", "b") == ["0"]  # only the tiny plugin registered its backbones
    assert run("test/tiny-*", "c") == ["0"]  # patterns too
    misspelled = cli("run", "-p", "benchbone.testing", "-b", "test/tiny-cn", "-d", "test/blobs", "-s", "knn", "-q",
                     "--out", tmp_path / "d")  # the same cache; in this process, as it counts no imports
    assert misspelled.code == 2 and "Did you mean test/tiny-cnn" in misspelled.err
    assert "timm/" in misspelled.err  # a misspelling: the whole registry, for its did-you-mean
