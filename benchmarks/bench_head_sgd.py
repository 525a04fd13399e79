"""What linear-probe buys over the classic head-sgd protocol: wall time and accuracy, same backbone and data.

Runs three cells through benchbone with an empty feature cache: linear-probe (features extracted once,
then the exact probe), head-sgd (images through the frozen backbone every epoch, SGD on a linear head),
and linear-probe again on the now-warm cache. Times are the cells' strategy times from their records.

    python benchmarks/bench_head_sgd.py [--backbone efficientnet_lite0] [--dataset digits] [--image-size 64]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from machine import machine_line


def cell(backbone: str, dataset: str, strategy: str, image_size: int, out: Path, cache: Path, data_dir) -> dict:
    import json

    import benchbone

    benchbone.run(backbone, dataset, strategy, params={"image_size": image_size}, out=out, cache_dir=cache,
                  data_dir=data_dir)
    (record,) = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    if record["status"] != "ok":
        raise SystemExit(f"{strategy} failed: {record['error']}")
    return record


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{machine_line()}, "
          f"torch {torch.__version__}, {args.threads} thread(s); {args.backbone} x {args.dataset} @ {args.image_size}px, seed 0, default params")
    with tempfile.TemporaryDirectory() as tmp:
        tmp, run = Path(tmp), lambda s, name: cell(args.backbone, args.dataset, s, args.image_size, tmp / name,
                                                   tmp / "cache", args.data_dir)
        rows = [("linear-probe (cold cache: extracts features)", run("linear-probe", "probe-cold")),
                ("head-sgd (backbone every epoch)", run("head-sgd", "head")),
                ("linear-probe (warm cache)", run("linear-probe", "probe-warm"))]
    base = rows[0][1]["timings"]["strategy_s"]
    print("| cell | strategy s | x linear-probe (cold) | top1 | chosen |")
    print("|---|---|---|---|---|")
    for label, r in rows:
        info = r["strategy_info"]
        chosen = f"C={info['chosen_C']:g}" if "chosen_C" in info else f"best epoch {info['best_epoch']}/{r['params']['epochs']}"
        print(f"| {label} | {r['timings']['strategy_s']:.1f} | {r['timings']['strategy_s'] / base:.2f}x | "
              f"{100 * r['metrics']['top1']:.2f}% | {chosen} |")


if __name__ == "__main__":
    main()
