"""Helpers for dataset plugins: image files in class folders (``root/<class>/*.jpg``)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

from benchbone.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}


def data_root() -> Path:
    """Where datasets download to without --data-dir: $BENCHBONE_DATA_DIR or ~/.cache/benchbone/data."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("BENCHBONE_DATA_DIR", cache / "benchbone" / "data"))


def scan_class_folders(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image paths, labels and sorted class names of ``root/<class>/<image>``."""
    root = Path(root)
    if not readable_dir(root):
        raise UsageError(f"data directory {root} does not exist; pass --data-dir with the data set's folder")
    unreadable: list[Path] = []

    def listing(folder: Path) -> list[tuple[Path, os.DirEntry]]:
        """The entries of ``folder`` sorted by name, each with its DirEntry (whose type needs no stat of its own)."""
        try:
            with os.scandir(folder) as found:
                return sorted(((folder / entry.name, entry) for entry in found), key=lambda pair: pair[0].name)
        except OSError as exc:
            raise UsageError(f"cannot read data directory {folder}: {exc.strerror or exc}; "
                             "make it readable or pass another --data-dir") from None

    def is_file(path: Path, entry: os.DirEntry) -> bool:
        try:
            return entry.is_file()
        except OSError:  # a symbolic link loop (a.jpg -> b.jpg -> a.jpg) and the like: skipped, and counted
            unreadable.append(path)
            return False

    def images_in(folder: Path) -> list[Path]:
        return [p for p, entry in listing(folder) if p.suffix.lower() in IMAGE_SUFFIXES and is_file(p, entry)]

    listed = listing(root)
    entries = [p for p, _ in listed]
    folders = [p for p, entry in listed if entry.is_dir()]
    # Class names are data: a folder whose name starts with a dot is a class when it holds images (as in
    # torchvision's ImageFolder); one without images (.git, .ipynb_checkpoints) belongs to a tool, not the data.
    classes = sorted(p.name for p in folders if not p.name.startswith(".") or images_in(p))
    visible = [p for p in entries if not p.name.startswith(".")]
    if not classes:
        loose = [p for p in visible if p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise UsageError(f"{root} holds images but no class folders; move them into {root}/<class>/ folders")
        raise UsageError(f"{root} {'is empty' if not visible else 'has no class folders'}; "
                         f"expected {root}/<class>/<image files>")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = images_in(root / name)
        if not files:
            raise UsageError(f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        paths += files
        labels += [label] * len(files)
    if unreadable:
        import warnings

        skipped = sorted(set(unreadable))
        warnings.warn(f"skipped {len(skipped)} image file(s) under {root} that cannot be read (a symbolic link loop "
                      f"or the like), e.g. {skipped[0]}", stacklevel=2)
    return paths, labels, classes


def readable_dir(path: Path) -> bool:
    """Whether ``path`` is a directory; one that cannot be looked at (no permission) is a UsageError naming it,
    not a PermissionError from deep inside a plugin."""
    try:
        return Path(path).is_dir()
    except OSError as exc:
        raise UsageError(f"cannot read data directory {path}: {exc.strerror or exc}; make it readable or pass "
                         "another --data-dir") from None


def pil_to_uint8(image):
    """A PIL image as a uint8 array, HW (grey) or HWC (RGB), high bit depths scaled rather than clipped.

    16-bit grey (``I;16*``, and ``I`` with values in 0..65535) maps 65535 to 255 (divided by 257, rounded);
    32-bit float grey (``F``) in [0, 1] maps 1 to 255. Other value ranges raise a UsageError.
    """
    import numpy as np

    mode = image.mode
    if mode in ("L", "RGB"):
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if not (mode.startswith("I") or mode == "F"):  # palette, alpha, CMYK, YCbCr, 16-bit RGB (read as RGB)
        return np.asarray(image.convert("RGB"))
    values = np.asarray(image).astype(np.float64)
    low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    full = 1.0 if mode == "F" else 65535.0
    if low < 0 or high > full or not np.isfinite(values).all():
        raise UsageError(f"pixel values {low:g}..{high:g} of a {mode} image are outside 0..{full:g}; "
                         "save it as 8- or 16-bit PNG")
    return np.rint(values * (255.0 / full)).astype(np.uint8)


def read_image(path: Path):
    """One image file as a uint8 tensor [C, H, W] (C = 1 or 3); a clear error names an unreadable file."""
    import torch
    from PIL import Image

    try:
        with Image.open(path) as im:
            array = pil_to_uint8(im)
        tensor = torch.from_numpy(array.copy())
        return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    except Exception as exc:
        raise UsageError(f"cannot read image {path}: {exc}; remove or replace the file") from None


class ImageFiles:
    """A split of image files with labels; images are decoded when indexed."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int]):
        self.paths = list(paths)
        self.targets = list(labels)
        self._fingerprint: str | None = None
        self._sizes: list[int] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return read_image(self.paths[index]), self.targets[index]

    def fingerprint(self) -> str:
        """A digest of every file's real path, size, mtime and label (taken once): keys the decode and feature
        caches. Folders are resolved (one ``realpath`` each), so data reached through a symlink keys the same."""
        if self._fingerprint is not None:
            return self._fingerprint
        h, real, self._sizes = hashlib.sha256(), {}, []
        for path, label in zip(self.paths, self.targets):
            try:
                stat = path.stat()
            except OSError as exc:
                raise UsageError(f"cannot read image {path}: {exc.strerror or exc}; remove or replace the file") from None
            if path.parent not in real:
                real[path.parent] = os.path.realpath(path.parent)
            folder = real[path.parent]
            self._sizes.append(stat.st_size)
            h.update(f"{os.path.join(folder, path.name)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}\n".encode())
        self._fingerprint = h.hexdigest()
        return self._fingerprint

    def sizes(self) -> list[int]:
        """Each file's size in bytes, as the fingerprint read them (taken with it)."""
        self.fingerprint()
        return self._sizes


def load_split_folders(root: Path, splits: Sequence[str]) -> tuple[dict[str, ImageFiles], list[str]]:
    """``root/<split>/<class>/*`` for each split, with the same classes in every split."""
    root = Path(root)
    out, classes = {}, None
    for split in splits:
        paths, labels, names = scan_class_folders(root / split)
        if classes is not None and names != classes:
            first, here = root / splits[0], root / split
            only = [f"only in {where}: {', '.join(sorted(diff)[:5])}" for where, diff in
                    ((first, set(classes) - set(names)), (here, set(names) - set(classes))) if diff]
            raise UsageError(f"class folders differ between {first} and {here} ({'; '.join(only)}); "
                             "every split needs the same classes")
        classes = names
        out[split] = ImageFiles(paths, labels)
    return out, classes
