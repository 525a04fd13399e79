"""Common corruptions of Hendrycks & Dietterich (2019), with the CIFAR-10-C parameters, applied to test images.

Each corruption maps a float RGB image [H, W, 3] in [0, 1] at its source resolution, a severity 1..5 and a
numpy Generator to the corrupted image; ``Corruption`` applies one of them to uint8 [C, H, W] tensors, seeded
per image (``seed``, corruption, severity, dataset index) so every backbone and run sees the same images.

Written from the paper's definitions (``make_cifar_c.py`` of the paper's code) on numpy, scipy and PIL because
``imagecorruptions`` 1.1.2 fails on today's numpy / scikit-image and carries only the ImageNet-C parameters.
OpenCV and ImageMagick steps are replaced by their scipy equivalents (see docs/robustness.md). Frost blends
the paper's photographs of frost, read from the ``imagecorruptions`` distribution (``benchbone[frost]``).
"""
from __future__ import annotations

import functools
import io
import math
from typing import Callable

import numpy as np

from benchbone.errors import UsageError
from benchbone.inputs.image_filters import box3, canny, distance_to_edges, equalize_hist, ndimage

Image = np.ndarray  # float [H, W, 3] in [0, 1]




def gaussian_noise(x: Image, severity: int, rng: np.random.Generator) -> Image:
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1)


def shot_noise(x: Image, severity: int, rng: np.random.Generator) -> Image:
    c = [500, 250, 100, 75, 50][severity - 1]
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x: Image, severity: int, rng: np.random.Generator) -> Image:
    """Salt and pepper on ``amount`` of the values, half each (scikit-image's ``random_noise(mode='s&p')``)."""
    amount = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    flipped = rng.random(x.shape) <= amount
    salted = rng.random(x.shape) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return out


def speckle_noise(x: Image, severity: int, rng: np.random.Generator) -> Image:
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1)


def _blur(x: Image, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> Image:
    """scikit-image's ``gaussian`` on each channel."""
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode=mode, truncate=truncate)


def gaussian_blur(x: Image, severity: int, rng: np.random.Generator) -> Image:
    return np.clip(_blur(x, [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1]), 0, 1)


def glass_blur(x: Image, severity: int, rng: np.random.Generator) -> Image:
    """Blur, swap each pixel with a random neighbour within ``delta`` (``iterations`` passes), blur again."""
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    x = np.floor(_blur(x, sigma) * 255) / 255  # the paper quantises to uint8 between the passes
    h, w = x.shape[:2]
    for _ in range(iterations):
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=2)
                other = (row + dy, col + dx)
                x[row, col], x[other] = x[other].copy(), x[row, col].copy()
    return np.clip(_blur(x, sigma), 0, 1)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The paper's anti-aliased disk kernel (OpenCV's 3x3 GaussianBlur of a binary disk, sum 1)."""
    half = 8 if radius <= 8 else math.ceil(radius)
    taps = 3 if radius <= 8 else 5
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-np.arange(-(taps // 2), taps // 2 + 1) ** 2 / (2 * alias_blur ** 2))
    g /= g.sum()
    return ndimage.convolve1d(ndimage.convolve1d(disk, g, axis=0, mode="mirror"), g, axis=1, mode="mirror")


def defocus_blur(x: Image, severity: int, rng: np.random.Generator) -> Image:
    radius, alias_blur = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    kernel = _disk(radius, alias_blur)
    out = np.stack([ndimage.convolve(x[..., ch], kernel, mode="mirror") for ch in range(x.shape[2])], axis=-1)
    return np.clip(out, 0, 1)


def _motion(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's ``-motion-blur radius x sigma + angle``: a one-sided Gaussian trail, edges replicated."""
    width = 2 * radius + 1
    kernel = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    step_y, step_x = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    h, w = x.shape[:2]
    out = np.zeros_like(x)
    for i, weight in enumerate(kernel):
        dy, dx = -math.ceil(i * step_y - 0.5), -math.ceil(i * step_x - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break
        rows = np.clip(np.arange(h) - dy, 0, h - 1)
        cols = np.clip(np.arange(w) - dx, 0, w - 1)
        out += weight * x[rows][:, cols]
    return out


def motion_blur(x: Image, severity: int, rng: np.random.Generator) -> Image:
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    return np.clip(_motion(x, radius, sigma, rng.uniform(-45, 45)), 0, 1)


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The centre of ``x`` magnified by ``factor`` (linear), cropped back to its size."""
    h, w = x.shape[:2]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = ndimage.zoom(x[top:top + ch, left:left + cw], (factor, factor) + (1,) * (x.ndim - 2), order=1)
    zh, zw = zoomed.shape[:2]
    if zh < h or zw < w:  # rounding left it a pixel short
        zoomed = np.pad(zoomed, ((0, max(0, h - zh)), (0, max(0, w - zw))) + ((0, 0),) * (x.ndim - 2), mode="edge")
        zh, zw = zoomed.shape[:2]
    top, left = (zh - h) // 2, (zw - w) // 2
    return zoomed[top:top + h, left:left + w]


def zoom_blur(x: Image, severity: int, rng: np.random.Generator) -> Image:
    top = [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1]
    factors = np.arange(1, top, 0.01)
    out = x + sum(_clipped_zoom(x, f) for f in factors)
    return np.clip(out / (len(factors) + 1), 0, 1)


def _grey(x: Image) -> np.ndarray:
    """Luma as OpenCV's RGB2GRAY, [H, W, 1]."""
    return (x @ np.array([0.299, 0.587, 0.114]))[..., None]


def snow(x: Image, severity: int, rng: np.random.Generator) -> Image:
    loc, scale, zoom, threshold, radius, sigma, keep = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][severity - 1]
    flakes = _clipped_zoom(rng.normal(size=x.shape[:2] + (1,), loc=loc, scale=scale), zoom)
    flakes[flakes < threshold] = 0
    flakes = np.round(np.clip(flakes, 0, 1) * 255) / 255  # the paper passes the layer through an 8-bit image
    flakes = _motion(flakes, radius, sigma, rng.uniform(-135, -45))
    x = keep * x + (1 - keep) * np.maximum(x, _grey(x) * 1.5 + 0.5)
    return np.clip(x + flakes + np.rot90(flakes, k=2), 0, 1)


