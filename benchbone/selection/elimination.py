"""Adaptive elimination: exact evaluations on growing subsamples drop candidates with paired tests.

``eliminate(candidates, evaluate, epsilon=, confidence=, sizes=, budget_s=, cost=, ...)`` runs rounds r = 1..R at
training subsample sizes n_1 < ... < n_R. In round r every surviving candidate is evaluated once:
``evaluate(candidate, n_r)`` trains its probe on the round's subsample (fixed in advance: seeded, nested,
class-stratified) and returns ``(correct, seconds)``, ``correct`` a bool per validation item, the same items
in the same order for every candidate of a round. A round may score fewer items than the next (select scores a
prefix of them, fixed in advance, that grows with n_r: ``request.validation_sizes``); each test compares
candidates of one round only. The *leader* is the survivor with the highest validation
accuracy (ties: the first in the given order, i.e. the screen's). Then

* a survivor s is dropped when L(leader, s) > ``margin`` (epsilon unless given): it is worse than the leader
  by more than the margin, with confidence. With ``taper`` the margin of round r shrinks with the gain a
  power-law learning curve still has to come after n_r (``tapered_margins``), to none at the largest size;
* the run stops with the guarantee claimed when one is left, or when L(leader, s) >= -epsilon for every
  other survivor s (the leader is at most epsilon worse than any of them, with confidence) at a size of at
  least ``claim_from`` (default: any size);
* it stops without a guarantee when the next round's predicted cost does not fit the budget, or after the
  largest size. The statement then says so and lists the survivors: never a false certainty.

L(a, b) is a one-sided lower confidence bound at level beta on acc(a) - acc(b) from the paired
correctness of a and b on the validation items (``lower_bound``), and

    beta = (1 - confidence) / (R (N - 1))        (Bonferroni over the R rounds and N - 1 rivals)

N = len(candidates), R = len(sizes): both fixed before anything is evaluated, so the correction does not
depend on which candidates happen to survive.

What is guaranteed
------------------
theta_c(n) is the accuracy of candidate c's probe trained on the size-n subsample, on the population the
validation items are an i.i.d. sample of. The tests treat that probe as fixed and the validation items as
the random sample: this is what McNemar's test (and the paired bootstrap) covers. theta_c(n) is therefore
neither the accuracy on these particular items (that is observed, not estimated) nor an average over other
subsamples or training seeds (one probe per candidate and size: nothing here measures training noise; a
claim about that would need several seeds per size and a test over them). The probes must not see the
validation items (no hyperparameter chosen on them), and each round's subsample must be fixed in advance
(not chosen from results). A class-stratified validation carve is treated as i.i.d. (fixing the class
counts removes a source of variance the tests allow for).

Let b_r be the candidate with the highest theta_c(n_r) among all N. With probability >= confidence:

1. in every round r, b_r is not dropped in that round (if it was still in);
2. when a guarantee is claimed after round T and b_T was still in at round T,
   theta_chosen(n_T) >= max_c theta_c(n_T) - epsilon: the chosen candidate is within epsilon of the best of
   the N at the final size.

Proof: for each round r and each c != b_r, P(L_r(c, b_r) > theta_c(n_r) - theta_{b_r}(n_r)) <= beta; these
R (N - 1) events are fixed before the validation items are seen, so none happens with probability
>= 1 - R (N - 1) beta = confidence. Then dropping b_r needs L > margin >= 0 >= its true deficit, and the
claim needs L(chosen, b_T) >= -epsilon, so theta_chosen - theta_{b_T} >= -epsilon.

What is not: whether b_T was still in at round T. By 1 it was whenever the best candidate at n_T was also
the best at every smaller size tested; when learning curves cross at the top, a candidate dropped (rightly,
for its size) at a small size can be the best at n_T. The statement names that assumption; the simulation
in ``benchmarks/bench_select.py`` measures how often the statement held, crossings included. A margin makes
such drops rarer (only candidates more than the margin behind go), but nothing proves it enough. The claim
is about probes trained on n_T images, not on the whole training set: ``claim_from`` (say, the largest
size) keeps it from being made at smaller sizes. The screen's first cut is outside the guarantee too: "the
best of N" is the best of the candidates given to ``eliminate``.

Tests (``lower_bound``): ``"mcnemar"`` (default, exact). With n10 items only a gets right, n01 only b, nd =
n10 + n01 of m: acc(a) - acc(b) = q (2 pi - 1), q = P(discordant), pi = P(a right | discordant). Given nd,
n10 ~ Binomial(nd, pi), so a Clopper-Pearson lower bound pi_L at 3 beta / 4 holds exactly; q gets a
two-sided Clopper-Pearson interval [q_L, q_U] at beta / 4, and L = q_L (2 pi_L - 1) if pi_L >= 1/2, else
q_U (2 pi_L - 1). At margin 0, L > 0 is exactly McNemar's one-sided exact test rejecting at 3 beta / 4.
``"bootstrap"``: the beta quantile of the paired bootstrap of the difference (the items resampled with
replacement, drawn as one multinomial over the four agreement cells); approximate, so the guarantee is too.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

TESTS = ("mcnemar", "bootstrap")


# ---------------------------------------------------------------- paired tests on validation items

def _counts(a, b) -> tuple[int, int, int]:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"correctness vectors must be 1-d, non-empty and of one length: {a.shape} vs {b.shape}")
    return int(np.sum(a & ~b)), int(np.sum(~a & b)), len(a)


def _cp_lower(k: int, n: int, alpha: float) -> float:
    """Clopper-Pearson one-sided lower bound at level alpha on a binomial proportion (k successes of n)."""
    return 0.0 if k == 0 else float(special.betaincinv(k, n - k + 1, alpha))


def _cp_upper(k: int, n: int, alpha: float) -> float:
    return 1.0 if k == n else float(special.betaincinv(k + 1, n - k, 1 - alpha))


def mcnemar_p(a, b, alternative: str = "greater") -> float:
    """McNemar's exact p-value for "a is more accurate than b" (``greater``) or ``two-sided``.

    The binomial test of n10 among the nd discordant items at 1/2: P(Bin(nd, 1/2) >= n10), and for two-sided
    twice the smaller tail, at most 1. No discordant item gives 1.
    """
    n10, n01, _ = _counts(a, b)
    nd = n10 + n01
    if nd == 0:
        return 1.0
    if alternative == "greater":
        return float(special.bdtrc(n10 - 1, nd, 0.5)) if n10 > 0 else 1.0
    if alternative == "two-sided":
        return min(1.0, 2 * float(special.bdtr(min(n10, n01), nd, 0.5)))
    raise ValueError(f"alternative {alternative!r}: use 'greater' or 'two-sided'")


def lower_bound(a, b, alpha: float, test: str = "mcnemar", resamples: int | None = None, seed: int = 0) -> float:
    """One-sided lower confidence bound at level ``alpha`` on acc(a) - acc(b) (a fraction), paired by item."""
    n10, n01, m = _counts(a, b)
    if test == "mcnemar":
        pi_low = _cp_lower(n10, n10 + n01, 0.75 * alpha)
        q_low, q_high = _cp_lower(n10 + n01, m, alpha / 8), _cp_upper(n10 + n01, m, alpha / 8)
        edge = 2 * pi_low - 1
        return (q_low if edge >= 0 else q_high) * edge
    if test == "bootstrap":
        resamples = resamples or max(10_000, math.ceil(50 / alpha))
        cells = np.random.default_rng(seed).multinomial(m, [n10 / m, n01 / m, 1 - (n10 + n01) / m], size=resamples)
        diffs = np.sort((cells[:, 0] - cells[:, 1]) / m)
        return float(diffs[max(0, math.floor(alpha * (resamples + 1)) - 1)])
    raise ValueError(f"test {test!r}: use one of {', '.join(TESTS)}")


def per_test_alpha(confidence: float, n_candidates: int, n_rounds: int) -> float:
    """beta = (1 - confidence) / (R (N - 1)): every test's level (1 - confidence with a single candidate)."""
    return (1 - confidence) / (n_rounds * max(1, n_candidates - 1))


