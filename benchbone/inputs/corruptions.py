"""The corruptions that ``--set corruption=NAME`` can name: the catalogue, each one's random stream, and the
seeded ``Corruption`` that the harness applies to test images (the functions: ``corruption_functions``)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from benchbone.errors import UsageError
from benchbone.inputs import corruption_functions
from benchbone.inputs.corruption_functions import FROST_EXTRA, Image, frost_photographs

SEVERITIES = (1, 2, 3, 4, 5)
# The 15 corruptions of the benchmark, in the paper's order, then the 4 extra ones (the paper's validation
# corruptions) selectable by name. STREAMS numbers each name's random stream once and for all.
STANDARD = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
            "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
            "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
STREAMS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
           "zoom_blur", "snow", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
           "speckle_noise", "gaussian_blur", "frost", "spatter", "saturate")
# Corruptions whose definition changed after results were published: the revision keys their cached features.
REVISIONS = {"motion_blur": 2}  # 2: CIFAR-10-C's radii and sigmas (1 had Tiny-ImageNet-C's)
CORRUPTIONS: dict[str, Callable[[Image, int, np.random.Generator], Image]] = {
    name: getattr(corruption_functions, name) for name in STANDARD + EXTRA}


def frost_available() -> bool:
    try:
        frost_photographs()
    except UsageError:
        return False
    return True


def corrupt_array(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A uint8 [H, W, 3] image through corruption ``name`` at ``severity``, back to uint8 [H, W, 3]."""
    out = CORRUPTIONS[name](image.astype(np.float64) / 255, severity, rng)
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


@dataclass(frozen=True)
class Corruption:
    """One corruption at one severity, seeded: applied to the test images before preprocessing."""

    name: str
    severity: int
    seed: int = 0

    def describe(self) -> dict:
        """What changes the corrupted images: part of the feature cache key."""
        return {"name": self.name, "severity": self.severity, "seed": self.seed, "parameters": "cifar10-c",
                **({"revision": REVISIONS[self.name]} if self.name in REVISIONS else {})}

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, STREAMS.index(self.name), self.severity, int(index)])

    def __call__(self, image, index: int):
        """A uint8 tensor [C, H, W] (C = 1 or 3) of dataset row ``index``, corrupted, as uint8 [3, H, W]."""
        import torch

        array = image.expand(3, -1, -1).permute(1, 2, 0).numpy()
        out = corrupt_array(array, self.name, self.severity, self.rng(index))
        return torch.from_numpy(out).permute(2, 0, 1).contiguous()


def parse(corruption, severity, seed) -> list[Corruption | None]:
    """``--set corruption=NAME[,NAME]|all severity=N[,N] corruption_seed=S`` as the list of test conditions:
    None (clean) first, then each corruption at each severity. Bad names or severities raise UsageError."""
    if corruption is None:
        if severity is not None:
            raise UsageError(f"--set severity={severity}: give --set corruption=NAME[,NAME] or all as well")
        return [None]
    names = [str(v) for v in (corruption if isinstance(corruption, list) else [corruption])]
    chosen: list[str] = []
    for name in names:
        if name != "all" and name not in CORRUPTIONS:
            import difflib

            close = difflib.get_close_matches(name, CORRUPTIONS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"--set corruption={name}: unknown corruption{hint}; use all or one of "
                             f"{', '.join(STANDARD + EXTRA)}")
        chosen += list(STANDARD) if name == "all" else [name]
    if "frost" in chosen and not frost_available():
        if "frost" in names:
            frost_photographs()  # raises the UsageError that names the extra
        import warnings

        warnings.warn(f"--set corruption=all: frost skipped, the other {len(STANDARD) - 1} run (pip install "
                      f"'benchbone[{FROST_EXTRA}]' for the paper's frost photographs)", stacklevel=2)
        chosen.remove("frost")
    if isinstance(severity, str) and re.fullmatch(r"\d+\.\.\d+", severity):  # severity=1..5
        low, high = map(int, severity.split(".."))
        severity = list(range(low, high + 1)) or severity
    levels = SEVERITIES if severity is None else (severity if isinstance(severity, list) else [severity])
    for level in levels:
        if isinstance(level, bool) or not isinstance(level, int) or level not in SEVERITIES:
            raise UsageError(f"--set severity={level!r}: severities are whole numbers 1 to 5, e.g. severity=1,3,5")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"--set corruption_seed={seed!r}: give a whole number >= 0")
    return [None] + [Corruption(name, level, seed) for name in dict.fromkeys(chosen) for level in dict.fromkeys(levels)]
