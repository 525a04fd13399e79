"""From a plugin's dataset to batches on the device: decoding (in worker processes for large splits), holding small images in memory, resizing and normalising whole batches."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from benchbone.api import ImageTensorDataset
from benchbone.errors import UsageError
from benchbone.inputs.feature_cache import FeatureStore, feature_key
from benchbone.inputs.splits import SplitView
from benchbone.inputs.transforms import Preprocess


def as_uint8_chw(image: Any) -> torch.Tensor:
    """A PIL image, an HWC/HW numpy array or a CHW tensor as a uint8 tensor [C, H, W]."""
    if isinstance(image, torch.Tensor):
        tensor = image
    elif isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    else:  # PIL
        from benchbone.inputs.folders import pil_to_uint8

        tensor = torch.from_numpy(pil_to_uint8(image).copy())
        tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.dtype != torch.uint8 or tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise UsageError(
            f"a dataset gave an image of dtype {tensor.dtype} and shape {tuple(tensor.shape)}; "
            "images must be PIL images or uint8 tensors [C, H, W] with C = 1 or 3"
        )
    return tensor


SMALL_PIXELS = 128 * 128  # images up to this size are decoded once and held in memory


PARALLEL_FROM = 2000  # decode with worker processes from this many images on


CORRUPTED_BYTES = 512 * 2**20  # corrupted in-memory images kept per split, shared by the backbones of a run


def loader_workers() -> int:
    """Worker processes for decoding: the CPUs this process may use, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(8, cpus)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


class _Decoded(torch.utils.data.Dataset):
    """Index -> uint8 image [C, H, W]; with ``preprocess``, resized and cropped to its size with 3 channels;
    with ``corrupt`` (a ``benchbone.inputs.corruptions.Corruption``), corrupted at its source size first."""

    def __init__(self, dataset: Any, preprocess: Preprocess | None = None, corrupt: Callable | None = None):
        self.dataset, self.preprocess, self.corrupt = dataset, preprocess, corrupt

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = as_uint8_chw(self.dataset[int(index)][0])
        if self.corrupt is not None:
            image = self.corrupt(image, int(index))
        if self.preprocess is None:
            return image
        x = self.preprocess.resize_crop(image[None]).to(torch.uint8)[0]  # whole grey levels already
        return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def _one_line(loader) -> Iterator:
    """Iterate ``loader``; a UsageError raised in one of its worker processes comes back as its own one line, and
    a worker killed by SIGTERM or SIGKILL (an out-of-memory killer, an admin) as one line saying what to do.

    (torch re-raises a worker's error with "Caught UsageError in DataLoader worker process N" and the
    worker's traceback in the message; the original message is its last line.)
    """
    batches = iter(loader)
    try:
        yield from batches
    except UsageError as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise UsageError(last.removeprefix(f"{UsageError.__module__}.{UsageError.__name__}: ")) from None
    except RuntimeError:
        killed = _killed_worker(batches)
        if killed is None:
            raise
        raise RuntimeError(f"a data-loading worker (pid {killed[0]}) was killed by {killed[1]} (from outside benchbone: "
                           "an out-of-memory killer, an admin or a job scheduler); finished cells are kept: run the "
                           "same command to redo this one, with more memory or fewer CPUs (one decoding worker per "
                           "CPU, at most 8) if memory ran out") from None


def _killed_worker(batches) -> tuple[int, str] | None:
    """(pid, signal name) of a worker process of a DataLoader iterator that SIGTERM or SIGKILL killed; its other
    workers are stopped now (left to garbage collection, their queues' threads may print a traceback later)."""
    import signal

    outside = {-signal.SIGTERM: "SIGTERM", -signal.SIGKILL: "SIGKILL"}  # a crash (SIGSEGV) keeps torch's own line
    killed = next(((w.pid, outside[w.exitcode]) for w in getattr(batches, "_workers", ()) if w.exitcode in outside), None)
    if killed is not None and hasattr(batches, "_shutdown_workers"):
        batches._shutdown_workers()
    return killed


def _stack(images: list[torch.Tensor]) -> torch.Tensor | None:
    """Images of one size as a uint8 batch (grey joins RGB as 3 channels), or None when sizes differ."""
    if any(im.shape[-2:] != images[0].shape[-2:] for im in images):
        return None
    channels = max(im.shape[0] for im in images)
    return torch.stack([im.expand(channels, -1, -1) for im in images])


