"""Measured constraints of ``benchbone select``: parameters, GMACs, latency at batch 1, throughput at a batch.

Every figure is measured on the run's device (never read from a model card): parameters counted, GMACs from
torch's ``FlopCounterMode`` (``benchbone.execution.efficiency``), latency the median of timed forward passes
of one image after warm-up, throughput images per second of timed batches. They are kept in the feature cache
directory (``<cache>/efficiency/select-<key>.json``), keyed by the architecture (not the weights' values) x
device x input size x precision (and batch), so a rerun, or a random twin, does not time again. Candidates that break a limit are dropped before any
data is touched.
"""
from __future__ import annotations

import json
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from benchbone.errors import UsageError

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}
_SECONDS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_count(text: str | float, flag: str = "--max-params") -> float:
    """``30M`` -> 3e7, ``1.5g`` -> 1.5e9, ``5000`` -> 5000."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgb]?)\s*", str(text).lower())
        if not match:
            raise UsageError(f"{flag} {text!r}: give a number with an optional k, M or G, e.g. {flag} 30M")
        value = float(match.group(1)) * _SUFFIX[match.group(2)]
    if not value > 0:
        raise UsageError(f"{flag} {text!r}: give a positive number")
    return value


def parse_duration(text: str | float, flag: str = "--budget") -> float:
    """``90s``, ``15m``/``15min``, ``2h``, ``1.5h`` or a number of seconds -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h|d)?\s*", str(text).lower())
        if not match:
            raise UsageError(f"{flag} {text!r}: give a duration such as 90s, 15m or 2h")
        value = float(match.group(1)) * _SECONDS[match.group(2) or ""]
    if not value > 0:
        raise UsageError(f"{flag} {text!r}: give a positive duration")
    return value


def count_text(n: float) -> str:
    """48.1M, 3.5k, 864."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.0f}"


@dataclass(frozen=True)
class Limits:
    """What the user allows; None: no limit."""
    max_latency_ms: float | None = None
    max_params: float | None = None   # a count, not millions
    max_gmacs: float | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_latency_ms, self.max_params, self.max_gmacs))

    def broken(self, figures: dict) -> list[str]:
        """Each limit ``figures`` break, as text with the measured figure: ``params 48.1M > 30M``."""
        out = []
        if self.max_params is not None and figures["params"] > self.max_params:
            out.append(f"params {count_text(figures['params'])} > {count_text(self.max_params)}")
        if self.max_gmacs is not None and figures["gmacs"] > self.max_gmacs:
            out.append(f"GMACs {figures['gmacs']:.3g} > {self.max_gmacs:g}")
        if self.max_latency_ms is not None and figures["latency_ms"] is not None and figures["latency_ms"] > self.max_latency_ms:
            out.append(f"latency {figures['latency_ms']:.2f} ms > {self.max_latency_ms:g} ms (batch 1, "
                       f"{figures['device']})")
        return out


def _timed(model, x, runs: int, autocast) -> list[float]:
    import torch

    times = []
    with torch.inference_mode(), autocast():
        for _ in range(runs):
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            t = time.perf_counter()
            model(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            times.append(time.perf_counter() - t)
    return times


def measure(model, size: tuple[int, int], device: str, settings, batch: int = 32, runs: int = 5,
            timed: bool = True) -> dict:
    """Parameters, GMACs, and with ``timed`` latency (ms, median of ``runs`` single-image passes after one
    warm-up pass) and throughput (images/s, the faster of two batches of ``batch`` after one warm-up) on
    ``device``; without, those two are None."""
    import contextlib

    import torch

    from benchbone.execution.efficiency import count_parameters, gmacs

    t0 = time.perf_counter()
    model = model.to(device).eval()
    dtype = settings.autocast_dtype

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=dtype)

    latency = per_batch = None
    if timed:
        one = torch.zeros(1, 3, *size, device=device)
        many = torch.zeros(batch, 3, *size, device=device)
        _timed(model, one, 1, autocast)
        latency = statistics.median(_timed(model, one, runs, autocast))
        _timed(model, many, 1, autocast)
        per_batch = min(_timed(model, many, 2, autocast))
    return {"params": int(count_parameters(model)), "gmacs": round(float(gmacs(model, size)), 5),
            "latency_ms": None if latency is None else round(1000 * latency, 3),
            "throughput_ips": None if per_batch is None else round(batch / per_batch, 1),
            "batch": batch, "device": str(device), "input_size": list(size),
            "precision": str(dtype or torch.float32).removeprefix("torch."), "measure_s": round(time.perf_counter() - t0, 3)}


def architecture(model) -> list:
    """What the figures depend on besides the input: the class and the name, shape and dtype of every parameter
    and buffer, not their values (a random twin costs what its pretrained network costs)."""
    return [type(model).__qualname__, *([name, list(t.shape), str(t.dtype)] for name, t in model.state_dict().items())]


def cached_measure(root: Path | None, model, size: tuple[int, int], device: str, settings,
                   batch: int = 32, candidate: dict | None = None, timed: bool = True) -> tuple[dict, bool]:
    """``measure`` kept per ``architecture`` x device x input size x precision x batch in ``root/efficiency``,
    and per ``candidate`` (backbone name and layer: the layers of one network share its weights, and ``pixels:N``
    has none, but they compute different things); returns (figures, the key's digest: one measurement each)."""
    from benchbone.digests import json_digest
    from benchbone.records import write_atomic
    from benchbone.versions import package_version

    key = {"select_constraints": 2, "candidate": candidate or {}, "architecture": json_digest(architecture(model)),
           "device": str(device), "size": list(size),
           "precision": settings.describe(), "batch": batch, "timed": timed, "torch": package_version("torch")}
    digest = json_digest(key, length=32)
    path = Path(root) / "efficiency" / f"select-{digest}.json" if root else None
    if path is not None and path.is_file():
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            if kept.get("key") == key:
                return kept["figures"], digest
        except (OSError, ValueError, KeyError):
            pass  # damaged: measured again
    figures = measure(model, size, device, settings, batch, timed=timed)
    if path is not None:
        try:
            write_atomic(path, json.dumps({"key": key, "figures": figures}))
        except (OSError, UsageError):
            pass  # a read-only cache: measured again next time
    return figures, digest
