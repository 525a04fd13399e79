"""benchbone_record_written and its built-in users, the MLflow, TensorBoard and W&B loggers (each read back with
the tracker's own client, event reader or record schema)."""
import importlib.util
import json
import re
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
    bad = cli("run", *TINY, "-s", "linear-probe", "--log-to", "neptune:x", "--out", tmp_path / "run")
    assert bad.code == 2
    assert "--log-to 'neptune:x': give KIND:TARGET with KIND one of mlflow, tensorboard, wandb" in bad.err
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("mlflow", "wandb") else real_find_spec(name, *a))
    missing = cli("run", *TINY, "-s", "linear-probe", "--log-to", "wandb:my-project", "--out", tmp_path / "run")
    assert missing.code == 2 and missing.err.count("\n") == 1
    assert "--log-to wandb:... needs wandb, which is not installed: pip install 'benchbone[wandb]'" in missing.err
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


EXPLODE = ("from benchbone import hookimpl\n"
           "@hookimpl\n"
           "def benchbone_register_strategies(register):\n"
           "    def explode(backbone, data, ctx):\n"
           "        raise RuntimeError('strategy exploded')\n"
           "    register('test/explode', explode)\n")  # a strategy plugin whose every cell fails


@pytest.mark.slow
def test_mlflow_logs_each_cell_as_a_run_with_params_metrics_and_artefacts(cli, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    (tmp_path / "explode.py").write_text(EXPLODE)
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
        assert run.info.run_name == f"test/tiny-cnn / test/blobs / {record['strategy']} / seed 0"
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
    named = {f"test-tiny-cnn__test-blobs__{r['strategy']}__seed0__{r['cell_id'][:8]}": r for r in records}
    assert {p.name for p in logs.iterdir()} == set(named)  # readable, and told apart by the cell id
    for folder, record in named.items():
        events = EventAccumulator(str(logs / folder))
        events.Reload()
        text, = events.Tensors("cell/text_summary")
        assert text.tensor_proto.string_val[0].decode() == (
            f"test/tiny-cnn / test/blobs / {record['strategy']} / seed 0 (cell {record['cell_id']}): ok")
        for name, value in record["metrics"].items():
            scalar, = events.Scalars(f"metrics/{name}")
            assert scalar.step == 0 and scalar.value == pytest.approx(value, nan_ok=True, rel=1e-6)
        assert events.Scalars("timings/total_s")[0].value == pytest.approx(record["timings"]["total_s"], rel=1e-6)


def test_run_folder_names_are_readable_file_names_told_apart_by_the_cell_id():
    from benchbone.helpers import run_name, run_slug

    record = {"backbone": "timm/hf-hub:org/name#blocks.3", "dataset": "hf:/data/my set/x/gaussian_noise-3",
              "strategy": "linear-probe", "seed": 2, "cell_id": "0123456789abcdef"}
    assert run_name(record) == ("timm/hf-hub:org/name#blocks.3 / hf:/data/my set/x/gaussian_noise-3 / linear-probe / "
                                "seed 2")
    assert run_slug(record) == ("timm-hf-hub-org-name-blocks.3__hf-data-my-set-x-gaussian_noise-3__linear-probe__seed2"
                                "__01234567")
    assert run_slug({**record, "cell_id": "fedcba9876543210"}).endswith("__fedcba98")
    long = run_slug({**record, "backbone": "../" + "x" * 300})
    assert len(long) == 120 + 10 and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", long)


def _wandb_records(run_file: Path) -> list:
    """The records of a W&B run file, parsed with W&B's own schema (``wandb.proto.wandb_internal_pb2.Record``).

    W&B 0.31 has no Python reader of the file any more (``wandb sync`` and ``wandb beta leet`` read it in the
    wandb-core binary), so this undoes its framing: LevelDB's log format with W&B's 7-byte file header, records
    in 32 KiB blocks, each with a CRC-32 of its type and payload, checked here.
    """
    import struct
    import zlib

    from wandb.proto.wandb_internal_pb2 import Record

    data = run_file.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    payloads, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or kind == 0:  # a block's zero-filled trailer
            pos += left
            continue
        payload = data[pos + 7:pos + 7 + length]
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc
        pos += 7 + length
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):  # FULL, LAST
            payloads.append(pending)
    return [Record.FromString(p) for p in payloads]


