"""Where backbones and engines come from, finished: a local Hugging Face folder is named in the listing, and a
local Ray cluster runs quietly and keeps out of the home directory."""
from __future__ import annotations

import os
import sys

import pytest

from benchbone.execution.executors import LOCAL_RAY_VARIABLES, quiet_ray_environment, restore_environment
from conftest import run_subprocess


def test_list_hf_prefix_says_how_to_use_a_local_folder(cli):
    result = cli("list", "backbones", "hf/")
    assert result.code == 0, result.err
    line, = result.out.splitlines()
    assert "hf/ORG/NAME" in line and "hf/PATH" in line and "save_pretrained" in line


def test_quiet_ray_environment_keeps_what_the_user_set_and_is_undone(monkeypatch):
    for name in LOCAL_RAY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    previous = quiet_ray_environment()
    assert os.environ["RAY_AUTH_MODE"] == "token" and len(os.environ["RAY_AUTH_TOKEN"]) == 64  # no ~/.ray/auth_token
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    restore_environment(previous)
    assert not any(name in os.environ for name in LOCAL_RAY_VARIABLES)

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    previous = quiet_ray_environment()
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN" not in os.environ
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"
    restore_environment(previous)
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


@pytest.mark.cluster
def test_ray_run_is_quiet_and_writes_nothing_in_home(tmp_path):
    pytest.importorskip("ray")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    set_here = [n for n in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS") if os.environ.get(n)]
    if set_here:
        pytest.skip(f"{', '.join(set_here)} set here")
    result = run_subprocess("run", "-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-s", "knn",
                            "--executor", "ray", "--cache-dir", tmp_path / "cache", "--out", tmp_path / "run", "-q",
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "token" not in result.stderr.lower() and "WARNING" not in result.stderr, result.stderr
    assert not (home / ".ray").exists()
    assert not [p for p in home.rglob("*") if "ray" in p.name.lower()], sorted(home.rglob("*"))
