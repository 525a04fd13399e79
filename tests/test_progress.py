"""What a run says on stderr while it runs (benchbone.execution.progress): a line per cell start and end with a
counter and the time left; per-batch bars only on a terminal; JSON events with --progress json; -q as the README
says; and warnings that many cells share (SummarisedWarning) shown once per run, with their number of cells."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import warnings

import pytest
from test_bad_inputs import FAILING  # a strategy plugin whose every cell fails

import benchbone
from benchbone.api import Cell
from benchbone.errors import SummarisedWarning
from benchbone.execution import progress as progress_module
from benchbone.execution.progress import Progress, duration, time_left

TINY = ["-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs"]


def events(err: str) -> list[dict]:
    """Every line of ``err`` as a JSON event (a line that is not one fails the test)."""
    return [json.loads(line) for line in err.splitlines()]


def test_lines_have_a_counter_and_the_time_left_and_no_bars_when_stderr_is_not_a_terminal(cli, tmp_path):
    result = cli("run", *TINY, "-s", "knn", "--seeds", "3", "--out", tmp_path / "run")
    assert result.code == 0
    lines = result.err.splitlines()
    assert lines[0] == f"benchbone: 3 cell(s) on cpu, run directory {tmp_path / 'run'}"
    assert lines[1] == "  started test/tiny-cnn x test/blobs x knn (seed 0), cell 1 of 3"
    assert lines[2].startswith("  done test/tiny-cnn x test/blobs x knn (seed 0), cell 1 of 3, ")
    assert "s left: top1=" in lines[2]  # two cells to go, timed from the first
    assert lines[3].startswith("  started test/tiny-cnn x test/blobs x knn (seed 1), cell 2 of 3, about ")
    assert lines[6].startswith("  done test/tiny-cnn x test/blobs x knn (seed 2), cell 3 of 3, ") and "left" not in lines[6]
    assert lines[-1].startswith(f"benchbone: wrote {tmp_path / 'run'}/{{leaderboard.csv")
    assert "\r" not in result.err and "it/s" not in result.err  # a log file gets lines, not bars
    again = cli("run", *TINY, "-s", "knn", "--seeds", "4", "--out", tmp_path / "run")
    lines = again.err.splitlines()
    assert lines[0].endswith("(3 finished before, not run again)")
    assert lines[1].startswith("  cached test/tiny-cnn x test/blobs x knn (seed 0), cell 1 of 4: ")
    assert lines[4] == "  started test/tiny-cnn x test/blobs x knn (seed 3), cell 4 of 4"


def test_bars_are_drawn_only_when_stderr_is_a_terminal(tmp_path):
    """A real pseudo-terminal as stderr: tqdm's bars (carriage returns) and the lines; --progress plain: lines only."""
    def run(*extra: str) -> str:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # tqdm draws nothing 0 wide
        env = {**os.environ, "BENCHBONE_CACHE_DIR": str(tmp_path / "cache"), "BENCHBONE_LOAD_PLUGINS": ""}
        process = subprocess.Popen([sys.executable, "-m", "benchbone.cli", "run", *TINY, "-s", "knn", *extra],
                                   stdout=subprocess.DEVNULL, stderr=follower, env=env, cwd=tmp_path)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        assert process.wait(timeout=300) == 0
        return b"".join(chunks).decode("utf-8", "replace")

    shown = run("--out", str(tmp_path / "a"))
    assert "\r" in shown.replace("\r\n", "\n") and "features train" in shown  # a bar, drawn and cleared
    assert "started test/tiny-cnn x test/blobs x knn (seed 0), cell 1 of 1" in shown
    plain = run("--out", str(tmp_path / "b"), "--progress", "plain")
    assert "\r" not in plain.replace("\r\n", "\n") and "cell 1 of 1" in plain


