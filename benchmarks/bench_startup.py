"""CLI start-up: `benchbone --help`, `benchbone list strategies` and `benchbone list backbones` against `python -c pass`.

`--help` and `list strategies` may not import torch. `list backbones` is timed cold (no name index: it fills
the registry, importing torchvision and timm) and warm (from the cached name index, target under 1 s).
Each is a fresh process, best of N, side by side.

    python benchmarks/bench_startup.py [--runs 7]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from machine import machine_line

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "benchbone --help": [sys.executable, "-m", "benchbone.cli", "--help"],
    "benchbone list strategies": [sys.executable, "-m", "benchbone.cli", "list", "strategies"],
    "benchbone list backbones, cold (no name index)": [sys.executable, "-m", "benchbone.cli", "list", "backbones"],
    "benchbone list backbones, warm (name index)": [sys.executable, "-m", "benchbone.cli", "list", "backbones"],
}
PROBE = ("import sys; from benchbone.cli import main; main({argv!r}); "
         "sys.stderr.write('TORCH-IMPORTED' if 'torch' in sys.modules else 'NO-TORCH')")


def best_time(argv: list[str], runs: int, before=lambda: None) -> float:
    best = float("inf")
    for _ in range(runs):
        before()
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def imports_torch(args: list[str]) -> bool:
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=args)], capture_output=True, text=True)
    return "TORCH-IMPORTED" in out.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env_note = "installed plugins loaded" if os.environ.get("BENCHBONE_LOAD_PLUGINS", "1") else "no installed plugins"
    print(f"{machine_line()}, "
          f"Python {platform.python_version()}, best of {args.runs}, {env_note}")
    baseline = best_time(COMMANDS["python -c pass"], args.runs)
    print("| command | seconds | x python -c pass | imports torch |")
    print("|---|---|---|---|")
    cache = tempfile.mkdtemp(prefix="bench-startup-")
    os.environ["BENCHBONE_CACHE_DIR"] = cache  # its own name index: removed before each cold run
    try:
        for name, argv in COMMANDS.items():
            cold = "cold" in name
            before = (lambda: shutil.rmtree(os.path.join(cache, "index"), ignore_errors=True)) if cold else (lambda: None)
            seconds = baseline if name.startswith("python") else best_time(argv, args.runs, before)
            before()
            torch_note = "-" if name.startswith("python") else ("yes" if imports_torch(argv[3:]) else "no")
            print(f"| {name} | {seconds:.3f} | {seconds / baseline:.1f}x | {torch_note} |")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
