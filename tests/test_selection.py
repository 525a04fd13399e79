"""benchbone.selection.elimination: the elimination on hand-made correctness vectors, its tests against scipy and
statsmodels, and the simulation of benchmarks/bench_select.py (the stated guarantee holds at its confidence)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from benchbone.selection import eliminate, lower_bound, mcnemar_p, per_test_alpha
from benchbone.selection.elimination import _cp_lower, _cp_upper

M = 2000  # validation items


def vector(right: int, shift: int = 0, m: int = M) -> np.ndarray:
    """Right on ``right`` items, starting ``shift`` items in (cyclically): overlaps make paired differences."""
    out = np.zeros(m, dtype=bool)
    out[(np.arange(right) + shift) % m] = True
    return out


def pair(n10: int, n01: int, both: int = 1000, m: int = M) -> tuple[np.ndarray, np.ndarray]:
    """a right alone on n10 items, b alone on n01, both on ``both``."""
    a, b = np.zeros(m, bool), np.zeros(m, bool)
    a[:both + n10], b[:both] = True, True
    b[both + n10:both + n10 + n01] = True
    return a, b


def fixed(vectors: dict, seconds: float = 1.0):
    """evaluate() that returns the same vector at every size, and records its calls."""
    calls = []

    def evaluate(candidate, size):
        calls.append((candidate, size))
        return vectors[candidate], seconds

    return evaluate, calls


@pytest.mark.parametrize("test", ["mcnemar", "bootstrap"])
def test_clear_winner_is_chosen_alone_with_the_guarantee(test):
    vectors = {"a": vector(1900), **{f"b{i}": vector(1600, shift=7 * i) for i in range(4)}}
    evaluate, calls = fixed(vectors)
    result = eliminate(list(vectors), evaluate, epsilon=0.01, confidence=0.9, sizes=[100, 200, 400], test=test)
    assert (result.chosen, result.survivors, result.reason, result.guaranteed) == ("a", ("a",), "one left", True)
    assert len(result.history) == 1 and result.history[0].eliminated == ("b0", "b1", "b2", "b3")
    assert result.history[0].size == 100 and result.history[0].accuracy["a"] == pytest.approx(0.95)
    assert result.seconds == result.history[0].seconds == 5.0 and len(calls) == 5
    assert result.statement.startswith("a: with 90% confidence within 1.0 point of the best of 5 candidates "
                                       "on validation, for models trained on 100 images")


def test_candidates_within_epsilon_are_kept():
    # a and b differ on 40 items, 20 each way: a tie; c is 10 points behind
    a, b = vector(1600), vector(1600, shift=20)
    evaluate, _ = fixed({"c": vector(1400, shift=3), "b": b, "a": a})
    result = eliminate(["c", "b", "a"], evaluate, epsilon=0.02, confidence=0.95, sizes=[100, 200])
    assert result.reason == "within epsilon" and result.guaranteed
    assert result.chosen == "b"  # equal accuracy: the first in the given (screen's) order leads
    assert result.survivors == ("b", "a") and result.history[0].eliminated == ("c",)
    assert result.history[0].survivors == ("b", "a") and result.history[0].candidates == ("c", "b", "a")
    assert -0.02 <= result.history[0].lower_bounds["a"] < 0
    assert "b: with 95% confidence within 2.0 points of the best of 3" in result.statement


def test_margin_and_claim_from():
    # b is 3 points behind a (n10 = 70, n01 = 10): dropped at a margin of 1 point (epsilon's), kept at 5
    a, b = pair(n10=70, n01=10)
    evaluate, _ = fixed({"a": a, "b": b})
    assert eliminate(["a", "b"], evaluate, epsilon=0.01, confidence=0.9, sizes=[100]).history[0].eliminated == ("b",)
    kept = eliminate(["a", "b"], evaluate, epsilon=0.01, confidence=0.9, sizes=[100], margin=0.05)
    assert kept.survivors == ("a", "b") and kept.reason == "within epsilon"
    # a tie within epsilon is claimed at the first size, or only from claim_from on
    evaluate, _ = fixed({"a": vector(1600), "b": vector(1600, shift=20)})
    early = eliminate(["a", "b"], evaluate, epsilon=0.02, confidence=0.9, sizes=[100, 200, 400])
    late = eliminate(["a", "b"], evaluate, epsilon=0.02, confidence=0.9, sizes=[100, 200, 400], claim_from=400)
    assert (early.final_size, late.final_size, late.reason, late.guaranteed) == (100, 400, "within epsilon", True)
    assert "for models trained on 400 images" in late.statement


def test_a_tapered_margin_shrinks_to_none_at_the_largest_size():
    from benchbone.selection.elimination import tapered_margins

    sizes = [200, 400, 800, 2000]
    margins = tapered_margins(0.03, sizes, 0.5)
    assert margins[0] == pytest.approx(0.03) and margins[-1] == 0.0
    assert all(x > y for x, y in zip(margins, margins[1:]))
    # the gain a curve n^-0.5 still has to come after 800 images, as a share of that after 200: 0.58 / 2.16
    assert margins[2] == pytest.approx(0.03 * (2.5 ** 0.5 - 1) / (10 ** 0.5 - 1))
    assert tapered_margins(0.03, sizes, None) == tapered_margins(0.03, sizes, 0) == [0.03] * 4
    # b is 3 points behind a (n10 = 70, n01 = 10) at every size: kept by a constant margin of 5 points; with the
    # taper dropped once the margin has shrunk below what the test shows, and not in round 1
    a, b = pair(n10=70, n01=10)
    evaluate, _ = fixed({"a": a, "b": b})
    constant = eliminate(["a", "b"], evaluate, epsilon=0.0, confidence=0.9, sizes=sizes, margin=0.05, claim_from=10**6)
    tapered = eliminate(["a", "b"], evaluate, epsilon=0.0, confidence=0.9, sizes=sizes, margin=0.05, taper=0.5,
                       claim_from=10**6)
    assert constant.survivors == ("a", "b") and constant.reason == "sizes"
    assert tapered.survivors == ("a",) and tapered.reason == "one left" and 1 < len(tapered.history) <= 4
    assert [round(r.margin, 6) for r in tapered.history] == [round(x, 6) for x in tapered_margins(0.05, sizes, 0.5)][
        :len(tapered.history)]


def test_largest_size_without_separation_gives_no_guarantee():
    evaluate, calls = fixed({"a": vector(1600), "b": vector(1600, shift=20)})
    result = eliminate(["a", "b"], evaluate, epsilon=0.0, confidence=0.9, sizes=[100, 200, 400])
    assert (result.reason, result.guaranteed, len(result.history)) == ("sizes", False, 3)
    assert [r.size for r in result.history] == [100, 200, 400] and len(calls) == 6
    assert result.statement.startswith("no guarantee: at the largest size (400 images) the survivors a (80.0%), "
                                       "b (80.0%) are not separated")


def test_budget_running_out_gives_no_guarantee_and_lists_survivors():
    evaluate, _ = fixed({"a": vector(1600), "b": vector(1600, shift=20), "c": vector(1000)}, seconds=10.0)

    def cost(candidate, size):
        return size / 10  # 10 s at 100 images, 20 s at 200
    result = eliminate(["a", "b", "c"], evaluate, epsilon=0.0, confidence=0.9, sizes=[100, 200, 400],
                       budget_s=50.0, cost=cost)
    assert (result.reason, result.guaranteed, result.survivors) == ("budget", False, ("a", "b"))
    assert len(result.history) == 1 and result.seconds == 30.0  # round 2 would need 30 + 2 x 20 > 50
    assert result.statement == ("budget ran out after round 1 (100 images, 30 s spent of 50 s): no guarantee; "
                                "survivors a (80.0%), b (80.0%); leader a")
    # without a cost model the budget is checked against the time spent: round 2 starts (30 < 50), round 3 not
    result = eliminate(["a", "b", "c"], evaluate, epsilon=0.0, confidence=0.9, sizes=[100, 200, 400], budget_s=50.0)
    assert (result.reason, len(result.history), result.seconds) == ("budget", 2, 50.0)
    nothing = eliminate(["a", "b"], evaluate, epsilon=0.0, confidence=0.9, sizes=[100], budget_s=5.0, cost=cost)
    assert (nothing.chosen, nothing.guaranteed, nothing.history) == ("a", False, ())
    assert nothing.statement.startswith("budget ran out before the first round")


def test_one_candidate_is_chosen_without_an_evaluation():
    evaluate, calls = fixed({})
    result = eliminate(["only"], evaluate, epsilon=0.01, confidence=0.9, sizes=[100])
    assert (result.chosen, result.guaranteed, result.history, calls) == ("only", True, (), [])


def test_the_correction_covers_candidates_and_rounds():
    assert per_test_alpha(0.9, 11, 5) == pytest.approx(0.1 / 50)
    assert per_test_alpha(0.95, 2, 1) == pytest.approx(0.05)
    a, b = pair(n10=28, n01=14)  # McNemar's one-sided p = P(Bin(42, 1/2) >= 28), about 0.022
    p = mcnemar_p(a, b)
    assert 0.75 * 0.002 < p < 0.75 * 0.1  # dropped at N = 2, R = 1; kept at N = 11, R = 5
    two = {"a": a, "b": b}
    alone = eliminate(["a", "b"], fixed(two)[0], epsilon=0.0, confidence=0.9, sizes=[100])
    assert alone.alpha_per_test == pytest.approx(0.1) and alone.survivors == ("a",)  # p < 3/4 of 0.1
    many = {**two, **{f"z{i}": vector(500) for i in range(9)}}  # N = 11, R = 5: beta = 0.002
    result = eliminate(["a", "b", *[f"z{i}" for i in range(9)]], fixed(many)[0], epsilon=0.0, confidence=0.9,
                       sizes=[100, 200, 300, 400, 500])
    assert result.alpha_per_test == pytest.approx(0.002)
    assert "b" in result.survivors and "z0" not in result.survivors


@pytest.mark.parametrize("n01", [0, 3, 10, 25, 40])
def test_dropping_at_margin_zero_is_mcnemars_exact_test(n01):
    beta = 0.01
    for n10 in range(60):
        a, b = pair(n10, n01, both=0, m=500)
        dropped = lower_bound(a, b, beta) > 0
        assert dropped == (mcnemar_p(a, b) < 0.75 * beta), (n10, n01)


def test_mcnemar_p_against_scipy_and_statsmodels():
    rng = np.random.default_rng(0)
    for _ in range(30):
        m = int(rng.integers(20, 400))
        a, b = rng.random(m) < rng.uniform(0.5, 0.95), rng.random(m) < rng.uniform(0.5, 0.95)
        n10, n01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
        assert mcnemar_p(a, b) == pytest.approx(stats.binomtest(n10, n10 + n01, 0.5, alternative="greater").pvalue,
                                                rel=1e-9)
        table = [[int(np.sum(a & b)), n10], [n01, int(np.sum(~a & ~b))]]
        assert mcnemar_p(a, b, "two-sided") == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)
    same = np.ones(10, bool)
    assert mcnemar_p(same, same) == mcnemar_p(same, same, "two-sided") == 1.0


def test_clopper_pearson_against_statsmodels():
    for k, n in [(0, 10), (3, 10), (10, 10), (57, 400), (1, 2000)]:
        low, high = proportion_confint(k, n, alpha=0.1, method="beta")
        assert _cp_lower(k, n, 0.05) == pytest.approx(low, abs=1e-12)
        assert _cp_upper(k, n, 0.05) == pytest.approx(high, abs=1e-12)


def test_paired_bootstrap_bound_against_scipy():
    rng = np.random.default_rng(1)
    z = rng.standard_normal(1500)
    a, b = (1.0 - z + rng.standard_normal(1500) > 0), (0.8 - z + rng.standard_normal(1500) > 0)
    ours = lower_bound(a, b, 0.05, "bootstrap", resamples=100_000)
    ref = stats.bootstrap((a.astype(float), b.astype(float)), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                          paired=True, vectorized=True, n_resamples=20_000, confidence_level=0.95,
                          alternative="greater", method="percentile", random_state=2).confidence_interval.low
    assert ours == pytest.approx(ref, abs=0.002)
    assert lower_bound(a, b, 0.05, "mcnemar") < ours  # the exact bound is the wider one


def test_exact_bound_covers_the_true_difference():
    """P(L > true difference) <= alpha for a known four-cell population (Monte Carlo, 4,000 validation sets)."""
    rng = np.random.default_rng(3)
    p10, p01, alpha, m = 0.09, 0.06, 0.1, 400
    cells = rng.multinomial(m, [p10, p01, 1 - p10 - p01], size=4000)
    misses = 0
    for n10, n01, _ in cells:
        a, b = pair(n10, n01, both=0, m=m)
        misses += lower_bound(a, b, alpha) > p10 - p01
    assert misses / len(cells) <= alpha


def test_bad_input_is_refused():
    evaluate, _ = fixed({"a": vector(10), "b": vector(10, m=5)})
    with pytest.raises(ValueError, match="one length"):
        eliminate(["a", "b"], evaluate, epsilon=0.01, confidence=0.9, sizes=[100])
    for kwargs in ({"sizes": [200, 100]}, {"sizes": []}, {"confidence": 1.0}, {"epsilon": -0.1}):
        settings = {"epsilon": 0.01, "confidence": 0.9, "sizes": [100], **kwargs}
        with pytest.raises(ValueError):
            eliminate(["a", "b"], evaluate, **settings)
    with pytest.raises(ValueError, match="distinct"):
        eliminate(["a", "a"], evaluate, epsilon=0.01, confidence=0.9, sizes=[100])


def _bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_select.py"
    spec = importlib.util.spec_from_file_location("bench_select", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_select", module)
    spec.loader.exec_module(module)
    return module


def test_simulation_coverage_reaches_the_nominal_confidence():
    rows = {row["method"]: row for row in _bench().simulate(problems=50, seed=0, val_items=5000, keep=0.5,
                                                            epsilon=1.0, confidence=0.9, budget=0.5)}
    select = rows["select"]
    assert select["nominal"] == 0.9 and select["guaranteed"] >= 0.3  # coverage over at least 15 stated guarantees
    assert select["coverage"] >= select["nominal"]
    assert select["compute_fraction"] < rows["successive-halving"]["compute_fraction"] < 1
    assert rows["full-grid"]["compute_fraction"] == 1.0
    assert set(rows) == {"select", "successive-halving", "estimator-1", "estimator-2", "prior", "full-grid"}


def test_bench_zoo_has_at_least_20_candidates():
    """``--zoo`` runs for minutes (results/select/README.md); here only its size: each Lite at each layer, and pixels."""
    bench = _bench()
    with_layers = [b for b in bench.ZOO_BACKBONES if b.startswith("efficientnet_lite")]
    assert len(with_layers) * len(bench.ZOO_LAYERS) + len(bench.ZOO_BACKBONES) - len(with_layers) >= 20
