"""torch's CPU allocator, set up before torch is imported: transparent huge pages for large tensors.

torch backs a CPU tensor of 2 MiB or more with transparent huge pages (``madvise``) when the environment says
``THP_MEM_ALLOC_ENABLE=1``, and reads that once, at its first allocation. With 4 KiB pages, streaming a
tensor of hundreds of megabytes misses the TLB at every page: on the 2-core AMD EPYC of results/perf.md
(section 6, ``benchmarks/bench_huge_pages.py``) EfficientNet-Lite0's forward pass ran 1.73x as fast on huge
pages, ResNet-50's 1.15x and an iteration of the linear probe's L-BFGS 1.04x. numpy asks for huge pages by
default.
"""
from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "THP_MEM_ALLOC_ENABLE"
KERNEL_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def prefer_huge_pages() -> None:
    """Ask for huge pages unless the environment already says (``THP_MEM_ALLOC_ENABLE=0`` keeps 4 KiB pages).
    It takes effect only in a process that has not imported torch yet."""
    os.environ.setdefault(VARIABLE, "1")


def huge_pages() -> str:
    """Whether this process's large torch tensors get huge pages, in a few words for a benchmark's header."""
    try:
        kernel = KERNEL_SETTING.read_text().split("[", 1)[1].split("]", 1)[0]
    except (OSError, IndexError):
        return "huge pages unknown (no transparent huge pages setting)"
    asked = os.environ.get(VARIABLE, "unset")
    on = kernel == "always" or (kernel == "madvise" and asked not in ("unset", "", "0"))
    return f"huge pages {'on' if on else 'off'} ({VARIABLE}={asked}, kernel THP {kernel})"
