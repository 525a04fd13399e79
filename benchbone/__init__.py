"""benchbone: benchmark pretrained vision backbones, backbone x dataset x strategy into a leaderboard.

Plugin API v1: ``hookimpl``, ``Backbone``, ``DatasetSplits``, ``Predictions`` (and ``ImageTensorDataset``,
``UsageError``, ``OfflineError``). Importing this package does not import torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from benchbone.api import Backbone, DatasetSplits, ImageTensorDataset, Predictions
from benchbone.errors import BenchboneError, OfflineError, UnknownNameError, UsageError
from benchbone.hookspecs import hookimpl

__all__ = [
    "hookimpl", "Backbone", "DatasetSplits", "Predictions", "ImageTensorDataset",
    "BenchboneError", "UsageError", "OfflineError", "UnknownNameError", "run",
]


def _names(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def run(
    backbones: str | Iterable[str] | None = None,
    datasets: str | Iterable[str] | None = None,
    strategies: str | Iterable[str] | None = None,
    *,
    metrics: str | Iterable[str] | None = None,
    seeds: int = 1,
    params: dict[str, Any] | None = None,
    weights: dict[str, str | Path] | None = None,
    suite: str | Path | None = None,
    out: str | Path = "benchbone-runs/default",
    data_dir: str | Path | None = None,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
    plugins: Iterable[str] = (),
    sort_by: str | None = None,
    quiet: bool = True,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
):
    """Run a grid and return its leaderboard as a pandas DataFrame (also written to ``out``).

    ``params`` holds overrides as ``--set`` does: ``{"val_fraction": 0.2, "linear-probe.max_iter": 50}``;
    ``weights`` maps backbone names to local state-dict files, as ``--weights NAME=PATH`` does.
    ``executor`` and ``executor_options`` (``{"slurm_partition": "gpu", "gpus_per_cell": 1}``) as the
    ``--executor`` flags do; see docs/scale-out.md.
    """
    from benchbone.grid import GridSpec, load_suite, parse_weights
    from benchbone.harness import run_grid
    from benchbone.plugins import get_plugin_manager

    spec = GridSpec(_names(backbones), _names(datasets), _names(strategies), _names(metrics), seeds,
                    dict(params or {}), str(data_dir) if data_dir else None,
                    parse_weights([f"{k}={v}" for k, v in (weights or {}).items()]))
    if suite is not None:
        spec = load_suite(suite).merge(spec)
    return run_grid(spec, out=Path(out), pm=get_plugin_manager(extra=plugins), device=device,
                    cache_dir=cache_dir, download=download, quiet=quiet, sort_by=sort_by,
                    command=f"benchbone.run({spec!r})", echo=not quiet, executor=executor,
                    executor_options=executor_options)
