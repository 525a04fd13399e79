"""What a record says about where and how it was made: versions, git commit, plugins, and the failed record."""
from __future__ import annotations

import datetime as dt
import os
import platform
import traceback

from benchbone.api import Cell
from benchbone.execution.session import Session
from benchbone.versions import git_commit, versions


def base_record(cell: Cell, session: Session, extra_metrics: list[str] = ()) -> dict:
    """The part of a record known before the cell runs: what it is, where and with what
    (and the direction of ``extra_metrics``, those the strategy measured beyond the cell's)."""
    from benchbone.inputs.corruptions import Corruption
    from benchbone.records import SCHEMA

    regs = session.registries
    names = [*cell.metrics, *extra_metrics]
    plugins = {"backbone": regs.backbones.get(cell.backbone).plugin, "dataset": regs.datasets.get(cell.dataset).plugin,
               "strategy": regs.strategies.get(cell.strategy).plugin}
    return {
        "schema": SCHEMA,
        "cell_id": cell.id,
        "cell": cell.to_json(),
        "backbone": cell.backbone_label,
        "dataset": cell.dataset_label,
        **({"corruption": Corruption(*cell.corruption).describe()} if cell.corruption else {}),
        "strategy": cell.strategy,
        "seed": cell.seed,
        "params": dict(cell.params),
        "options": dict(cell.options),
        "higher_is_better": {m: bool(regs.metrics.get(m).meta.get("higher_is_better", True)) for m in names},
        "percent": {m: bool(regs.metrics.get(m).meta.get("percent", False)) for m in names},
        "plugins": {kind: {"name": name, "version": session.pm.versions.get(name, "unknown")}
                    for kind, name in plugins.items()},
        "plugin_versions": session.pm.plugin_versions(),  # of every plugin loaded, as the worker checks them
        "command": session.command,
        "device": session.device,
        "host": platform.node(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "versions": versions(),
        "git_commit": git_commit(),
    }


def failed_record(cell: Cell, session: Session, exc: BaseException) -> dict:
    return {
        **base_record(cell, session),
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(limit=20),
        "metrics": {},
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def record_spec_failure(spec: dict, exc: BaseException) -> None:
    """Write the failed record of a spec's cell that could not run at all (its plugins do not load, its data are
    gone or changed, ...), built from the spec alone; never over an "ok" record. A spec without a readable cell
    writes nothing (the driver records the worker's failure)."""
    from pathlib import Path

    from benchbone.records import SCHEMA, finished_record, write_record

    try:
        cell = Cell.from_json(spec["cell"])
        run_dir = Path(spec["run_dir"])
        if finished_record(run_dir, cell.id) is not None:
            return
        write_record(run_dir, {
            "schema": SCHEMA, "cell_id": cell.id, "cell": cell.to_json(), "backbone": cell.backbone_label,
            "dataset": cell.dataset_label, "strategy": cell.strategy, "seed": cell.seed, "params": dict(cell.params),
            "options": dict(cell.options), "command": spec.get("command"), "host": platform.node(),
            "status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=20),
            "metrics": {}, "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        })
    except Exception:  # noqa: BLE001 (a spec too damaged to name its cell, or a run directory that cannot be written)
        return
