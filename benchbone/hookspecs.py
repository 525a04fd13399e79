"""The hook specifications of plugin API 1.2. Nothing but specs lives here."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from benchbone.api import Cell, Config

hookspec = pluggy.HookspecMarker("benchbone")
hookimpl = pluggy.HookimplMarker("benchbone")

# -------------------------------------------------------------------------
# Start-up: every plugin is loaded.
# -------------------------------------------------------------------------


@hookspec
def benchbone_configure(config: Config) -> None:
    """Read the run's options and settings once every plugin is loaded; may register more plugins.

    :param config: ``config.options`` holds what the front end was given (``log_to``: the ``--log-to``
        targets, ...); ``config.pm`` is the plugin manager, ``config.pm.register(plugin, name=...)`` adds one.
        Called once per plugin manager, in the driver and again in every executor worker.
    """


# -------------------------------------------------------------------------
# Registration: each plugin offers named factories through a callback.
# -------------------------------------------------------------------------


@hookspec
def benchbone_register_backbones(register: Callable[..., None]) -> None:
    """Offer backbones to the harness.

    :param register: call ``register(name, build, **meta)`` once per backbone, where
        ``build(pretrained: bool) -> Backbone``. ``build`` must not download or import anything
        heavy until it is called. ``meta`` may hold ``aliases`` (other names that resolve to this
        one), ``pretrained`` (whether pretrained weights exist) and ``description``.
    """


@hookspec
def benchbone_register_datasets(register: Callable[..., None]) -> None:
    """Offer datasets to the harness.

    :param register: call ``register(name, build, **meta)`` once per dataset, where
        ``build(data_dir: pathlib.Path | None, download: bool) -> DatasetSplits``. ``meta`` may hold
        ``aliases``, ``description`` and ``augment``: the label-preserving augmentation that training
        strategies may apply, ``{"hflip": bool, "translate": float, "crop_scale": (min, max)}`` or False
        (see docs/plugins.md; a dataset that declares none gets a 1/8 shift without flips).
    """


@hookspec
def benchbone_register_strategies(register: Callable[..., None]) -> None:
    """Offer adaptation strategies to the harness.

    :param register: call ``register(name, fn, **default_params)`` once per strategy, where
        ``fn(backbone: Backbone, data: DatasetSplits, ctx: Context) -> Predictions``. The defaults
        name every parameter the strategy accepts; ``--set`` may override only those. When ``fn`` has
        an attribute ``check_params(params: dict)``, it is called with each cell's parameters before
        the first cell runs and raises ``UsageError`` for values out of range.
    """


@hookspec
def benchbone_register_metrics(register: Callable[..., None]) -> None:
    """Offer metrics to the harness.

    :param register: call ``register(name, fn, higher_is_better=True)`` once per metric, where
        ``fn(y_true, y_pred, y_score) -> float`` takes numpy arrays. ``percent=True`` shows the
        value as a percentage in leaderboards. For the paired tests, ``per_item=fn_items`` gives values
        per test item whose mean is the metric, or ``resample=True`` allows recomputing it on a resample
        of the items; ``needs_scores=True`` when it needs ``y_score``.
    """


@hookspec
def benchbone_register_estimators(register: Callable[..., None]) -> None:
    """Offer transferability estimators (API 1.2): scores that rank backbones for a task without training.

    :param register: call ``register(name, score_fn, cost=1.0, needs=("features", "labels"),
        description="...")`` once per estimator. ``score_fn(features, labels, source_logits) -> float`` takes
        numpy arrays (features [N, D], integer labels [N], the source classifier's logits [N, S] or None);
        one that needs only ``"meta"`` is ``score_fn(meta: dict) -> float``. Higher means better transfer
        expected; ``ValueError`` when it cannot compute. ``cost`` is its time relative to LogME's, ``needs``
        a subset of ``"features"``, ``"labels"``, ``"source_logits"`` and ``"meta"``.
    """


# -------------------------------------------------------------------------
# Running: one answer is enough.
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def benchbone_pick_device(requested: str | None) -> str | None:
    """Return the torch device string to run on. Stops at first non-None result.

    :param requested: what the user asked for with ``--device`` (None for automatic).
    """


@hookspec(firstresult=True)
def benchbone_run_cell(cell: Cell, run_dir: Path) -> dict | None:
    """Run one cell and return its record (status "ok"). Stops at first non-None result.

    The harness's runner gives the answer (only a ``tryfirst`` implementation is called before it); implement
    this hook as a wrapper around it (``@hookimpl(wrapper=True)``, ``record = yield``, then return the record)
    to time, profile or annotate every cell. An exception fails the cell, as a strategy's does.

    :param cell: the cell (``cell.backbone``, ``cell.dataset``, ``cell.strategy``, ``cell.seed``, ``cell.id``).
    :param run_dir: the run directory its record will be written to.
    """


# -------------------------------------------------------------------------
# After a cell: loggers and experiment trackers.
# -------------------------------------------------------------------------


@hookspec
def benchbone_record_written(record: dict, run_dir: Path) -> None:
    """A cell's record was written: log it somewhere else (an experiment tracker, a dashboard).

    :param record: the record as written to ``run_dir/records/<record["cell_id"]>.json`` (plain JSON
        types), status "ok" or "failed"; ``record["artefacts"]`` holds paths relative to ``run_dir``.
    :param run_dir: the run directory. Called once per written record, in the process that wrote it
        (an executor's worker too); an exception is reported as one warning line and the record stays.
    """
