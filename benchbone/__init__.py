"""benchbone: benchmark pretrained vision backbones, backbone x dataset x strategy into a leaderboard.

Plugin API 1.2: ``hookimpl``, ``Backbone``, ``DatasetSplits``, ``Predictions``, ``Context`` (and
``ImageTensorDataset``, ``UsageError``, ``OfflineError``, ``PluginError``); helpers in ``benchbone.helpers``,
test fixtures in ``benchbone.testing`` (docs/plugins.md). Importing this package does not import torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from benchbone.api import API_VERSION, Backbone, Cell, Config, DatasetSplits, ImageTensorDataset, Predictions, TextTower
from benchbone.errors import BenchboneError, OfflineError, PluginError, UnknownNameError, UsageError
from benchbone.hookspecs import hookimpl
from benchbone.moved import install as _install_moved_paths
from benchbone.selection.defaults import DEFAULTS as _SELECT_DEFAULTS

_install_moved_paths()

__all__ = [
    "hookimpl", "Backbone", "DatasetSplits", "Predictions", "ImageTensorDataset", "Context", "Cell", "Config", "TextTower",
    "BenchboneError", "UsageError", "OfflineError", "PluginError", "UnknownNameError", "run", "select", "API_VERSION",
]


def __getattr__(name: str):
    """``benchbone.Context`` on first use: its module imports torch, which ``import benchbone`` does not."""
    if name == "Context":
        from benchbone.execution.context import Context

        return Context
    raise AttributeError(f"module 'benchbone' has no attribute {name!r}")


def _names(kind: str, value: str | Iterable[str] | None) -> list[str]:
    """``value`` as a list of names; anything else is the UsageError the CLI would give."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        names = list(value)
    except TypeError:
        names = None
    if names is None or not all(isinstance(name, str) for name in names):
        raise UsageError(f"benchbone.run({kind}={value!r}): give a name or a list of names (strings)")
    return names


def _check_types(seeds: Any, params: Any, weights: Any, out: Any) -> None:
    """The UsageErrors the CLI gives for the same mistakes, instead of a TypeError deep inside."""
    if seeds is not None and (not isinstance(seeds, int) or isinstance(seeds, bool)):
        raise UsageError(f"benchbone.run(seeds={seeds!r}): give a whole number of seeds, e.g. seeds=3")
    for name, value in (("params", params), ("weights", weights)):
        if value is not None and not isinstance(value, dict):
            raise UsageError(f"benchbone.run({name}={value!r}): give a dict, e.g. {name}={{'key': value}}")
    if out is not None and not isinstance(out, (str, Path)):
        raise UsageError(f"benchbone.run(out={out!r}): give a directory path")


def run(
    backbones: str | Iterable[str] | None = None,
    datasets: str | Iterable[str] | None = None,
    strategies: str | Iterable[str] | None = None,
    *,
    metrics: str | Iterable[str] | None = None,
    seeds: int | None = None,
    params: dict[str, Any] | None = None,
    weights: dict[str, str | Path] | None = None,
    suite: str | Path | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    download: bool | None = None,
    plugins: Iterable[str] = (),
    sort_by: str | None = None,
    quiet: bool = True,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
    log_to: Iterable[str] = (),
    progress: str | None = None,
):
    """Run a grid and return its leaderboard as a pandas DataFrame (also written to ``out``).

    Given arguments override a ``suite``'s (``seeds``, ``out``, ``device``, ``download``) as flags do; without
    either, ``seeds=1``, ``out="benchbone-runs/default"``, the device picked automatically and downloads allowed.
    ``params`` holds overrides as ``--set`` does: ``{"val_fraction": 0.2, "linear-probe.max_iter": 50}``;
    ``weights`` maps backbone names to local state-dict files, as ``--weights NAME=PATH`` does.
    ``executor`` and ``executor_options`` (``{"slurm_partition": "gpu", "gpus_per_cell": 1}``) as the
    ``--executor`` flags do; see docs/scale-out.md. ``log_to=["mlflow:runs.db"]`` as ``--log-to`` does
    (default: ``BENCHBONE_LOG_TO``). ``cache=False`` runs without the feature and decode caches, as ``--no-cache`` does.
    ``quiet=False`` prints the leaderboard and the progress; ``progress`` ("auto", "plain" or "json", as
    ``--progress`` does) shows the progress on stderr whatever ``quiet`` says: "json" gives one event per line for a
    program to read. A failed cell's line and the warnings are shown either way.
    """
    from benchbone.execution.harness import run_grid
    from benchbone.planning.grid import GridSpec, parse_weights
    from benchbone.planning.suites import load_suite
    from benchbone.plugins import get_plugin_manager, log_targets

    _check_types(seeds, params, weights, out)
    spec = GridSpec(_names("backbones", backbones), _names("datasets", datasets), _names("strategies", strategies),
                    _names("metrics", metrics), seeds,
                    dict(params or {}), str(data_dir) if data_dir else None,
                    parse_weights([f"{k}={v}" for k, v in (weights or {}).items()]))
    if suite is not None:
        spec = load_suite(suite).merge(spec)
    pm = get_plugin_manager(extra=_names("plugins", plugins), log_to=log_targets(_names("log_to", log_to)))
    settings = spec.settings
    return run_grid(spec, out=Path(out or settings.get("out") or "benchbone-runs/default"), pm=pm,
                    device=device or settings.get("device"), cache_dir=cache_dir if cache else "",
                    download=settings.get("download", True) if download is None else download,
                    quiet=quiet and progress is None, sort_by=sort_by, command=f"benchbone.run({spec!r})", echo=not quiet,
                    executor=executor, executor_options=executor_options, progress=progress or "auto")


