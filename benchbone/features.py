"""Frozen-backbone features: extracted once per (weights, data, preprocessing), kept on disk as safetensors."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

from benchbone.errors import PluginError


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

        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        meta = {"sha256": _digest(tensors), "description": json.dumps(description, sort_keys=True, default=str)}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get_or_compute(self, description: dict, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        key = feature_key(description)
        tensors = self.load(key)
        if tensors is None:
            tensors = compute()
            self.save(key, tensors, description)
        return tensors


@torch.inference_mode()
def extract(model: torch.nn.Module, batches, num_features: int, total: int, progress: Callable) -> torch.Tensor:
    """Features [N, num_features] (float32, on the CPU) of every batch, in order."""
    model.eval()
    out = torch.empty(total, num_features, dtype=torch.float32)
    filled = 0
    for x, _ in progress(batches, desc="features"):
        feats = model(x)
        if feats.ndim != 2 or feats.shape[1] != num_features:
            raise PluginError(
                f"the backbone's model returned features of shape {tuple(feats.shape)}, "
                f"expected [N, {num_features}]: its model must end in pooled features"
            )
        out[filled:filled + len(feats)] = feats.float().cpu()
        filled += len(feats)
    return out
