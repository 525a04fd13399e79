import math

import pytest

from benchbone.errors import UsageError
from benchbone.reporting import leaderboard


def record(backbone, seed, top1, loss, dataset="d", strategy="s", status="ok", error=None):
    return {
        "cell_id": f"{backbone}-{dataset}-{strategy}-{seed}", "backbone": backbone, "dataset": dataset,
        "strategy": strategy, "seed": seed, "status": status, "params": {}, "error": error,
        "metrics": {} if status != "ok" else {"top1": top1, "loss": loss},
        "higher_is_better": {"top1": True, "loss": False}, "percent": {"top1": True, "loss": False},
        "timings": {"total_s": 1.0}, "backbone_info": {"num_features": 8},
    }


RECORDS = [
    record("a", 0, 0.80, 0.5), record("a", 1, 0.90, 0.4),
    record("b", 0, 0.95, 0.9), record("b", 1, 0.93, 0.8),
    record("c", 0, None, None, status="failed", error="RuntimeError: boom"),
]


def test_rows_are_ranked_by_the_metric_and_its_direction():
    board = leaderboard.build(RECORDS)
    assert list(board["backbone"]) == ["b", "a", "c"]
    assert list(board["rank"]) == [1, 2, 3]
    by_loss = leaderboard.build(RECORDS, sort_by="loss")
    assert list(by_loss["backbone"]) == ["a", "b", "c"]  # lower is better


def test_seeds_are_averaged_with_sample_std():
    row = leaderboard.build(RECORDS).set_index("backbone").loc["a"]
    assert row["top1"] == pytest.approx(0.85) and row["top1_std"] == pytest.approx(math.sqrt(0.005))
    assert row["seeds"] == 2


def test_failed_cells_are_shown_with_their_error():
    board = leaderboard.build(RECORDS)
    failed = board.set_index("backbone").loc["c"]
    assert failed["status"] == "failed" and "boom" in failed["error"]
    text = leaderboard.to_text(board, "table")
    assert "failed: RuntimeError: boom" in text


def test_ranks_restart_for_each_dataset_and_strategy():
    board = leaderboard.build([*RECORDS, record("a", 0, 0.1, 1.0, dataset="e"), record("b", 0, 0.2, 1.0, dataset="e")])
    e = board[board.dataset == "e"]
    assert list(e["backbone"]) == ["b", "a"] and list(e["rank"]) == [1, 2]


def test_formats():
    board = leaderboard.build(RECORDS)
    assert "85.00 ± 7.07" in leaderboard.to_text(board, "md")
    assert "top1 ↑ %" in leaderboard.to_text(board, "table") and "loss ↓" in leaderboard.to_text(board, "table")
    assert leaderboard.to_text(board, "csv").splitlines()[0].startswith("rank,dataset,strategy,backbone")
    assert '"backbone":"b"' in leaderboard.to_text(board, "json").replace(" ", "")
    with pytest.raises(UsageError, match="unknown format"):
        leaderboard.to_text(board, "xml")
    with pytest.raises(UsageError, match="cannot sort by 'f2'"):
        leaderboard.build(RECORDS, sort_by="f2")


def test_markdown_page_names_the_command():
    page = leaderboard.markdown_page(leaderboard.build(RECORDS), [dict(r, command="benchbone run -b a") for r in RECORDS])
    assert "    benchbone run -b a" in page


def scored(backbone, top1, ci, dataset="d", strategy="s", gmacs=1.0, ips=100.0):
    r = record(backbone, 0, top1, 0.5, dataset=dataset, strategy=strategy)
    r.update(ci={"top1": list(ci)}, timings={"total_s": 1.0, "features_images_per_s": ips},
             backbone_info={"num_features": 8, "gmacs": gmacs, "params_m": 1.0}, device="cpu")
    return r


TIES = [scored("a", 0.90, (0.88, 0.92)), scored("b", 0.89, (0.87, 0.91)), scored("c", 0.80, (0.78, 0.82)),
        scored("a", 0.50, (0.45, 0.55), dataset="e"), scored("b", 0.70, (0.66, 0.74), dataset="e")]


def test_rows_without_predictions_are_not_comparable_with_the_leader():
    board = leaderboard.build(TIES).set_index(["dataset", "backbone"])  # no run directory: no predictions.npz
    assert board.loc[("d", "a"), "leader"] and not board.loc[("d", "b"), "tied"]
    assert board.loc[("e", "b"), "leader"] and "no finished cell" not in board.loc[("e", "a"), "note"]
    assert not board["comparable"].any() and "no predictions.npz" in board.loc[("d", "b"), "note"]
    assert board.loc[("d", "b"), "top1_ci_low"] == pytest.approx(0.87)
    md = leaderboard.to_text(leaderboard.build(TIES), "md")
    assert "[87.00, 91.00]" in md and "| leader, not comparable" in md and "| not comparable" in md


