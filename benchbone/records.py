"""One JSON record per cell, written atomically: the only output of a cell and the input of leaderboards."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from benchbone.digests import json_digest
from benchbone.errors import UsageError

REQUIRED = ("cell_id", "status", "backbone", "dataset", "strategy", "seed")  # what every reader of a record uses
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)

SCHEMA = 1
# The version of the harness's image preprocessing (``benchbone.inputs.transforms.Preprocess``), written into every
# record (``backbone_info.preprocess.version``) and feature-cache key. 1 (no version written): an image already at
# the input size passed unresized, the longer side was rounded to nearest, the crop offset floored; 2 (issue 28):
# every image is resized to size / crop_pct and centre-cropped as timm's and transformers' eval pipelines do.
# A finished record of an older version is not served on resume: its cell runs again (``finished_record``).
PREPROCESS_VERSION = 2
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


def check_run_dir(path: Path, flag: str = "--out") -> None:
    """A UsageError unless ``path`` is a writable directory or one that can be created; nothing is created."""
    path = Path(path).absolute()
    existing = path
    while not os.path.lexists(existing):
        existing = existing.parent
    try:
        name_max, path_max = os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):  # not a directory, or a file system that does not say
        name_max, path_max = 255, 4096
    long = [part for part in path.parts if len(part.encode()) > name_max]
    if long or len(str(path).encode()) + 64 > path_max:  # 64: room for records/<cell id>.json
        what = f"the name {long[0][:40]}... is longer than {name_max} bytes" if long else "the path is too long"
        raise UsageError(f"{flag} {path}: {what}; pass a shorter {flag}")
    if not existing.is_dir():
        below = "is" if existing == path else f"lies below {existing}, which is"
        raise UsageError(f"{flag} {path} {below} a file, not a directory; pass another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write in {existing} (read-only or not permitted); pass another {flag}")


def check_output_file(path: Path, flag: str) -> None:
    """A UsageError unless ``path`` can be written as a file (not a directory, in a writable directory)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; pass a file name, e.g. {path / 'report.html'}")
    folder = path.absolute().parent
    if os.path.lexists(folder) and not folder.is_dir():
        raise UsageError(f"{flag} {path} lies below {folder}, which is a file; pass another {flag}")
    check_run_dir(folder, flag)


