"""One exception type per kind of failure; the CLI turns a UsageError into one line and exit status 2."""
from __future__ import annotations

import difflib
from typing import Iterable, Mapping

from benchbone.kinds import KINDS, plural


class BenchboneError(Exception):
    """Base class of every error benchbone raises on purpose."""


class UsageError(BenchboneError):
    """Bad input from the user: a name, a flag, a file, a directory. Reported as one line, exit 2."""


class UnknownNameError(UsageError, KeyError):
    """A backbone, dataset, strategy or metric name that no plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], failed: Mapping[str, str] | None = None):
        known = list(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        if not close:
            close = [k for k in known if name.lower() in k.lower()][:3]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        why = "; ".join(f"plugin {plugin} failed to load: {problem}" for plugin, problem in sorted((failed or {}).items()))
        see = f" See `benchbone list {plural(kind)}`." if kind in KINDS else ""
        super().__init__(f"unknown {kind} {name!r}{f' ({why})' if why else ''}.{hint}{see}")
        self.kind, self.name = kind, name

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DuplicateNameError(UsageError):
    """Two plugins registered the same name (``plugins``), or one plugin registered it twice differently."""

    def __init__(self, message: str, name: str = "", plugins: Iterable[str] = ()):
        super().__init__(message)
        self.name, self.plugins = name, tuple(plugins)


class PluginLoadError(UsageError):
    """A plugin could not be imported or registered."""


class OfflineError(UsageError):
    """Something had to be downloaded and could not be; the message says what to pass instead."""


class PluginError(BenchboneError):
    """A plugin returned something that breaks the API contract; its cell is recorded as failed."""


class SummarisedWarning(UserWarning):
    """A warning that many cells of one run may each give, with the same cause and the same advice: the harness
    counts them and shows one line per ``summary`` at the end of the run instead of one per cell (``--progress
    json`` gives each cell's ``message`` in its event too). ``summary`` holds ``{count}``, the number of cells, and
    says what to do; the cell's record must say the detail itself, since the warning leaves no trace in it.
    Outside a run (a strategy called directly) it is an ordinary warning with the detailed message."""

    def __init__(self, message: str, summary: str):
        super().__init__(message)
        self.summary = summary


def first_line(exc: BaseException, with_type: bool = False) -> str:
    """The first line of ``exc``'s message (after its type's name ``with_type``), or its type's name when it has
    none: a failure in one line."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0]}" if with_type else lines[0]
