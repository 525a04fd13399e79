"""CIFAR-10 and CIFAR-100: the official python version (downloaded when online) or train/test class folders.

The official batches are pickles. They are read with an unpickler that admits nothing but numpy array
reconstruction, so a tampered file cannot run code. Files under the official names are checked against
the official md5s, and the record says whether they matched.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

from benchbone import DatasetSplits, ImageTensorDataset, OfflineError, UsageError, hookimpl
from benchbone.helpers import data_root, load_split_folders

OFFICIAL = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "archive_md5": "c58f30108f718f92721af3b95e74349a",
        "train": {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                  "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                  "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb"},
        "test": {"test_batch": "40351d587109b95175f43aff81a1287e"},
        "meta": ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888", "label_names"),
        "label_key": "labels",
        "num_classes": 10,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "archive_md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": {"train": "16019d7e3df5f24257cddd939b257f8d"},
        "test": {"test": "f0ef6b0ae62326f3e7ffdfab6717acfc"},
        "meta": ("meta", "7973b15100ade9c7d40fb424638fde48", "fine_label_names"),
        "label_key": "fine_labels",
        "num_classes": 100,
    },
}


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, for latin-1 only."""
    if encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class PlainDataUnpickler(pickle.Unpickler):
    """Admits only what numpy array reconstruction needs; any other global raises UnpicklingError."""

    def find_class(self, module: str, name: str):
        import numpy as np

        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(1))[0]  # numpy 1 and 2 name its module differently
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        raise pickle.UnpicklingError(f"refused global {module}.{name}: only plain data and numpy arrays are admitted")


def load_pickle(path: Path) -> dict:
    """One official CIFAR file as a dict with str keys; a clear error names a bad file."""
    try:
        with open(path, "rb") as f:
            data = PlainDataUnpickler(f, encoding="latin1").load()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}; pass another --data-dir") from None
    except Exception as exc:
        raise UsageError(f"{path} is not a readable CIFAR python file ({type(exc).__name__}: {exc}); "
                         "delete it and download again, or pass another --data-dir") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} holds a {type(data).__name__}, not a CIFAR dict; pass another --data-dir")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_split(name: str, folder: Path, files: dict[str, str]):
    import numpy as np
    import torch

    spec = OFFICIAL[name]
    images, labels = [], []
    for file in files:
        path = folder / file
        if not path.is_file():
            raise UsageError(f"{name}: {path} is missing; delete {folder} and download again, or pass another --data-dir")
        batch = load_pickle(path)
        data, targets = batch.get("data"), batch.get(spec["label_key"])
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise UsageError(f"{path}: 'data' must be a uint8 array [N, 3072]; delete {folder} and download again")
        if targets is None or len(targets) != len(data):
            raise UsageError(f"{path}: {spec['label_key']!r} must hold one label per image ({len(data)})")
        targets = np.asarray(targets, dtype=np.int64)
        if len(targets) and (targets.min() < 0 or targets.max() >= spec["num_classes"]):
            raise UsageError(f"{path}: labels must lie in 0..{spec['num_classes'] - 1}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(targets)
    return ImageTensorDataset(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def read_official(name: str, folder: Path) -> DatasetSplits:
    """The official python version in ``folder`` (e.g. cifar-10-batches-py/) as in-memory splits."""
    spec = OFFICIAL[name]
    meta_file, meta_md5, meta_key = spec["meta"]
    meta_path = folder / meta_file
    if not meta_path.is_file():
        raise UsageError(f"{name}: {meta_path} is missing; delete {folder} and download again, or pass another --data-dir")
    classes = load_pickle(meta_path).get(meta_key)
    if not isinstance(classes, list) or len(classes) != spec["num_classes"]:
        raise UsageError(f"{meta_path}: {meta_key!r} must list {spec['num_classes']} class names")
    classes = [c.decode("latin1") if isinstance(c, bytes) else str(c) for c in classes]
    train, test = _read_split(name, folder, spec["train"]), _read_split(name, folder, spec["test"])
    expected = {meta_file: meta_md5, **spec["train"], **spec["test"]}
    differ = [file for file, md5 in expected.items() if _md5(folder / file) != md5]
    md5 = "official" if not differ else f"differs from the official files: {', '.join(differ)}"
    return DatasetSplits(train, test, classes, info={"layout": "official python", "path": str(folder), "md5": md5})


def fetch(name: str, root: Path) -> None:
    """The official archive into ``root``, checked against its md5; OfflineError names --data-dir when it fails."""
    from torchvision.datasets.utils import download_and_extract_archive

    spec = OFFICIAL[name]
    try:
        download_and_extract_archive(spec["url"], download_root=str(root), md5=spec["archive_md5"])
    except Exception as exc:  # URLError, timeouts, DNS, a bad md5: whatever the network gave
        reason = (str(exc).splitlines() or [""])[0]
        raise OfflineError(f"{name}: could not download {spec['url']} to {root} ({type(exc).__name__}: {reason}); "
                           f"pass --data-dir DIR holding {spec['folder']}/ or train/<class>/ and test/<class>/ "
                           "image folders") from None


def _class_folders(name: str, data_dir: Path) -> DatasetSplits:
    missing = [split for split in ("train", "test") if not (data_dir / split).is_dir()]
    if missing:
        raise UsageError(f"{name}: {data_dir / missing[0]} is missing; class folders need both "
                         f"{data_dir}/train/<class>/ and {data_dir}/test/<class>/")
    splits, classes = load_split_folders(data_dir, ("train", "test"))
    expected = OFFICIAL[name]["num_classes"]
    if len(classes) != expected:
        raise UsageError(f"{name}: {data_dir / 'train'} has {len(classes)} class folders, not {expected}; "
                         f"pass the --data-dir of {name}, or use imagefolder:{data_dir} for another data set")
    return DatasetSplits(splits["train"], splits["test"], classes, info={"layout": "class folders", "path": str(data_dir)})


def _builder(name: str):
    folder_name = OFFICIAL[name]["folder"]

    def build(data_dir, download) -> DatasetSplits:
        if data_dir is not None:
            data_dir = Path(data_dir)
            if not data_dir.is_dir():
                raise UsageError(f"{name}: data directory {data_dir} does not exist; pass an existing --data-dir")
            if data_dir.name == folder_name:
                return read_official(name, data_dir)
            if (data_dir / "train").is_dir() or (data_dir / "test").is_dir():
                return _class_folders(name, data_dir)
        root = data_dir or data_root()
        if not (root / folder_name).is_dir():
            if not download:
                raise UsageError(f"{name}: no {folder_name}/ in {root}; pass --data-dir DIR holding {folder_name}/ "
                                 "or train/<class>/ and test/<class>/ image folders, or allow downloading")
            fetch(name, root)
        return read_official(name, root / folder_name)

    build.__name__ = f"build_{name}"
    return build


# The standard CIFAR augmentation: a mirror image of an object is the same object; 4-pixel pad-and-crop of 32.
AUGMENT = {"hflip": True, "translate": 0.125}


@hookimpl
def benchbone_register_datasets(register):
    register("cifar10", _builder("cifar10"), augment=AUGMENT,
             description="CIFAR-10, 32x32, 10 classes (official layout or class folders)")
    register("cifar100", _builder("cifar100"), augment=AUGMENT,
             description="CIFAR-100, 32x32, 100 classes (official layout or class folders)")
