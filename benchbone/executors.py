"""Executors hand a grid's cells to an existing engine: this process, Slurm via submitit, or a Ray cluster.

Every worker runs one spec file (``<run_dir>/specs/<cell id>.json``) through ``harness.run_spec``, the
same path as a local run, and writes the cell's record into the run directory; the driver then reads
the records back. A lost driver loses nothing, and running the grid again skips finished cells.
"""
from __future__ import annotations

import abc
import importlib
import importlib.util
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

from benchbone.errors import UsageError
from benchbone.grid import Cell
from benchbone.records import read_record, record_path, write_atomic

EXECUTORS = ("local", "submitit", "ray", "specs")
EXTRAS = {"submitit": "slurm", "ray": "ray"}
# option -> the executors it applies to
OPTIONS = {
    "gpus_per_cell": ("submitit", "ray", "specs"), "cpus_per_cell": ("submitit", "ray", "specs"),
    "slurm_cluster": ("submitit",), "slurm_partition": ("submitit",), "slurm_time": ("submitit",),
    "slurm_array_parallelism": ("submitit",), "slurm_folder": ("submitit",), "slurm_opts": ("submitit",),
    "ray_address": ("ray",),
}
SLURM_CLUSTERS = ("auto", "slurm", "local", "debug")


def spec_path(run_dir: Path, cell: Cell) -> Path:
    return Path(run_dir) / "specs" / f"{cell.id}.json"


def write_spec(cell: Cell, session, run_dir: Path, device: str | None, resources: dict) -> Path:
    """Write what a worker needs to run ``cell`` on its own, atomically; return the file."""
    root = session.store.root
    spec = {
        "cell": cell.to_json(), "run_dir": str(Path(run_dir).resolve()), "plugins": dict(session.pm.load_args),
        "device": device, "cache_dir": str(root.resolve()) if root else "", "download": session.download,
        "command": session.command, "resources": resources,
    }
    path = spec_path(run_dir, cell)
    write_atomic(path, json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_spec(path: str | Path) -> dict:
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read spec {path}: {exc}; pass a <run_dir>/specs/<cell id>.json file") from None
    missing = {"cell", "run_dir", "plugins", "device", "cache_dir", "download", "command"} - set(spec)
    if missing:
        raise UsageError(f"spec {path} lacks {', '.join(sorted(missing))}; write specs with `benchbone run --executor`")
    return spec


def run_spec_file(path: str) -> dict:
    """Run the cell of one spec file and return its record: what every worker calls."""
    from benchbone.harness import run_spec

    return run_spec(read_spec(path))


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"--executor {module} needs {module}: pip install 'benchbone[{extra}]'") from None


def get(name: str, options: dict) -> "Executor":
    """The executor called ``name``, its options checked and its engine importable."""
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
    for key, value in options.items():
        if key not in OPTIONS:
            raise UsageError(f"unknown executor option {key!r}; known: {', '.join(OPTIONS)}")
        if value is not None and name not in OPTIONS[key]:
            raise UsageError(f"--{key.replace('_', '-')} applies to --executor {' or '.join(OPTIONS[key])}, not {name}")
    for key in ("gpus_per_cell", "cpus_per_cell", "slurm_time", "slurm_array_parallelism"):
        if options.get(key) is not None and options[key] < (0 if key == "gpus_per_cell" else 1):
            raise UsageError(f"--{key.replace('_', '-')} {options[key]}: give a whole number >= "
                             f"{0 if key == 'gpus_per_cell' else 1}")
    if options.get("slurm_cluster") not in (None, *SLURM_CLUSTERS):
        raise UsageError(f"--slurm-cluster {options['slurm_cluster']!r}: use one of {', '.join(SLURM_CLUSTERS)}")
    if name == "submitit":
        _require("submitit", EXTRAS[name])
    elif name == "ray" and importlib.util.find_spec("ray") is None:  # import later, after the loopback setting
        raise UsageError("--executor ray needs ray: pip install 'benchbone[ray]'")
    return {"local": Executor, "submitit": SubmititExecutor, "ray": RayExecutor, "specs": SpecsExecutor}[name](options)


class Executor:
    """Runs cells in this process, one after another, sharing one session (the default)."""

    def __init__(self, options: dict):
        self.options = {k: v for k, v in options.items() if v is not None}

    def submit(self, cells: list[Cell], session, run_dir: Path, *, requested_device: str | None = None,
               fail_fast: bool = False, on_record: Callable[[dict, str], None] | None = None) -> list[dict]:
        """Run the unfinished ``cells``, wait, and return every cell's record (in ``cells`` order)."""
        from benchbone.harness import run_cells

        return run_cells(cells, session, run_dir, fail_fast=fail_fast, on_record=on_record)


