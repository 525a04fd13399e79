"""torch's CPU tensors on 4 KiB pages vs transparent huge pages (THP_MEM_ALLOC_ENABLE=0 / 1), side by side.

The ``benchbone`` command asks for huge pages (benchbone.execution.allocator). torch reads the setting once, when it
first allocates, so each setting runs in its own child process; the children take turns, ``--repeat`` times
each, and each workload's best time is kept (noisy machines). Workloads, one thread, random weights:
EfficientNet-Lite0 and ResNet-50 forward passes (the feature extraction of a cell), and the linear probe's
L-BFGS on CIFAR-10-sized features (45,000 x 1,280 Gaussian, 10 classes), per iteration.

    python benchmarks/bench_huge_pages.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from machine import machine_line  # it asks for huge pages in this process; the children say for themselves

SETTINGS = {"4 KiB pages": "0", "huge pages": "1"}


def child() -> None:
    """Each workload's seconds in this process, as JSON on stdout."""
    import timm
    import torch

    from benchbone.compute.lbfgs import minimise
    from benchbone.compute.logistic import LogisticObjective, pack

    torch.set_num_threads(1)
    torch.manual_seed(0)
    seconds = {}

    def best(name, f, runs=3, per=lambda result: 1):
        f()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            result = f()
            times.append((time.perf_counter() - start) / per(result))
        seconds[name] = min(times)

    with torch.inference_mode():
        for model, batch, size in (("efficientnet_lite0", 128, 96), ("resnet50", 32, 128)):
            net, images = timm.create_model(model, pretrained=False).eval(), torch.randn(batch, 3, size, size)
            best(f"{model} forward, {batch} images at {size} px", lambda: net(images))
    X, y = torch.randn(45_000, 1_280), torch.randint(0, 10, (45_000,))
    objective = LogisticObjective(X + 0.3 * torch.randn(10, 1_280)[y], y, 10, standardize=True)
    best(f"linear probe, one L-BFGS iteration at C=0.01 ({objective.products})",
         lambda: minimise(objective, 0.01, pack(objective), max_iter=30), per=lambda fit: fit.iterations)
    print(json.dumps(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for label, value in SETTINGS.items():
            env = {**os.environ, "THP_MEM_ALLOC_ENABLE": value}
            out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True, capture_output=True,
                                 text=True).stdout
            for workload, s in json.loads(out.splitlines()[-1]).items():
                best.setdefault(workload, {})[label] = min(s, best.get(workload, {}).get(label, float("inf")))
    small, huge = SETTINGS
    print(machine_line())
    print(f"# 1 thread, best of {args.repeat} child processes per setting, taking turns")
    print(f"| workload | {small} ms | {huge} ms | speed-up |")
    print("|---|---|---|---|")
    for workload, s in best.items():
        print(f"| {workload} | {1000 * s[small]:.1f} | {1000 * s[huge]:.1f} | {s[small] / s[huge]:.2f}x |")


if __name__ == "__main__":
    main()
