"""``benchbone select --executor submitit|ray``: the steps' work runs as jobs, the answer is the local one.

The jobs of submitit's local cluster and of Ray are real processes: the main process is patched so that it
cannot fit a probe or extract a feature, so every step it reads was done by a job. An interrupted run resumes
without dispatching again what its jobs finished. submitit's debug cluster (jobs in this process) lets a test
make chosen jobs fail.
"""
from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import pytest

from benchbone.cli import main

PLUGIN = str(Path(__file__).with_name("select_blobs.py"))
# 640 pool images: rounds at 160, 320 and 640; the claim (epsilon 5) is made from 320 on
ARGS = ["select", "-p", "benchbone.testing", "-p", PLUGIN, "-d", "test/blobs-large", "--screen-size", "160",
        "--estimator", "logme", "--estimator", "static-prior", "--epsilon", "5", "--device", "cpu", "-q"]
CANDIDATES = ["-b", "pixels:4", "-b", "test/tiny-cnn"]


def select(root: Path, *extra) -> dict:
    """``benchbone select`` in this process; its exit code, stderr and select.json."""
    err = io.StringIO()
    args = [*ARGS, "--cache-dir", root / "cache", "--out", root / "sel", *extra]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    path = root / "sel" / "select.json"
    return {"code": code, "err": err.getvalue(), "json": json.loads(path.read_text()) if path.exists() else None}


def answer(data: dict) -> dict:
    """What a selection decided and measured, less timings and cache flags."""
    return {"chosen": data["chosen"], "survivors": data["survivors"], "reason": data["reason"],
            "guaranteed": data["guaranteed"], "sizes": data["sizes"],
            "rounds": [{k: r[k] for k in ("index", "size", "candidates", "leader", "accuracy", "lower_bounds",
                                          "eliminated")} for r in data["rounds"]],
            "candidates": {label: {"status": c["status"], "validation": c["validation"],
                                   "test": c["test"] and {k: c["test"][k] for k in ("top1", "ci", "items")},
                                   "estimators": {n: e["score"] for n, e in c["estimators"].items()}}
                           for label, c in data["candidates"].items()}}


def jobs_expected(data: dict) -> int:
    """One job per candidate for the screen, per candidate and round, and per test scored."""
    return (len(data["candidates"]) + sum(len(r["candidates"]) for r in data["rounds"])
            + sum(1 for c in data["candidates"].values() if c["test"]))


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCHBONE_LOAD_PLUGINS", "")
        run = select(root, *CANDIDATES)
    assert run["code"] == 0, run["err"]
    assert len(run["json"]["rounds"]) == 2, run["json"]["statement"]  # a second round: the jobs' charges carry over
    return run["json"]


@pytest.fixture
def only_jobs(monkeypatch):
    """This process can neither fit a probe nor extract a feature: the jobs must have done it."""
    from benchbone.execution.context import Context
    from benchbone.selection import steps

    def refuse(*args, **kwargs):
        raise AssertionError("the main process did a step's work")

    monkeypatch.setattr(steps, "_fit", refuse)
    monkeypatch.setattr(Context, "_extract", refuse)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs' environment: one thread each on two cores


@pytest.mark.slow
@pytest.mark.cluster
def test_submitit_gives_the_local_answer_and_resumes_after_a_kill(tmp_path, local, only_jobs, monkeypatch):
    pytest.importorskip("submitit")
    from benchbone.selection.dispatch import Dispatched

    prefetch = Dispatched.prefetch

    def killed_in_round_2(self, labels, size, test=False):
        if size == self.sizes[1] and not test:
            raise KeyboardInterrupt
        return prefetch(self, labels, size, test)

    flags = [*CANDIDATES, "--executor", "submitit", "--slurm-cluster", "local", "--slurm-time", "5"]
    monkeypatch.setattr(Dispatched, "prefetch", killed_in_round_2)
    started = time.perf_counter()
    killed = select(tmp_path, *flags)
    assert killed["code"] != 0 and killed["json"] is None
    jobs = tmp_path / "sel" / "submitit"
    assert len(list(jobs.glob("*_result.pkl"))) == 4  # the screen and round 1, one job per candidate
    assert len(list((tmp_path / "sel" / "steps").glob("*.json"))) == 2

    monkeypatch.setattr(Dispatched, "prefetch", prefetch)
    run = select(tmp_path, *flags)
    wall = time.perf_counter() - started
    assert run["code"] == 0, run["err"]
    assert answer(run["json"]) == answer(local)
    assert len(list(jobs.glob("*_result.pkl"))) == jobs_expected(local)  # nothing ran twice
    for entry in run["json"]["candidates"].values():  # the screen's features and scores were the jobs'
        assert entry["extraction"]["0"]["cached"] and all(e["cached"] for e in entry["estimators"].values())
    print(f"select wall time: local {local['wall_s']:.1f} s, submitit {wall:.1f} s (killed and resumed)")

    again = select(tmp_path, *flags)  # all done: no job is dispatched
    assert answer(again["json"]) == answer(local)
    assert len(list(jobs.glob("*_result.pkl"))) == jobs_expected(local)