# ---------------------------------------------------------------- the elimination

@dataclass(frozen=True)
class Round:
    """One round: who was evaluated at which subsample size, what was seen and who was dropped."""
    index: int                 # 1-based
    size: int                  # training subsample size n_r
    candidates: tuple          # evaluated this round, in the given order
    accuracy: dict             # candidate -> validation accuracy (fraction)
    leader: Hashable
    lower_bounds: dict         # candidate -> L(leader, candidate), for the others
    eliminated: tuple
    seconds: float             # summed evaluation time of the round
    margin: float              # how far behind (with confidence) a candidate had to be to be dropped
    items: int                 # validation items scored

    @property
    def survivors(self) -> tuple:
        return tuple(c for c in self.candidates if c not in self.eliminated)


@dataclass(frozen=True)
class Selection:
    """The outcome: the chosen candidate, what is claimed about it and how it was reached."""
    chosen: Hashable
    survivors: tuple           # still in at the end, chosen first
    history: tuple             # Round per round run
    statement: str
    guaranteed: bool           # True: the module docstring's guarantee is claimed
    reason: str                # "one left", "within epsilon", "budget" or "sizes"
    epsilon: float
    confidence: float
    alpha_per_test: float
    n_candidates: int
    seconds: float             # all evaluation time

    @property
    def final_size(self) -> int | None:
        return self.history[-1].size if self.history else None