def cannot_write(path: Path, size: int, exc: OSError) -> UsageError:
    """The one-line error for a write of ``size`` bytes to ``path`` that the file system refused."""
    folder = Path(path).parent
    needed = f" ({size:,} bytes needed in {folder})" if exc.errno in OUT_OF_SPACE else ""
    return UsageError(f"cannot write {path}: {exc.strerror or exc}{needed}; free space there or pass another "
                      "--out / -o, then run the same command to resume")


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` atomically (see ``atomic_path``); a refused write is a one-line UsageError.

    A path that is neither a file nor a directory (``/dev/null``, ``/dev/stdout``, a pipe) is written through,
    never renamed over."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    path = Path(path)
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            with open(path, "wb") as stream:
                stream.write(data)
            return
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:  # a full disk, a file system gone read-only
        raise cannot_write(path, len(data), exc) from None


def content_digest(record: dict) -> str:
    """sha256 of a record's content (every key but ``digest``), as JSON with sorted keys."""
    body = {k: v for k, v in record.items() if k != "digest"}
    return json_digest(body, compact=True)


def write_record(run_dir: Path, record: dict) -> Path:
    """Write ``record`` to ``records/<cell id>.json`` with the digest of its content, which readers check."""
    plain = json.loads(json.dumps(record, default=str))  # exactly what a reader will see
    plain["digest"] = content_digest(plain)
    path = record_path(run_dir, plain["cell_id"])
    write_atomic(path, json.dumps(plain, indent=2, sort_keys=True) + "\n")
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


def check_record(path: Path) -> tuple[dict | None, str | None]:
    """``(record, None)`` for a sound record file, ``(None, why)`` for one that must not be read as a result
    (``why`` ends with what it is: damaged or not trusted), ``(None, None)`` when there is none."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return None, f"is damaged (not a benchbone record of schema {SCHEMA})"
    if "digest" not in record:
        return None, "is not trusted (it has no digest: written by an older benchbone or by hand)"
    if record["digest"] != content_digest(record):
        return None, "is damaged (its content does not match its digest: changed after it was written)"
    if record.get("cell_id") != path.stem:
        return None, f"is damaged (it is the record of cell {record.get('cell_id')!r}, not {path.stem!r}: copied over)"
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        return None, f"is damaged (it lacks {', '.join(missing)})"
    return record, None


def read_record(path: Path) -> dict | None:
    """The record in ``path`` when it is sound (see ``check_record``), else None."""
    return check_record(path)[0]


def _warn_damaged(path: Path, why: str, consequence: str) -> None:
    warnings.warn(f"record {path} {why}; {consequence}", stacklevel=3)


def finished_record(run_dir: Path, cell_id: str) -> dict | None:
    """The record of a cell that finished successfully, if any; a damaged record is reported and counts as unfinished."""
    path = record_path(run_dir, cell_id)
    record, why = check_record(path)
    if why:
        _warn_damaged(path, why, "running its cell again")
    if record and record.get("status") == "ok" and stale_preprocessing(record):
        warnings.warn(f"records written with benchbone's preprocessing before version {PREPROCESS_VERSION} (an image "
                      "at the input size was not resized to size / crop_pct and cropped) are computed again; "
                      "--set native_size=true keeps the old rule", stacklevel=2)
        return None
    if record and record.get("status") == "ok" and before_processor_rule(record):
        warnings.warn("records of hf/ backbones written before their image processor's resize and crop were "
                      "followed exactly (ViT and DeiT squash, ConvNeXt from 384 px, PoolFormer) are computed again",
                      stacklevel=2)
        return None
    return record if record and record.get("status") == "ok" else None


def stale_preprocessing(record: dict) -> bool:
    """True for a record of the harness's preprocessing before ``PREPROCESS_VERSION`` (a record without the
    harness's ``backbone_info.preprocess``, from a plugin's own cell runner, is not judged)."""
    preprocess = (record.get("backbone_info") or {}).get("preprocess")
    return isinstance(preprocess, dict) and preprocess.get("version", 1) < PREPROCESS_VERSION


def before_processor_rule(record: dict) -> bool:
    """True for a record of an ``hf/`` backbone from before its processor's geometry was followed exactly (its
    plugin info then had no ``crop_mode``), which preprocessing version 2 alone does not tell apart."""
    info = (record.get("backbone_info") or {}).get("plugin_info") or {}
    return str(record.get("backbone", "")).startswith("hf/") and "processor" in info and "crop_mode" not in info


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
            record, why = check_record(path)
            if record is None:
                _warn_damaged(path, why, "left out of the leaderboard")
            else:
                by_id[record["cell_id"]] = record
    return list(by_id.values())


def run_name(record: dict) -> str:
    """``BACKBONE / DATASET / STRATEGY / seed N``: the name each logger gives a cell's run (the cell id, which
    tells apart cells that differ in parameters only, goes beside it as a tag or parameter)."""
    return f"{record['backbone']} / {record['dataset']} / {record['strategy']} / seed {record['seed']}"


def run_slug(record: dict) -> str:
    """The run name as a file name, unique by the cell id's first 8 digits:
    ``tv-resnet50__cifar10__linear-probe__seed0__1a2b3c4d`` (only letters, digits and ``._+=-``)."""
    parts = [record["backbone"], record["dataset"], record["strategy"], f"seed{record['seed']}"]
    readable = "__".join(re.sub(r"[^A-Za-z0-9._+=-]+", "-", str(part)).strip("-.") or "-" for part in parts)
    return f"{readable[:120]}__{record['cell_id'][:8]}"


def artefact_file(record: dict, name: str, run_dirs: Iterable[Path]) -> Path | None:
    """The artefact file ``name`` of a record (``record["artefacts"][name]``), found in the run directories (later
    ones win, as in ``read_records``), or None. A path that leads outside its run directory (``../``, absolute, a
    symbolic link out) is reported in one warning line and never opened: every reader of artefacts goes here."""
    rel = (record.get("artefacts") or {}).get(name)
    if not rel:
        return None
    for run_dir in reversed(list(run_dirs)):
        root = Path(run_dir).resolve()
        path = (root / str(rel)).resolve()
        if not path.is_relative_to(root):
            warnings.warn(f"record {record.get('cell_id')} in {run_dir} names artefact {name} at {str(rel)!r}, "
                          "outside its run directory; skipped", stacklevel=2)
            return None
        if path.is_file():
            return path
    return None
