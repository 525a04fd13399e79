"""Paired tests, rankings across datasets and CD diagrams, checked against scipy, statsmodels and Demšar (2006)."""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from benchbone.cli import main
from benchbone.plugins import get_plugin_manager
from benchbone.records import write_record
from benchbone.reporting import leaderboard, ranks, statistics


@pytest.fixture(scope="module")
def metric_registry():
    return get_plugin_manager(entrypoints=False).registries().metrics


# ---------------------------------------------------------------- exactness against outside references

def test_mcnemar_matches_the_exact_binomial_test_on_the_discordant_counts():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(20, 400))
        a, b = rng.random(n) < rng.uniform(0.5, 0.9), rng.random(n) < rng.uniform(0.5, 0.9)
        only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
        expected = scipy.stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        assert statistics.mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-9)


def test_holm_matches_r_p_adjust():
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") -> 0.03 0.06 0.06 0.02
    assert statistics.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(statistics.holm([0.01, np.nan])[1])


def test_holm_gives_statsmodels_numbers_to_the_bit():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 40):
        p = np.round(rng.random(n) ** 3, 2)  # ties and values that Holm pushes above 1
        assert np.array_equal(statistics.holm(p), multipletests(p, method="holm")[1])
    assert np.array_equal(statistics.holm([np.nan, 0.2, np.nan, 0.01]), [np.nan, 0.2, np.nan, 0.02], equal_nan=True)
    assert len(statistics.holm([])) == 0


