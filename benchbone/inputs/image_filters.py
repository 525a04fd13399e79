"""The OpenCV steps of the paper's spatter, written on numpy and scipy: Canny edges, histogram equalisation,
a capped distance to edges, a 3x3 box filter; and scipy.ndimage, imported on first use."""
from __future__ import annotations

import math

import numpy as np


class _Ndimage:
    """scipy.ndimage, imported on first use: a run without corruptions never loads it."""

    def __getattr__(self, name: str):
        from scipy import ndimage

        return getattr(ndimage, name)


ndimage = _Ndimage()


def canny(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """OpenCV's ``Canny(image, low, high)`` (3x3 Sobel with replicated borders, L1 magnitude, non-maximum
    suppression over four directions, hysteresis over 8-connected pixels) as a boolean edge map."""
    image = image.astype(np.float64)
    dx, dy = ndimage.sobel(image, axis=1, mode="nearest"), ndimage.sobel(image, axis=0, mode="nearest")
    mag = np.pad(np.abs(dx) + np.abs(dy), 1)  # zero border, as OpenCV's
    h, w = image.shape

    def at(dr: int, dc: int) -> np.ndarray:
        return mag[1 + dr:1 + dr + h, 1 + dc:1 + dc + w]

    m, ax, ay = at(0, 0), np.abs(dx), np.abs(dy)
    tan22 = math.floor(math.tan(math.pi / 8) * 2 ** 15 + 0.5) / 2 ** 15  # OpenCV's fixed-point tangent
    horizontal, vertical = ay < ax * tan22, ay > ax * (tan22 + 2)
    same_sign = dx * dy >= 0
    peak = np.where(horizontal, (m > at(0, -1)) & (m >= at(0, 1)),
                    np.where(vertical, (m > at(-1, 0)) & (m >= at(1, 0)),
                             np.where(same_sign, (m > at(-1, -1)) & (m > at(1, 1)),
                                      (m > at(-1, 1)) & (m > at(1, -1)))))
    candidates = peak & (m > low)
    labels, _ = ndimage.label(candidates, structure=np.ones((3, 3)))
    strong = np.unique(labels[candidates & (m > high)])
    return np.isin(labels, strong[strong > 0])


def equalize_hist(image: np.ndarray) -> np.ndarray:
    """OpenCV's ``equalizeHist`` of a uint8 image (its float32 arithmetic, which decides the ties)."""
    counts = np.bincount(image.ravel(), minlength=256)
    cdf = np.cumsum(counts)
    first = counts[np.flatnonzero(counts)[0]]
    if cdf[-1] == first:  # one grey level: OpenCV leaves the image as it is
        return image
    scale = np.float32(255) / np.float32(cdf[-1] - first)
    lut = np.clip(np.round((cdf - first).astype(np.float32) * scale), 0, 255).astype(np.uint8)
    return lut[image]


def distance_to_edges(edges: np.ndarray, cap: float) -> np.ndarray:
    """OpenCV's ``distanceTransform(..., DIST_L2, 5)`` to the nearest edge pixel, capped at ``cap``: the 5x5
    chamfer distance (steps 1, 1.4 and 2.1969, float32), relaxed until every distance below ``cap`` is final."""
    steps = [(dr, dc, np.float32(1 if abs(dr) + abs(dc) == 1 else 1.4 if abs(dr) == abs(dc) else 2.1969))
             for dr in range(-2, 3) for dc in range(-2, 3)
             if (dr, dc) != (0, 0) and {abs(dr), abs(dc)} != {2} and {abs(dr), abs(dc)} != {0, 2}]
    far = np.float32(cap + 3)
    dist = np.where(edges, np.float32(0), far).astype(np.float32)
    h, w = edges.shape
    for _ in range(math.ceil(cap)):  # a path shorter than cap has at most cap steps
        padded = np.pad(dist, 2, constant_values=far)
        relaxed = dist.copy()
        for dr, dc, step in steps:
            np.minimum(relaxed, padded[2 + dr:2 + dr + h, 2 + dc:2 + dc + w] + step, out=relaxed)
        if np.array_equal(relaxed, dist):
            break
        dist = relaxed
    return np.minimum(dist, np.float32(cap))


def box3(image: np.ndarray) -> np.ndarray:
    """OpenCV's ``blur(image, (3, 3))``: the 3x3 sum in float64 over 9, reflect-101 borders."""
    return ndimage.correlate(image.astype(np.float64), np.ones((3, 3)), mode="mirror") / 9
