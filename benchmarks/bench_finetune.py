"""finetune vs linear-probe vs head-sgd, side by side: the same backbone, data, splits and seed, default parameters.

Each strategy runs as one benchbone cell (through ``benchbone.run``) in a fresh run directory, all sharing one
feature cache that starts empty, so linear-probe's time includes extracting its features. For each data set
the script prints top1 on test, the cell's strategy wall time and what each strategy chose on validation.

    python benchmarks/bench_finetune.py [--datasets digits cifar10] [--image-size 64] [--threads 1]
        [--cifar-dir ../shared/data/cifar10-jpeg] [--cifar-train-per-class 200] [--cifar-test-per-class 100]
        [--set finetune.key=value ...] [--out DIR]

digits: scikit-learn's 8x8 digits (1,257 train of which 10% carved for validation, 540 test). cifar10: the
CIFAR-10 JPEG copy, ``--cifar-train-per-class`` training images per class (seeded), a 2% validation carve of
the 50,000 (1,000 images) and a fixed ``--cifar-test-per-class`` test images per class, as
benchmarks/cifar10.toml does. Images are resized to ``--image-size`` on the device.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_line

STRATEGIES = ("linear-probe", "head-sgd", "finetune")


def chosen(record: dict) -> str:
    info = record["strategy_info"]
    if "chosen_C" in info:
        return f"C={info['chosen_C']:g} (of {len(info['sweep'])})"
    if "chosen" in info:
        c = info["chosen"]
        sweep = ", ".join(f"{s['lr']:g}: {100 * s['val_top1']:.1f}%" for s in info["sweep"])
        return (f"lr {c['lr']:g}, head {c['head_lr']:g}, epoch {c['best_epoch']}/{c['epochs']}; "
                f"val by lr: {sweep}; bn {info['batchnorm']}")
    return f"epoch {info['best_epoch']}/{record['params']['epochs']}"


def main() -> None:
    import torch

    import benchbone
    from benchbone.planning.grid import parse_overrides

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--datasets", nargs="+", default=["digits", "cifar10"], choices=["digits", "cifar10"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cifar-dir", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg"))
    parser.add_argument("--cifar-train-per-class", type=int, default=200)
    parser.add_argument("--cifar-test-per-class", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="extra overrides: KEY for every cell, STRATEGY.KEY for that strategy's")
    parser.add_argument("--out", help="keep the run directories here (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    extra = parse_overrides(args.overrides)
    print("# $ " + shlex.join(["python", "benchmarks/bench_finetune.py", *sys.argv[1:]]))
    print(f"{machine_line()}, torch {torch.__version__}, {args.threads} thread(s); {args.backbone} pretrained, "
          f"{args.image_size} px, seed 0, default parameters" + (f" and {args.overrides}" if extra else ""))
    data = {"digits": ({}, None),
            "cifar10": ({"train_per_class": args.cifar_train_per_class, "val_fraction": 0.02,
                         "test_per_class": args.cifar_test_per_class}, args.cifar_dir)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        print("| dataset | strategy | top1 | wall s | train / val / test | chosen on val |")
        print("|---|---|---|---|---|---|")
        for dataset in args.datasets:
            params, data_dir = data[dataset]
            for strategy in args.strategies:
                out = root / f"{dataset}-{strategy}"
                mine = {k: v for k, v in extra.items() if "." not in k or k.startswith(strategy + ".")}
                started = time.perf_counter()
                benchbone.run(args.backbone, dataset, strategy, seeds=1, data_dir=data_dir, out=out,
                              cache_dir=root / "cache", metrics="top1",
                              params={"image_size": args.image_size, **params, **mine}, plugins=())
                wall = time.perf_counter() - started
                (record,) = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
                if record["status"] != "ok":
                    raise SystemExit(f"{dataset} x {strategy} failed: {record['error']}")
                sizes = record["data"]
                print(f"| {dataset} | {strategy} | {100 * record['metrics']['top1']:.2f}% | "
                      f"{record['timings']['strategy_s']:.0f} ({wall:.0f} in all) | "
                      f"{sizes['train']} / {sizes['val']} / {sizes['test']} | {chosen(record)} |", flush=True)


if __name__ == "__main__":
    main()
