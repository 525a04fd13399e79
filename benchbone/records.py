"""One JSON record per cell, written atomically: the only output of a cell and the input of leaderboards."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from benchbone.errors import UsageError

SCHEMA = 1


def record_path(run_dir: Path, cell_id: str) -> Path:
    return Path(run_dir) / "records" / f"{cell_id}.json"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_record(run_dir: Path, record: dict) -> Path:
    path = record_path(run_dir, record["cell_id"])
    write_atomic(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_record(path: Path) -> dict | None:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("schema") == SCHEMA else None


def finished_record(run_dir: Path, cell_id: str) -> dict | None:
    """The record of a cell that finished successfully, if any."""
    record = read_record(record_path(run_dir, cell_id))
    return record if record and record.get("status") == "ok" else None


def read_records(run_dirs: Iterable[Path]) -> list[dict]:
    """Every readable record below the given run directories (later directories win for one cell)."""
    by_id: dict[str, dict] = {}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise UsageError(f"run directory {run_dir} does not exist; pass a directory written by `benchbone run --out`")
        paths = sorted((run_dir / "records").glob("*.json"))
        if not paths:
            raise UsageError(f"{run_dir} holds no records (no {run_dir}/records/*.json); pass a run directory")
        for path in paths:
            record = read_record(path)
            if record is not None:
                by_id[record["cell_id"]] = record
    return list(by_id.values())
