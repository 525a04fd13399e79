"""CIFAR-10 and CIFAR-100: torchvision's official python layout (downloaded when online) or class folders."""
from __future__ import annotations

import os
from pathlib import Path

from benchbone import DatasetSplits, ImageTensorDataset, OfflineError, UsageError, hookimpl
from benchbone.folders import load_split_folders

OFFICIAL = {"cifar10": ("CIFAR10", "cifar-10-batches-py"), "cifar100": ("CIFAR100", "cifar-100-python")}


def default_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("BENCHBONE_DATA_DIR", cache / "benchbone" / "data"))


def _official(name: str, root: Path, download: bool) -> DatasetSplits:
    import torch
    import torchvision

    cls_name, folder = OFFICIAL[name]
    cls = getattr(torchvision.datasets, cls_name)
    if not (root / folder).is_dir():
        hint = (f"pass --data-dir DIR holding {folder}/ (the official python version) "
                f"or train/<class>/ and test/<class>/ image folders")
        if not download:
            raise UsageError(f"{name}: no {folder}/ in {root}; {hint}")
        try:
            cls(str(root), train=True, download=True)
        except Exception as exc:  # URLError, timeouts, DNS: whatever the network says
            raise OfflineError(f"{name}: could not download to {root} ({type(exc).__name__}: {exc}); {hint}") from None
    splits = {}
    for split in ("train", "test"):
        try:  # torchvision verifies every file's md5 before it unpickles it
            ds = cls(str(root), train=split == "train", download=False)
        except RuntimeError as exc:
            raise UsageError(f"{name}: {root / folder} is incomplete or corrupted ({exc}); "
                             "delete it and download again, or pass another --data-dir") from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits[split] = ImageTensorDataset(images, torch.as_tensor(ds.targets))
    return DatasetSplits(splits["train"], splits["test"], list(ds.classes), info={"layout": "official python"})


def _builder(name: str):
    def build(data_dir, download) -> DatasetSplits:
        if data_dir is not None:
            data_dir = Path(data_dir)
            if not data_dir.is_dir():
                raise UsageError(f"{name}: data directory {data_dir} does not exist; pass an existing --data-dir")
            if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
                splits, classes = load_split_folders(data_dir, ("train", "test"))
                return DatasetSplits(splits["train"], splits["test"], classes,
                                     info={"layout": "class folders", "data_dir": str(data_dir)})
            if data_dir.name == OFFICIAL[name][1]:
                data_dir = data_dir.parent
        return _official(name, data_dir or default_root(), download)

    build.__name__ = f"build_{name}"
    return build


@hookimpl
def benchbone_register_datasets(register):
    register("cifar10", _builder("cifar10"), description="CIFAR-10, 32x32, 10 classes (official layout or class folders)")
    register("cifar100", _builder("cifar100"), description="CIFAR-100, 32x32, 100 classes (official layout or class folders)")