FROST_EXTRA = "frost"  # pip install 'benchbone[frost]': the distribution that ships the paper's frost photographs


@functools.cache
def frost_photographs() -> tuple[np.ndarray, ...]:
    """The paper's frost1.png .. frost6.jpg as uint8 RGB arrays, read from the ``imagecorruptions``
    distribution's files: its code fails on import today (``pkg_resources``), so it is never imported."""
    import importlib.metadata

    from PIL import Image as PILImage

    try:
        files = importlib.metadata.distribution("imagecorruptions").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    found = {f.name: f for f in files if f.parent.name == "frost" and f.parent.parent.name == "imagecorruptions"}
    names = [f"frost{k}.{'png' if k <= 3 else 'jpg'}" for k in range(1, 7)]
    if any(name not in found for name in names):
        raise UsageError("--set corruption=frost needs the paper's frost photographs: "
                         f"pip install 'benchbone[{FROST_EXTRA}]' (the imagecorruptions distribution ships them)")
    return tuple(np.asarray(PILImage.open(found[name].locate()).convert("RGB")) for name in names)


@functools.lru_cache(maxsize=8)
def _frost_layer(index: int, factor: float) -> np.ndarray:
    """Frost photograph ``index`` scaled by ``factor`` as OpenCV's bilinear ``resize`` (pixel centres aligned,
    no antialiasing: at the paper's 0.2 every fifth pixel), uint8 values as float [h, w, 3]."""
    photo = frost_photographs()[index].astype(np.float64)
    size = [max(1, round(n * factor)) for n in photo.shape[:2]]
    rows, cols = ((np.arange(n) + 0.5) / factor - 0.5 for n in size)
    grid = np.meshgrid(rows, cols, indexing="ij")
    layer = np.stack([ndimage.map_coordinates(photo[..., ch], grid, order=1, mode="nearest")
                      for ch in range(3)], axis=-1)
    return np.round(layer)


def frost(x: Image, severity: int, rng: np.random.Generator) -> Image:
    """The image dimmed by ``keep`` plus ``amount`` of a random crop of a frost photograph (one of the
    first five, as the paper's ``randint(5)``), scaled by 0.2 for 32 px (in proportion for other sizes)."""
    keep, amount = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    h, w = x.shape[:2]
    index = int(rng.integers(5))
    shape = frost_photographs()[index].shape
    factor = max(0.2 * max(h, w) / 32, (h + 1) / shape[0], (w + 1) / shape[1])  # room for a random crop
    layer = _frost_layer(index, round(factor, 6))
    top, left = int(rng.integers(0, layer.shape[0] - h)), int(rng.integers(0, layer.shape[1] - w))
    return np.clip(keep * x + amount * layer[top:top + h, left:left + w] / 255, 0, 1)


def _plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A [size, size] diamond-square height map in [0, 1] (size a power of two), as the paper's ``plasma_fractal``."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        squares = corners + np.roll(corners, -1, axis=0)
        squares += np.roll(squares, -1, axis=1)
        grid[half:size:step, half:size:step] = wibbled(squares)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        grid[0:size:step, half:size:step] = wibbled(centres + np.roll(centres, 1, axis=0)
                                                    + corners + np.roll(corners, -1, axis=1))
        grid[half:size:step, 0:size:step] = wibbled(centres + np.roll(centres, 1, axis=1)
                                                    + corners + np.roll(corners, -1, axis=0))
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def fog(x: Image, severity: int, rng: np.random.Generator) -> Image:
    strength, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    h, w = x.shape[:2]
    size = 1 << max(1, math.ceil(math.log2(max(h, w))))
    peak = x.max()
    x = x + strength * _plasma_fractal(size, decay, rng)[:h, :w, None]
    return np.clip(x * peak / (peak + strength), 0, 1)


