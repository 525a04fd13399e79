"""Harness feature extraction vs a bare loop of the same model on the same pre-loaded tensors.

The harness path is the one every cell takes (data.iterate_batches + features.extract): uint8 images in
memory, resized and normalised in batches on the device, then the forward pass. The bare loop feeds
already-resized, normalised tensors already on the device to the model under inference_mode, with the same
batch size, dtype and memory format. Repeats are interleaved and the best of each is kept (noisy machines).

    python benchmarks/bench_extraction.py [--model resnet50] [--images 128] [--batch-size 32] [--device cpu]
"""
from __future__ import annotations

import argparse
import time

from machine import machine_line  # first: it sets torch's allocator up before torch is imported

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="a torchvision architecture (random init)")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--source-size", type=int, default=32, help="side of the stored images (CIFAR: 32)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    import torchvision

    from benchbone import Backbone, ImageTensorDataset
    from benchbone.inputs.loading import LoadedImages, iterate_batches
    from benchbone.inputs.splits import whole
    from benchbone.inputs.transforms import Preprocess
    from benchbone.inputs.extraction import ExtractionSettings, extract

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None)
    num_features = model.fc.in_features
    model.fc = torch.nn.Identity()
    model = model.eval().to(args.device)
    backbone = Backbone(model, num_features, args.image_size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    preprocess = Preprocess.for_backbone(backbone)
    images = torch.randint(0, 256, (args.images, 3, args.source_size, args.source_size), dtype=torch.uint8)
    dataset = ImageTensorDataset(images, torch.zeros(args.images, dtype=torch.long))
    loaded, view = LoadedImages(dataset), whole("test", dataset)
    settings = ExtractionSettings(args.device, args.batch_size, args.precision, None, args.compile)
    dtype, channels_last = settings.autocast_dtype, settings.use_channels_last
    device_type = args.device.split(":")[0]

    ready = preprocess(images.to(args.device))  # what the bare loop gets for free
    bare_model = torch.compile(model) if args.compile else model
    if channels_last:
        ready = ready.contiguous(memory_format=torch.channels_last)
        bare_model = bare_model.to(memory_format=torch.channels_last)

    def sync():
        if device_type == "cuda":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def bare() -> float:
        sync()
        start = time.perf_counter()
        for i in range(0, len(ready), args.batch_size):
            with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
                bare_model(ready[i:i + args.batch_size]).float().cpu()
        sync()
        return len(ready) / (time.perf_counter() - start)

    def harness() -> float:
        sync()
        start = time.perf_counter()
        batches = iterate_batches(loaded, view, preprocess, batch_size=args.batch_size, device=args.device)
        extract(model, batches, num_features, len(view), settings)
        sync()
        return len(view) / (time.perf_counter() - start)

    bare(), harness()  # warm-up (and compilation)
    best_bare = best_harness = 0.0
    for _ in range(args.repeats):
        best_bare = max(best_bare, bare())
        best_harness = max(best_harness, harness())
    print(f"{machine_line()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {args.device}")
    print(f"# {args.model} random init, {args.images} images {args.source_size}px -> {args.image_size}px, "
          f"batch {args.batch_size}, {settings.describe()}, best of {args.repeats}")
    print("| path | images/s |")
    print("|---|---|")
    print(f"| bare loop (pre-resized tensors on the device) | {best_bare:.1f} |")
    print(f"| harness (resize + normalise + forward) | {best_harness:.1f} |")
    print(f"| ratio harness / bare | {best_harness / best_bare:.3f} |")


if __name__ == "__main__":
    main()