def eliminate(candidates: Sequence[Hashable], evaluate: Callable, *, epsilon: float, confidence: float,
              sizes: Sequence[int], budget_s: float | None = None, cost: Callable | None = None,
              margin: float | None = None, taper: float | None = None, claim_from: int = 0, test: str = "mcnemar",
              screened: int = 0, prefetch: Callable | None = None) -> Selection:
    """Run the elimination (see the module docstring); ``epsilon`` and ``margin`` are fractions (0.01 = 1 point).
    ``screened``: how many candidates a screen cut before (the statement's guarantee covers only ``candidates``).

    ``evaluate(candidate, size) -> (correct, seconds)``; ``cost(candidate, size) -> seconds`` predicts a
    round's cost for the budget (without it, the budget is only checked against the time already spent).
    ``prefetch(alive, size) -> failed``, at the start of each round, has the round's evaluations done elsewhere at
    once (``selection.dispatch``) and returns those that failed (at least one must be left): they are out, and the
    statement names them as not covered.
    """
    candidates = list(candidates)
    sizes = [int(n) for n in sizes]
    if not candidates or len(set(candidates)) != len(candidates):
        raise ValueError("candidates must be non-empty and distinct")
    if not sizes or any(n <= 0 for n in sizes) or any(x >= y for x, y in itertools.pairwise(sizes)):
        raise ValueError(f"sizes must be positive and increasing: {sizes}")
    margin = epsilon if margin is None else margin
    if not 0 < confidence < 1 or epsilon < 0 or margin < 0 or test not in TESTS:
        raise ValueError("need 0 < confidence < 1, epsilon >= 0, margin >= 0 and a known test")
    n = len(candidates)
    beta = per_test_alpha(confidence, n, len(sizes))
    margins = tapered_margins(margin, sizes, taper)
    settings = {"epsilon": epsilon, "confidence": confidence, "alpha_per_test": beta, "n_candidates": n}
    if n == 1:
        return Selection(candidates[0], tuple(candidates), (), f"{candidates[0]}: the only candidate", True,
                         "one left", seconds=0.0, **settings)
    alive, history, spent, reason, failed = candidates, [], 0.0, "sizes", []
    for r, size in enumerate(sizes, 1):
        planned = sum(cost(c, size) for c in alive) if cost else 0.0
        if budget_s is not None and (spent >= budget_s or spent + planned > budget_s):
            reason = "budget"
            break
        if prefetch:
            out = set(prefetch(alive, size))
            failed, alive = failed + [c for c in alive if c in out], [c for c in alive if c not in out]
        correct, seconds = {}, 0.0
        for c in alive:
            vector, took = evaluate(c, size)
            correct[c], seconds = np.asarray(vector, dtype=bool), seconds + float(took)
        spent += seconds
        accuracy = {c: float(correct[c].mean()) for c in alive}
        leader = max(alive, key=lambda c: accuracy[c])  # the first of equals: max keeps the earliest
        bounds = {c: lower_bound(correct[leader], correct[c], beta, test, seed=r) for c in alive if c != leader}
        dropped = tuple(c for c in alive if c != leader and bounds[c] > margins[r - 1])
        alive = [c for c in alive if c not in dropped]
        history.append(Round(r, size, tuple(correct), accuracy, leader, bounds, dropped, seconds, margins[r - 1],
                             len(correct[leader])))
        if len(alive) == 1:
            reason = "one left"
            break
        if size >= claim_from and all(bounds[c] >= -epsilon for c in alive if c != leader):
            reason = "within epsilon"
            break
    chosen = history[-1].leader if history else alive[0]
    survivors = (chosen, *[c for c in alive if c != chosen])
    guaranteed = reason in ("one left", "within epsilon")
    statement = _statement(chosen, survivors, history, reason, n, epsilon, confidence, spent, budget_s, screened)
    if failed:
        statement += f"; not covered: {', '.join(map(str, failed))} (failed)"
    return Selection(chosen, survivors, tuple(history), statement, guaranteed, reason, seconds=spent, **settings)


