"""Features of a split computed on a device in batches, written in order to memory or to a cache entry's rows."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from benchbone.errors import PluginError
from benchbone.inputs.feature_cache import RowsInMemory


@dataclass
class ExtractionSettings:
    """How features are computed on a device: precision, memory format, compilation, batch size."""

    device: str
    batch_size: int
    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool = False

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 on CUDA by default (tensor cores); fp32 elsewhere unless asked."""
        choice = self.precision
        if choice == "auto":
            choice = "bf16" if self.device.startswith("cuda") else "fp32"
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]

    @property
    def use_channels_last(self) -> bool:
        return self.device.startswith("cuda") if self.channels_last is None else bool(self.channels_last)

    def describe(self) -> dict:
        """What changes the numbers: part of the feature cache key."""
        dtype = self.autocast_dtype
        return {"dtype": str(dtype or torch.float32).removeprefix("torch."), "channels_last": self.use_channels_last,
                "compile": self.compile}


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@torch.inference_mode()
def extract(model: torch.nn.Module, batches: Iterable, num_features: int, total: int, settings: ExtractionSettings,
            progress: Callable = lambda it, **kw: it, rows=None) -> tuple[torch.Tensor | None, dict]:
    """Features [N, num_features] (float32, CPU) of every batch in order, and how they were computed.

    With ``rows`` (``RowsFile``, ``RowsInMemory``), each batch's features go to ``rows.write`` as they come
    and None is returned in their place: host memory then holds one batch of them, not all.
    A batch that runs out of device memory is split in halves, and the smaller size is kept for the rest.
    """
    model.eval()
    if settings.use_channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if settings.compile else model
    dtype = settings.autocast_dtype
    device_type = settings.device.split(":")[0]
    sink = rows if rows is not None else RowsInMemory((total, num_features))
    filled, chunk, started = 0, settings.batch_size, time.perf_counter()
    for x, _ in progress(batches, desc="features"):
        if settings.use_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        start = 0
        while start < len(x):
            part = x[start:start + chunk]
            try:
                with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
                    feats = forward(part)
            except (RuntimeError, torch.OutOfMemoryError) as exc:
                if not _is_oom(exc) or chunk == 1:
                    raise
                chunk = max(1, chunk // 2)
                if device_type == "cuda":
                    torch.cuda.empty_cache()
                continue
            if feats.ndim != 2 or feats.shape[1] != num_features:
                raise PluginError(
                    f"the backbone's model returned features of shape {tuple(feats.shape)}, "
                    f"expected [N, {num_features}]: its model must end in pooled features"
                )
            sink.write(feats.float().cpu())
            filled += len(feats)
            start += len(part)
            del part, feats
        del x  # before the next batch comes to the device
    if device_type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    stats = {"images": filled, "seconds": round(seconds, 4), "images_per_s": round(filled / max(seconds, 1e-9), 2),
             "batch_size": chunk, **settings.describe()}
    return (sink.result() if rows is None else None), stats
