"""Shared fixtures: every test runs without installed plugins and with its own cache directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchbone.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "")
    monkeypatch.setenv("BENCHBONE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("BENCHBONE_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("BENCHBONE_LOG_TO", raising=False)
    monkeypatch.chdir(tmp_path)


class CLIResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys):
    """Run ``benchbone ARGS`` in this process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CLIResult:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CLIResult(code, captured.out, captured.err)

    return run


def run_subprocess(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m benchbone.cli ARGS`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "benchbone.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network; an empty Hugging Face cache of this test (its path)."""
    import socket

    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def hub_snapshot(cache: Path, repo: str, commit: str = "1" * 40) -> Path:
    """The folder huggingface_hub's cache keeps a repo's files in (refs/main -> snapshots/<commit>/), made."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    folder = root / "snapshots" / commit
    folder.mkdir(parents=True)
    return folder
