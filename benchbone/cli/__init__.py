"""The ``benchbone`` command. Imports no torch until a command needs it."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

from benchbone.cli import commands
from benchbone.cli.parser import build_parser
from benchbone.errors import BenchboneError, UsageError
from benchbone.execution.allocator import prefer_huge_pages

COMMANDS = {"run": commands.cmd_run, "run-cell": commands.cmd_run_cell, "list": commands.cmd_list,
            "plugins": commands.cmd_plugins, "leaderboard": commands.cmd_leaderboard, "report": commands.cmd_report,
            "doctor": commands.cmd_doctor, "compare": commands.cmd_compare,
            "select": commands.cmd_select}


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings of benchbone and its built-in plugins (a damaged cache file or record) as one line each on stderr."""
    import importlib.util

    plugins = importlib.util.find_spec("benchbone_plugins")
    own = (str(Path(__file__).parents[1]), *(plugins.submodule_search_locations or () if plugins else ()))
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(own):
            print(f"benchbone: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, as Ctrl-C's KeyboardInterrupt is: the same clean-up, then one line."""


@contextlib.contextmanager
def _sigterm_raises():
    """While ``main`` runs (in the main thread), SIGTERM raises ``Terminated`` in this process; a forked child
    (a DataLoader worker) that inherits the handler dies of it as it would have."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def terminated(signum, frame):
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    try:
        with _sigterm_raises():
            return _main(argv)
    except Terminated:  # in the moment outside _main's own handling
        return 143


def _main(argv: list[str] | None) -> int:
    prefer_huge_pages()  # before anything imports torch
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("BENCHBONE_DEBUG"))
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(argv if argv is not None else sys.argv[1:])
        if args.version:
            from benchbone.plugins import _benchbone_version

            print(f"benchbone {_benchbone_version()}")
            return 0
        if not args.command:
            build_parser().print_help()
            return 2
        with contextlib.nullcontext() if debug else _one_line_warnings():
            return COMMANDS[args.command](args)
    except UsageError as exc:
        if debug:
            raise
        print(f"benchbone: error: {exc}", file=sys.stderr)
        return 2
    except BenchboneError as exc:
        if debug:
            raise
        print(f"benchbone: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `benchbone list backbones | head`
        return 0
    except Terminated:
        print("benchbone: terminated (SIGTERM); finished cells are kept, run the same command to resume",
              file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("benchbone: interrupted; finished cells are kept, run the same command to resume", file=sys.stderr)
        return 130