def test_json_events_parse_and_say_started_finished_cached_and_failed(cli, tmp_path):
    (tmp_path / "failing.py").write_text(FAILING)
    args = ["run", *TINY, "-p", tmp_path / "failing.py", "-s", "knn", "-s", "fail/always", "--progress", "json",
            "--out", tmp_path / "run"]
    first = cli(*args)
    assert first.code == 1
    got = events(first.err)
    assert [e["event"] for e in got] == ["run_started", "cell_started", "cell_finished", "cell_started", "cell_failed",
                                         "run_finished"]
    assert got[0]["total"] == 2 and got[0]["to_run"] == 2 and got[0]["device"] == "cpu"
    finished, failed = got[2], got[4]
    assert (finished["index"], finished["total"], finished["strategy"]) == (1, 2, "knn")
    assert finished["seconds"] >= 0 and finished["eta_s"] >= 0 and 0 <= finished["metrics"]["top1"] <= 1
    assert finished["cell"] == got[1]["cell"] and len(finished["cell"]) == 16
    assert (failed["index"], failed["strategy"]) == (2, "fail/always")
    assert failed["error"].endswith("RuntimeError: this strategy always fails")
    assert got[-1]["ok"] == 1 and got[-1]["failed"] == 1 and got[-1]["cached"] == 0
    assert all(isinstance(e["time"], float) for e in got)
    again = events(cli(*args, "-q").err)  # -q leaves the events to the program that asked for them
    assert [e["event"] for e in again] == ["run_started", "cell_cached", "cell_started", "cell_failed", "run_finished"]
    assert again[0]["to_run"] == 1 and again[1]["cell"] == finished["cell"]


def test_q_hides_the_progress_but_not_a_failed_cell(cli, tmp_path):
    assert cli("run", *TINY, "-s", "knn", "-q", "--out", tmp_path / "a").err == ""
    (tmp_path / "failing.py").write_text(FAILING)
    result = cli("run", *TINY, "-p", tmp_path / "failing.py", "-s", "knn", "-s", "fail/always", "--seeds", "2", "-q",
                 "--out", tmp_path / "b")
    assert result.code == 1
    lines = result.err.splitlines()
    assert len(lines) == 2 and all(line.startswith("  FAILED test/tiny-cnn x test/blobs x fail/always (seed ")
                                   for line in lines)
    assert ", cell 2 of 4, " in lines[0] and lines[0].endswith("RuntimeError: this strategy always fails")
    assert "leaderboard" not in result.err and "test/tiny-cnn" in result.out  # the leaderboard is still printed


def test_many_probe_cells_give_the_float32_warning_once_with_their_count(cli, tmp_path, monkeypatch):
    import benchbone_plugins.linear_probe
    from benchbone.compute import sweep

    monkeypatch.setattr(sweep, "stalled", lambda fit, tol: True)  # every point unresolved: every cell warns
    monkeypatch.setattr(benchbone_plugins.linear_probe, "_FITTED", {})  # no probe an earlier test fitted is reused
    args = ["run", *TINY, "-s", "linear-probe", "--seeds", "3"]
    for steps, quiet in ((3, ()), (4, ("-q",))):  # other sweeps: the probe reuses a fit it has made in this process
        result = cli(*args, "--set", f"c_steps={steps}", *quiet, "--out", tmp_path / f"run{len(quiet)}")
        assert result.code == 0
        said = [line for line in result.err.splitlines() if "C sweep" in line]
        assert len(said) == 1, result.err
        assert said[0].startswith("benchbone: warning: 3 cell(s) stopped a fit of the C sweep at float32's limit")
        assert said[0].endswith("--set linear-probe.dtype=float64 settles it") and "docs/scale-out.md" in said[0]
        assert "could not hold" not in result.err  # the per-cell detail is not repeated
    assert result.err == said[0] + "\n"  # -q: the summary alone
    records = [json.loads(p.read_text()) for p in (tmp_path / "run1" / "records").glob("*.json")]
    assert len(records) == 3 and all(not point["resolved"]  # each record still says it
                                     for r in records for point in r["strategy_info"]["sweep"])
    got = events(cli(*args, "--set", "c_steps=5", "--progress", "json", "--out", tmp_path / "json").err)
    finished = [e for e in got if e["event"] == "cell_finished"]
    assert all(len(e["warnings"]) == 1 and "could not hold" in e["warnings"][0] for e in finished)
    summary = [e for e in got if e["event"] == "warning"]
    assert len(summary) == 1 and summary[0]["count"] == 3 and sorted(summary[0]["cells"]) == sorted(
        e["cell"] for e in finished)