def select(
    dataset: str,
    backbones: str | Iterable[str],
    *,
    budget: str | float | None = None,
    epsilon: float = _SELECT_DEFAULTS["epsilon"],
    confidence: float = _SELECT_DEFAULTS["confidence"],
    max_latency_ms: float | None = None,
    max_params: str | float | None = None,
    max_gmacs: float | None = None,
    strategy: str = "linear-probe",
    params: dict[str, Any] | None = None,
    weights: dict[str, str | Path] | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    plugins: Iterable[str] = (),
    quiet: bool = True,
    **options: Any,
):
    """Choose a backbone for ``dataset`` among ``backbones`` as ``benchbone select`` does; returns a
    ``SelectResult`` (``.chosen``, ``.survivors``, ``.statement``, ``.data``: select.json, ``.to_frame()``).

    ``budget``: device time as seconds or text ("90s", "2h"); ``max_params`` a count or text ("30M");
    ``params`` as ``--set``; further keywords as the flags of the same name: ``margin``, ``taper``,
    ``full_validation``, ``claim_from``, ``estimators``, ``screen_by``, ``keep``, ``screen_size``, ``executor``
    ("submitit" or "ray": the steps' work as jobs) and ``executor_options`` (as the executor flags, e.g.
    ``{"slurm_cluster": "local"}``). See docs/select.md.
    """
    from benchbone.planning.grid import parse_weights
    from benchbone.plugins import get_plugin_manager
    from benchbone.selection.constraints import Limits, parse_count, parse_duration
    from benchbone.selection.run import Request, select as run_select

    if not isinstance(dataset, str):
        raise UsageError(f"benchbone.select(dataset={dataset!r}): give one dataset name")
    _check_types(None, params, weights, out)
    known = {"margin", "taper", "full_validation", "claim_from", "estimators", "screen_by", "keep", "screen_size",
             "executor", "executor_options"}
    if set(options) - known:
        raise UsageError(f"benchbone.select: unknown argument(s) {', '.join(sorted(set(options) - known))}; "
                         f"also accepted: {', '.join(sorted(known))}")
    if "estimators" in options:
        options["estimators"] = _names("estimators", options["estimators"]) or None
    request = Request(
        dataset=dataset, backbones=_names("backbones", backbones), out=Path(out or "benchbone-runs/select"),
        limits=Limits(max_latency_ms, parse_count(max_params, "max_params") if max_params is not None else None, max_gmacs),
        budget_s=parse_duration(budget, "budget") if budget is not None else None, epsilon=epsilon,
        confidence=confidence, strategy=strategy, overrides=dict(params or {}),
        weights=parse_weights([f"{k}={v}" for k, v in (weights or {}).items()]),
        data_dir=str(data_dir) if data_dir else None, cache_dir=None if cache_dir is None else str(cache_dir),
        device=device, quiet=quiet, command=f"benchbone.select(dataset={dataset!r}, backbones={backbones!r})", **options)
    return run_select(request, get_plugin_manager(extra=_names("plugins", plugins)))
