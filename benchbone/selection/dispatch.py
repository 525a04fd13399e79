"""``benchbone select --executor submitit|ray``: the steps' expensive work as jobs, the decisions in this process.

``Dispatched`` is a ``Selector`` whose ``prefetch`` hands steps to an executor (``execution.executors``) before the
selection reads them: the screen of each candidate (its features of the first subsample into the feature cache,
its estimator scores into ``<cache>/estimates/``), at the start of each round the evaluation of each candidate
still in, and the test step of each survivor (each leaves its ``OUT/steps/`` record). A job is a JSON spec in
``OUT/jobs/`` (the request, the candidate, the step and what this process has already charged the candidate),
which ``run_step`` runs on a worker: it rebuilds the ``Selector`` from the request (``prepare`` is deterministic:
the same splits and chunks), does that one step through the code a local run uses, and writes
``<spec>.result.json``. This process then runs the screen, the rounds and the test as ``--executor local`` does
and finds each step done, so the answer is the same and the budget is charged with the seconds the jobs measured.
Constraints are measured here, on ``--device``; the jobs use the executor's device.

A job whose result says ok is not dispatched again (a rerun after a kill dispatches only what is missing). A job
that fails is one line naming the candidate and its error, and the candidate is out ("failed"), or at the test
step its test is not scored; the others go on.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path

from benchbone.errors import UsageError, first_line
from benchbone.selection import screen
from benchbone.selection.constraints import Limits
from benchbone.selection.request import Request
from benchbone.selection.run import Selector


def _result_path(spec: str | Path) -> Path:
    return Path(spec).with_suffix(".result.json")


def _result(spec: Path) -> dict:
    try:
        return json.loads(_result_path(spec).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class Dispatched(Selector):
    """A ``Selector`` whose steps run as jobs on ``request.executor`` (submitit or ray) before it reads them."""

    def __init__(self, request: Request, pm, say):
        from benchbone.execution import executors

        if request.executor == "specs":
            raise UsageError("--executor specs: each round of select depends on the last one's results, so there is "
                             "no list of commands to print; use local, submitit or ray")
        super().__init__(request, pm, say)
        self.executor = executors.get(request.executor, request.executor_options)
        self.failed: set[str] = set()

    def run(self):
        """Every step (``Selector.run``); with Ray, all the steps' jobs in one session."""
        with self.executor.connected() if self.r.executor == "ray" else contextlib.nullcontext():
            return super().run()

    def prefetch(self, labels, size: int | None, test: bool = False) -> set[str]:
        """Run the step of each of ``labels`` (``size`` None: the screen; else the round at ``size``, or with
        ``test`` the test) as jobs at once, but those done or failed; the labels whose job failed."""
        from benchbone.digests import json_digest
        from benchbone.records import write_atomic

        if self.session.store.root is None:
            raise UsageError(f"--executor {self.r.executor}: select's jobs leave their features in the feature cache; "
                             "give a --cache-dir the workers share")
        device, resources = self.executor.placement(self.session, self.r.device)
        request = {**dataclasses.asdict(self.r), "out": str(Path(self.r.out).resolve()), "device": device,
                   "cache_dir": str(self.session.store.root.resolve()), "quiet": True, "executor": "local",
                   "executor_options": {}}
        pending = []
        for label in labels:
            cand = self.candidates[label]
            spec = {"request": request, "plugins": dict(self.pm.load_args), "cwd": os.getcwd(),
                    "plugin_versions": self.pm.plugin_versions(), "candidate": label, "state": cand.state,
                    "meta": cand.meta, "size": size, "test": test, "charged": sorted(cand.charged, key=str)}
            path = Path(request["out"]) / "jobs" / f"{json_digest(spec, length=24)}.json"
            if label not in self.failed and _result(path).get("status") != "ok":
                write_atomic(path, json.dumps(spec, indent=2, default=str) + "\n")
                _result_path(path).unlink(missing_ok=True)
                pending.append((label, path))
        what = "the screen" if size is None else f"the test at {size} images" if test else f"the round at {size} images"
        if pending:
            self.say(f"benchbone: {what}: {len(pending)} job(s) on {self.r.executor}")
            errors = self.executor.dispatch([p for _, p in pending], Path(request["out"]), resources, worker=run_step)
            for (label, path), error in zip(pending, errors):
                result = _result(path)
                if result.get("status") != "ok":
                    self.fail(self.candidates[label], what, result.get("error") or first_line(error or RuntimeError(
                        "the job ended without a result"), with_type=True), test)
        failed = {label for label in labels if label in self.failed}
        if not test and failed and len(failed) == len(labels):
            raise UsageError(f"every candidate's job failed in {what} (see the lines above)")
        return failed

    def fail(self, cand, what: str, error: str, test: bool) -> None:
        """One line for a failed job: the candidate is out ("failed"), or at the test step its test is not scored."""
        self.failed.add(cand.label)
        if test:
            self.say(f"benchbone: test not scored for {cand.label}: its job failed: {error}", important=True)
            return
        cand.status, cand.why = "failed", f"its job failed in {what}: {error}"
        self.say(f"benchbone: dropped {cand.label}: {cand.why}", important=True)


def run_step(spec_path: str) -> dict:
    """What a select job runs on a worker: the step its spec names, as a local run does it; writes and returns
    ``{"status": "ok"}`` or ``{"status": "failed", "error": one line}``."""
    from benchbone.records import write_atomic

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    try:
        with contextlib.chdir(spec["cwd"]):  # relative data and weights paths resolve as the main process's did
            _step(spec)
        outcome = {"status": "ok"}
    except Exception as exc:  # noqa: BLE001 (a plugin may fail in any way: the main process drops the candidate)
        outcome = {"status": "failed", "error": first_line(exc, with_type=True)}
    step = "screen" if spec["size"] is None else f"{'test' if spec['test'] else 'round'} at {spec['size']} images"
    print(f"benchbone: job {spec['candidate']} {step}: {outcome['status']} {outcome.get('error', '')}".rstrip(),
          file=sys.stderr, flush=True)
    write_atomic(_result_path(spec_path), json.dumps(outcome))
    return outcome


def _step(spec: dict) -> None:
    from benchbone.execution.resume import check_plugin_versions
    from benchbone.plugins import get_plugin_manager

    pm = get_plugin_manager(**spec["plugins"])
    check_plugin_versions(spec["plugin_versions"], pm.plugin_versions())
    given = spec["request"]
    request = Request(**{**given, "out": Path(given["out"]), "limits": Limits(**given["limits"])})

    def say(line: str, important: bool = False) -> None:  # to the job's log
        print(line, file=sys.stderr, flush=True)

    sel = Selector(request, pm, say)
    cand = {c.label: c for c in sel.prepare()}[spec["candidate"]]
    sel._build(cand)
    if sel.session.backbone_digest != spec["state"]:
        raise RuntimeError(f"its weights here ({sel.session.backbone_digest[:12]}) differ from the main process's "
                           f"({spec['state'][:12]}); give every node the same weights")
    cand.state, cand.meta, cand.charged = spec["state"], spec["meta"], set(spec["charged"])
    if spec["size"] is None:
        screen.step(sel, cand)
    else:
        sel.evaluate(cand, spec["size"], request.out / "steps", test=spec["test"])
