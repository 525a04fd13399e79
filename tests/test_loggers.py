"""benchbone_record_written and its built-in user, the MLflow logger (read back with MLflow's own client)."""
import importlib.util
import json
from pathlib import Path

import pytest

from benchbone import hookimpl
from benchbone.plugins import get_plugin_manager

TINY = ("-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-q")


class Recorder:
    """Keeps every record it is handed, with the run directory."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def benchbone_record_written(self, record, run_dir):
        self.seen.append((record, run_dir))


class Exploding:
    """A strategy that always fails, so that a failed record is written."""

    @hookimpl
    def benchbone_register_strategies(self, register):
        def explode(backbone, data, ctx):
            raise RuntimeError("strategy exploded")

        register("test/explode", explode)


def test_hook_benchbone_record_written(benchbone_pm, run_tiny_benchmark, tmp_path):
    recorder = Recorder()
    benchbone_pm.register(recorder, name="recorder")
    benchbone_pm.register(Exploding(), name="exploding")
    board = run_tiny_benchmark(strategies=["linear-probe", "test/explode"])
    assert sorted(board["status"]) == ["failed", "ok"]
    assert len(recorder.seen) == 2
    for record, run_dir in recorder.seen:
        assert run_dir == tmp_path / "run"
        assert record == json.loads((run_dir / "records" / f"{record['cell_id']}.json").read_text())  # as written
    assert {r["status"] for r, _ in recorder.seen} == {"ok", "failed"}
    recorder.seen.clear()
    run_tiny_benchmark(strategies=["linear-probe"])  # a finished cell is not written again, nor announced
    assert recorder.seen == []


def test_a_failing_logger_is_one_warning_and_loses_nothing(cli, tmp_path):
    (tmp_path / "loggers.py").write_text(
        "from benchbone import hookimpl\n"
        "@hookimpl\n"
        "def benchbone_record_written(record, run_dir):\n"
        "    (run_dir / 'seen.txt').write_text(record['cell_id'])\n")
    (tmp_path / "broken_logger.py").write_text(
        "from benchbone import hookimpl\n"
        "@hookimpl\n"
        "def benchbone_record_written(record, run_dir):\n"
        "    raise ConnectionError('tracker unreachable')\n")
    result = cli("run", *TINY, "-s", "linear-probe", "-p", tmp_path / "broken_logger.py", "-p", tmp_path / "loggers.py",
                 "--out", tmp_path / "run")
    assert result.code == 0, result.err
    warning, = [line for line in result.err.splitlines() if "broken_logger" in line]
    assert warning.startswith("benchbone: warning: plugin broken_logger failed in benchbone_record_written")
    assert "ConnectionError: tracker unreachable" in warning and "is kept" in warning
    record, = (tmp_path / "run" / "records").glob("*.json")
    assert json.loads(record.read_text())["status"] == "ok"
    assert (tmp_path / "run" / "seen.txt").read_text() == record.stem  # the other logger still saw it


def test_loggers_are_off_by_default_and_say_which_extra_is_missing(cli, tmp_path, monkeypatch):
    pm = get_plugin_manager(entrypoints=False)
    assert pm.hook.benchbone_record_written.get_hookimpls() == []
    bad = cli("run", *TINY, "-s", "linear-probe", "--log-to", "wandb:x", "--out", tmp_path / "run")
    assert bad.code == 2 and "--log-to 'wandb:x': give KIND:TARGET with KIND one of mlflow, tensorboard" in bad.err
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a))
    missing = cli("run", *TINY, "-s", "linear-probe", "--log-to", f"mlflow:{tmp_path / 'runs.db'}", "--out", tmp_path / "run")
    assert missing.code == 2 and missing.err.count("\n") == 1
    assert "needs mlflow, which is not installed: pip install 'benchbone[mlflow]'" in missing.err
    monkeypatch.setenv("BENCHBONE_LOG_TO", "mlflow:runs.db")  # the setting asks too, for runs only
    assert "benchbone[mlflow]" in cli("run", *TINY, "-s", "linear-probe", "--out", tmp_path / "run").err
    assert cli("list", "metrics").code == 0
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs.db").exists()


def _mlflow_runs(store: Path, run_dir: Path) -> dict:
    """Every MLflow run of ``run_dir``'s experiment in ``store``, by benchbone cell id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(str(run_dir.resolve()))
    return {run.data.tags["benchbone.cell_id"]: run for run in client.search_runs([experiment.experiment_id])}


