"""Each written record as an MLflow run (parameters, metrics, artefact files) in a local sqlite store.

Loaded only when asked for: ``benchbone run --log-to mlflow:runs.db`` (or ``BENCHBONE_LOG_TO=mlflow:runs.db``).
The experiment is the run directory; artefacts go to ``runs.db.artifacts/`` beside the store.
"""
from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from benchbone import UsageError, hookimpl
from benchbone.helpers import run_name

STATUS = {"ok": "FINISHED", "failed": "FAILED"}


def logger(target: str) -> "MlflowLogger":
    """The plugin for ``--log-to mlflow:TARGET``, TARGET the absolute path of a sqlite file (made when missing)."""
    return MlflowLogger(Path(target))


def _millis(timestamp: str | None) -> int | None:
    return int(dt.datetime.fromisoformat(timestamp).timestamp() * 1000) if timestamp else None


class MlflowLogger:
    """Logs every record written by this process into one sqlite tracking store, read back with MLflow's client."""

    def __init__(self, store: Path):
        if store.is_dir() or not store.parent.is_dir():
            raise UsageError(f"--log-to mlflow:{store}: give a sqlite file in an existing directory, "
                             "e.g. --log-to mlflow:runs.db")
        self.uri = f"sqlite:///{store}"
        self.artifacts = store.with_name(store.name + ".artifacts")
        self._client = None

    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            for noisy in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..."
                logging.getLogger(noisy).setLevel(logging.WARNING)
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def experiment_id(self, run_dir: Path) -> str:
        """The experiment named after the run directory, made on first use (workers may race to make it)."""
        from mlflow.exceptions import MlflowException

        client, name = self.client(), str(Path(run_dir).resolve())
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=self.artifacts.as_uri())
        except MlflowException:  # another worker made it meanwhile
            return client.get_experiment_by_name(name).experiment_id

    @hookimpl
    def benchbone_record_written(self, record, run_dir):
        from mlflow.entities import Metric, Param

        client = self.client()
        tags = {"benchbone.cell_id": record["cell_id"], "benchbone.status": record["status"],
                "benchbone.command": record.get("command") or "", "benchbone.git_commit": record.get("git_commit") or "",
                **({"benchbone.error": record["error"][:5000]} if record.get("error") else {})}
        run = client.create_run(self.experiment_id(run_dir), start_time=_millis(record.get("started_at")), tags=tags,
                                run_name=run_name(record))
        params = {"backbone": record["backbone"], "dataset": record["dataset"], "strategy": record["strategy"],
                  "seed": record["seed"], **{f"strategy.{k}": v for k, v in record.get("params", {}).items()},
                  **{f"harness.{k}": v for k, v in record.get("options", {}).items()}}
        now = _millis(record.get("finished_at")) or 0
        metrics = {**record.get("metrics", {}), **{f"timings/{k}": v for k, v in record.get("timings", {}).items()}}
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.log_artifact(run.info.run_id, str(Path(run_dir) / "records" / f"{record['cell_id']}.json"))
        for relative in (record.get("artefacts") or {}).values():
            client.log_artifact(run.info.run_id, str(Path(run_dir) / relative), artifact_path="artefacts")
        client.set_terminated(run.info.run_id, status=STATUS[record["status"]], end_time=now or None)
