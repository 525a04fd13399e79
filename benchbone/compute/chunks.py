"""Row chunks for features that may not fit in memory: how much memory is free, and how to walk the rows.

A strategy given a CPU feature tensor (possibly memory-mapped from the feature cache, larger than memory or
than the device) works on it in place when a working copy fits in a share of the free memory of the device
it computes on, and otherwise in row chunks of about ``CHUNK_BYTES`` each, so that nothing the size of the
features is ever allocated.
"""
from __future__ import annotations

__all__ = ["available_bytes", "fits_in_memory", "row_chunks", "CHUNK_BYTES", "SHARE"]

CHUNK_BYTES = 64 * 2**20  # a row chunk converted to the working dtype: large enough for full-speed products
SHARE = 0.5  # of the free memory a working copy may take: the rest is for the strategy's other tensors


def available_bytes(device) -> int:
    """Free memory of ``device``: torch.cuda.mem_get_info on CUDA, else the host's MemAvailable (the kernel's
    estimate including reclaimable page cache; free pages from os.sysconf where /proc/meminfo is absent)."""
    import os

    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fits_in_memory(nbytes: int, device) -> bool:
    """Whether working copies of ``nbytes`` in all fit in this process's share of ``device``'s free memory."""
    return nbytes <= SHARE * available_bytes(device)


def row_chunks(n: int, width: int, itemsize: int, rows: int | None = None):
    """``(start, stop)`` of consecutive row chunks of an ``[n, width]`` tensor: ``rows`` rows each, or as many
    as make about ``CHUNK_BYTES`` at ``itemsize`` bytes an entry."""
    rows = rows or max(1, CHUNK_BYTES // max(1, width * itemsize))
    for start in range(0, n, rows):
        yield start, min(start + rows, n)
