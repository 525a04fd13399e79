"""Executors hand a grid's cells to an existing engine: this process, Slurm via submitit, or a Ray cluster.

Every worker runs one spec file (``<run_dir>/specs/<cell id>.json``) through ``runner.run_spec``, the
same path as a local run, and writes the cell's record into the run directory; the driver then reads
the records back. A lost driver loses nothing, and running the grid again skips finished cells.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import importlib
import importlib.util
import json
import os
import secrets
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from benchbone.api import Cell
from benchbone.errors import UsageError
from benchbone.records import read_record, record_path, write_atomic

SLURM_CLUSTERS = ("auto", "slurm", "local", "debug")


@dataclasses.dataclass(frozen=True)
class Option:
    """An option an executor declares; the CLI makes it the flag ``--name-with-dashes`` (``flag`` if given)."""

    name: str
    help: str
    type: type = str
    metavar: str = "VALUE"
    minimum: int | None = None
    choices: tuple[str, ...] = ()
    pairs: bool = False  # a repeatable KEY=VALUE flag, gathered into a dict
    flag: str = ""

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """A UsageError naming the flag for a value out of range."""
        if self.minimum is not None and value < self.minimum:
            raise UsageError(f"{self.cli_flag} {value}: give a whole number >= {self.minimum}")
        if self.choices and value not in self.choices:
            raise UsageError(f"{self.cli_flag} {value!r}: use one of {', '.join(self.choices)}")


PLACEMENT = (
    Option("gpus_per_cell", "GPUs per cell (default 1 on CUDA, else 0)", int, "N", minimum=0),
    Option("cpus_per_cell", "CPUs per cell (default 1)", int, "N", minimum=1),
)


def spec_path(run_dir: Path, cell: Cell) -> Path:
    return Path(run_dir) / "specs" / f"{cell.id}.json"


def write_spec(cell: Cell, session, run_dir: Path, device: str | None, resources: dict) -> Path:
    """Write what a worker needs to run ``cell`` on its own, atomically; return the file."""
    root = session.store.root
    spec = {
        "cell": cell.to_json(), "run_dir": str(Path(run_dir).resolve()), "plugins": dict(session.pm.load_args),
        "plugin_versions": session.pm.plugin_versions(),
        "device": device, "cache_dir": str(root.resolve()) if root else "", "download": session.download,
        "command": session.command, "resources": resources,
        "cwd": os.getcwd(),  # where relative dataset paths (imagefolder:data) were read; data_dir is absolute
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
    from benchbone.execution.provenance import record_spec_failure
    from benchbone.execution.resume import run_spec

    spec = read_spec(path)
    try:
        return run_spec(spec)
    except Exception as exc:  # the cell could not run here at all (plugins, data, directory): its record says why
        record_spec_failure(spec, exc)
        raise


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"--executor {module} needs {module}: pip install 'benchbone[{extra}]'") from None


def options() -> dict[str, tuple[Option, list[str]]]:
    """Every declared option (by name), with the executors that declare it: what the CLI makes flags of."""
    out: dict[str, tuple[Option, list[str]]] = {}
    for name, executor in EXECUTORS.items():
        for option in executor.options:
            out.setdefault(option.name, (option, []))[1].append(name)
    return out


def get(name: str, given: dict) -> "Executor":
    """The executor called ``name``, its options checked and its engine importable."""
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
    declared = options()
    for key, value in given.items():
        if key not in declared:
            raise UsageError(f"unknown executor option {key!r}; known: {', '.join(declared)}")
        option, owners = declared[key]
        if value is not None and name not in owners:
            raise UsageError(f"{option.cli_flag} applies to --executor {' or '.join(owners)}, not {name}")
        if value is not None:
            option.check(value)
    executor = EXECUTORS[name]
    executor.check_engine()
    return executor(given)


class Executor:
    """Runs cells in this process, one after another, sharing one session (the default)."""

    name = "local"
    help = "this process, one cell after another (default)"
    options: tuple[Option, ...] = ()

    @classmethod
    def check_engine(cls) -> None:
        """A UsageError naming the extra to install when the engine is missing."""

    def __init__(self, options: dict):
        self.options = {k: v for k, v in options.items() if v is not None}

    def submit(self, cells: list[Cell], session, run_dir: Path, *, requested_device: str | None = None,
               fail_fast: bool = False, on_record: Callable[[dict, str], None] | None = None,
               later: list | None = None, on_start: Callable[[Cell], None] | None = None) -> list[dict]:
        """Run the unfinished ``cells``, wait, and return every cell's record (in ``cells`` order).

        ``later`` receives what is left to do once the leaderboard is written (the last cell's deferred
        artefacts, see ``runner.run_cells``); executors whose workers finish their own cells leave it empty.
        ``on_start(cell)`` as a cell starts and ``on_record(record, how)`` as it ends feed the progress lines;
        executors whose workers run the cells elsewhere never call ``on_start``, and call ``on_record`` for each
        cell once the engine has run them all."""
        from benchbone.execution.resume import run_cells

        return run_cells(cells, session, run_dir, fail_fast=fail_fast, on_record=on_record, later=later,
                         on_start=on_start)


class SpecsExecutor(Executor):
    """Runs nothing: writes a spec per unfinished cell and prints one ``benchbone run-cell SPEC`` line for each,
    to hand to torchrun, sbatch or a shell loop; ``benchbone leaderboard RUN_DIR`` then reads the records."""

    name = "specs"
    help = "nobody: write RUN_DIR/specs/*.json and print a `benchbone run-cell` line for each"
    options = PLACEMENT

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

    def submit(self, cells, session, run_dir, *, requested_device=None, fail_fast=False, on_record=None, later=None,
               on_start=None):
        for path in self.write_specs(cells, session, run_dir, requested_device)[1]:
            print(f"benchbone run-cell {shlex.quote(str(path.resolve()))}")
        return []


class _RemoteExecutor(SpecsExecutor, abc.ABC):
    """Writes a spec per unfinished cell, has an engine run them, and reads the records back."""

    def submit(self, cells, session, run_dir, *, requested_device=None, fail_fast=False, on_record=None, later=None,
               on_start=None):
        from benchbone.execution.provenance import failed_record
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
    def dispatch(self, specs: list[Path], run_dir: Path, resources: dict,
                 worker: Callable[[str], dict] = run_spec_file) -> list[BaseException | None]:
        """Run ``worker`` (a cell's by default; select's steps give theirs) on every spec, wait for all, and return
        each one's exception (None when it returned)."""


