"""Frozen-backbone features: extracted once per (weights, data, preprocessing), kept on disk as safetensors."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from benchbone.errors import PluginError
from benchbone.records import atomic_path


def feature_key(description: dict) -> str:
    """A stable name for features from everything that determines them."""
    blob = json.dumps(description, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class FeatureStore:
    """A content-addressed directory of feature files, safe for concurrent writers (write, then rename)."""

    def __init__(self, root: Path | None, folder: str = "features"):
        self.root = Path(root) if root else None
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.root / self.folder / f"{key}.safetensors"

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None when absent or damaged (a damaged file is removed)."""
        if self.root is None or not self.path(key).exists():
            return None
        from safetensors import safe_open

        path = self.path(key)
        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {name: f.get_tensor(name) for name in f.keys()}
                expected = (f.metadata() or {}).get("sha256")
            if expected != _digest(tensors):
                raise ValueError("digest mismatch")
            return tensors
        except Exception as exc:  # truncated or corrupted: never read as numbers
            import warnings

            warnings.warn(f"cache file {path} is damaged ({exc}); recomputing it", stacklevel=2)
            path.unlink(missing_ok=True)
            return None

    def save(self, key: str, tensors: dict[str, torch.Tensor], description: dict) -> None:
        if self.root is None:
            return
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in tensors.items()}
        meta = {"sha256": _digest(tensors), "description": json.dumps(description, sort_keys=True, default=str)}
        with atomic_path(self.path(key)) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    def get_or_compute(self, description: dict, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        key = feature_key(description)
        tensors = self.load(key)
        if tensors is None:
            tensors = compute()
            self.save(key, tensors, description)
        return tensors


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
            progress: Callable = lambda it, **kw: it) -> tuple[torch.Tensor, dict]:
    """Features [N, num_features] (float32, CPU) of every batch in order, and how they were computed.

    A batch that runs out of device memory is split in halves, and the smaller size is kept for the rest.
    """
    model.eval()
    if settings.use_channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if settings.compile else model
    dtype = settings.autocast_dtype
    device_type = settings.device.split(":")[0]
    out = torch.empty(total, num_features, dtype=torch.float32)
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
            out[filled:filled + len(feats)].copy_(feats.float(), non_blocking=False)
            filled += len(feats)
            start += len(part)
            del part, feats
        del x  # before the next batch comes to the device
    if device_type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    stats = {"images": filled, "seconds": round(seconds, 4), "images_per_s": round(filled / max(seconds, 1e-9), 2),
             "batch_size": chunk, **settings.describe()}
    return out, stats