def _wandb_runs(wandb_dir: Path) -> dict:
    """Every offline W&B run under ``wandb_dir`` as {cell id: what its records say}."""
    runs = {}
    for run_file in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb")):
        run = {"config": {}, "summary": {}, "artifacts": [], "exit_code": None}
        for record in _wandb_records(run_file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.update(name=record.run.display_name, project=record.run.project, group=record.run.run_group,
                           tags=list(record.run.tags))
                run["config"].update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            elif kind == "config":
                run["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
            elif kind == "summary":
                run["summary"].update({u.key: json.loads(u.value_json) for u in record.summary.update if u.key})
            elif kind == "artifact":
                run["artifacts"].append(record.artifact)
            elif kind == "exit":
                run["exit_code"] = record.exit.exit_code
        runs[run["config"]["cell_id"]] = run
    return runs


def _md5_base64(path: Path) -> str:
    import base64
    import hashlib

    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B in offline mode with every folder it writes in ``tmp_path``: no network, no login."""
    pytest.importorskip("wandb")
    for variable, folder in (("WANDB_DIR", "wandb-dir"), ("WANDB_DATA_DIR", "wandb-data"),
                             ("WANDB_CACHE_DIR", "wandb-cache"), ("WANDB_CONFIG_DIR", "wandb-config")):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(variable, str(tmp_path / folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path / "wandb-dir"


@pytest.mark.slow
def test_wandb_logs_each_cell_as_an_offline_run_with_config_summary_and_artefacts(cli, tmp_path, wandb_offline):
    (tmp_path / "explode.py").write_text(EXPLODE)
    run_dir = tmp_path / "run"
    result = cli("run", *TINY, "-s", "linear-probe", "-s", "knn", "-s", "test/explode", "-p", tmp_path / "explode.py",
                 "--set", "knn.k=3", "--log-to", "wandb:bench-test", "--out", run_dir)
    assert result.code == 1  # the exploding cell failed; the others are logged as finished runs
    assert "wandb" not in result.err.lower() and "wandb" not in result.out.lower()  # W&B says nothing
    runs = _wandb_runs(wandb_offline)
    records = {p.stem: json.loads(p.read_text()) for p in (run_dir / "records").glob("*.json")}
    assert set(runs) == set(records) and len(runs) == 3
    for cell_id, record in records.items():
        run = runs[cell_id]
        assert run["name"] == f"test/tiny-cnn / test/blobs / {record['strategy']} / seed 0"
        assert run["project"] == "bench-test" and run["group"] == str(run_dir.resolve())
        assert run["tags"] == ["benchbone", record["status"]]
        assert run["exit_code"] == (0 if record["status"] == "ok" else 1)
        config = {k: v for k, v in run["config"].items() if k != "_wandb"}
        assert config == {"cell_id": cell_id, "backbone": record["backbone"], "dataset": record["dataset"],
                          "strategy": record["strategy"], "seed": record["seed"],
                          **{f"strategy.{k}": v for k, v in record["params"].items()},
                          **{f"harness.{k}": v for k, v in record["options"].items()},
                          "run_dir": str(run_dir.resolve()), "command": record["command"],
                          "git_commit": record.get("git_commit") or "", "started_at": record.get("started_at"),
                          "finished_at": record.get("finished_at")}
        summary = {k: v for k, v in run["summary"].items() if not k.startswith("_")}
        expected = {**record.get("metrics", {}), **{f"timings/{k}": v for k, v in record.get("timings", {}).items()}}
        if record["status"] == "ok":
            assert summary == pytest.approx(expected, nan_ok=True) and record["metrics"]
        else:
            assert summary.pop("error") == record["error"] and "RuntimeError: strategy exploded" in record["error"]
            assert summary == pytest.approx(expected)
        artifact, = run["artifacts"]
        assert (artifact.name, artifact.type) == (f"cell-{cell_id}", "benchbone-cell")
        files = {f"records/{cell_id}.json", *(record.get("artefacts") or {}).values()}
        assert {entry.path: entry.digest for entry in artifact.manifest.contents} == {
            name: _md5_base64(run_dir / name) for name in files}
        assert len(files) > 1 or record["status"] == "failed"
    assert runs[next(c for c, r in records.items() if r["strategy"] == "knn")]["config"]["strategy.k"] == 3

    again = cli("run", *TINY, "-s", "linear-probe", "--log-to", "wandb:bench-test", "--out", run_dir)
    assert again.code == 0 and len(_wandb_runs(wandb_offline)) == 3  # resumed cells are not logged twice


def test_wandb_target_and_credentials_are_checked_before_any_cell(cli, tmp_path, wandb_offline, monkeypatch):
    from benchbone_plugins.wandb_logger import WandbLogger

    pm = get_plugin_manager(entrypoints=False, log_to=["wandb:team/proj"])  # a name, not a path: kept as given
    assert pm.has_plugin("wandb:team/proj") and pm.load_args["log_to"] == ["wandb:team/proj"]
    for target in ("a/b/c", "team/", "what?", "x:y"):
        bad = cli("run", *TINY, "-s", "linear-probe", "--log-to", f"wandb:{target}", "--out", tmp_path / "run")
        assert bad.code == 2 and bad.err.count("\n") == 1, bad.err
        assert "give a W&B project, wandb:PROJECT or " in bad.err
    import wandb

    wandb.teardown()  # W&B keeps its settings per process: forget the offline runs of earlier tests
    monkeypatch.delenv("WANDB_MODE")  # online, and no key anywhere W&B looks: one line before any cell, no prompt
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    no_key = cli("run", *TINY, "-s", "linear-probe", "--log-to", "wandb:proj", "--out", tmp_path / "run")
    assert no_key.code == 2 and no_key.err.count("\n") == 1, no_key.err
    assert "--log-to wandb:proj: no W&B credentials; run `wandb login` or set WANDB_API_KEY" in no_key.err
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert WandbLogger("proj").project == "proj"
