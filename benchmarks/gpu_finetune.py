"""Training images/s of benchbone's finetune beside a bare timm-style train loop of the same model (for CUDA).

The bare side is timm's train benchmark (``benchmark.py``'s TrainBenchmarkRunner) written out, since that file
is a script and not an importable module: the same network with a linear head, random inputs already on the
device at the input size, cross-entropy, one optimizer step per batch (AdamW, finetune's default), bf16
autocast and channels_last on CUDA, ``torch.compile`` with ``--compile``; warm-up steps, then timed steps
between device synchronisations.

The benchbone side is real finetune cells on a synthetic in-memory data set (uint8 images at ``--source-size``,
resized and augmented on the device as in every cell, bf16 autocast and channels_last on CUDA), at a fixed
learning rate: one cell of 1 epoch and one of 1 + ``--epochs``. The difference of their strategy times is
``--epochs`` epochs of training plus as many passes over a 2% validation split, so start-up, compilation
and the test pass cancel out: images/s = epochs x training images / difference.

    python benchmarks/gpu_finetune.py [--backbone efficientnet_lite0] [--image-size 224] [--batch-size 64]
                                      [--images 4096] [--epochs 2] [--compile]
    python benchmarks/gpu_finetune.py --device cpu --tiny    # the same flow in seconds (test/tiny-cnn, 16 px)
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import tempfile
import time
from pathlib import Path

from machine import machine_line  # first: it sets torch's allocator up before torch is imported

import torch

from benchbone import DatasetSplits, ImageTensorDataset, hookimpl

CLASSES = 10


class Synthetic:
    """Registers ``bench/random``: uint8 noise images of ``size`` px in ``CLASSES`` classes, in memory."""

    __name__ = "bench-random"

    def __init__(self, images: int, size: int):
        self.images, self.size = images, size

    def build(self, data_dir, download) -> DatasetSplits:
        g = torch.Generator().manual_seed(0)

        def split(n: int) -> ImageTensorDataset:
            return ImageTensorDataset(torch.randint(0, 256, (n, 3, self.size, self.size), dtype=torch.uint8, generator=g),
                                      torch.arange(n) % CLASSES)

        return DatasetSplits(split(self.images), split(max(CLASSES, self.images // 32)), [str(k) for k in range(CLASSES)])

    @hookimpl
    def benchbone_register_datasets(self, register):
        register("bench/random", self.build, augment={"hflip": True, "translate": 0.125})


def benchbone_rate(args, epochs: int) -> tuple[float, int]:
    """(strategy seconds, training images) of one finetune cell of ``epochs`` epochs."""
    from benchbone.planning.grid import GridSpec
    from benchbone.execution.harness import run_grid
    from benchbone.plugins import get_plugin_manager

    pm = get_plugin_manager(entrypoints=False, extra=["benchbone.testing"] if args.tiny else [])
    pm.register(Synthetic(args.images, args.source_size), name="bench-random")
    overrides = {"image_size": args.image_size, "val_fraction": 0.02, "finetune.lr": 1e-4, "finetune.patience": 0,
                 "finetune.epochs": epochs, "finetune.batch_size": args.batch_size, "finetune.compile": args.compile}
    with tempfile.TemporaryDirectory() as tmp:
        run_grid(GridSpec([args.backbone], ["bench/random"], ["finetune"], ["top1"], 1, overrides),
                 out=Path(tmp) / "run", pm=pm, device=args.device, cache_dir=Path(tmp) / "cache", quiet=True, echo=False)
        (record,) = [json.loads(p.read_text()) for p in (Path(tmp) / "run" / "records").glob("*.json")]
    if record["status"] != "ok":
        raise SystemExit(f"finetune cell failed: {record['error']}")
    return record["timings"]["strategy_s"], record["data"]["train"]


def bare_rate(args) -> float:
    """Images/s of the bare loop: timm's train benchmark, written out."""
    from benchbone.plugins import get_plugin_manager

    pm = get_plugin_manager(entrypoints=False, extra=["benchbone.testing"] if args.tiny else [])
    backbone = pm.registries().backbones.get(args.backbone).obj(pretrained=True)
    cuda = args.device.startswith("cuda")
    model = torch.nn.Sequential(copy.deepcopy(backbone.model), torch.nn.Linear(backbone.num_features, CLASSES))
    model = model.to(args.device).train()
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=args.device)
    y = torch.randint(0, CLASSES, (args.batch_size,), device=args.device)
    if cuda:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
            loss = torch.nn.functional.cross_entropy(step_model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    return args.steps * args.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--source-size", type=int, default=64, help="side of the stored synthetic images")
    parser.add_argument("--images", type=int, default=4096, help="training images of the synthetic data set")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs of the benchbone side")
    parser.add_argument("--steps", type=int, default=50, help="timed steps of the bare loop")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps of the bare loop")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides")
    parser.add_argument("--tiny", action="store_true", help="test/tiny-cnn at 16 px on 256 images: checks the flow")
    args = parser.parse_args()
    if args.tiny:
        args.backbone, args.image_size, args.source_size, args.images = "test/tiny-cnn", 16, 12, 256
        args.batch_size, args.epochs, args.steps, args.warmup = 32, 1, 10, 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_finetune: no CUDA device here; run it on a GPU machine, or pass --device cpu (--tiny)")
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"{machine_line()}, torch {torch.__version__}, {where}; {args.backbone}, {args.image_size} px, "
          f"batch {args.batch_size}, compile {args.compile}")
    first, _ = benchbone_rate(args, 1)
    longer, images = benchbone_rate(args, 1 + args.epochs)
    bare = bare_rate(args)
    print("| training loop | images/s | x bare loop |")
    print("|---|---|---|")
    print(f"| bare loop (timm benchmark.py's train loop, written out; inputs ready on the device) | {bare:.1f} | 1.00x |")
    # the rate is the extra epochs' images over the extra time; a tiny run can take no measurable extra time
    ours = args.epochs * images / (longer - first) if longer > first else None
    rate = (f"{ours:.1f} | {ours / bare:.2f}x" if ours is not None else
            "n/a | n/a (the extra epochs took no measurable time: rerun at a larger size)")
    print(f"| benchbone finetune ({args.epochs} epoch(s) of {images} images, augmentation and validation included) "
          f"| {rate} |")


if __name__ == "__main__":
    main()
