"""The built-in wrapper of ``benchbone_run_cell``: each cell's wall-clock and CPU seconds, hooks included."""
from __future__ import annotations

import time

from benchbone import hookimpl


@hookimpl(wrapper=True)
def benchbone_run_cell(cell, run_dir):
    """Add ``timings.cell_s`` (wall clock of the whole cell, every wrapper inside this one included) and
    ``timings.cpu_s`` (CPU seconds of this process, all threads) to the cell's record."""
    wall, cpu = time.perf_counter(), time.process_time()
    record = yield
    record.setdefault("timings", {}).update(cell_s=round(time.perf_counter() - wall, 4),
                                            cpu_s=round(time.process_time() - cpu, 4))
    return record