def test_seeds_average_their_interval_bounds():
    two = [scored("a", 0.9, (0.8, 0.9)), dict(scored("a", 0.8, (0.6, 0.7)), seed=1, cell_id="a1")]
    row = leaderboard.build(two).iloc[0]
    assert (row["top1_ci_low"], row["top1_ci_high"]) == (pytest.approx(0.7), pytest.approx(0.8))


def test_pivot_is_backbones_by_datasets():
    table = leaderboard.pivot(leaderboard.build(TIES), "top1")
    assert list(table.columns) == ["d", "e"] and table.loc["b", "e"] == pytest.approx(0.70)
    assert "89.00" in leaderboard.pivot_text(table, "md")
    with pytest.raises(UsageError, match="pass one of top1, loss"):
        leaderboard.pivot(leaderboard.build(TIES), "f1")
    both = leaderboard.build([*TIES, scored("a", 0.3, (0.2, 0.4), strategy="t")])
    with pytest.raises(UsageError, match="pass --strategy with one of s, t"):
        leaderboard.pivot(both, "top1")
    assert list(leaderboard.pivot(both, "top1", "t").index) == ["a"]


def test_plot_writes_a_png(tmp_path):
    path = leaderboard.plot(leaderboard.build(TIES), tmp_path / "board.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_front():
    from benchbone.reporting.presentation import pareto_front

    assert list(pareto_front([1, 2, 3, 2], [0.5, 0.7, 0.6, 0.4])) == [True, True, False, False]
    assert list(pareto_front([10, 20], [0.5, 0.7], cost_lower_is_better=False)) == [False, True]


def test_cells_write_artefacts_listed_in_their_records(run_tiny_benchmark, tmp_path, capsys):
    import json

    import numpy as np
    import pandas as pd

    from benchbone.cli import main

    board = run_tiny_benchmark(overrides={"linear-probe.C": 1.0, "linear-probe.max_iter": 20,
                                          "train_per_class": 4, "test_per_class": 5})
    run = tmp_path / "run"
    record = json.loads(next((run / "records").glob("*.json")).read_text())
    assert record["data"]["test"] == 20 and record["features"]["train"]["images"] < 96  # only the rows read
    assert set(record["artefacts"]) == {"confusion_csv", "per_class_csv", "confusion_png", "predictions"}
    assert all((run / p).is_file() for p in record["artefacts"].values())
    saved = np.load(run / record["artefacts"]["predictions"], allow_pickle=False)
    matrix = pd.read_csv(run / record["artefacts"]["confusion_csv"], index_col=0)
    assert matrix.to_numpy().sum() == len(saved["y_true"]) == record["data"]["test"]
    assert np.trace(matrix.to_numpy()) / matrix.to_numpy().sum() == pytest.approx(record["metrics"]["top1"])
    per_class = pd.read_csv(run / record["artefacts"]["per_class_csv"])
    assert list(per_class.columns) == ["class", "support", "accuracy"]
    low, high = record["ci"]["top1"]
    assert low <= record["metrics"]["top1"] <= high
    assert "git_commit" in record and record["timings"]["features_images_per_s"] > 0
    assert record["resources"]["peak_mem_mb"] > 0 and board["images_per_s"].notna().all()

    capsys.readouterr()
    assert main(["leaderboard", str(run), "--pivot", "top1", "--plot", str(tmp_path / "b.png")]) == 0
    assert "test/tiny-cnn" in capsys.readouterr().out and (tmp_path / "b.png").stat().st_size > 0
    assert main(["leaderboard", str(run), "--pivot", "top1", "-f", "md"]) == 0
    assert "Versions: " in capsys.readouterr().out  # a published pivot says how it was made
    assert main(["leaderboard", str(run), "--strategy", "knn"]) == 2
    assert "pass one of them too" in capsys.readouterr().err


def test_feature_throughput_counts_a_shared_extraction_once():
    from benchbone.execution.harness import feature_timings

    train = {"source": "train", "images": 300, "seconds": 3.0, "cached": False}
    timed = feature_timings({"train": train, "val": train, "test": {"source": "test", "images": 100, "seconds": 1.0}})
    assert timed == {"features_s": 4.0, "features_images_per_s": 100.0}
    assert feature_timings({}) == {}