@pytest.mark.slow
@pytest.mark.cluster
def test_ray_gives_the_local_answer_with_one_cluster_for_all_steps(tmp_path, local, only_jobs, monkeypatch):
    import importlib.util

    from benchbone.execution import executors

    if importlib.util.find_spec("ray") is None:  # not importorskip: ray must not be imported before the start
        pytest.skip("ray is not installed")
    starts = []

    def one_cpu():
        starts.append(1)
        return start(num_cpus=1)

    start = executors.start_local_ray
    monkeypatch.setattr(executors, "start_local_ray", one_cpu)
    started = time.perf_counter()
    run = select(tmp_path, *CANDIDATES, "--executor", "ray", "--cpus-per-cell", "1")
    wall = time.perf_counter() - started
    assert run["code"] == 0, run["err"]
    assert answer(run["json"]) == answer(local)
    import ray

    assert starts == [1] and not ray.is_initialized()  # one local cluster for every step, shut down at the end
    results = [json.loads(p.read_text()) for p in (tmp_path / "sel" / "jobs").glob("*.result.json")]
    assert len(results) == jobs_expected(local) and all(r == {"status": "ok"} for r in results)
    print(f"select wall time: local {local['wall_s']:.1f} s, ray {wall:.1f} s")


@pytest.mark.slow
def test_a_failed_job_is_one_line_and_the_others_go_on(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from benchbone.selection import dispatch

    step = dispatch._step

    def flaky(spec):
        if (spec["candidate"], spec["size"], spec["test"]) in {("pixels:8", None, False), ("test/tiny-cnn", 160, False),
                                                               ("pixels:6", 320, True)}:
            raise RuntimeError("node lost (on purpose)")
        step(spec)

    monkeypatch.setattr(dispatch, "_step", flaky)  # the debug cluster runs the jobs in this process
    run = select(tmp_path, "-b", "pixels:6", "-b", "pixels:4", "-b", "pixels:8", "-b", "test/tiny-cnn",
                 "--keep", "4", "--executor", "submitit", "--slurm-cluster", "debug")
    assert run["code"] == 0, run["err"]
    lines = [line for line in run["err"].splitlines() if line.startswith(("benchbone: dropped", "benchbone: test not"))]
    assert lines == [
        "benchbone: dropped pixels:8: its job failed in the screen: RuntimeError: node lost (on purpose)",
        "benchbone: dropped test/tiny-cnn: its job failed in the round at 160 images: RuntimeError: node lost (on purpose)",
        "benchbone: test not scored for pixels:6: its job failed: RuntimeError: node lost (on purpose)",
    ], run["err"]
    data = run["json"]
    assert data["candidates"]["pixels:8"]["status"] == data["candidates"]["test/tiny-cnn"]["status"] == "failed"
    assert "its job failed in the screen" in data["candidates"]["pixels:8"]["why"]
    assert [r["candidates"] for r in data["rounds"]] == [["pixels:4", "pixels:6"]] * len(data["rounds"])
    assert "not covered: test/tiny-cnn (failed)" in data["statement"]
    assert data["candidates"]["pixels:4"]["test"]["items"] == 96 and data["candidates"]["pixels:6"]["test"] is None
    assert "Traceback" not in run["err"]


@pytest.mark.parametrize("extra, message", [
    (["--executor", "specs"], "no list of commands to print"),
    (["--slurm-cluster", "local"], "--slurm-cluster applies to --executor submitit, not local"),
    (["--executor", "ray", "--slurm-time", "5"], "--slurm-time applies to --executor submitit, not ray"),
])
def test_bad_executor_flags_are_one_line(tmp_path, extra, message):
    run = select(tmp_path, *CANDIDATES, *extra)
    assert run["code"] == 2 and message in run["err"] and run["err"].count("\n") == 1, run["err"]
    assert not (tmp_path / "sel").exists()


def test_eliminate_leaves_out_what_prefetch_says_failed():
    from benchbone.selection.elimination import eliminate

    asked = []

    def prefetch(alive, size):
        asked.append((list(alive), size))
        return {"b"} if size == 20 else set()

    def evaluate(candidate, size):
        return [candidate != "c" or i % 2 for i in range(40)], 1.0

    result = eliminate(["a", "b", "c"], evaluate, epsilon=0.05, confidence=0.9, sizes=[10, 20, 40], prefetch=prefetch)
    assert asked == [(["a", "b", "c"], 10), (["a", "b"], 20)]  # c was dropped in round 1, b failed in round 2
    assert [r.candidates for r in result.history] == [("a", "b", "c"), ("a",)] and result.reason == "one left"
    assert result.statement.endswith("; not covered: b (failed)")
