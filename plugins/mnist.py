"""MNIST and Fashion-MNIST from idx files: torchvision's layout, the Debian package, or a download.

Without --data-dir the files are looked for in torchvision's layout under the data root, then (for
Fashion-MNIST) where the Debian package ``dataset-fashion-mnist`` installs them, and are downloaded last.
"""
from __future__ import annotations

import gzip
from pathlib import Path

from benchbone import DatasetSplits, ImageTensorDataset, OfflineError, UsageError, hookimpl
from benchbone.helpers import data_root

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SETS = {
    "mnist": {"torchvision": "MNIST", "classes": [str(d) for d in range(10)], "system": ()},
    "fashion-mnist": {
        "torchvision": "FashionMNIST",
        "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"],
        "system": (Path("/usr/share/datasets/fashion-mnist"),),  # Debian: dataset-fashion-mnist
    },
}


def read_idx(path: Path):
    """An idx file (optionally gzipped) of unsigned bytes as a numpy array; errors name the file."""
    import numpy as np

    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UsageError(f"cannot read {path}: {exc}; replace the file or pass another --data-dir") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise UsageError(f"{path} is not an idx file of unsigned bytes; replace it or pass another --data-dir")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise UsageError(f"{path} is truncated: its header says {shape}, its body holds {len(body)} bytes; "
                         "replace it or pass another --data-dir")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def idx_folder(name: str, root: Path) -> Path | None:
    """The folder under ``root`` holding all four idx files: ``root``, ``root/raw`` or ``root/<torchvision name>/raw``."""
    for folder in (root, root / "raw", root / SETS[name]["torchvision"] / "raw"):
        if all(_find(folder, stem) for pair in FILES.values() for stem in pair):
            return folder
    return None


def read_folder(name: str, folder: Path) -> DatasetSplits:
    import numpy as np
    import torch

    splits = {}
    for split, (image_stem, label_stem) in FILES.items():
        images_path, labels_path = _find(folder, image_stem), _find(folder, label_stem)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UsageError(f"{images_path} and {labels_path} do not pair up: images {images.shape}, "
                             f"labels {labels.shape}; expected [N, H, W] and [N]")
        if len(labels) and labels.max() >= len(SETS[name]["classes"]):
            raise UsageError(f"{labels_path}: labels must lie in 0..{len(SETS[name]['classes']) - 1}")
        splits[split] = ImageTensorDataset(torch.from_numpy(images.copy())[:, None],
                                           torch.from_numpy(labels.astype(np.int64)))
    return DatasetSplits(splits["train"], splits["test"], SETS[name]["classes"],
                         info={"layout": "idx", "path": str(folder)})


def fetch(name: str, root: Path) -> Path:
    """torchvision's download (md5-checked) into ``root``; OfflineError names --data-dir when it fails."""
    import torchvision

    cls = getattr(torchvision.datasets, SETS[name]["torchvision"])
    try:
        cls(str(root), train=True, download=True)
    except Exception as exc:  # URLError, timeouts, DNS, a bad md5: whatever the network gave
        reason = (str(exc).splitlines() or [""])[0]
        raise OfflineError(f"{name}: could not download to {root} ({type(exc).__name__}: {reason}); pass --data-dir "
                           f"DIR holding {FILES['train'][0]}[.gz] and the other idx files") from None
    return root / SETS[name]["torchvision"] / "raw"


def _builder(name: str):
    def build(data_dir, download) -> DatasetSplits:
        wanted = ", ".join(f"{stem}[.gz]" for pair in FILES.values() for stem in pair)
        if data_dir is not None:
            data_dir = Path(data_dir)
            if not data_dir.is_dir():
                raise UsageError(f"{name}: data directory {data_dir} does not exist; pass an existing --data-dir")
            folder = idx_folder(name, data_dir)
            if folder is None:
                raise UsageError(f"{name}: {data_dir} lacks the idx files ({wanted}); pass --data-dir with them")
            return read_folder(name, folder)
        for root in (data_root(), *SETS[name]["system"]):
            folder = idx_folder(name, root)
            if folder is not None:
                return read_folder(name, folder)
        if not download:
            raise UsageError(f"{name}: no idx files in {data_root()}; pass --data-dir DIR holding {wanted}")
        return read_folder(name, fetch(name, data_root()))

    build.__name__ = f"build_{name.replace('-', '_')}"
    return build


# Shifts of up to 3 of 28 pixels and no flips: a mirrored digit is another symbol or none (Fashion-MNIST keeps
# the MNIST recipe so that the two compare like for like, though its classes would survive a mirror).
AUGMENT = {"hflip": False, "translate": 0.1}


DESCRIPTIONS = {
    "mnist": "MNIST, 28x28 grey digits, 10 classes (idx files)",
    "fashion-mnist": "Fashion-MNIST, 28x28 grey, 10 classes (idx files; finds the Debian package dataset-fashion-mnist)",
}


@hookimpl
def benchbone_register_datasets(register):
    for name, description in DESCRIPTIONS.items():
        register(name, _builder(name), aliases=(name.replace("-", "_"),) if "-" in name else (), augment=AUGMENT,
                 description=description)
