"""CPU threads limited inside a block: small problems on a shared machine run faster on one thread.

torch's intra-op threads spin while they wait for a core; with the other core busy (another job, a parallel
executor) a small fit or a batch-1 forward pass on two threads took 5x to 50x as long as on one
(results/perf.md, section 7).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["cpu_threads"]


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads, and BLAS's where threadpoolctl is installed, set to ``count`` inside the block and
    restored after it; ``None`` changes nothing."""
    import torch

    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        blas = contextlib.nullcontext()
    else:
        blas = threadpool_limits(count)
    try:
        with blas:
            yield
    finally:
        torch.set_num_threads(before)
