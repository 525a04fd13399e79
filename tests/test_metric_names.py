"""Any metric name works in every output (issue 28, item 3): names with ``/``, ``-``, ``.``, spaces and non-ASCII
letters, over two datasets and three backbones (the CD diagrams need three), through the CLI, sorted by each name."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchbone.records import write_record

NAMES = ("mean_third/brier", "top-1 acc", "ece.15", "précision")
REGISTRABLE = ("mean_third/brier", "ece.15")  # registered names hold only letters, digits and . _ - / +
PLUGIN = """
import numpy as np
from benchbone import hookimpl


def brier_items(y_true, y_pred, y_score):
    onehot = np.eye(y_score.shape[1])[y_true]
    return ((y_score - onehot) ** 2).sum(axis=1) / 3


@hookimpl
def benchbone_register_metrics(register):
    register("mean_third/brier", lambda t, p, s: float(brier_items(t, p, s).mean()), higher_is_better=False,
             per_item=brier_items, needs_scores=True, default=False)
    register("ece.15", lambda t, p, s: float(np.mean(t != p)), higher_is_better=False, resample=True, default=False)
"""
BACKBONES, DATASETS, CLASSES = ("alpha", "beta", "gamma"), ("blobs", "digits"), ["cat", "dog", "frog"]


def record(run_dir, backbone, dataset, seed, values):
    cell = f"{backbone}-{dataset}-{seed}"
    folder = run_dir / "artefacts" / cell
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(cell))
    y_true = np.arange(30) % 3
    y_score = rng.random((30, 3))
    np.savez(folder / "predictions.npz", y_true=y_true, y_pred=y_score.argmax(1), y_score=y_score)
    lower = {"mean_third/brier": True, "ece.15": True}
    return {
        "schema": 1, "cell_id": cell, "backbone": backbone, "dataset": dataset, "strategy": "linear-probe",
        "seed": seed, "status": "ok", "error": None, "params": {"C": 1.0},
        "metrics": values, "higher_is_better": {n: not lower.get(n, False) for n in values},
        "percent": {n: n in ("top-1 acc", "précision") for n in values},
        "command": "benchbone run", "device": "cpu", "machine": "x86_64", "host": "testhost",
        "versions": {"python": "3.11", "benchbone": "0.1.0"},
        "timings": {"total_s": 1.0}, "ci": {},
        "backbone_info": {"weights": "w", "params_m": 1.0 + len(backbone), "gmacs": 0.1 * len(backbone),
                          "images_per_s": 100.0 * len(backbone), "num_features": 8},
        "data": {"train": 60, "val": 10, "test": 30, "num_classes": 3, "indices_digest": {"test": "same"}},
        "artefacts": {"predictions": f"artefacts/{cell}/predictions.npz"},
        "started_at": "2026-11-28T10:00:00+00:00", "finished_at": "2026-11-28T10:01:00+00:00",
    }


@pytest.fixture
def run_dir(tmp_path):
    out = tmp_path / "run"
    for b, backbone in enumerate(BACKBONES):
        for d, dataset in enumerate(DATASETS):
            for seed in (0, 1):
                values = {name: 0.3 + 0.1 * b + 0.05 * d + 0.01 * seed + 0.02 * i for i, name in enumerate(NAMES)}
                write_record(out, record(out, backbone, dataset, seed, values))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_any_metric_name_works_in_every_output(name, run_dir, cli, tmp_path):
    plugin = tmp_path / "names_plugin.py"
    plugin.write_text(PLUGIN, encoding="utf-8")

    def ok(*args):
        result = cli(*args, "-p", plugin)
        assert result.code == 0, (args, result.err)
        assert "Traceback" not in result.err, (args, result.err)
        return result

    sort = ["--sort-by", name]
    for fmt in ("table", "md", "csv", "json", "html"):
        out = tmp_path / f"board.{fmt}"
        ok("leaderboard", run_dir, *sort, "--format", fmt, "-o", out)
        if fmt in ("md", "csv"):
            assert name in out.read_text(encoding="utf-8"), fmt
    rows = json.loads((tmp_path / "board.json").read_text(encoding="utf-8"))
    assert len(rows) == 6 and all(name in row for row in rows)
    assert name in ok("leaderboard", run_dir, *sort).out
    assert "alpha" in ok("leaderboard", run_dir, "--pivot", name).out
    ok("leaderboard", run_dir, *sort, "--plot", tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 0
    ok("leaderboard", run_dir, *sort, "--cd-diagrams", tmp_path / "cd")
    assert (tmp_path / "cd" / "cd-linear-probe.svg").is_file()
    ok("report", run_dir, *sort, "-o", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "alpha" in page and "beta" in page
    for fmt in ("table", "json", "html"):
        if name in REGISTRABLE:
            ok("compare", run_dir, *sort, "--format", fmt, "-o", tmp_path / f"compare.{fmt}")
            assert "alpha" in (tmp_path / f"compare.{fmt}").read_text(encoding="utf-8")
        else:  # no plugin can register it, so no paired test can recompute it: one line, not a traceback
            result = cli("compare", run_dir, *sort, "--format", fmt, "-o", tmp_path / f"compare.{fmt}")
            assert result.code == 2 and "is not registered here" in result.err and "Traceback" not in result.err
