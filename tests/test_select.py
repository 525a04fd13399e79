"""``benchbone select`` end to end on the tiny test plugins: constraints, screen, rounds, test, bad input, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchbone.cli import main
from benchbone.errors import UsageError

PLUGIN = str(Path(__file__).with_name("select_blobs.py"))
# 800 training images of the 4-class blobs: a pool of 640, 160 validation items, rounds at 40, 80, 160, 320, 640
BASE = ["select", "-p", "benchbone.testing", "-p", PLUGIN, "-d", "test/blobs-large", "--screen-size", "40",
        "--estimator", "logme", "--estimator", "knn-loo", "--estimator", "static-prior", "-q"]
CANDIDATES = ["-b", "test/tiny-cnn", "-b", "pixels:4", "-b", "pixels:8"]


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    """One selection: three candidates, a broken one and an estimator that returns NaN; epsilon 5 points, a budget
    of an hour (so latency and throughput are timed)."""
    import contextlib
    import io

    import _pytest.capture  # noqa: F401 (capsys is function-scoped: capture here by hand)

    root = tmp_path_factory.mktemp("select")
    args = [*BASE, *CANDIDATES, "-b", "test/broken", "--estimator", "test-nan", "--epsilon", "5", "--budget", "1h",
            "--cache-dir", root / "cache", "--out", root / "sel"]
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setenv("BENCHBONE_LOAD_PLUGINS", "")
        code = main([str(a) for a in args])
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "root": root, "args": args,
            "json": json.loads((root / "sel" / "select.json").read_text())}


@pytest.mark.slow
def test_select_answers_and_writes_select_json(selected):
    assert selected["code"] == 0, selected["err"]
    data = selected["json"]
    for key in ("chosen", "survivors", "epsilon", "confidence", "statement", "spent_s", "full_grid_s", "rounds",
                "candidates", "guaranteed", "reason"):
        assert key in data
    assert data["epsilon"] == 5 and data["confidence"] == 0.9
    assert data["chosen"] == data["survivors"][0]
    assert data["spent_s"] > 0 and data["full_grid_s"] > 0
    chosen = data["candidates"][data["chosen"]]
    assert chosen["status"] == "chosen" and chosen["test"]["items"] == 96
    assert 0 <= chosen["test"]["ci"][0] <= chosen["test"]["top1"] <= chosen["test"]["ci"][1] <= 1
    for label in ("test/tiny-cnn", "pixels:4", "pixels:8"):
        entry = data["candidates"][label]
        assert {"params", "gmacs", "latency_ms", "throughput_ips"} <= set(entry["constraints"])
        assert "logme" in entry["estimators"] and "test-nan" not in entry["estimators"]
        assert "rounds_survived" in entry and "validation" in entry and "test" in entry
    assert len(data["rounds"][0]["candidates"]) >= 2
    assert "logme" in data["estimators_vs_exact"]["round1"]  # every candidate of round 1, not only those it dropped
    assert data["statement"] in selected["out"]  # the table and the statement are printed
    assert data["chosen"] in selected["out"]
    assert (selected["root"] / "sel" / "select.md").is_file()
    assert (selected["root"] / "sel" / "select.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_broken_candidate_and_a_nan_estimator_are_one_line_each(selected):
    err = selected["err"]
    assert "dropped test/broken: failed to load: weights file is damaged" in err
    assert "estimator test-nan returned nan on" in err
    assert selected["json"]["candidates"]["test/broken"]["status"] == "failed"
    assert "Traceback" not in err


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_answer(selected, capsys, monkeypatch):
    """A kill after some rounds leaves steps/ and the caches; the rerun reads them back and answers the same."""
    sel = selected["root"] / "sel"
    (sel / "select.json").unlink()
    code, _, err = run(capsys, *selected["args"])
    assert code == 0, err
    again = json.loads((sel / "select.json").read_text())
    first = selected["json"]
    for key in ("chosen", "survivors", "reason", "rounds", "spent_s", "full_grid_s", "statement"):
        assert again[key] == first[key], key


@pytest.mark.slow
def test_constraints_drop_candidates_with_their_measured_figures(selected, capsys):
    code, _, err = run(capsys, *selected["args"][:-4], "--cache-dir", selected["root"] / "cache",
                         "--out", selected["root"] / "constrained", "--max-params", "100")
    assert code == 0, err
    assert "dropped test/tiny-cnn: params " in err and "> 100" in err
    data = json.loads((selected["root"] / "constrained" / "select.json").read_text())
    assert data["candidates"]["test/tiny-cnn"]["status"] == "constraint"
    assert "test/tiny-cnn" not in data["survivors"]


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", [
    (["--max-latency-ms", "1e-9"], "nothing fits"),
    (["--budget", "0.001s"], "too small for the screen"),
    (["--set", "val_size=3"], "validation items are too few"),
])
def test_bad_input_is_one_line_and_exit_2(selected, capsys, extra, message):
    code, _, err = run(capsys, *selected["args"][:-4], "--cache-dir", selected["root"] / "cache",
                         "--out", selected["root"] / "bad", *extra)
    assert code == 2, err
    assert message in err
    assert len([line for line in err.splitlines() if line.startswith("benchbone: error")]) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("extra, message", [
    (["-b", "test/tiny-cnn"], "one candidate"),
    ([*CANDIDATES, "--budget", "soon"], "--budget 'soon'"),
    ([*CANDIDATES, "--max-params", "lots"], "--max-params 'lots'"),
    ([*CANDIDATES, "--strategy", "nope"], "unknown strategy 'nope'"),
    ([*CANDIDATES, "--screen-by", "nope"], "--screen-by 'nope'"),
    ([*CANDIDATES, "--taper", "-1"], "--taper >= 0"),
])
def test_bad_flags_are_one_line_and_exit_2(capsys, tmp_path, extra, message):
    code, _, err = run(capsys, *BASE, *extra, "--out", tmp_path / "sel")
    assert code == 2, err
    assert message in err and err.count("\n") == 1, err


def test_helpers():
    from benchbone.selection.constraints import count_text, parse_count, parse_duration
    from benchbone.inputs.splits import SplitView
    from benchbone.selection.request import (min_val_items, nested_chunks, nested_order, round_sizes,
                                             smallest_epsilon, validation_sizes)

    assert parse_count("30M") == 3e7 and parse_count("1.5k") == 1500 and parse_count(5) == 5
    assert parse_duration("90s") == 90 and parse_duration("2h") == 7200 and parse_duration("15m") == 900
    assert count_text(48_100_000) == "48.1M" and count_text(864) == "864"
    for bad in ("", "-3", "abc"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    order = nested_order(labels, 0)
    assert sorted(order) == list(range(100))
    for n in (10, 20, 50):  # every prefix is stratified (within one image per class)
        counts = np.bincount(labels[order[:n]], minlength=4)
        assert np.all(np.abs(counts - n * np.array([0.1, 0.2, 0.3, 0.4])) <= 1)
    assert round_sizes(1005, 10, None) == [200, 400, 1005]
    assert round_sizes(640, 4, 40) == [40, 80, 160, 320, 640]
    assert round_sizes(76, 4, None) == [76]
    assert validation_sizes(1000, [200, 400, 800, 2000]) == [400, 800, 1000, 1000]
    assert validation_sizes(1000, [200, 400, 800, 2000], grow=False) == [1000] * 4
    assert validation_sizes(5000, [200, 400, 1005]) == [400, 800, 5000]  # all at the last size
    view = SplitView("train", None, np.arange(100, 200), labels)
    chunks = nested_chunks(view, [20, 50, 100], 0)
    assert [len(c) for c in chunks] == [20, 30, 50]
    assert sorted(np.concatenate([c.indices for c in chunks])) == list(range(100, 200))
    assert all(np.array_equal(c.labels, labels[c.indices - 100]) for c in chunks)
    assert min_val_items(0.9, 2, 1) == 4  # 1/2^4 < 3/4 * 0.1
    assert smallest_epsilon(252, 0.9, 10, 3) > 1 > smallest_epsilon(2000, 0.9, 10, 3)


def test_probes_never_see_the_validation_items():
    """The probe chooses C on a carve of the training rows it is given: the items it scores are only predicted."""
    from benchbone.selection.probes import fit

    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 6)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    X[np.arange(120), y] += 3
    Xv = rng.standard_normal((50, 6)).astype(np.float32)
    params = {"C": None, "c_min": 1e-3, "c_max": 1e3, "c_steps": 4, "max_iter": 200, "tol": 1e-6, "standardize": True,
              "dtype": "float64"}
    (_,), info1, _ = fit("linear-probe", X, y, [Xv], 3, params, 0)
    (_,), info2, _ = fit("linear-probe", X, y, [Xv + 100 * rng.standard_normal(Xv.shape).astype(np.float32)], 3, params, 0)
    assert info1["C"] == info2["C"]  # what is scored does not change what is chosen
    assert "held-out training images" in info1["C_chosen_on"]
    (_,), info3, _ = fit("linear-probe", X, y, [Xv], 3, {**params, "C": 1.0}, 0)
    assert info3["C_chosen_on"] == "fixed (--set C)"
    (p4,), _, predict = fit("knn", X, y, [X], 3, {"k": 5, "temperature": 0.07}, 0)
    assert (p4 == y).mean() > 0.8 and (predict(X) == p4).all()


def test_a_sweep_around_the_previous_c_chooses_the_full_sweeps_c():
    """From any starting C the window walks to the C the whole sweep chooses (the validation accuracy of the C grid
    on real digits pixels rises to one best and falls), fitting fewer strengths when it starts near it; the
    refit from the carve's fit reaches scikit-learn's solution at that C."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from benchbone.selection.probes import linear_probe

    X, y = load_digits(return_X_y=True)
    X, y = X[:600].astype(np.float32), y[:600]
    params = {"C": None, "c_min": 1e-4, "c_max": 1e4, "c_steps": 9, "max_iter": 1000, "tol": 1e-8,
              "standardize": True, "dtype": "float64"}
    _, whole = linear_probe(X, y, 10, params, 0)
    assert whole["strengths_tried"] == 9 and "around" not in whole
    for around in (1e-4, whole["C"], 1e4):
        predict, info = linear_probe(X, y, 10, params, 0, around=around)
        assert info["C"] == whole["C"] and info["around"] == around
    assert linear_probe(X, y, 10, params, 0, around=whole["C"])[1]["strengths_tried"] <= 4
    Z = (X - X.mean(0)) / np.maximum(X.std(0, ddof=1), 1e-6)  # the probe standardises with the n - 1 deviation
    sk = LogisticRegression(C=whole["C"], tol=1e-10, max_iter=10_000).fit(Z, y)
    assert (predict(X) == sk.predict(Z)).all()


