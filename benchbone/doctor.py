"""``benchbone doctor``: what a user pastes into an issue when something is off."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import sys
from pathlib import Path
from typing import Iterator

from benchbone.versions import package_version

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME", "HF_HOME", "BENCHBONE_DATA_DIR",
                     "BENCHBONE_CACHE_DIR", "BENCHBONE_LOAD_PLUGINS", "BENCHBONE_DISABLE_PLUGINS")


def extras() -> dict[str, list[tuple[str, str | None]]]:
    """Each extra of the installed benchbone: its requirements' distributions and their installed versions."""
    try:
        requires = importlib.metadata.requires("benchbone") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    found: dict[str, list[tuple[str, str | None]]] = {}
    for text in requires:
        name = re.match(r"[A-Za-z0-9_.\-]+", text).group(0)
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", text)
        if extra and name != "benchbone":  # "benchbone[slurm,ray]" inside the test extra
            found.setdefault(extra.group(1), []).append((name, package_version(name)))
    return found


def _size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def lines(pm, *, data_dir: str | None, cache_dir: str | None) -> Iterator[str]:
    """The report, line by line; every check that fails says so in its line instead of raising."""
    from benchbone.execution.session import Session
    from benchbone.inputs.weights import is_offline
    from benchbone.plugins import _benchbone_version

    yield f"benchbone {_benchbone_version()} at {Path(__file__).parent}"
    yield f"python {platform.python_version()} ({sys.executable}); {platform.platform()}, {os.cpu_count()} cpus"
    yield "packages: " + ", ".join(f"{d} {package_version(d) or 'MISSING'}" for d in
                                   ("torch", "torchvision", "timm", "numpy", "scikit-learn", "pandas", "matplotlib"))
    session = Session(pm, cache_dir=cache_dir, download=False, quiet=True)
    import torch

    device = session.device
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        device += f" ({props.name}, {props.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda})"
    else:
        device += f" (CUDA {'available' if torch.cuda.is_available() else 'not available'}; torch built for CUDA " \
                  f"{torch.version.cuda or 'none'})"
    yield f"device: {device}"
    yield "plugins: " + ", ".join(f"{name} {pm.versions.get(name, '?')}" for name, _ in sorted(pm.list_name_plugin()))
    for name, problem in sorted(pm.problems.items()):
        yield f"plugin FAILED to load: {name}: {problem}"
    for extra, reqs in sorted(extras().items()):
        state = ", ".join(f"{dist} {version}" if version else f"{dist} missing" for dist, version in reqs)
        hint = "" if all(v for _, v in reqs) else f" (pip install 'benchbone[{extra}]')"
        yield f"extra {extra}: {state}{hint}"
    root = session.store.root
    if root is None:
        yield "feature cache: off"
    elif root.is_dir():
        count, size = _size(root)
        writable = "writable" if os.access(root, os.W_OK) else "NOT writable"
        yield f"feature cache: {root} ({count} files, {size / 2**20:.1f} MiB, {writable})"
    else:
        yield f"feature cache: {root} (not created yet)"
    from benchbone.inputs.folders import data_root

    yield f"data: --data-dir {data_dir or '(none)'}; data root {data_root()} (BENCHBONE_DATA_DIR)"
    for entry in session.registries.datasets:
        if entry.meta.get("prefix"):
            continue
        try:
            data = session.dataset(entry.name, data_dir)
            where = data.info.get("path") or data.info.get("layout") or "found"
            yield f"  {entry.name}: {len(data.train)} train, {len(data.test)} test ({where})"
        except Exception as exc:  # noqa: BLE001 - a diagnosis reports every failure and goes on
            yield f"  {entry.name}: not found: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
    offline = is_offline("huggingface.co")
    variables = ", ".join(f"{v}={os.environ[v]}" for v in OFFLINE_VARIABLES if v in os.environ)
    yield (f"pretrained downloads: {'not possible (offline)' if offline else 'possible'}; "
           f"{variables or 'no offline or benchbone variables set'}")
