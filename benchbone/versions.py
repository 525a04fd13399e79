"""Installed package versions and the source tree's git commit: the one place that reads them."""
from __future__ import annotations

import functools
import importlib.metadata
import platform
from pathlib import Path

RECORDED = ("benchbone", "torch", "torchvision", "timm", "numpy", "scikit-learn", "pluggy")  # in every record


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str]:
    """Python's version and those of the ``RECORDED`` distributions that are installed."""
    out = {"python": platform.python_version()}
    out.update({dist: v for dist in RECORDED if (v := package_version(dist)) is not None})
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the benchbone source tree when it is a git checkout, else None."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