class LoadedImages:
    """A split's images for batching: in memory or streamed.

    Small images of one size (CIFAR, MNIST) are decoded once into a uint8 tensor [N, C, h, w]; with
    ``cache_root`` and a dataset that has ``fingerprint()`` (``benchbone.inputs.folders.ImageFiles``), that
    tensor is kept on disk as safetensors under ``cache_root/images``, checked by digest on load.
    Other datasets stream through a DataLoader whose ``workers`` decode, resize and crop each image.
    """

    def __init__(self, dataset: Any, cache_root: str | Path | None = None, workers: int | None = None):
        self.dataset = dataset
        self.workers = workers if workers is not None else (loader_workers() if len(dataset) >= PARALLEL_FROM else 0)
        self.tensor: torch.Tensor | None = None
        self.source = "streamed"
        self._corrupted_cache: dict[tuple, torch.Tensor] = {}
        self._corrupted_bytes = 0
        if isinstance(dataset, ImageTensorDataset):
            self.tensor = torch.as_tensor(dataset.images)
            self.source = "in memory"
            if self.tensor.dtype != torch.uint8 or self.tensor.ndim != 4 or self.tensor.shape[1] not in (1, 3):
                raise UsageError(
                    f"ImageTensorDataset images must be uint8 [N, C, H, W] with C = 1 or 3, "
                    f"not {self.tensor.dtype} {tuple(self.tensor.shape)}"
                )
            return
        fingerprint = getattr(dataset, "fingerprint", None)
        store = FeatureStore(Path(cache_root), folder="images") if cache_root and callable(fingerprint) else None
        description = {"decoded_images": fingerprint()} if store else None
        if store is not None:
            cached = store.load(feature_key(description), description)
            if cached is not None and len(cached["images"]) == len(dataset):
                self.tensor, self.source = cached["images"], "decode cache"
                return
        first = as_uint8_chw(dataset[0][0]) if len(dataset) else None
        if first is None or first.shape[-1] * first.shape[-2] > SMALL_PIXELS:
            return
        self.tensor = self._decode_all(first.shape[-2:])
        if self.tensor is not None:
            self.source = "decoded"
            if store is not None:
                store.save(feature_key(description), {"images": self.tensor}, description)

    def _corrupted(self, corrupt: Callable, image: torch.Tensor, index: int) -> torch.Tensor:
        """``corrupt(image, index)``, kept (up to CORRUPTED_BYTES) for the next backbone that reads the same images."""
        key = (corrupt, int(index))
        if key in self._corrupted_cache:
            return self._corrupted_cache[key]
        out = corrupt(image, int(index))
        if self._corrupted_bytes + out.numel() <= CORRUPTED_BYTES:
            self._corrupted_cache[key] = out
            self._corrupted_bytes += out.numel()
        return out

    def _decode_all(self, size: torch.Size) -> torch.Tensor | None:
        """Every image stacked as uint8 [N, C, h, w], or None when sizes differ."""
        loader = torch.utils.data.DataLoader(_Decoded(self.dataset), batch_size=256, num_workers=self.workers,
                                             collate_fn=_stack, worker_init_fn=_one_thread)
        parts = []
        for batch in _one_line(loader):
            if batch is None or batch.shape[-2:] != size:
                return None
            parts.append(batch)
        channels = max(part.shape[1] for part in parts)
        return torch.cat([part.expand(-1, channels, -1, -1) for part in parts])

    def batches(self, indices: np.ndarray, batch_size: int, preprocess: Preprocess,
                corrupt: Callable | None = None) -> Iterator[torch.Tensor]:
        """uint8 batches of ``indices`` in order: the in-memory images, or streamed ones at the preprocessing's size;
        ``corrupt(image, index)`` is applied to each image at its source size first."""
        chunks = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
        if self.tensor is not None:
            for chunk in chunks:
                batch = self.tensor[torch.as_tensor(chunk)]
                if corrupt is not None:
                    batch = torch.stack([self._corrupted(corrupt, image, i) for image, i in zip(batch, chunk)])
                yield batch
            return
        yield from _one_line(torch.utils.data.DataLoader(
            _Decoded(self.dataset, preprocess, corrupt), batch_sampler=[c.tolist() for c in chunks],
            num_workers=self.workers, worker_init_fn=_one_thread, prefetch_factor=4 if self.workers else None,
        ))


def iterate_batches(
    images: LoadedImages,
    view: SplitView,
    preprocess: Preprocess,
    *,
    batch_size: int,
    device: str,
    shuffle: torch.Generator | None = None,
    augment: Callable[..., torch.Tensor] | None = None,
    shard: tuple[int, int] | None = None,
    corrupt: Callable | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised image batches and labels of ``view`` on ``device``, through ``augment`` when given
    (and ``corrupt``, a ``benchbone.inputs.corruptions.Corruption``, at the source size before preprocessing).

    Only the batch being yielded lives on the device: the generator keeps no reference to it.
    ``shard=(rank, world_size)`` keeps every world_size-th image of the order from ``rank`` on, the order
    wrapped round to a multiple of world_size first, as torch's DistributedSampler does.
    """
    order = torch.randperm(len(view), generator=shuffle) if shuffle is not None else torch.arange(len(view))
    if shard is not None:
        rank, world = shard
        order = order[torch.arange(rank, math.ceil(len(order) / world) * world, world) % len(order)]
    labels = torch.as_tensor(view.labels)
    pin = device.startswith("cuda")
    batches = images.batches(view.indices[order.numpy()], batch_size, preprocess, corrupt)
    # streamed images come resized and cropped from the workers: not again (said only then, so that a
    # Preprocess subclass written before ``prepared`` existed still works for in-memory images)
    prepared = {"prepared": True} if images.tensor is None else {}
    for start, x in zip(range(0, len(order), batch_size), batches):
        pos = order[start:start + batch_size]
        if pin:
            x = x.pin_memory()
        yield preprocess(x.to(device, non_blocking=pin), augment, **prepared), labels[pos].to(device, non_blocking=pin)
