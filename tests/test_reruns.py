"""Instant reruns: what a warm cell no longer waits for (the validation carve's scikit-learn, the confusion PNG),
and that nothing is lost by not waiting."""
from __future__ import annotations

import json
import sys

from benchbone.records import write_record

TINY = ["run", "-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-s", "knn", "-q"]

WATCHER = '''
import json
import os
from pathlib import Path

from benchbone import hookimpl
@hookimpl
def benchbone_record_written(record, run_dir):
    png = record["artefacts"].get("confusion_png")
    seen = {"leaderboard": (Path(run_dir) / "leaderboard.csv").is_file(), "pending": "artefacts_pending" in record,
            "png": png is not None and (Path(run_dir) / png).stat().st_size > 0}
    with open(os.environ["BENCHBONE_TEST_LOG"], "a") as f:
        f.write(json.dumps(seen) + "\\n")
'''


def records(run_dir) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (run_dir / "records").glob("*.json")), key=lambda r: r["seed"])


def test_a_warm_rerun_carves_its_validation_split_without_scikit_learns_splitter(cli, tmp_path, monkeypatch):
    args = [*TINY, "--cache-dir", tmp_path / "cache"]
    assert cli(*args, "--out", tmp_path / "a").code == 0
    monkeypatch.setitem(sys.modules, "sklearn.model_selection", None)  # importing it now fails
    result = cli(*args, "--out", tmp_path / "b")
    assert result.code == 0, result.err
    (first,), (second,) = records(tmp_path / "a"), records(tmp_path / "b")
    assert second["data"]["indices_digest"] == first["data"]["indices_digest"]
    assert second["metrics"] == first["metrics"]


def test_the_confusion_png_is_drawn_after_the_leaderboard_and_then_logged(cli, tmp_path, monkeypatch):
    """Each cell's record is logged once, complete with its PNG; the last cell's comes after the leaderboard."""
    (tmp_path / "watcher.py").write_text(WATCHER)
    monkeypatch.setenv("BENCHBONE_TEST_LOG", str(tmp_path / "log.jsonl"))
    result = cli(*TINY, "-p", tmp_path / "watcher.py", "--seeds", "2", "--out", tmp_path / "r")
    assert result.code == 0, result.err
    seen = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert seen == [{"leaderboard": False, "pending": False, "png": True},  # before the second cell ran
                    {"leaderboard": True, "pending": False, "png": True}]
    for record in records(tmp_path / "r"):
        assert "artefacts_pending" not in record and record["artefacts_missing"] == {}
        assert (tmp_path / "r" / record["artefacts"]["confusion_png"]).read_bytes().startswith(b"\x89PNG")


def test_a_record_left_without_its_png_by_a_killed_run_is_completed_by_the_next(cli, tmp_path):
    args = [*TINY, "--out", tmp_path / "r"]
    assert cli(*args).code == 0
    (record,) = records(tmp_path / "r")
    png = tmp_path / "r" / record["artefacts"].pop("confusion_png")
    png.unlink()
    del record["digest"]
    write_record(tmp_path / "r", {**record, "artefacts_pending": ["confusion_png"]})  # killed before the PNG
    result = cli(*args)
    assert result.code == 0, result.err
    (again,) = records(tmp_path / "r")
    assert "artefacts_pending" not in again and png.read_bytes().startswith(b"\x89PNG")
    assert again["artefacts"]["confusion_png"] == str(png.relative_to(tmp_path / "r"))
    assert again["metrics"] == record["metrics"] and again["finished_at"] == record["finished_at"]  # not run again