@pytest.mark.slow
def test_mlflow_logs_each_cell_as_a_run_with_params_metrics_and_artefacts(cli, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    (tmp_path / "explode.py").write_text(
        "from benchbone import hookimpl\n"
        "@hookimpl\n"
        "def benchbone_register_strategies(register):\n"
        "    def explode(backbone, data, ctx):\n"
        "        raise RuntimeError('strategy exploded')\n"
        "    register('test/explode', explode)\n")
    store, run_dir = tmp_path / "runs.db", tmp_path / "run"
    result = cli("run", *TINY, "-s", "linear-probe", "-s", "knn", "-s", "test/explode", "-p", tmp_path / "explode.py",
                 "--set", "knn.k=3", "--log-to", f"mlflow:{store}", "--out", run_dir)
    assert result.code == 1  # the exploding cell failed; the others are logged as finished runs
    assert "mlflow" not in result.err.lower()  # no log chatter from MLflow or its database migrations
    runs = _mlflow_runs(store, run_dir)
    records = {p.stem: json.loads(p.read_text()) for p in (run_dir / "records").glob("*.json")}
    assert set(runs) == set(records) and len(runs) == 3
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    for cell_id, record in records.items():
        run = runs[cell_id]
        assert run.info.status == {"ok": "FINISHED", "failed": "FAILED"}[record["status"]]
        assert run.info.run_name == f"test/tiny-cnn x test/blobs x {record['strategy']} (seed 0)"
        assert run.data.params["strategy"] == record["strategy"] and run.data.params["seed"] == "0"
        for key, value in record["params"].items():
            assert run.data.params[f"strategy.{key}"] == str(value)
        assert run.data.params["harness.val_fraction"] == str(record["options"]["val_fraction"])
        assert {k: v for k, v in run.data.metrics.items() if "/" not in k} == pytest.approx(record["metrics"],
                                                                                         nan_ok=True)
        logged = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert f"{cell_id}.json" in logged
        local = Path(client.download_artifacts(run.info.run_id, f"{cell_id}.json", str(tmp_path / "down")))
        assert json.loads(local.read_text()) == record
        if record["status"] == "ok":
            assert run.data.metrics["timings/total_s"] == pytest.approx(record["timings"]["total_s"])
            names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "artefacts")}
            assert names == {Path(p).name for p in record["artefacts"].values()}
        else:
            assert "RuntimeError: strategy exploded" in run.data.tags["benchbone.error"]
    assert runs[next(c for c, r in records.items() if r["strategy"] == "knn")].data.params["strategy.k"] == "3"

    again = cli("run", *TINY, "-s", "linear-probe", "--log-to", f"mlflow:{store}", "--out", run_dir)
    assert again.code == 0 and len(_mlflow_runs(store, run_dir)) == 3  # resumed cells are not logged twice


@pytest.mark.slow
def test_mlflow_logs_from_an_executor_worker(cli, tmp_path):
    pytest.importorskip("mlflow")
    store, run_dir = tmp_path / "runs.db", tmp_path / "run"
    planned = cli("run", *TINY, "-s", "linear-probe", "--executor", "specs", "--log-to", f"mlflow:{store}",
                  "--out", run_dir)
    assert planned.code == 0, planned.err
    spec = Path(planned.out.split()[-1])
    assert json.loads(spec.read_text())["plugins"]["log_to"] == [f"mlflow:{store}"]  # carried to the worker
    assert not store.exists() or _mlflow_runs(store, run_dir) == {}
    worker = cli("run-cell", spec)
    assert worker.code == 0, worker.err
    record, = (run_dir / "records").glob("*.json")
    run, = _mlflow_runs(store, run_dir).values()
    assert run.data.tags["benchbone.cell_id"] == record.stem and run.info.status == "FINISHED"


def test_tensorboard_logs_each_finished_cell_as_a_run(cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs, run_dir = tmp_path / "tb", tmp_path / "run"
    result = cli("run", *TINY, "-s", "linear-probe", "-s", "knn", "--log-to", f"tensorboard:{logs}", "--out", run_dir)
    assert result.code == 0, result.err
    records = [json.loads(p.read_text()) for p in (run_dir / "records").glob("*.json")]
    assert {p.name for p in logs.iterdir()} == {r["cell_id"] for r in records}
    for record in records:
        events = EventAccumulator(str(logs / record["cell_id"]))
        events.Reload()
        for name, value in record["metrics"].items():
            scalar, = events.Scalars(f"metrics/{name}")
            assert scalar.step == 0 and scalar.value == pytest.approx(value, nan_ok=True, rel=1e-6)
        assert events.Scalars("timings/total_s")[0].value == pytest.approx(record["timings"]["total_s"], rel=1e-6)