def tapered_margins(margin: float, sizes: Sequence[int], taper: float | None) -> list[float]:
    """The margin of each round: ``margin`` at every size, or with ``taper`` (a learning-curve exponent gamma) the
    part of a power-law curve's gain still to come, margin ((n_R / n_r)^gamma - 1) / ((n_R / n_1)^gamma - 1): the full
    margin at the smallest size, none at the largest, where no crossing is left to guard against."""
    if not taper or len(sizes) == 1:
        return [margin] * len(sizes)
    last, first = sizes[-1], sizes[0]
    return [margin * ((last / n) ** taper - 1) / ((last / first) ** taper - 1) for n in sizes]


def _points(x: float) -> str:
    return f"{100 * x:.1f} point" + ("" if round(100 * x, 1) == 1 else "s")


def _statement(chosen, survivors, history, reason, n, epsilon, confidence, spent, budget_s, screened=0) -> str:
    if not history:
        return (f"budget ran out before the first round ({budget_s:g} s): no guarantee; "
                f"{chosen} is only the screen's first of {n} candidates")
    last = history[-1]
    listed = ", ".join(f"{c} ({100 * last.accuracy[c]:.1f}%)" for c in survivors)
    if reason in ("one left", "within epsilon"):
        among = f"the {n} candidates the screen kept (of {n + screened})" if screened else f"{n} candidates"
        return (f"{chosen}: with {100 * confidence:g}% confidence within {_points(epsilon)} of the best of {among} "
                f"on validation, for models trained on {last.size:,} images ({len(history)} round(s), "
                f"{len(survivors)} left; assumes the best at {last.size:,} images was not dropped at a smaller size)")
    if reason == "budget":
        return (f"budget ran out after round {last.index} ({last.size:,} images, {spent:.0f} s spent of "
                f"{budget_s:g} s): no guarantee; survivors {listed}; leader {chosen}")
    return (f"no guarantee: at the largest size ({last.size:,} images) the survivors {listed} are not separated "
            f"at {_points(epsilon)} with {100 * confidence:g}% confidence; leader {chosen}")