class SpecsExecutor(Executor):
    """Runs nothing: writes a spec per unfinished cell and prints one ``benchbone run-cell SPEC`` line for each,
    to hand to torchrun, sbatch or a shell loop; ``benchbone leaderboard RUN_DIR`` then reads the records."""

    def placement(self, session, requested_device: str | None) -> tuple[str | None, dict]:
        """The device a worker asks for (None: its own choice) and the resources of one cell."""
        gpus = self.options.get("gpus_per_cell", 1 if session.device.startswith("cuda") else 0)
        resources = {"gpus": gpus, "cpus": self.options.get("cpus_per_cell", 1)}
        return requested_device or (None if gpus else "cpu"), resources

    def write_specs(self, cells, session, run_dir, requested_device) -> tuple[list[Cell], list[Path], dict]:
        """Specs of the cells not finished in ``run_dir``: (those cells, their spec files, their resources)."""
        from benchbone.records import finished_record

        device, resources = self.placement(session, requested_device)
        pending = [c for c in cells if finished_record(run_dir, c.id) is None]
        return pending, [write_spec(c, session, run_dir, device, resources) for c in pending], resources

    def submit(self, cells, session, run_dir, *, requested_device=None, fail_fast=False, on_record=None):
        for path in self.write_specs(cells, session, run_dir, requested_device)[1]:
            print(f"benchbone run-cell {shlex.quote(str(path.resolve()))}")
        return []


class _RemoteExecutor(SpecsExecutor, abc.ABC):
    """Writes a spec per unfinished cell, has an engine run them, and reads the records back."""

    def submit(self, cells, session, run_dir, *, requested_device=None, fail_fast=False, on_record=None):
        from benchbone.harness import failed_record
        from benchbone.plugins import announce_record
        from benchbone.records import write_record

        report = on_record or (lambda record, how: None)
        pending, specs, resources = self.write_specs(cells, session, run_dir, requested_device)
        errors = self.dispatch(specs, Path(run_dir), resources) if pending else []
        outcome = dict(zip((c.id for c in pending), errors))
        records = []
        for cell in cells:
            record = read_record(record_path(run_dir, cell.id))
            if cell.id not in outcome:
                how = "cached"
            elif record is None or (outcome[cell.id] is not None and record.get("status") != "ok"):
                error = outcome[cell.id] or RuntimeError("the worker exited without writing a record")
                record = failed_record(cell, session, error)  # the worker died: record why, here
                announce_record(session.pm, write_record(run_dir, record), run_dir)
                how = "failed"
            else:
                how = record["status"]
            records.append(record)
            report(record, how)
        return records

    @abc.abstractmethod
    def dispatch(self, specs: list[Path], run_dir: Path, resources: dict) -> list[BaseException | None]:
        """Run every spec, wait for all, and return each one's exception (None when it returned)."""


class SubmititCell:
    """The callable submitit runs: one spec file. On preemption or timeout it is requeued with the
    same spec, and the cell resumes from its ``ctx.workdir`` checkpoint."""

    def __call__(self, spec: str) -> str:
        return run_spec_file(spec)["status"]

    def checkpoint(self, spec: str):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, spec)


class SubmititExecutor(_RemoteExecutor):
    """Slurm job arrays through submitit's AutoExecutor (its local executor where there is no Slurm)."""

    def dispatch(self, specs, run_dir, resources):
        import submitit

        cluster = self.options.get("slurm_cluster", "auto")
        folder = self.options.get("slurm_folder") or run_dir / "submitit"
        try:
            executor = submitit.AutoExecutor(folder=folder, cluster=None if cluster == "auto" else cluster)
        except RuntimeError as exc:  # Slurm asked for where there is none
            raise UsageError(f"--slurm-cluster {cluster}: {exc}; use --slurm-cluster auto or local") from None
        params = {"name": "benchbone", "timeout_min": self.options.get("slurm_time", 60),
                  "gpus_per_node": resources["gpus"], "cpus_per_task": resources["cpus"],
                  **{f"slurm_{k}": v for k, v in self.options.get("slurm_opts", {}).items()}}
        if executor.cluster == "slurm":
            params["slurm_partition"] = self.options.get("slurm_partition")
            params["slurm_array_parallelism"] = self.options.get("slurm_array_parallelism", 256)
        try:
            executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        except (NameError, ValueError) as exc:  # an option submitit does not know
            raise UsageError(f"--slurm-opt: {str(exc).splitlines()[0]}") from None
        jobs = executor.map_array(SubmititCell(), [str(s) for s in specs])
        errors: list[BaseException | None] = []
        for job in jobs:
            try:
                job.result()
                errors.append(None)
            except Exception as exc:  # the job failed outside the cell (import, node, time limit)
                errors.append(exc)
        return errors


def start_local_ray(num_cpus: int | None = None, num_gpus: int | None = None):
    """Start a one-node Ray cluster on this machine, bound to 127.0.0.1 only, and return the ray module."""
    # Ray binds its node's public address unless it believes it runs a laptop-only cluster; must precede import
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    return ray


class RayExecutor(_RemoteExecutor):
    """Each cell a Ray task with the cell's CPUs and GPUs: joins ``--ray-address`` (or ``RAY_ADDRESS``,
    "auto" for the cluster on this node), else starts a local cluster on loopback for this run."""

    def dispatch(self, specs, run_dir, resources):
        address = self.options.get("ray_address") or os.environ.get("RAY_ADDRESS")
        started = False
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            import ray  # the caller's session: use it and leave it running
        elif address:
            import ray

            ray.init(address=address, log_to_driver=False)
            started = True
        else:
            ray = start_local_ray()
            started = True
        try:
            task = ray.remote(run_spec_file).options(num_cpus=resources["cpus"], num_gpus=resources["gpus"])
            refs = [task.remote(str(s)) for s in specs]
            errors: list[BaseException | None] = []
            for ref in refs:
                try:
                    ray.get(ref)
                    errors.append(None)
                except Exception as exc:  # the task failed outside the cell (import, worker died)
                    errors.append(exc)
            return errors
        finally:
            if started:
                ray.shutdown()
