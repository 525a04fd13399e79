"""Each written record as a Weights & Biases run: ``benchbone run --log-to wandb:PROJECT`` (or ENTITY/PROJECT).

One W&B run per cell, named ``BACKBONE / DATASET / STRATEGY / seed N`` and grouped by the run directory: its
parameters as the run's config (``cell_id`` among them), its metrics and timings in the summary, its status as
a tag (a failed cell's run exits with code 1 and its error in the summary), and the record and artefact files
as one artifact ``cell-<cell id>`` of type ``benchbone-cell``. W&B's own settings apply: ``WANDB_MODE=offline``
writes the runs locally for a later ``wandb sync``; ``WANDB_DIR`` says where (default: the run directory).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from benchbone import UsageError, hookimpl
from benchbone.helpers import run_name

ARTIFACT_TYPE = "benchbone-cell"
_BAD_PROJECT = re.compile(r"[\\#?%:]")  # characters W&B refuses in entity and project names


def logger(target: str) -> WandbLogger:
    """The plugin for ``--log-to wandb:TARGET``, TARGET a project name or ENTITY/PROJECT."""
    return WandbLogger(target)


def _offline() -> bool:
    return os.environ.get("WANDB_MODE", "").strip().lower() in ("offline", "dryrun", "disabled")


class WandbLogger:
    """Logs every record written by this process as a run of one W&B project."""

    def __init__(self, target: str):
        entity, _, project = target.rpartition("/")
        if not project or "/" in entity or _BAD_PROJECT.search(target) or len(project) > 128:
            raise UsageError(f"--log-to wandb:{target}: give a W&B project, wandb:PROJECT or wandb:ENTITY/PROJECT "
                             "(no \\ # ? % : in the names)")
        self.entity, self.project = entity or None, project
        if not _offline():
            import inspect

            import wandb

            # the credentials W&B would use (WANDB_API_KEY, wandb login's netrc), checked without prompting (W&B
            # releases whose login cannot be told not to prompt are left to prompt in wandb.init), so that a run
            # does not stop at a login prompt after its first cell
            if "prompt" in inspect.signature(wandb.login).parameters and not wandb.login(prompt=False, verify=False):
                raise UsageError(f"--log-to wandb:{target}: no W&B credentials; run `wandb login` or set "
                                 "WANDB_API_KEY, or set WANDB_MODE=offline to keep the runs locally for `wandb sync`")

    @hookimpl
    def benchbone_record_written(self, record, run_dir):
        import wandb

        run_dir = Path(run_dir)
        cell_id = record["cell_id"]
        config = {"cell_id": cell_id, "backbone": record["backbone"], "dataset": record["dataset"],
                  "strategy": record["strategy"], "seed": record["seed"],
                  **{f"strategy.{k}": v for k, v in record.get("params", {}).items()},
                  **{f"harness.{k}": v for k, v in record.get("options", {}).items()},
                  "run_dir": str(run_dir.resolve()), "command": record.get("command") or "",
                  "git_commit": record.get("git_commit") or "", "started_at": record.get("started_at"),
                  "finished_at": record.get("finished_at")}
        summary = {**record.get("metrics", {}), **{f"timings/{k}": v for k, v in record.get("timings", {}).items()},
                   **({"error": record["error"]} if record.get("error") else {})}
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False,
                                  disable_job_creation=True)
        run = wandb.init(entity=self.entity, project=self.project, name=run_name(record), config=config,
                         group=str(run_dir.resolve())[-128:], tags=["benchbone", record["status"]],
                         dir=None if os.environ.get("WANDB_DIR") else str(run_dir), reinit="create_new",
                         settings=settings)
        try:
            run.summary.update(summary)
            artifact = wandb.Artifact(f"cell-{cell_id}", type=ARTIFACT_TYPE,
                                      metadata={"cell_id": cell_id, "status": record["status"]})
            artifact.add_file(str(run_dir / "records" / f"{cell_id}.json"), name=f"records/{cell_id}.json")
            for relative in (record.get("artefacts") or {}).values():
                artifact.add_file(str(run_dir / relative), name=str(relative))
            run.log_artifact(artifact)
        finally:
            run.finish(exit_code=0 if record["status"] == "ok" else 1)
