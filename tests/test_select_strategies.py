"""``benchbone select --strategy NAME``: any registered strategy as the exact evaluation, on views that never hold
the validation items; steps kept for a rerun; strategies that cannot be compared item by item refused."""
from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from benchbone.cli import main

HERE = Path(__file__).parent
# 800 training images of the 4-class blobs: a pool of 640, 160 validation items, 96 test images
BASE = ["select", "-p", "benchbone.testing", "-p", HERE / "select_blobs.py", "-p", HERE / "select_recorder.py",
        "-d", "test/blobs-large", "--screen-size", "40", "--estimator", "logme", "--epsilon", "5", "-q"]


def run(args, record: Path | None = None) -> tuple[int, str]:
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        mp.setenv("BENCHBONE_LOAD_PLUGINS", "")
        if record is not None:
            mp.setenv("SELECT_RECORD", str(record))
        code = main([str(a) for a in args])
    return code, err.getvalue()


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One selection with the recording strategy, under a budget (so the cost predictions run)."""
    root = tmp_path_factory.mktemp("strategies")
    args = [*BASE, "-b", "pixels:4", "-b", "pixels:8", "-b", "test/tiny-cnn", "--keep", "3", "--budget", "1h",
            "--strategy", "test-recorder", "--cache-dir", root / "cache", "--out", root / "sel"]
    code, err = run(args, root / "record.jsonl")
    return {"code": code, "err": err, "root": root, "args": args, "records": records(root / "record.jsonl"),
            "json": json.loads((root / "sel" / "select.json").read_text()) if code == 0 else None}


def test_the_strategy_never_sees_the_validation_items(recorded):
    assert recorded["code"] == 0, recorded["err"]
    data, calls = recorded["json"], recorded["records"]
    assert data["strategy"] == "test-recorder" and data["rounds"]
    scored = [r["validation_items"] for r in data["rounds"]]  # a prefix of the validation items, growing
    assert scored == sorted(scored) and scored[0] < data["items"]["validation"]
    rounds = [c for c in calls if len(c["test"]) in scored]
    tests = [c for c in calls if len(c["test"]) == data["items"]["test"]]
    assert len(rounds) == sum(len(r["candidates"]) for r in data["rounds"]) and len(tests) >= 1
    prefixes = {len(c["test"]): set(c["test"]) for c in rounds}
    validation = prefixes[max(prefixes)]
    assert all(prefixes[a] < prefixes[b] for a, b in itertools.pairwise(sorted(prefixes)))
    for call in calls:
        train, val = set(call["train"]), set(call["val"])
        assert call["same_source"]["val"] and not train & val and call["labels_match"]
        assert len(train) + len(val) in data["sizes"] and abs(len(val) / (len(train) + len(val)) - 0.2) < 0.05
        assert call["images"] == len(train)
        assert not (train | val) & validation  # the items scored are never fitted on or chosen with
    for call in rounds:  # the same items for every candidate of a round
        assert call["same_source"]["test"] and set(call["test"]) == prefixes[len(call["test"])]
    for call in tests:
        assert not call["same_source"]["test"]  # at the test step: the test split
    chosen = data["candidates"][data["chosen"]]
    assert chosen["test"]["items"] == data["items"]["test"] and data["spent_s"] > 0


def test_a_rerun_resumes_from_steps_without_running_the_strategy(recorded):
    assert recorded["code"] == 0, recorded["err"]
    sel, record = recorded["root"] / "sel", recorded["root"] / "record.jsonl"
    (sel / "select.json").unlink()
    before = len(records(record))
    code, err = run(recorded["args"], record)
    assert code == 0, err
    assert len(records(record)) == before  # every step read back from OUT/steps/
    again = json.loads((sel / "select.json").read_text())
    for key in ("chosen", "survivors", "rounds", "spent_s", "statement"):
        assert again[key] == recorded["json"][key], key
    assert not (sel / "work").exists() or not any((sel / "work").iterdir())


@pytest.mark.parametrize("strategy, settings", [
    ("finetune", ["--set", "epochs=1", "--set", "lr=0.001", "--set", "batch_size=16"]),
    ("head-sgd", ["--set", "epochs=1"]),
])
def test_a_trained_strategy_runs_on_images(recorded, strategy, settings):
    root = recorded["root"]
    code, err = run([*BASE, "-b", "test/tiny-cnn", "-b", "test/tiny-cnn@random", "--strategy", strategy, *settings,
                     "--cache-dir", root / "cache", "--out", root / strategy])
    assert code == 0, err
    data = json.loads((root / strategy / "select.json").read_text())
    assert data["strategy"] == strategy and data["candidates"][data["chosen"]]["test"]["items"] == 96
    steps = [json.loads(p.read_text()) for p in (root / strategy / "steps").glob("*.json")]
    assert steps and all(s["key"]["strategy"] == strategy and s["key"]["params"]["epochs"] == 1 for s in steps)
    for step in steps:
        assert step["info"]["views"]["val"] == round(0.2 * step["key"]["size"]) and step["info"]["best_epoch"] == 1


@pytest.mark.parametrize("strategy, message", [
    ("retrieval", "--strategy 'retrieval' measures recall_at_1"),
    ("zero-shot", "zero-shot needs a text tower"),
])
def test_a_strategy_that_cannot_be_compared_item_by_item_is_one_line(recorded, strategy, message):
    root = recorded["root"]
    code, err = run([*BASE, "-b", "pixels:4", "-b", "pixels:8", "--strategy", strategy,
                     "--cache-dir", root / "cache", "--out", root / f"bad-{strategy}"])
    assert code == 2, err
    assert message in err and err.count("benchbone: error") == 1 and "Traceback" not in err, err


def test_strategy_views_carve_the_training_rows_only():
    from benchbone.inputs.splits import SplitView
    from benchbone.selection.probes import strategy_views

    labels = np.repeat(np.arange(4), 25)
    chunks = [SplitView("train", None, np.arange(0, 100, 2), labels[::2]), SplitView("train", None, np.arange(1, 100, 2), labels[1::2])]
    scored = SplitView("train", None, np.arange(100, 120), np.zeros(20, dtype=int))
    views = strategy_views(chunks, scored, seed=0)
    assert views["test"] is scored
    assert sorted([*views["train"].indices, *views["val"].indices]) == list(range(100))
    assert np.bincount(views["val"].labels).tolist() == [5, 5, 5, 5]  # a fifth of each class
    assert (views["train"].labels == labels[views["train"].indices]).all()