def brightness(x: Image, severity: int, rng: np.random.Generator) -> Image:
    """``c`` added to the HSV value, hue and saturation kept (the paper's rgb2hsv / hsv2rgb round trip)."""
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    value = x.max(axis=-1, keepdims=True)
    brighter = np.clip(value + c, 0, 1)
    return np.where(value > 0, x * brighter / np.where(value > 0, value, 1), brighter)


def contrast(x: Image, severity: int, rng: np.random.Generator) -> Image:
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1)


def elastic_transform(x: Image, severity: int, rng: np.random.Generator) -> Image:
    """A random affine warp of three points, then a smoothed random displacement field (sizes relative to 32 px)."""
    h, w = x.shape[:2]
    side = min(h, w)  # the paper: fractions of IMSIZE = 32
    alpha, sigma, shift = [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                           (0.1, 0.03, 0.03)][severity - 1]
    alpha, sigma, shift = alpha * side, sigma * side, shift * side
    centre = np.array([w, h], dtype=np.float64) // 2  # (x, y), as OpenCV
    square = min(h, w) // 3
    src = np.array([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    dst = src + rng.uniform(-shift, shift, size=src.shape)
    # output (x, y) = A @ input (x, y) + b maps src to dst; sample the input at the inverse of each output pixel
    solved = np.linalg.solve(np.c_[src, np.ones(3)], dst).T  # [2, 3]
    inverse = np.linalg.inv(np.vstack([solved, [0, 0, 1]]))[:2]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    src_x = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
    src_y = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
    warped = np.stack([ndimage.map_coordinates(x[..., ch], [src_y, src_x], order=1, mode="mirror")
                       for ch in range(x.shape[2])], axis=-1)
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
    out = np.stack([ndimage.map_coordinates(warped[..., ch], [rows + dy, cols + dx], order=1, mode="reflect")
                    for ch in range(x.shape[2])], axis=-1)
    return np.clip(out, 0, 1)


def _through_pil(x: Image, change: Callable) -> Image:
    from PIL import Image as PILImage

    image = PILImage.fromarray(np.round(x * 255).astype(np.uint8))
    return np.asarray(change(image), dtype=np.float64) / 255


def pixelate(x: Image, severity: int, rng: np.random.Generator) -> Image:
    from PIL import Image as PILImage

    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[:2]
    return _through_pil(x, lambda im: im.resize((max(1, int(w * c)), max(1, int(h * c))), PILImage.BOX)
                        .resize((w, h), PILImage.BOX))


def jpeg_compression(x: Image, severity: int, rng: np.random.Generator) -> Image:
    from PIL import Image as PILImage

    quality = [80, 65, 58, 50, 40][severity - 1]

    def round_trip(image):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return PILImage.open(buffer).convert("RGB")

    return _through_pil(x, round_trip)


def saturate(x: Image, severity: int, rng: np.random.Generator) -> Image:
    """HSV saturation times ``scale`` plus ``shift``, hue and value kept (the paper's rgb2hsv / hsv2rgb round
    trip in closed form; grey pixels have hue 0 there, so a shift turns them red)."""
    scale, shift = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    value = x.max(axis=-1, keepdims=True)
    spread = value - x.min(axis=-1, keepdims=True)
    saturation = np.divide(spread, value, out=np.zeros_like(value), where=value > 0)
    target = np.clip(saturation * scale + shift, 0, 1)
    ratio = np.divide(target, saturation, out=np.zeros_like(value), where=saturation > 0)
    coloured = value - (value - x) * ratio
    grey = value * np.concatenate([np.ones_like(value), 1 - target, 1 - target], axis=-1)
    return np.clip(np.where(saturation > 0, coloured, grey), 0, 1)


def spatter(x: Image, severity: int, rng: np.random.Generator) -> Image:
    """A thresholded, blurred noise layer as splashes of water (severities 1-3: pale turquoise, shaded by an
    embossed distance-to-edge map) or of mud (4-5: brown blobs)."""
    loc, scale, sigma, threshold, strength, mud = [
        (0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)][severity - 1]
    liquid = ndimage.gaussian_filter(rng.normal(size=x.shape[:2], loc=loc, scale=scale), sigma, mode="nearest")
    liquid[liquid < threshold] = 0
    if mud:
        m = ndimage.gaussian_filter((liquid > threshold).astype(np.float64), strength, mode="nearest")[..., None]
        m[m < 0.8] = 0
        return np.clip(x * (1 - m) + np.array([63, 42, 20]) / 255 * m, 0, 1)
    layer = (np.clip(liquid, 0, 1) * 255).astype(np.uint8)  # clipped: the paper's bare cast wraps values above 1
    edges = canny(layer, 50, 150)
    dist = equalize_hist(box3(distance_to_edges(edges, 20)).astype(np.float32).astype(np.uint8))
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    dist = np.clip(ndimage.correlate(dist.astype(np.float64), emboss, mode="mirror"), 0, 255)
    dist = np.round(box3(dist))
    m = layer * dist
    m = m / m.max() * strength if m.max() > 0 else m
    return np.clip(x + m[..., None] * np.array([175, 238, 238]) / 255, 0, 1)
