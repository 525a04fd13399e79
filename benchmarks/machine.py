"""One line describing the machine a benchmark ran on, printed at the top of every benchmark's output.

Importing it asks for huge pages for torch's large CPU tensors, as the ``benchbone`` command does: import it
before torch."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from benchbone.execution.allocator import huge_pages, prefer_huge_pages

prefer_huge_pages()


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown cpu"


def machine_line() -> str:
    """``# date  arch, cpu model, N cpus, load average, huge pages`` (the load says how noisy the numbers are)."""
    load = ", load %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return (f"# {time.strftime('%Y-%m-%d %H:%M')}  {platform.machine()}, {cpu_model()}, {os.cpu_count()} cpus{load}, "
            f"{huge_pages()}")
