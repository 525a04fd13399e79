"""The resume loop: each unfinished cell of a run directory run and recorded; the worker entry point."""
from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path
from typing import Callable

from benchbone.api import Cell
from benchbone.errors import BenchboneError, PluginLoadError, UsageError
from benchbone.execution.artefacts import missing_lines, write_deferred
from benchbone.execution.cell_run import run_cell_hooked, work_dir
from benchbone.execution.provenance import failed_record
from benchbone.execution.session import Session
from benchbone.plugins import announce_record
from benchbone.records import OUT_OF_SPACE, finished_record, remove_stale_tmp, write_record


def remove_work_dir(run_dir: Path, cell: Cell) -> None:
    """Remove a finished cell's scratch directory, and ``work/`` once it is empty."""
    shutil.rmtree(work_dir(run_dir, cell), ignore_errors=True)
    with contextlib.suppress(OSError):
        (Path(run_dir) / "work").rmdir()


def run_cells(
    cells: list[Cell],
    session: Session,
    run_dir: Path,
    *,
    fail_fast: bool = False,
    on_record: Callable[[dict, str], None] | None = None,
    later: list[Callable[[], None]] | None = None,
    on_start: Callable[[Cell], None] | None = None,
) -> list[dict]:
    """Run each cell not yet finished in ``run_dir``; a usage error stops the run, other errors fail one cell.

    Every dataset is built before the first cell, so bad data fails before anything is written. A cell's
    scratch directory (``ctx.workdir``) is removed after its "ok" record and kept after a failure, to resume from.
    Under torchrun only rank 0 writes; the other ranks return their records unwritten.

    An "ok" record is written at once, then completed by its deferred artefacts (``artefacts.DEFERRED``: the
    confusion PNG, which needs matplotlib) and announced to the loggers (``benchbone_record_written``): before
    the next cell runs, and for the last cell before this returns, or, with ``later`` (a list), by the callable
    left in it, which the harness calls once the leaderboard is written. A record whose deferred artefacts a
    killed run left undrawn is completed when a run finds it.

    ``on_start(cell)`` is called before a cell runs (not for one whose record is there), ``on_record(record, how)``
    after each cell, ``how`` being "ok", "failed" or "cached": the harness's progress lines and events.
    """
    for key in {(c.dataset, c.data_dir, c.dataset_params) for c in cells}:
        session.dataset(*key)  # built once per session: cheap when run_grid already did
    cells = [session.bind(c) for c in cells]  # keyed by the data read (a worker's spec: the same data, or an error)
    for folder in (Path(run_dir), Path(run_dir) / "records"):
        remove_stale_tmp(folder)  # what a killed run left
    writer = int(os.environ.get("RANK", "0")) == 0
    records, pending = [], []

    def settle() -> None:
        """Draw the pending records' deferred artefacts, write each record again with them, then announce it."""
        while pending:
            record = pending.pop(0)
            for line in missing_lines(record, write_deferred(run_dir, record)):
                warnings.warn(line, stacklevel=2)
            announce_record(session.pm, write_record(run_dir, record), run_dir)

    try:
        for cell in cells:
            settle()
            done = finished_record(run_dir, cell.id)
            if done is not None:
                if writer and done.get("artefacts_pending"):
                    pending.append(done)
                records.append(done)
                if on_record:
                    on_record(done, "cached")
                continue
            if on_start:
                on_start(cell)
            try:
                record = run_cell_hooked(cell, session, run_dir)
            except (UsageError, KeyboardInterrupt):
                raise
            except Exception as exc:  # a plugin may fail in any way: record it and go on
                if isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE:  # but a full disk fails every cell: stop
                    raise UsageError(f"{exc.strerror} while running cell {cell.id}"
                                     f"{f' (writing {exc.filename})' if exc.filename else ''}; free space there or "
                                     f"under {run_dir}, then run the same command to resume") from None
                done = finished_record(run_dir, cell.id)
                if done is not None:  # a run sharing run_dir finished this cell meanwhile: keep its record
                    remove_work_dir(run_dir, cell)
                    records.append(done)
                    if on_record:
                        on_record(done, "cached")
                    continue
                record = failed_record(cell, session, exc)
                if writer:
                    announce_record(session.pm, write_record(run_dir, record), run_dir)
                records.append(record)
                if on_record:
                    on_record(record, "failed")
                if fail_fast:
                    raise BenchboneError(f"cell {cell.backbone_label} x {cell.dataset_label} x {cell.strategy} "
                                         f"(seed {cell.seed}) failed: {record['error']}") from exc
                continue
            if writer:
                write_record(run_dir, record)
                remove_work_dir(run_dir, cell)
                pending.append(record)
            records.append(record)
            if on_record:
                on_record(record, "ok")
    except Exception:
        with contextlib.suppress(Exception):  # the error that stopped the run is the one to see
            settle()
        raise
    if later is None:
        settle()
    else:
        later.append(settle)
    return records


def run_spec(spec: dict) -> dict:
    """Run the cell of a spec (see ``benchbone.execution.executors.write_spec``) in its run directory; return its record.

    What ``benchbone run-cell SPEC.json`` and every executor's worker call: the same path as a local run.
    """
    from benchbone.planning.names_index import narrow
    from benchbone.plugins import get_plugin_manager

    pm = get_plugin_manager(**spec["plugins"])
    check_plugin_versions(spec.get("plugin_versions", {}), pm.plugin_versions())
    narrow(pm, "backbones", [spec["cell"]["backbone"]], spec["cache_dir"] or None)  # only this backbone's plugin
    session = Session(pm, device=spec["device"], cache_dir=spec["cache_dir"], download=spec["download"], quiet=True,
                      command=spec["command"])
    if session.device == "cuda" and "LOCAL_RANK" in os.environ:
        import torch

        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # torchrun: one GPU per rank
    with contextlib.chdir(spec.get("cwd") or "."):  # relative dataset paths resolve as the driver's did
        return run_cells([Cell.from_json(spec["cell"])], session, Path(spec["run_dir"]))[0]


def check_plugin_versions(driver: dict[str, str], worker: dict[str, str]) -> None:
    """A worker runs with the plugins, at the versions, that the driver expanded the grid with."""
    differ = [f"{name} {version} (here {worker.get(name, 'not loaded')})" for name, version in sorted(driver.items())
              if worker.get(name) != version]
    if differ:
        raise PluginLoadError(f"this worker's plugins differ from the driver's: {', '.join(differ)}; install the same "
                              "plugin versions on every node (see `benchbone plugins`)")