@pytest.mark.parametrize("C", [0.05, 1.0, 100.0])
def test_a_probe_with_fewer_rows_than_features_fits_in_their_span_as_scikit_learn_fits_all(C):
    """60 rows of 300 features, each of 100 pixels three times (an image's channels): the probe fits in the rows'
    span (rank 59 after centring) and predicts what scikit-learn's fit on all 300 standardised features does."""
    from sklearn.linear_model import LogisticRegression

    from benchbone.selection.probes import linear_probe

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    base = rng.standard_normal((60, 100)) + 0.7 * np.eye(3)[y] @ rng.standard_normal((3, 100))
    X = np.concatenate([base, 2 * base + 1, base - 3], axis=1).astype(np.float32)
    new = rng.standard_normal((400, 100))
    new = np.concatenate([new, 2 * new + 1, new - 3], axis=1).astype(np.float32)
    params = {"C": C, "max_iter": 5000, "tol": 1e-10, "standardize": True, "dtype": "float64"}
    predict, info = linear_probe(X, y, 3, params, 0)
    assert info["row_space"] == "59 of 300 dimensions" and info["converged"]
    mean, std = X.astype(np.float64).mean(0), np.maximum(X.astype(np.float64).std(0, ddof=1), 1e-6)
    sk = LogisticRegression(C=C, tol=1e-12, max_iter=100_000).fit((X - mean) / std, y)
    assert (predict(new) == sk.predict((new - mean) / std)).all() and (predict(X) == y).mean() > 0.9


