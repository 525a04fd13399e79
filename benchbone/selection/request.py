"""What ``benchbone select`` is asked (``Request``), its defaults, and the plan fixed before any evaluation: the
nested class-stratified order of the training pool, the round sizes, and what the validation set allows.

The defaults, with the simulation of ``benchmarks/bench_select.py --simulate`` in mind (1,000 problems whose
learning curves cross often): epsilon 1 point and confidence 0.9 as issue 29 suggests; a margin of 3 points
(drop only candidates more than 3 points behind the leader with confidence) and no within-epsilon claim
before half the training pool (``claim_from`` 0.5), and a screen that keeps a quarter of the candidates
(``screen.keep_count``). With margin = epsilon and claims at any size the simulated regret was 0.60 points at
26% of the full grid's device time; with margin 3, claims from half the largest size (4,000 of 8,000 images)
and the screen keeping half, 0.27 points at 34%; keeping a quarter, 0.30 points at 21% (coverage 0.994 of
nominal 0.9), against successive halving's 0.27 at 51%. Issue 29's target is a regret of at most 0.5 points at
at most 25% of the full grid: the defaults are the quarter. The margin tapers (``taper`` 0.5: 3 points at the
first size, none at the whole pool; ``elimination.tapered_margins``): 0.30 points at 20%, coverage 0.995; on the
real zoo it drops the candidates clearly behind before the whole pool, whose fits cost most there. Round r scores
the first 2 n_r validation items (``validation_sizes``): 0.24 points at 19.8%, coverage 0.995; at native image
sizes, where extracting validation images was most of round 1, 23% of the full grid instead of 26%.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchbone.selection.constraints import Limits
from benchbone.selection.defaults import DEFAULTS
from benchbone.selection.elimination import per_test_alpha


@dataclass
class Request:
    """What ``benchbone select`` was asked (the CLI's flags, ``benchbone.select``'s arguments)."""
    dataset: str
    backbones: list[str]
    out: Path
    limits: Limits = field(default_factory=Limits)
    budget_s: float | None = None
    epsilon: float = DEFAULTS["epsilon"]          # points
    confidence: float = DEFAULTS["confidence"]
    margin: float = DEFAULTS["margin"]            # points
    taper: float | None = DEFAULTS["taper"]       # the margin tapers to none at the pool (0 or None: constant)
    full_validation: bool = False                 # every round scores all validation items (else a growing prefix)
    claim_from: float = DEFAULTS["claim_from"]    # a fraction of the training pool, or a number of images
    strategy: str = "linear-probe"
    estimators: list[str] | None = None
    screen_by: str = DEFAULTS["screen_by"]
    keep: float | None = None
    screen_size: int | None = None
    overrides: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    data_dir: str | None = None
    cache_dir: str | None = None
    device: str | None = None
    quiet: bool = False
    command: str = ""
    executor: str = "local"                       # or submitit, ray: where the steps' work runs (``dispatch``)
    executor_options: dict = field(default_factory=dict)


def nested_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded order of positions whose every prefix is class-stratified (proportionally): each class shuffled,
    then the classes interleaved by their within-class rank over the class size."""
    rng = np.random.default_rng(seed)
    key = np.empty(len(labels))
    for k in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == k))
        key[rows] = (np.arange(len(rows)) + rng.uniform(0, 1)) / len(rows)
    return np.argsort(key, kind="stable")


def round_sizes(pool: int, classes: int, screen_size: int | None) -> list[int]:
    """The screen's size (``screen_size``, else 20 per class, at least 200), doubling up to the whole pool."""
    first = min(pool, screen_size or max(DEFAULTS["screen_per_class"] * classes, DEFAULTS["screen_min"]))
    sizes = [first]
    while sizes[-1] < pool:
        sizes.append(pool if 2 * sizes[-1] > 0.75 * pool else 2 * sizes[-1])
    return sizes


def nested_chunks(view, ends: list[int], seed: int) -> list:
    """``view`` (a SplitView) in its ``nested_order`` cut at each of ``ends``: the rows each end adds, each chunk a
    SplitView in index order."""
    from benchbone.inputs.splits import SplitView

    order = nested_order(view.labels, seed)
    return [SplitView(view.source, view.dataset, np.sort(view.indices[order[a:b]]), view.labels[np.sort(order[a:b])])
            for a, b in zip([0, *ends[:-1]], ends)]


def validation_sizes(m: int, sizes: list[int], grow: bool = True) -> list[int]:
    """How many validation items each round scores, the first of a nested class-stratified order: with ``grow``
    twice as many as the round trains on (``val_per_train``), all ``m`` at the last size; else all ``m`` in every
    round. Fixed before anything is evaluated, so each round's tests are on items fixed in advance."""
    return [min(m, DEFAULTS["val_per_train"] * n) if grow else m for n in sizes[:-1]] + [m]


def min_val_items(confidence: float, candidates: int, rounds: int) -> int:
    """The fewest validation items with which McNemar's test can drop a candidate at all (every item discordant)."""
    beta = per_test_alpha(confidence, candidates, rounds)
    return math.ceil(math.log2(4 / (3 * beta)))


def smallest_epsilon(m: int, confidence: float, candidates: int, rounds: int) -> float:
    """The smallest epsilon (points) a within-epsilon claim can reach with ``m`` validation items (no discordant item)."""
    beta = per_test_alpha(confidence, candidates, rounds)
    return 100 * (1 - (beta / 8) ** (1 / m))


