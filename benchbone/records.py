"""One JSON record per cell, written atomically: the only output of a cell and the input of leaderboards."""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from benchbone.errors import UsageError

SCHEMA = 1
STALE_TMP_S = 3600  # a temporary file not written for this long belongs to a dead writer
_WRITER = f"{re.sub(r'[^A-Za-z0-9-]', '-', socket.gethostname())}-{os.getpid()}"


def record_path(run_dir: Path, cell_id: str) -> Path:
    return Path(run_dir) / "records" / f"{cell_id}.json"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; on success it is fsynced and renamed over ``path``.

    Readers see the old file or the whole new one, never a part. The temporary name carries this
    host and pid, so ``remove_stale_tmp`` can tell a dead writer's leftovers from a live one's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_WRITER}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_record(run_dir: Path, record: dict) -> Path:
    path = record_path(run_dir, record["cell_id"])
    write_atomic(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def _writer_is_dead(tmp: Path) -> bool:
    """True when ``tmp`` was made by ``write_atomic`` in a process of this host that no longer runs."""
    parts = tmp.name.split(".")  # "", name ..., writer, random, "tmp"
    host, _, pid = parts[-3].rpartition("-") if len(parts) >= 4 else ("", "", "")
    if host != _WRITER.rpartition("-")[0] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # alive but another user's, or not a pid at all
        pass
    return False


def remove_stale_tmp(folder: Path) -> None:
    """Remove the ``.*.tmp`` files that killed writers left in ``folder``.

    A file goes when its writer (host and pid are in its name) is dead, or when nobody wrote to it for
    ``STALE_TMP_S``; a live writer's file stays, so runs sharing the folder do not disturb each other.
    """
    now = time.time()
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            if _writer_is_dead(tmp) or now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
        except FileNotFoundError:  # renamed or removed meanwhile
            pass


def read_record(path: Path) -> dict | None:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("schema") == SCHEMA else None


def _warn_damaged(path: Path, consequence: str) -> None:
    warnings.warn(f"record {path} is damaged (not a benchbone record of schema {SCHEMA}); {consequence}",
                  stacklevel=3)


def finished_record(run_dir: Path, cell_id: str) -> dict | None:
    """The record of a cell that finished successfully, if any; a damaged record is reported and counts as unfinished."""
    path = record_path(run_dir, cell_id)
    record = read_record(path)
    if record is None and path.exists():
        _warn_damaged(path, "running its cell again")
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
            if record is None:
                _warn_damaged(path, "left out of the leaderboard")
            else:
                by_id[record["cell_id"]] = record
    return list(by_id.values())