@pytest.mark.slow
def test_python_api_returns_a_result(tmp_path):
    import benchbone

    result = benchbone.select("test/blobs-large", ["test/tiny-cnn", "pixels:4", "pixels:8"], epsilon=5,
                              plugins=["benchbone.testing", PLUGIN], out=tmp_path / "sel", cache_dir=tmp_path / "cache",
                              estimators=["logme"], screen_size=40, budget="1h")
    assert result.chosen in ("test/tiny-cnn", "pixels:4", "pixels:8")
    frame = result.to_frame()
    assert set(frame["candidate"]) == {"test/tiny-cnn", "pixels:4", "pixels:8"}
    assert frame.iloc[0]["status"] == "chosen"
    assert json.loads((tmp_path / "sel" / "select.json").read_text())["budget_s"] == 3600
    with pytest.raises(UsageError):
        benchbone.select("test/blobs-large", ["pixels:4", "pixels:8"], plugins=["benchbone.testing"], nonsense=1)


@pytest.mark.slow
def test_a_budget_that_runs_out_says_so_and_gives_the_survivors(selected, capsys):
    """Enough for the constraints and the screen (the stored seconds of the run above), not for a round."""
    first = selected["json"]
    assert len(first["rounds"]) >= 2, first["statement"]
    screen = first["spent_s"] - sum(r["seconds"] for r in first["rounds"]) - sum(
        c["test"]["seconds"] for c in first["candidates"].values() if c["test"])
    budget = screen + first["rounds"][0]["seconds"] + 0.5 * first["rounds"][1]["seconds"]
    # the test reserve: the slowest kept candidate's test extraction at its measured throughput
    kept = [c for c in first["candidates"].values() if c["status"] in ("chosen", "survivor", "eliminated")]
    budget += max(96 / c["constraints"]["throughput_ips"] for c in kept)
    code, _, err = run(capsys, *selected["args"][:-4], "--cache-dir", selected["root"] / "cache",
                         "--out", selected["root"] / "budget", "--budget", f"{budget:.3f}s")
    assert code == 0, err
    data = json.loads((selected["root"] / "budget" / "select.json").read_text())
    assert data["reason"] == "budget" and not data["guaranteed"]
    assert "budget ran out" in data["statement"] and "no guarantee" in data["statement"]
    assert len(data["survivors"]) >= 2
