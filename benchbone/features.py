"""Frozen-backbone features: extracted once per (weights, data, preprocessing), kept on disk as safetensors."""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from benchbone.errors import PluginError
from benchbone.records import atomic_path


def full_key(description: dict) -> str:
    """The sha256 of everything that determines a cache file's content: written into the file, checked on read."""
    blob = json.dumps(description, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def feature_key(description: dict) -> str:
    """A stable file name for features from everything that determines them (the start of ``full_key``)."""
    return full_key(description)[:32]


def state_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's parameters and buffers (names, dtypes, shapes and bytes): what its features depend on."""
    h = hashlib.sha256()
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):  # non-persistent ones too
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _digest(tensors: dict[str, torch.Tensor], key: str) -> str:
    h = hashlib.sha256(key.encode())
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_WARNED: set[str] = set()  # cache directories already reported as unwritable, so each is reported once


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


class FeatureStore:
    """A content-addressed directory of feature files, safe for concurrent writers (write, then rename).

    Each file carries the full key it was written for and a digest of that key and its tensors; a file
    that fails either check is reported, removed and rebuilt. One lock file per key makes runs sharing
    the directory compute each entry once (``fcntl.flock`` through ``filelock``: the kernel releases the
    lock of a process that dies, so a stale lock is simply taken over). A directory that cannot be
    written is reported once; the run then goes on without writing to it.
    """

    def __init__(self, root: Path | None, folder: str = "features"):
        self.root = Path(root) if root else None
        self.folder = folder
        self.writable = self.root is not None

    def path(self, key: str) -> Path:
        return self.root / self.folder / f"{key}.safetensors"

    def load(self, key: str, description: dict | None = None) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None when absent or damaged (a damaged file is removed).

        With ``description``, the file must have been written for exactly that description; without, for
        the key its name says.
        """
        if self.root is None or not self.path(key).exists():
            return None
        from safetensors import safe_open

        path = self.path(key)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                written_for = meta.get("key")
                if written_for is None:
                    raise ValueError("no key in its header: written by an older benchbone")
                expected = full_key(description) if description is not None else None
                if written_for[:32] != key or (expected is not None and written_for != expected):
                    raise ValueError(f"written for key {written_for[:32]}, not {key}: a copied or renamed file")
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            if meta.get("sha256") != _digest(tensors, written_for):
                raise ValueError("digest mismatch")
            return tensors
        except Exception as exc:  # truncated, corrupted or another key's: never read as numbers
            _warn(f"cache file {path} is damaged ({exc}); recomputing it")
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            return None

    def _cannot_write(self, exc: OSError, size: int | None = None) -> None:
        """Report once that the cache directory cannot be written, and stop writing to it."""
        self.writable = False
        where = str(self.root)
        if where not in _WARNED:
            _WARNED.add(where)
            needed = f"; {size:,} bytes needed" if size is not None else ""
            _warn(f"cache directory {where} cannot be written ({exc.strerror or exc}{needed}); running without "
                  "caching new results (pass --cache-dir with a writable directory that has free space)")

    def check_writable(self) -> bool:
        """Whether entries can be written here; the first failure is reported (see ``_cannot_write``)."""
        if not self.writable:
            return False
        try:
            folder = self.root / self.folder
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            self._cannot_write(exc)
        return self.writable

    def save(self, key: str, tensors: dict[str, torch.Tensor], description: dict) -> None:
        if not self.writable:
            return
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in tensors.items()}
        written_for = full_key(description)
        meta = {"sha256": _digest(tensors, written_for), "key": written_for,
                "description": json.dumps(description, sort_keys=True, default=str)}
        try:
            with atomic_path(self.path(key)) as tmp:
                save_file(tensors, str(tmp), metadata=meta)
        except OSError as exc:  # a full or read-only disk: the numbers are right, only not kept
            self._cannot_write(exc, sum(t.numel() * t.element_size() for t in tensors.values()))

    @contextlib.contextmanager
    def claim(self, key: str):
        """Hold the lock of ``key`` while computing it; waits while another process holds it."""
        if not self.check_writable():
            yield
            return
        from filelock import FileLock

        lock = FileLock(str(self.path(key)) + ".lock")
        try:
            lock.acquire()
        except OSError as exc:
            self._cannot_write(exc)
            yield
            return
        try:
            yield
        finally:
            lock.release()

    def get_or_compute(self, description: dict, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The stored entry of ``description``, else ``compute()`` (stored); computed once across runs sharing the store."""
        key = feature_key(description)
        tensors = self.load(key, description)
        if tensors is not None:
            return tensors
        with self.claim(key):
            tensors = self.load(key, description)  # another run may have finished it while we waited
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
