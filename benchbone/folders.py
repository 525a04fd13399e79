"""Helpers for dataset plugins: image files in class folders (``root/<class>/*.jpg``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from benchbone.errors import UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}


def scan_class_folders(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image paths, labels and sorted class names of ``root/<class>/<image>``."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"data directory {root} does not exist; pass --data-dir with the data set's folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UsageError(f"{root} has no class folders; expected {root}/<class>/<image files>")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        paths += files
        labels += [label] * len(files)
    return paths, labels, classes


def read_image(path: Path):
    """One image file as a uint8 tensor [C, H, W] (C = 1 or 3); a clear error names an unreadable file."""
    import torch
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            image = decode_image(read_file(str(path)), mode=ImageReadMode.UNCHANGED)
            if image.shape[0] in (1, 3):
                return image
            return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            array = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB"))
        tensor = torch.from_numpy(array.copy())
        return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    except Exception as exc:
        raise UsageError(f"cannot read image {path}: {exc}; remove or replace the file") from None


class ImageFiles:
    """A split of image files with labels; images are decoded when indexed."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int]):
        self.paths = list(paths)
        self.targets = list(labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return read_image(self.paths[index]), self.targets[index]


def load_split_folders(root: Path, splits: Sequence[str]) -> tuple[dict[str, ImageFiles], list[str]]:
    """``root/<split>/<class>/*`` for each split, with the same classes in every split."""
    root = Path(root)
    out, classes = {}, None
    for split in splits:
        paths, labels, names = scan_class_folders(root / split)
        if classes is not None and names != classes:
            missing = sorted(set(classes) ^ set(names))
            raise UsageError(f"class folders differ between {root / splits[0]} and {root / split} "
                             f"({', '.join(missing[:5])}); every split needs the same classes")
        classes = names
        out[split] = ImageFiles(paths, labels)
    return out, classes
