"""Is data loading the bottleneck? Images/s of the loader alone against the backbone's forward pass.

Run from the repository root (CIFAR-10 JPEG copy, a subset of its test split):

    python benchmarks/bench_loader.py --images 5000 --backbone efficientnet_lite0

Measures, on the same images and batches: decoding the JPEGs into memory (cold), loading that tensor
from the decode cache, the in-memory loader (index, move to the device, resize and normalise to the
backbone's preprocessing), the streaming loader (DataLoader workers decode and resize each image) and
the backbone's forward pass (random init: speed does not depend on the weights). Prints ratios; a
loader/model ratio well above 1 means the loader keeps the model busy.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchbone.inputs.loading import LoadedImages, iterate_batches
from benchbone.inputs.splits import whole
from benchbone.inputs.transforms import Preprocess
from benchbone.inputs.folders import ImageFiles
from benchbone.plugins import get_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [ROOT.parent / "shared" / "data" / "cifar10-jpeg", ROOT.parents[1] / "shared" / "data" / "cifar10-jpeg",
              Path("/work/shared/data/cifar10-jpeg")]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rate(n: int, fn) -> tuple[float, object]:
    """Images per second of ``fn()`` over ``n`` images, and its result."""
    start = time.perf_counter()
    out = fn()
    return n / (time.perf_counter() - start), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="CIFAR-10 class folders (default: ../shared/data/cifar10-jpeg)")
    parser.add_argument("--images", type=int, default=5000, help="test images to load (spread over all classes)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, help="as --set image_size (default: the backbone's own)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model-batches", type=int, default=4, help="batches timed through the model")
    parser.add_argument("--device", help="default: picked automatically")
    parser.add_argument("--device-decode", action="store_true",
                        help="also time torchvision.io.decode_jpeg on the device, batched (nvJPEG on CUDA)")
    args = parser.parse_args()

    data_dir = args.data_dir or next((p for p in CANDIDATES if (p / "test").is_dir()), None)
    if data_dir is None:
        raise SystemExit("no CIFAR-10 class folders found; pass --data-dir")
    pm = get_plugin_manager(entrypoints=False)
    device = pm.hook.benchbone_pick_device(requested=args.device)
    test = pm.registries().datasets.get("cifar10").obj(data_dir=data_dir, download=False).test
    pick = np.linspace(0, len(test) - 1, min(args.images, len(test))).astype(int)
    subset = ImageFiles([test.paths[i] for i in pick], [test.targets[i] for i in pick])
    n = len(subset)
    backbone = pm.registries().backbones.get(args.backbone).obj(pretrained=False)
    model = backbone.model.to(device).eval()
    preprocess = Preprocess.for_backbone(backbone, args.image_size)
    view = whole("test", subset)
    print(f"{n} CIFAR-10 JPEG images from {data_dir}, {args.backbone} at {preprocess.size[0]} px, "
          f"batch {args.batch_size}, device {device}, {torch.get_num_threads()} torch threads")

    results = {}
    with tempfile.TemporaryDirectory() as cache:
        results["decode JPEGs into memory (cold)"], images = rate(n, lambda: LoadedImages(subset, cache))
        results["load from the decode cache"], cached = rate(n, lambda: LoadedImages(subset, cache))
        assert cached.source == "decode cache" and torch.equal(cached.tensor, images.tensor)

    def loader(imgs: LoadedImages, split=view) -> list:
        """Run every batch; keep the first ones for the model."""
        kept = []
        for x, _ in iterate_batches(imgs, split, preprocess, batch_size=args.batch_size, device=device):
            if len(kept) < args.model_batches:
                kept.append(x)
        sync(device)
        return kept

    results["in-memory loader: to device, resize, normalise"], batches = rate(n, lambda: loader(images))
    streamed = LoadedImages(subset, None)
    streamed.tensor, streamed.source = None, "streamed"  # force the path large images take
    n_stream = min(n, 8 * args.batch_size)
    stream_view = whole("test", ImageFiles(subset.paths[:n_stream], subset.targets[:n_stream]))
    results[f"streaming loader, {streamed.workers} workers ({n_stream} images)"], _ = rate(
        n_stream, lambda: loader(streamed, stream_view))

    if args.device_decode:
        import torchvision.io

        data = [torchvision.io.read_file(str(path)) for path in subset.paths]

        def decode() -> None:
            for i in range(0, n, args.batch_size):
                torchvision.io.decode_jpeg(data[i:i + args.batch_size], device=device)
            sync(device)

        decode()  # warm-up: the decoder's first call initialises it
        results[f"decode_jpeg on {device}, batches of {args.batch_size}"], _ = rate(n, decode)

    timed = batches[:args.model_batches]
    with torch.inference_mode():
        model(timed[0])  # warm-up
        sync(device)

        def forward() -> None:
            for x in timed:
                model(x)
            sync(device)

        model_rate, _ = rate(sum(len(x) for x in timed), forward)
    results[f"{args.backbone} forward ({sum(len(x) for x in timed)} images)"] = model_rate

    width = max(map(len, results))
    for name, value in results.items():
        print(f"  {name:<{width}}  {value:>10,.0f} images/s  {value / model_rate:>8.1f}x model")


if __name__ == "__main__":
    main()
