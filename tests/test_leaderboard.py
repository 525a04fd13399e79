import math

import pytest

from benchbone import leaderboard
from benchbone.errors import UsageError


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
