"""linear-probe and knn on memory-mapped features larger than memory: peak RSS and time, 10% to 100% of the rows.

A simulated ImageNet-sized feature set (1,281,167 x 2,048 float16 by default, about 5.2 GB, Gaussian classes)
is written to a temporary .npy file, memory-mapped as the feature cache hands features out
(``torch.from_numpy(np.load(path, mmap_mode="r"))``), and deleted at the end. For each share of its rows a
fresh child process (so that no peak carries over) builds the probe's objective as linear-probe does (in
memory when a working copy fits in half the available memory, else in row chunks), times L-BFGS iterations
at C=1, and times knn (k=20) for a few queries against the rows as the bank.

    python benchmarks/bench_outofcore.py [--rows 1281167] [--dim 2048] [--classes 10] [--iterations 2]
                                         [--queries 200] [--dir /tmp]

Peak RSS is the kernel's VmHWM, which counts the file's pages while they are mapped (page cache the kernel
takes back under pressure); peak anonymous RSS (sampled every 20 ms) is the memory the process itself holds.
The probe keeps [classes, rows] float32 logits (three of them); knn time is scaled to 1,000 queries.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SHARES = (0.10, 0.25, 0.50, 1.00)


def write_features(path: Path, rows: int, dim: int, classes: int, seed: int = 0) -> None:
    """Gaussian classes in float16, written chunk by chunk to ``path`` (features) and ``path``-labels.npy."""
    g = np.random.default_rng(seed)
    means = g.normal(scale=0.5, size=(classes, dim)).astype(np.float32)
    noise = g.normal(size=(65_536, dim)).astype(np.float32)
    labels = g.integers(0, classes, size=rows)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, dim))
    for i, start in enumerate(range(0, rows, len(noise))):
        stop = min(start + len(noise), rows)
        out[start:stop] = means[labels[start:stop]] + np.roll(noise, i, axis=0)[: stop - start]
    out.flush()
    del out
    np.save(labels_path(path), labels)


def labels_path(path: Path) -> Path:
    return path.with_name(path.stem + "-labels.npy")


class PeakAnonymous(threading.Thread):
    """Samples RssAnon from /proc/self/status every 20 ms, keeping the largest (bytes)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = 0, True

    @staticmethod
    def read(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.read("RssAnon"))
            time.sleep(0.02)


def child(args) -> None:
    """Measure one share of the rows in this process and print one JSON line."""
    import torch
    from benchbone.compute.chunks import fits_in_memory
    from benchbone_plugins.knn import knn_scores
    from benchbone_plugins.linear_probe import DEFAULTS, fitting_objective
    from benchbone.compute.lbfgs import minimise
    from benchbone.compute.logistic import LogisticObjective, pack

    torch.set_num_threads(args.threads)
    sampler = PeakAnonymous()
    sampler.start()
    X = torch.from_numpy(np.load(args.child, mmap_mode="r"))[: args.take]
    y = torch.from_numpy(np.load(labels_path(Path(args.child))))[: args.take]
    ctx = argparse.Namespace(device="cpu", num_classes=int(y.max()) + 1)
    t = time.perf_counter()
    objective = fitting_objective([X], y, dict(DEFAULTS), ctx, torch.float32)
    start = objective.at(pack(objective))
    setup = time.perf_counter() - t
    probe_path = "in memory" if type(objective) is LogisticObjective else "row chunks"
    knn_path = "in memory" if fits_in_memory(2 * X.shape[0] * X.shape[1] * 4, "cpu") else "row chunks"
    t = time.perf_counter()
    fit = minimise(objective, 1.0, start, max_iter=args.iterations)
    per_iteration = (time.perf_counter() - t) / max(fit.iterations, 1)
    del objective, start, fit
    queries = torch.from_numpy(np.load(args.child, mmap_mode="r")[-args.queries:].astype(np.float32))
    t = time.perf_counter()
    knn_scores(X, y, queries, ctx.num_classes, 20, 0.07)
    knn_s = (time.perf_counter() - t) * 1000 / args.queries
    sampler.running = False
    sampler.join()
    print(json.dumps({"rows": args.take, "setup_s": setup, "iteration_s": per_iteration, "knn_s": knn_s,
                      "probe_path": probe_path, "knn_path": knn_path, "peak_rss": PeakAnonymous.read("VmHWM"),
                      "peak_anon": sampler.peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_281_167)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=2, help="L-BFGS iterations timed at each size")
    parser.add_argument("--queries", type=int, default=200, help="knn queries timed at each size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--take", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from machine import machine_line

    size = args.rows * args.dim * 2
    free = shutil.disk_usage(args.dir).free
    if free < size + 2 * 2**30:
        sys.exit(f"bench_outofcore: {size / 2**30:.1f} GiB of features need {size / 2**30 + 2:.1f} GiB free in "
                 f"{args.dir}, which has {free / 2**30:.1f} GiB; give another --dir or fewer --rows")
    print(machine_line())
    print(f"# {args.rows:,} x {args.dim:,} float16 ({size / 1e9:.1f} GB), {args.classes} classes, memory-mapped; "
          f"{args.threads} thread(s); probe: L-BFGS at C=1, {args.iterations} iterations timed; "
          f"knn: k=20 on {args.queries} queries, scaled to 1,000")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "features.npy"
        t = time.perf_counter()
        write_features(path, args.rows, args.dim, args.classes)
        print(f"# wrote {path.stat().st_size / 1e9:.1f} GB in {time.perf_counter() - t:.0f} s")
        print("| rows | share | GB on disk | probe path | probe setup s | s / probe iteration | knn path | "
              "knn s / 1,000 queries | peak RSS GB | peak anonymous RSS GB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for share in SHARES:
            take = round(share * args.rows)
            out = subprocess.run([sys.executable, __file__, "--child", str(path), "--take", str(take),
                                  "--iterations", str(args.iterations), "--queries", str(args.queries),
                                  "--threads", str(args.threads)], check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {take:,} | {share:.0%} | {take * args.dim * 2 / 1e9:.2f} | {r['probe_path']} | "
                  f"{r['setup_s']:.1f} | {r['iteration_s']:.2f} | {r['knn_path']} | {r['knn_s']:.1f} | "
                  f"{r['peak_rss'] / 1e9:.2f} | {r['peak_anon'] / 1e9:.2f} |", flush=True)


if __name__ == "__main__":
    main()
