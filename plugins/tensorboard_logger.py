"""Each written record as a TensorBoard run: ``benchbone run --log-to tensorboard:DIR``, then ``tensorboard --logdir DIR``.

One event directory per cell, named after it and told apart by its cell id
(``DIR/tv-resnet50__cifar10__linear-probe__seed0__1a2b3c4d``): its metrics and timings as scalars at step 0,
and its parameters (``cell_id`` among them) with its metrics in the HParams dashboard, so that cells can be
compared side by side.
"""
from __future__ import annotations

from pathlib import Path

from benchbone import UsageError, hookimpl
from benchbone.helpers import run_name, run_slug


def logger(target: str) -> "TensorBoardLogger":
    """The plugin for ``--log-to tensorboard:DIR``, DIR an absolute directory path (made when missing)."""
    return TensorBoardLogger(Path(target))


class TensorBoardLogger:
    """Writes TensorBoard event files with ``torch.utils.tensorboard``."""

    def __init__(self, root: Path):
        if root.exists() and not root.is_dir():
            raise UsageError(f"--log-to tensorboard:{root}: {root} is a file; give a directory")
        self.root = root

    @hookimpl
    def benchbone_record_written(self, record, run_dir):
        from torch.utils.tensorboard import SummaryWriter

        name = f"{run_name(record)} (cell {record['cell_id']})"
        with SummaryWriter(log_dir=str(self.root / run_slug(record))) as writer:
            error = f" ({record['error']})" if record.get("error") else ""
            writer.add_text("cell", f"{name}: {record['status']}{error}")
            if record["status"] != "ok":
                return
            metrics = {f"metrics/{k}": float(v) for k, v in record["metrics"].items()}
            for key, value in {**metrics, **{f"timings/{k}": v for k, v in record.get("timings", {}).items()}}.items():
                writer.add_scalar(key, float(value), 0)
            hparams = {"cell_id": record["cell_id"], "backbone": record["backbone"], "dataset": record["dataset"],
                       "strategy": record["strategy"], "seed": record["seed"],
                       **{f"strategy.{k}": v if isinstance(v, (int, float, str, bool)) else str(v)
                          for k, v in record.get("params", {}).items()}}
            writer.add_hparams(hparams, {f"hparams/{k}": v for k, v in metrics.items()}, run_name=".")