class SubmititCell:
    """The callable submitit runs: one spec file through ``worker``. On preemption or timeout it is requeued with
    the same spec, and the cell resumes from its ``ctx.workdir`` checkpoint."""

    def __init__(self, worker: Callable[[str], dict] = run_spec_file):
        self.worker = worker

    def __call__(self, spec: str) -> str:
        return self.worker(spec)["status"]

    def checkpoint(self, spec: str):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, spec)


class SubmititExecutor(_RemoteExecutor):
    """Slurm job arrays through submitit's AutoExecutor (its local executor where there is no Slurm)."""

    name = "submitit"
    help = "Slurm job arrays via submitit"
    options = (
        *PLACEMENT,
        Option("slurm_cluster", "auto (Slurm where sbatch exists, else local processes), slurm, local or debug",
               metavar="KIND", choices=SLURM_CLUSTERS),
        Option("slurm_partition", "Slurm partition", metavar="NAME"),
        Option("slurm_time", "time limit per cell in minutes (default 60)", int, "MIN", minimum=1),
        Option("slurm_array_parallelism", "cells running at once (default 256)", int, "N", minimum=1),
        Option("slurm_folder", "submitit's logs and pickles (default RUN_DIR/submitit)", metavar="DIR"),
        Option("slurm_opts", "any other parameter of submitit's Slurm executor, e.g. account=abc or qos=high "
               "(repeatable)", metavar="KEY=VALUE", pairs=True, flag="--slurm-opt"),
    )

    @classmethod
    def check_engine(cls) -> None:
        _require("submitit", "slurm")

    def dispatch(self, specs, run_dir, resources, worker=run_spec_file):
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
        jobs = executor.map_array(SubmititCell(worker), [str(s) for s in specs])
        errors: list[BaseException | None] = []
        for job in jobs:
            try:
                job.result()
                errors.append(None)
            except Exception as exc:  # the job failed outside the cell (import, node, time limit)
                errors.append(exc)
        return errors


