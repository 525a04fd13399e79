"""What a run says while it runs, on stderr: one line when a cell starts and when it ends, with a counter and an
estimate of the time left from the cells measured so far; tqdm's per-batch bars only when stderr is a terminal
(a log file gets the lines alone); or, with ``--progress json``, one JSON object per line for tools and notebooks.

It also gathers the run's ``SummarisedWarning``s (``benchbone.errors``): a cause that many cells share, such as
the C sweep stopping at float32's limit, is shown once at the end of the run with the number of cells, not once
per cell. Other warnings pass through as they come (as JSON events under ``--progress json``).

``-q`` hides the progress (bars and cell lines, the run's first and last lines); a failed cell's line, warnings
and the leaderboard stay. JSON events are for programs, so ``-q`` leaves them as they are.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from pathlib import Path

from benchbone.errors import SummarisedWarning, UsageError
from benchbone.execution.artefacts import cell_title

MODES = ("auto", "plain", "json")  # --progress: bars on a terminal and lines; lines only; JSON events only


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UsageError(f"progress={mode!r}: use one of {', '.join(MODES)}")
    return mode


def duration(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def time_left(seconds: float) -> str:
    """An estimate, as coarse as it is: ``about 40 s``, ``about 12 min``, ``about 2 h 05 min``."""
    if seconds < 60:
        return f"about {max(round(seconds), 1)} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {duration(seconds)}"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class Progress:
    """The progress of one run. ``begin``, then ``start`` (cells run here) and ``finish`` for each cell, then ``end``;
    ``watch()`` around it all gathers the warnings. ``stream`` defaults to ``sys.stderr`` as it is when written to."""

    def __init__(self, mode: str = "auto", *, quiet: bool = False, fail_fast: bool = False, stream=None):
        self.mode = check_mode(mode)
        self.quiet, self.fail_fast, self._stream = quiet, fail_fast, stream
        self.total = self.reported = 0
        self.pending: set[str] = set()  # ids of the cells expected to run and not reported yet
        self.seconds: list[float] = []  # of the cells run so far, each from the end of the one before (see finish)
        self.counts = {"ok": 0, "failed": 0, "cached": 0}
        self.began = self.mark = time.monotonic()
        self._started: dict[str, tuple[int, float]] = {}  # cell id: (its number, when it started)
        self.current: str | None = None  # the cell running now, whose warnings these are
        self.cell_warnings: dict[str, list[str]] = {}
        self.summaries: dict[str, list[str]] = {}  # summary template: the cells that gave it (one entry per cell)

    @property
    def stream(self):
        return self._stream or sys.stderr

    @property
    def json(self) -> bool:
        return self.mode == "json"

    @property
    def lines(self) -> bool:
        """Whether the cell lines are written (a failed cell's line is written regardless)."""
        return not self.json and not self.quiet

    @property
    def bars(self) -> bool:
        """Whether per-batch bars are drawn: only on a terminal, and only in ``auto`` mode without ``-q``."""
        return self.mode == "auto" and not self.quiet and _isatty(self.stream)

    # -- output

    def say(self, line: str) -> None:
        if self.bars:  # above a bar that is being drawn, not through it
            from tqdm import tqdm

            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def event(self, kind: str, **fields) -> None:
        if self.json:
            line = json.dumps({"event": kind, "time": round(time.time(), 3), **fields}, default=str)
            print(line, file=self.stream, flush=True)

    # -- the run

    def begin(self, cells: list, device: str, out: Path, finished: set[str] = frozenset()) -> None:
        """``finished``: ids of the cells whose record is there already (they will be reported as cached)."""
        self.total = len(cells)
        self.pending = {c.id for c in cells} - set(finished)
        self.began = self.mark = time.monotonic()
        self.event("run_started", total=self.total, to_run=len(self.pending), device=device, out=str(out))
        if self.lines:
            before = len({c.id for c in cells} - self.pending)
            self.say(f"benchbone: {self.total} cell(s) on {device}, run directory {out}"
                     + (f" ({before} finished before, not run again)" if before else ""))

    def eta(self) -> float | None:
        """Seconds left: the mean time of the cells measured so far times the cells still to run."""
        if not self.seconds:
            return None
        return sum(self.seconds) / len(self.seconds) * len(self.pending)

    def _left(self) -> str:
        eta = self.eta()
        return f", {time_left(eta)} left" if eta is not None and self.pending else ""

    def start(self, cell) -> None:
        """A cell starts running here (executors whose workers run the cells elsewhere never call this)."""
        self.reported += 1
        self._started[cell.id] = (self.reported, time.monotonic())
        self.current = cell.id
        head = f"{cell.backbone_label} x {cell.dataset_label} x {cell.strategy} (seed {cell.seed})"
        self.event("cell_started", cell=cell.id, index=self.reported, total=self.total, backbone=cell.backbone_label,
                   dataset=cell.dataset_label, strategy=cell.strategy, seed=cell.seed, eta_s=_round(self.eta()))
        if self.lines:
            self.say(f"  started {head}, cell {self.reported} of {self.total}{self._left()}")

    def finish(self, record: dict, how: str) -> None:
        """A cell's record: ``how`` is "ok", "failed" or "cached" (its record was there before)."""
        cell_id, now = record.get("cell_id", ""), time.monotonic()
        if cell_id in self._started:  # the time left counts what passed since the last cell ended (its artefacts too)
            index, began = self._started.pop(cell_id)
            seconds, slot = now - began, now - self.mark
        else:  # cached, or run by a remote worker: its own timing, if any
            self.reported += 1
            index = self.reported
            seconds = slot = None if how == "cached" else (record.get("timings") or {}).get("cell_s")
        self.mark = now
        if slot is not None and cell_id in self.pending:
            self.seconds.append(slot)
        self.pending.discard(cell_id)
        self.current = None
        self.counts[how if how in self.counts else "ok"] += 1
        head = cell_title(record)
        fields = dict(cell=cell_id, index=index, total=self.total, backbone=record.get("backbone"),
                      dataset=record.get("dataset"), strategy=record.get("strategy"), seed=record.get("seed"))
        took = f", {duration(seconds)}" if seconds is not None else ""
        if how == "failed":
            self.event("cell_failed", **fields, seconds=_round(seconds), eta_s=_round(self.eta()),
                       error=record.get("error"), warnings=self.cell_warnings.pop(cell_id, []))
            if not self.json and not self.fail_fast:  # also with -q; with --fail-fast the error that stops the run says it
                self.say(f"  FAILED {head}, cell {index} of {self.total}{took}{self._left()}: {record.get('error')}")
            return
        shown = ", ".join(f"{k}={v:.4f}" for k, v in (record.get("metrics") or {}).items())
        if how == "cached":
            self.event("cell_cached", **fields, metrics=record.get("metrics"))
            if self.lines:
                self.say(f"  cached {head}, cell {index} of {self.total}: {shown}")
            return
        self.event("cell_finished", **fields, seconds=_round(seconds), eta_s=_round(self.eta()),
                   metrics=record.get("metrics"), warnings=self.cell_warnings.pop(cell_id, []))
        if self.lines:
            self.say(f"  done {head}, cell {index} of {self.total}{took}{self._left()}: {shown}")

    def end(self, written: str | None = None, out: Path | None = None) -> None:
        """The summarised warnings, once each, and the run's last line (or event)."""
        self.summarise()
        elapsed = time.monotonic() - self.began
        self.event("run_finished", seconds=_round(elapsed), total=self.total, out=str(out) if out else None,
                   **self.counts)
        if self.lines and written:
            self.say(f"benchbone: wrote {out}/{{{written}}} and records/ in {duration(elapsed)}")

    # -- warnings

    @contextlib.contextmanager
    def watch(self):
        """Gather ``SummarisedWarning``s for ``summarise``; under JSON, every other warning becomes an event."""
        with warnings.catch_warnings():
            warnings.filterwarnings("always", category=SummarisedWarning)  # each cell's: they are counted
            previous = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, SummarisedWarning) and isinstance(message, SummarisedWarning):
                    cell = self.current or ""
                    self.summaries.setdefault(message.summary, []).append(cell)
                    if self.current:
                        self.cell_warnings.setdefault(self.current, []).append(str(message))
                    else:  # outside a cell: nothing to attach it to, so it is shown in the summary alone
                        self.event("warning", message=str(message), cell=None)
                elif self.json:
                    self.event("warning", message=str(message), cell=self.current, category=category.__name__)
                else:
                    previous(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            yield self

    def summarise(self) -> None:
        """One warning per summary, with its number of cells; each is shown once, then forgotten."""
        summaries, self.summaries = self.summaries, {}
        for template, cells in summaries.items():
            count = len(set(cells))
            line = template.format(count=count)
            if self.json:
                self.event("warning", message=line, count=count, cells=sorted({c for c in cells if c}))
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("always", UserWarning)  # a second run in this process says it again
                    warnings.warn(line, UserWarning, stacklevel=2)


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
