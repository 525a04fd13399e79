"""Low-data learning curves: a list value sweeps a parameter (one cell per value), plotted against it."""
from __future__ import annotations

import json

from benchbone.planning.grid import GridSpec, expand
from benchbone.plugins import get_plugin_manager


def test_a_list_sweeps_a_single_valued_parameter():
    registries = get_plugin_manager(entrypoints=False, extra=["benchbone.testing"]).registries()
    cells = expand(GridSpec(["test/tiny-cnn"], ["test/blobs"], ["linear-probe", "knn"], seeds=2,
                            overrides={"shots": [1, 2, 5, 2], "k": [3, 7]}), registries)
    probe = sorted((dict(c.params)["shots"], c.seed) for c in cells if c.strategy == "linear-probe")
    assert probe == [(1, 0), (1, 1), (2, 0), (2, 1), (5, 0), (5, 1)]  # repeats dropped, every seed
    assert sorted({dict(c.params)["k"] for c in cells if c.strategy == "knn"}) == [3, 7]
    assert len({c.id for c in cells}) == len(cells) == 10


def test_shots_curve_runs_and_plots(cli, tmp_path):
    result = cli("run", "-p", "benchbone.testing", "-b", "test/tiny-cnn", "-b", "pixels:4", "-d", "test/blobs",
                 "-s", "linear-probe", "--set", "shots=1,4,16", "--set", "c_steps=3", "--seeds", "2", "-q",
                 "--out", tmp_path / "run")
    assert result.code == 0, result.err
    board = json.loads((tmp_path / "run" / "leaderboard.json").read_text())
    assert sorted((row["backbone"], json.loads(row["params"])["shots"], row["seeds"]) for row in board) == [
        (b, s, 2) for b in ("pixels:4", "test/tiny-cnn") for s in (1, 4, 16)]
    records = [json.loads(p.read_text()) for p in (tmp_path / "run" / "records").glob("*.json")]
    assert {r["strategy_info"]["fit_rows"] for r in records} == {4, 16, 64}  # 4 classes x shots
    plotted = cli("leaderboard", tmp_path / "run", "--plot-curve", f"shots={tmp_path / 'curve.png'}",
                  "-o", tmp_path / "lb.md")
    assert plotted.code == 0 and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    bad = cli("leaderboard", tmp_path / "run", "--plot-curve", f"layers={tmp_path / 'x.png'}")
    assert bad.code == 2 and "give PARAM=FILE.png with a parameter of these rows" in bad.err