_PROCESS_TOKEN = secrets.token_hex(32)
LOCAL_RAY_VARIABLES = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")


def quiet_ray_environment() -> dict[str, str | None]:
    """Set what a local Ray cluster reads from the environment so that it runs quietly and writes nothing in the
    home directory; return the previous values (``restore_environment`` puts them back).

    Ray's token authentication stays on, but explicitly (no warning) and with a token of this process's own (Ray keeps
    the first it reads) in ``RAY_AUTH_TOKEN``, inherited by the cluster, instead of one saved in ``~/.ray/auth_token``;
    a mode or token the user set is kept. Usage statistics are off unless the user turned them on. Ray's session
    files go to its temporary directory (``/tmp/ray``, or ``RAY_TMPDIR``)."""
    wanted = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # else Ray binds its node's public address; precedes import
              "RAY_USAGE_STATS_ENABLED": "0"}
    if "RAY_AUTH_MODE" not in os.environ:
        wanted["RAY_AUTH_MODE"] = "token"
        if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
            wanted["RAY_AUTH_TOKEN"] = _PROCESS_TOKEN
    previous = {name: os.environ.get(name) for name in wanted}
    for name, value in wanted.items():
        os.environ.setdefault(name, value)
    return previous


def restore_environment(previous: dict[str, str | None]) -> None:
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def start_local_ray(num_cpus: int | None = None, num_gpus: int | None = None):
    """Start a one-node Ray cluster on this machine, bound to 127.0.0.1 only, quietly (``quiet_ray_environment``),
    and return the ray module."""
    import logging

    quiet_ray_environment()
    import ray

    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level=logging.WARNING)
    return ray


class RayExecutor(_RemoteExecutor):
    """Each cell a Ray task with the cell's CPUs and GPUs: joins ``--ray-address`` (or ``RAY_ADDRESS``,
    "auto" for the cluster on this node), else starts a local cluster on loopback for this run."""

    name = "ray"
    help = "a Ray cluster"
    options = (*PLACEMENT, Option("ray_address", "join this Ray cluster ('auto': the one on this node; default "
                                  "$RAY_ADDRESS, else a local cluster on 127.0.0.1)", metavar="ADDR"))

    @classmethod
    def check_engine(cls) -> None:
        if importlib.util.find_spec("ray") is None:  # import later, after the loopback setting
            raise UsageError("--executor ray needs ray: pip install 'benchbone[ray]'")

    @contextlib.contextmanager
    def connected(self):
        """The ray module, connected for the dispatches inside (a selection's steps share one session): the
        caller's session, left running; else ``--ray-address``'s cluster or a local one, let go on leaving."""
        address = self.options.get("ray_address") or os.environ.get("RAY_ADDRESS")
        started, previous = False, None
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            import ray  # the caller's session: use it and leave it running
        elif address:
            import ray

            ray.init(address=address, log_to_driver=False)
            started = True
        else:
            previous = {name: os.environ.get(name) for name in LOCAL_RAY_VARIABLES}
            ray = start_local_ray()
            started = True
        try:
            yield ray
        finally:
            if started:
                ray.shutdown()
            if previous is not None:  # this run's token must not follow the process to another cluster
                restore_environment(previous)

    def dispatch(self, specs, run_dir, resources, worker=run_spec_file):
        with self.connected() as ray:
            task = ray.remote(worker).options(num_cpus=resources["cpus"], num_gpus=resources["gpus"])
            refs = [task.remote(str(s)) for s in specs]
            errors: list[BaseException | None] = []
            for ref in refs:
                try:
                    ray.get(ref)
                    errors.append(None)
                except Exception as exc:  # the task failed outside the cell (import, worker died)
                    errors.append(exc)
            return errors


# The executors by name, in the order --help lists them; each declares its options (``Executor.options``).
EXECUTORS: dict[str, type[Executor]] = {e.name: e for e in (Executor, SubmititExecutor, RayExecutor, SpecsExecutor)}