def test_other_warnings_pass_through_and_become_events_under_json():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Progress("plain").watch():
            warnings.warn("a damaged cache file", UserWarning)
    assert [str(w.message) for w in caught] == ["a damaged cache file"]
    stream = _Stream()
    reporter = Progress("json", stream=stream)
    with reporter.watch():
        warnings.warn("a damaged cache file", UserWarning)
        warnings.warn(SummarisedWarning("one cell's detail", "{count} cell(s) share it"))
        warnings.warn(SummarisedWarning("another's detail", "{count} cell(s) share it"))
        reporter.summarise()
    said = events(stream.text)
    assert said[0]["message"] == "a damaged cache file" and said[0]["category"] == "UserWarning"
    assert said[-1]["message"] == "1 cell(s) share it"  # outside a cell: counted as one


def test_the_time_left_comes_from_the_measured_cells(monkeypatch):
    clock = iter([0.0, 0.0, 0.0, 60.0, 60.0, 180.0, 180.0, 180.0, 180.0, 200.0, 200.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    cells = [Cell("b", True, "d", "s", seed, (), (), ("top1",)) for seed in range(5)]
    stream = _Stream()
    reporter = Progress("plain", stream=stream)
    reporter.begin(cells, "cpu", "out", finished={cells[2].id})
    for cell, how in zip(cells[:3], ("ok", "ok", "cached")):
        if how != "cached":
            reporter.start(cell)
        reporter.finish(_record(cell), how)
    lines = stream.text.splitlines()
    assert lines[0] == "benchbone: 5 cell(s) on cpu, run directory out (1 finished before, not run again)"
    assert lines[2] == "  done b x d x s (seed 0), cell 1 of 5, 1 min 00 s, about 3 min left: top1=0.5000"  # 60 s x 3 to run
    assert lines[3] == "  started b x d x s (seed 1), cell 2 of 5, about 3 min left"
    assert lines[4] == "  done b x d x s (seed 1), cell 2 of 5, 2 min 00 s, about 3 min left: top1=0.5000"  # 90 s x 2
    assert lines[5] == "  cached b x d x s (seed 2), cell 3 of 5: top1=0.5000"
    assert reporter.eta() == 180.0


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (0.42, 12.4, 185, 3725)] == ["0.4 s", "12 s", "3 min 05 s", "1 h 02 min"]
    assert [time_left(s) for s in (0.2, 40, 725, 7500)] == ["about 1 s", "about 40 s", "about 12 min", "about 2 h 05 min"]


def test_benchbone_run_takes_progress(capsys, tmp_path):
    common = dict(plugins=["benchbone.testing"], out=tmp_path / "run", cache_dir=tmp_path / "cache")
    benchbone.run("test/tiny-cnn", "test/blobs", "knn", **common)
    assert capsys.readouterr().err == ""  # quiet by default
    benchbone.run("test/tiny-cnn", "test/blobs", "knn", seeds=2, progress="json", **common)
    captured = capsys.readouterr()
    assert [e["event"] for e in events(captured.err)] == ["run_started", "cell_cached", "cell_started",
                                                         "cell_finished", "run_finished"]
    assert captured.out == ""  # quiet still keeps the leaderboard off stdout
    with pytest.raises(benchbone.UsageError, match="progress='bars': use one of auto, plain, json"):
        benchbone.run("test/tiny-cnn", "test/blobs", "knn", progress="bars", **common)


class _Stream:
    def __init__(self):
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _record(cell: Cell) -> dict:
    return {"cell_id": cell.id, "backbone": cell.backbone, "dataset": cell.dataset, "strategy": cell.strategy,
            "seed": cell.seed, "metrics": {"top1": 0.5}, "status": "ok"}
