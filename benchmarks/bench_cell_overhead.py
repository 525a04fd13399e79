"""A cell's overhead beyond its strategy: 50 small cells in one process on cached features, wall time less strategy time.

Target (issue 29): inside one process, a cell's overhead beyond its strategy time (records, metrics, artefacts,
bookkeeping) stays under 0.2 s. One run of the grid (``run_grid``, as ``benchbone.run`` calls it) of ``--cells`` seeds (0..49) of one backbone, dataset and
strategy fills the feature cache (the cold round, not timed); a second into a new ``--out`` with the same
``--cache-dir`` is the warm round that counts. Each cell's wall time is the time between consecutive records
written (``benchbone_record_written``, stamped by this module as a plugin; the first cell's from the call of
``run_grid``), and its strategy time is its record's ``timings.strategy_s``: the table gives the
difference's median, p90 and largest over the cells between the first and the last. The first cell apart
builds the backbone and dataset; the last cell's record is announced after the leaderboard is written (the harness
draws its deferred artefacts then), so its wall time holds the leaderboard: both are shown apart, as is what the
round costs after the last record (until ``run_grid`` returns).

    python benchmarks/bench_cell_overhead.py [--cells 50] [-b test/tiny-cnn] [-d test/blobs] [-s linear-probe]
                                             [--profile N]

The default cells are the tiny test plugins of ``benchbone.testing`` (a 2-layer CNN, 8 features, 96 + 48
generated images). ``--profile N`` runs the warm round again under cProfile and prints the N functions with the
most time of their own, and the N with the most cumulative time, over the round (the strategy included).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_line  # first: it sets torch's allocator up before torch is imported

from benchbone import hookimpl

STAMPS: list[tuple[float, dict]] = []  # (perf_counter, record) of each record written, in this module's copy


class Stamps:
    """The plugin that stamps each record as it is written."""

    __name__ = "bench-cell-overhead"

    @hookimpl
    def benchbone_record_written(self, record, run_dir):
        STAMPS.append((time.perf_counter(), record))


def round_(args, out: Path, cache_dir: Path, pm) -> tuple[float, float, list]:
    """``(start, end, [(stamp, record)])`` of one run of the grid into ``out``."""
    from benchbone.execution.harness import run_grid
    from benchbone.planning.grid import GridSpec

    STAMPS.clear()
    spec = GridSpec([args.backbone], [args.dataset], [args.strategy], [], args.cells, {})
    start = time.perf_counter()
    run_grid(spec, out=out, pm=pm, cache_dir=cache_dir, quiet=True, echo=False)
    end = time.perf_counter()
    return start, end, list(STAMPS)


def per_cell(start: float, stamps: list) -> list[tuple[float, float]]:
    """``(wall s, strategy s)`` of each cell, in the order their records were written."""
    walls = [t - before for t, before in zip([t for t, _ in stamps], [start] + [t for t, _ in stamps[:-1]])]
    return [(wall, record["timings"]["strategy_s"]) for wall, (_, record) in zip(walls, stamps)]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=50, help="cells a round (seeds 0..cells-1)")
    parser.add_argument("-b", "--backbone", default="test/tiny-cnn")
    parser.add_argument("-d", "--dataset", default="test/blobs")
    parser.add_argument("-s", "--strategy", default="linear-probe")
    parser.add_argument("--profile", type=int, default=0, help="profile a further warm round; print the top N")
    args = parser.parse_args()
    os.environ.setdefault("BENCHBONE_LOAD_PLUGINS", "")  # built-ins and benchbone.testing only
    import torch

    from benchbone.plugins import get_plugin_manager

    pm = get_plugin_manager(extra=["benchbone.testing"])
    pm.register(Stamps(), name="bench-cell-overhead")
    print(f"{machine_line()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"# load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min); {args.cells} cells "
          f"{args.backbone} x {args.dataset} x {args.strategy}, seeds 0..{args.cells - 1}, one process")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cold = round_(args, tmp / "cold", tmp / "cache", pm)
        warm = round_(args, tmp / "warm", tmp / "cache", pm)
        rows = []
        for name, (start, end, stamps) in (("cold (fills the cache)", cold), ("warm (cached features)", warm)):
            cells = per_cell(start, stamps)
            middle = cells[1:-1]
            over = [wall - strategy for wall, strategy in middle]
            rows.append([name, len(cells), f"{end - start:.2f}", f"{sum(s for _, s in cells):.2f}",
                         f"{statistics.median(s for _, s in middle):.3f}", f"{statistics.median(over):.3f}",
                         f"{quantile(over, 0.9):.3f}", f"{max(over):.3f}", f"{cells[0][0]:.3f} / {cells[0][1]:.3f}",
                         f"{cells[-1][0]:.3f} / {cells[-1][1]:.3f}", f"{end - stamps[-1][0]:.3f}"])
        head = ["round", "cells", "wall s", "strategy s (sum)", "strategy s (median)", "overhead s (median)",
                "overhead s (p90)", "overhead s (max)", "first cell wall / strategy s",
                "last cell wall (with the leaderboard) / strategy s", "after the last record s"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(map(str, row)) + " |")
        if args.profile:
            import cProfile
            import io
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
            round_(args, tmp / "profiled", tmp / "cache", pm)
            profiler.disable()
            for key in ("tottime", "cumulative"):
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(args.profile)
                print(f"\n## cProfile of a warm round, by {key}\n" + "\n".join(
                    line for line in text.getvalue().splitlines() if line.strip()))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