def test_per_item_forms_average_to_the_metric(metric_registry):
    from sklearn.metrics import log_loss, top_k_accuracy_score

    rng = np.random.default_rng(0)
    y_true, logits = rng.integers(0, 8, 300), rng.normal(size=(300, 8))
    y_pred = logits.argmax(1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for name, reference in (("top1", np.mean(y_pred == y_true)), ("nll", log_loss(y_true, probs, labels=range(8))),
                            ("top5", top_k_accuracy_score(y_true, logits, k=5, labels=range(8)))):
        per_item = metric_registry.get(name).meta["per_item"]
        assert per_item(y_true, y_pred, logits).mean() == pytest.approx(reference, rel=1e-9), name
    for name in ("f1", "ece", "balanced_accuracy"):  # no per-item form: recomputed on each resample
        assert metric_registry.get(name).meta["resample"] and "per_item" not in metric_registry.get(name).meta


def _pair(gap: float, n: int, rng) -> tuple[statistics.Items, statistics.Items]:
    """Two classifiers on ``n`` items: both right 60%, only A right 0.15 + gap/2, only B right 0.15 - gap/2."""
    cells = rng.choice(4, size=n, p=[0.6, 0.15 + gap / 2, 0.15 - gap / 2, 0.1 - 0.0])  # both, A only, B only, none
    y_true = np.zeros(n, np.int64)
    a = np.where(np.isin(cells, [0, 1]), 0, 1)[None]
    b = np.where(np.isin(cells, [0, 2]), 0, 1)[None]
    return (statistics.Items([0], y_true, a, None, ("t",)), statistics.Items([0], y_true, b, None, ("t",)))


def _simulate(gap: float, pairs: int, metric_registry) -> tuple[float, float]:
    """(share of 95% intervals holding the true gap, share of p < 0.05) over ``pairs`` simulated pairs."""
    form = statistics.MetricForm.from_registry("top1", metric_registry)
    rng = np.random.default_rng(42)
    covered = rejected = 0
    for _ in range(pairs):
        a, b = _pair(gap, 300, rng)
        (pa, pb), reps = statistics.Resampler(300, 1, resamples=1000, seed=int(rng.integers(2**31))).replicates([a, b], form)
        d = statistics.bootstrap_difference(pa, reps[0], pb, reps[1])
        covered += d.ci_low <= gap <= d.ci_high
        rejected += d.p < 0.05
    return covered / pairs, rejected / pairs


def test_paired_bootstrap_interval_covers_a_known_gap_at_the_nominal_rate(metric_registry):
    coverage, _ = _simulate(0.05, 2000, metric_registry)  # 94.5-95.0% over seeds 10, 11 and 42
    assert 0.93 <= coverage <= 0.97


def test_paired_bootstrap_false_positive_rate_at_zero_gap_is_at_most_alpha(metric_registry):
    coverage, false_positives = _simulate(0.0, 2000, metric_registry)  # 4.4-4.9% over seeds 10, 11 and 42
    assert false_positives <= 0.05 and 0.93 <= coverage <= 0.97


def test_two_level_bootstrap_puts_seed_variance_in_the_interval(metric_registry):
    form = statistics.MetricForm.from_registry("top1", metric_registry)
    rng = np.random.default_rng(3)
    n, y_true = 500, np.zeros(500, np.int64)
    steady = rng.random(n) < 0.7
    same = statistics.Items([0, 1, 2], y_true, np.stack([np.where(steady, 0, 1)] * 3), None, ("t",))
    varied = statistics.Items([0, 1, 2], y_true, np.stack([np.where(rng.random(n) < p, 0, 1) for p in (0.5, 0.7, 0.9)]),
                              None, ("t",))
    base = statistics.Items([0, 1, 2], y_true, np.stack([np.where(rng.random(n) < 0.7, 0, 1)] * 3), None, ("t",))
    (p_same, p_varied, p_base), reps = statistics.Resampler(n, 3, 2000).replicates([same, varied, base], form)
    steady_d = statistics.bootstrap_difference(p_same, reps[0], p_base, reps[2])
    varied_d = statistics.bootstrap_difference(p_varied, reps[1], p_base, reps[2])
    assert varied_d.ci_high - varied_d.ci_low > 2 * (steady_d.ci_high - steady_d.ci_low)


def test_basic_interval_mirrors_the_percentile_interval_about_the_estimate():
    rng = np.random.default_rng(0)
    reps_a, reps_b = rng.normal(0.7, 0.02, 5000), rng.normal(0.6, 0.01, 5000)
    pct = statistics.bootstrap_difference(0.72, reps_a, 0.60, reps_b, ci_method="percentile")
    basic = statistics.bootstrap_difference(0.72, reps_a, 0.60, reps_b, ci_method="basic")
    assert basic.ci_low == pytest.approx(2 * 0.12 - pct.ci_high) and basic.ci_high == pytest.approx(2 * 0.12 - pct.ci_low)


# ---------------------------------------------------------------- Demšar (2006): Table 6, section 3.2.2, Figure 1

DEMSAR = pd.DataFrame([  # AUC of C4.5 variants on 14 UCI data sets (Table 6)
    [0.763, 0.768, 0.771, 0.798], [0.599, 0.591, 0.590, 0.569], [0.954, 0.971, 0.968, 0.967],
    [0.628, 0.661, 0.654, 0.657], [0.882, 0.888, 0.886, 0.898], [0.936, 0.931, 0.916, 0.931],
    [0.661, 0.668, 0.609, 0.685], [0.583, 0.583, 0.563, 0.625], [0.775, 0.838, 0.866, 0.875],
    [1.000, 1.000, 1.000, 1.000], [0.940, 0.962, 0.965, 0.962], [0.619, 0.666, 0.614, 0.669],
    [0.972, 0.981, 0.975, 0.975], [0.957, 0.978, 0.946, 0.970]], columns=["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"])


def test_demsar_worked_example_is_reproduced(tmp_path):
    ranking = ranks.rank_matrix(DEMSAR, higher_is_better=True, alpha=0.05, strategy="c45", metric="auc")
    means = ranking.ranks.mean()
    # published mean ranks 3.143, 2.000, 2.893, 1.964; Table 6 prints voting's 0.975 twice, which ties the
    # last two there (the paper ranked the unrounded values), moving each by 0.5 / 14
    assert means["C4.5"] == pytest.approx(3.143, abs=5e-4) and means["C4.5+m"] == pytest.approx(2.000, abs=5e-4)
    assert means["C4.5+cf"] == pytest.approx(2.893 + 0.5 / 14, abs=5e-4)
    assert means["C4.5+m+cf"] == pytest.approx(1.964 - 0.5 / 14, abs=5e-4)
    assert ranking.critical_difference == pytest.approx(1.25, abs=5e-3)  # CD at alpha 0.05
    assert ranking.friedman_p < 0.05  # "the null hypothesis can be rejected"
    assert (ranking.nemenyi.to_numpy() >= 0.05).all()  # "not powerful enough to detect any significant differences"
    at_ten = ranks.rank_matrix(DEMSAR, higher_is_better=True, alpha=0.10)
    assert at_ten.critical_difference == pytest.approx(1.12, abs=5e-3)
    differ = {frozenset((a, b)) for a in DEMSAR for b in DEMSAR if a < b and at_ten.nemenyi.at[a, b] < 0.10}
    assert differ == {frozenset(("C4.5", "C4.5+m")), frozenset(("C4.5", "C4.5+m+cf"))}  # Figure 1(a)
    paths = ranks.write_cd_diagrams([ranking], tmp_path)
    assert [p.name for p in paths] == ["cd-c45.png", "cd-c45.svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and b"C4.5+m+cf" in paths[1].read_bytes()


@pytest.mark.parametrize("k, q", [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (6, 2.850), (10, 3.164)])
def test_critical_difference_uses_demsars_critical_values(k, q):
    # Table 5(a) of Demšar (2006), q_0.05 of the Nemenyi test
    assert ranks.critical_difference(k, 10) / np.sqrt(k * (k + 1) / 60) == pytest.approx(q, abs=1e-3)


# ---------------------------------------------------------------- the leaderboard and `benchbone compare`

def write_run(run_dir, rows, n=400, seeds=(0,), test_digest="t1", classes=4):
    """Records with predictions.npz for ``rows``: {backbone: accuracy}; returns the records."""
    rng = np.random.default_rng(7)
    y_true = rng.integers(0, classes, n)
    records = []
    for backbone, accuracy in rows.items():
        for seed in seeds:
            right = rng.random(n) < accuracy
            y_pred = np.where(right, y_true, (y_true + 1) % classes)
            scores = np.full((n, classes), 0.1)
            scores[np.arange(n), y_pred] = 0.7
            cell = f"{backbone}-{seed}".replace("@", "_")
            folder = run_dir / "artefacts" / cell
            folder.mkdir(parents=True)
            np.savez(folder / "predictions.npz", y_true=y_true, y_pred=y_pred, y_score=scores.astype(np.float32))
            from benchbone_plugins.classification_metrics import nll

            record = {"schema": 1, "cell_id": cell, "backbone": backbone, "dataset": "d", "strategy": "s",
                      "seed": seed, "status": "ok", "params": {}, "cell": {"data_dir": None},
                      "metrics": {"top1": float(right.mean()), "nll": nll(y_true, y_pred, scores)},
                      "higher_is_better": {"top1": True, "nll": False}, "percent": {"top1": True, "nll": False},
                      "data": {"indices_digest": {"test": test_digest}}, "timings": {"total_s": 1.0},
                      "backbone_info": {"num_features": 8}, "artefacts": {"predictions": f"artefacts/{cell}/predictions.npz"}}
            write_record(run_dir, record)  # with its digest, as the harness writes it
            records.append(record)
    return records


def test_tied_means_not_significantly_different_from_the_leader_after_holm(tmp_path, metric_registry):
    records = write_run(tmp_path, {"a": 0.80, "b": 0.79, "c": 0.60})
    board = leaderboard.build(records, run_dirs=[tmp_path], metric_registry=metric_registry).set_index("backbone")
    assert board.at["a", "leader"] and not board.at["a", "tied"]
    assert board.at["b", "tied"] and not board.at["c", "tied"] and board.at["c", "p_holm"] < 0.05
    assert board.at["c", "vs_leader"] == pytest.approx(board.at["c", "top1"] - board.at["a", "top1"])
    assert board.at["c", "vs_leader_ci_low"] < board.at["c", "vs_leader"] < board.at["c", "vs_leader_ci_high"]
    assert 0 <= board.at["b", "mcnemar_p_holm"] <= 1 and board.at["b", "p_holm"] >= board.at["b", "p"]
    md = leaderboard.to_text(leaderboard.build(records, run_dirs=[tmp_path], metric_registry=metric_registry), "md")
    assert "| leader" in md and "| tied" in md and "at alpha = 0.05 (Holm)" in md


def test_leader_and_ties_follow_the_sort_metric_in_every_format(tmp_path, metric_registry, capsys):
    write_run(tmp_path, {"a": 0.80, "b": 0.79, "c": 0.60})
    for fmt in ("json", "table", "md", "html"):
        assert main(["leaderboard", str(tmp_path), "--sort-by", "nll", "--alpha", "0.01", "-f", fmt]) == 0
        out = capsys.readouterr().out
        if fmt == "json":
            rows = json.loads(out)
            leader = next(r for r in rows if r["leader"])
            assert leader["nll"] == min(r["nll"] for r in rows) and rows[0]["alpha"] == 0.01
            assert rows[0]["correction"] == "holm" and rows[0]["test"] == statistics.TEST_NAME
        else:
            assert "alpha = 0.01 (Holm)" in out
            assert ("Δ nll vs leader" in out) and ("top1 vs leader" not in out)
    board = leaderboard.build(statistics_records := [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*")],
                              sort_by="nll", run_dirs=[tmp_path], metric_registry=metric_registry)
    assert board.iloc[0]["leader"] and board.iloc[0]["nll"] == board["nll"].min() and len(statistics_records) == 3


def test_rows_that_cannot_be_compared_are_marked_and_compare_refuses_them(tmp_path, metric_registry, capsys):
    records = write_run(tmp_path / "one", {"a": 0.8, "b": 0.7})
    records += write_run(tmp_path / "two", {"c": 0.75}, test_digest="other")  # another test_per_class
    records += write_run(tmp_path / "three", {"d": 0.72})
    (tmp_path / "three" / "artefacts" / "d-0" / "predictions.npz").unlink()
    dirs = [tmp_path / "one", tmp_path / "two", tmp_path / "three"]
    board = leaderboard.build(records, run_dirs=dirs, metric_registry=metric_registry).set_index("backbone")
    assert not board.at["c", "comparable"] and "other test items" in board.at["c", "note"]
    assert not board.at["d", "comparable"] and "no predictions.npz" in board.at["d", "note"]
    assert board.at["b", "comparable"] and not board.at["c", "tied"]
    assert "not comparable" in leaderboard.to_text(leaderboard.build(records, run_dirs=dirs,
                                                                     metric_registry=metric_registry))
    assert main(["compare", *map(str, dirs)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "row c: scored other test items than a" in err
    assert main(["compare", str(tmp_path / "two")]) == 2
    assert "d x s has a single row (c)" in capsys.readouterr().err


def test_compare_prints_every_pair_with_holm_adjusted_p(tmp_path, capsys):
    write_run(tmp_path, {"a": 0.80, "b": 0.79, "c": 0.60}, seeds=(0, 1))
    assert main(["compare", str(tmp_path), "--dataset", "d", "-f", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (group,) = result["groups"]
    assert result["correction"] == "holm" and group["rows"] == ["a", "b", "c"] and len(group["pairs"]) == 3
    p = [pair["p"] for pair in group["pairs"]]
    assert [pair["p_holm"] for pair in group["pairs"]] == pytest.approx(list(statistics.holm(p)))
    assert all(pair["mcnemar_p"] is None for pair in group["pairs"])  # two seeds: McNemar does not apply
    assert main(["compare", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "d x s: top1 of row - column" in table and "Holm" in table
    assert main(["compare", str(tmp_path), "-f", "html", "-o", str(tmp_path / "c.html")]) == 0
    assert "<table" in (tmp_path / "c.html").read_text()
    assert main(["compare", str(tmp_path), "--ci-method", "bca"]) == 2
    assert "use one of percentile, basic" in capsys.readouterr().err


# ---------------------------------------------------------------- across datasets, through the leaderboard

def test_rankings_across_datasets_match_scipy_and_draw_cd_diagrams(tmp_path, metric_registry):
    rng = np.random.default_rng(5)
    values = pd.DataFrame(rng.uniform(0.5, 0.9, size=(5, 4)), index=[f"ds{i}" for i in range(5)],
                          columns=["a", "b", "c", "d"])
    records = []
    for dataset, row in values.iterrows():
        for backbone, top1 in row.items():
            records.append({"cell_id": f"{dataset}-{backbone}", "backbone": backbone, "dataset": dataset,
                            "strategy": "s", "seed": 0, "status": "ok", "params": {}, "metrics": {"top1": top1},
                            "higher_is_better": {"top1": True}, "percent": {"top1": True},
                            "timings": {"total_s": 1.0}, "backbone_info": {}})
    board = leaderboard.build(records)
    (ranking,) = leaderboard.rankings(board)
    expected = scipy.stats.friedmanchisquare(*[values[c] for c in values.columns])
    assert ranking.friedman_statistic == pytest.approx(expected.statistic) and ranking.friedman_p == pytest.approx(expected.pvalue)
    mean_ranks = np.mean([scipy.stats.rankdata(-row) for row in values.to_numpy()], axis=0)
    assert ranking.ranks.mean()[list(values.columns)].to_numpy() == pytest.approx(mean_ranks)
    leaderboard.write(board, records, tmp_path)
    assert (tmp_path / "cd-s.png").is_file() and (tmp_path / "cd-s.svg").is_file()
    assert "## Across datasets: s (top1, 5 datasets" in (tmp_path / "leaderboard.md").read_text()
    from benchbone.reporting import report

    page = report.page(board, records)
    assert "<h2>Across datasets</h2>" in page and "<svg" in page and "Friedman test" in page


# ---------------------------------------------------------------- published numbers: --expect

def test_expect_prints_measured_against_expected(run_tiny_benchmark, tmp_path, capsys):
    from sklearn.metrics import accuracy_score, f1_score

    run_tiny_benchmark(overrides={"linear-probe.C": 1.0, "linear-probe.max_iter": 20, "train_per_class": 4})
    run = tmp_path / "run"
    (record,) = [json.loads(p.read_text()) for p in (run / "records").glob("*.json")]
    saved = np.load(run / record["artefacts"]["predictions"])
    top1 = 100 * accuracy_score(saved["y_true"], saved["y_pred"])
    f1 = 100 * f1_score(saved["y_true"], saved["y_pred"], average="macro")
    row = 'backbone = "test/tiny-cnn"\ndataset = "test/blobs"\nstrategy = "linear-probe"\nsource = "sklearn"\n'
    suite = tmp_path / "expect.toml"
    suite.write_text(f"[[expect]]\n{row}metric = \"top1\"\nvalue = {top1}\ntolerance = 0.01\n"
                     f"[[expect]]\n{row}metric = \"f1\"\nvalue = {f1 - 5}\ntolerance = 1.0\n")
    assert main(["leaderboard", str(run), "--expect", str(suite), "-f", "json"]) == 1  # f1 lies 5 points off
    checked = json.loads(capsys.readouterr().out.split("):\n", 1)[1])
    assert [c["status"] for c in checked] == ["ok", "outside tolerance"]
    assert checked[0]["measured"] == pytest.approx(top1) and checked[1]["difference"] == pytest.approx(5.0)
    suite.write_text(f"[[expect]]\n{row}metric = \"top1\"\nvalue = {top1}\ntolerance = 0.01\n")
    assert main(["leaderboard", str(run), "--expect", str(suite)]) == 0
    suite.write_text("[[expect]]\nbackbone = 1\n")
    assert main(["leaderboard", str(run), "--expect", str(suite)]) == 2
    assert "needs backbone (a string)" in capsys.readouterr().err


def test_reproduction_suites_are_valid_suites_with_sources():
    from pathlib import Path

    from benchbone.planning.grid import expand
    from benchbone.planning.suites import load_suite
    from benchbone.reporting import expect

    suites = sorted(Path(__file__).parents[1].joinpath("benchmarks", "reproduce").glob("*.toml"))
    assert len(suites) >= 2
    registries = get_plugin_manager(entrypoints=False).registries()
    for suite in suites:
        cells = expand(load_suite(suite), registries)
        for entry in expect.load(suite):
            assert entry["source"] and entry["tolerance"] > 0
            assert any(c.backbone_label == entry["backbone"] and c.strategy == entry["strategy"] for c in cells)


def test_compare_says_when_the_resamples_bound_holms_p(tmp_path, capsys):
    write_run(tmp_path, {"a": 0.95, "b": 0.5, "c": 0.1})
    assert main(["compare", str(tmp_path), "-f", "json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["groups"]
    assert min(p["p_holm"] for p in group["pairs"]) == pytest.approx(group["smallest_p_holm"]) == 3 * 2 / 10_001
    assert main(["compare", str(tmp_path), "--alpha", "0.0001"]) == 0
    assert "none can be: with 10,000 resamples Holm's p cannot go below 0.0006" in capsys.readouterr().out


def test_cd_diagrams_are_the_same_bytes_whatever_the_hash_seed(tmp_path):
    import os
    import subprocess
    import sys

    script = ("import sys, pandas as pd; from benchbone.reporting import ranks; sys.path.insert(0, sys.argv[2]); "
              "from test_statistics import DEMSAR; ranks.write_cd_diagrams("
              "[ranks.rank_matrix(DEMSAR, True, 0.10, 'c45', 'auc')], sys.argv[1])")
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / seed), os.path.dirname(__file__)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
    for name in ("cd-c45.png", "cd-c45.svg"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()
