"""The built-in answer to ``benchbone_pick_device``: cuda, then mps, then cpu."""
from __future__ import annotations

from benchbone.errors import UsageError
from benchbone.hookspecs import hookimpl


@hookimpl(trylast=True)
def benchbone_pick_device(requested: str | None) -> str:
    import torch

    if requested:
        kind = requested.split(":")[0]
        available = {
            "cpu": True,
            "cuda": torch.cuda.is_available(),
            "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        }
        if kind not in available:
            raise UsageError(f"unknown device {requested!r}; use cpu, cuda, cuda:N or mps")
        if not available[kind]:
            raise UsageError(f"device {requested!r} is not available on this machine; use --device cpu")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
