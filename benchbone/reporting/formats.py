"""The output formats, declared once: how each renders a leaderboard and which flags it reads (the CLI builds
``--format`` from them), which formats each command offers, and how a table is written in the text formats
(every table of every command goes through ``table_text``). Imports nothing heavy."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Format:
    """One output format: ``render(board, records, run_dirs, **options) -> str`` with ``options`` the flags it reads."""

    name: str
    help: str
    render: Callable[..., str]
    options: tuple[str, ...] = ()
    page: bool = False  # a whole page of its own: --pivot does not apply


def _text(fmt: str) -> Callable[..., str]:
    def render(board, records, run_dirs) -> str:
        from benchbone.reporting import leaderboard

        return leaderboard.to_text(board, fmt)

    return render


def _markdown(board, records, run_dirs, *, title: str) -> str:
    from benchbone.reporting import leaderboard

    return leaderboard.markdown_page(board, records, title=title)


def _html(board, records, run_dirs, *, title: str) -> str:
    from benchbone.reporting import report

    return report.page(board, records, [Path(d) for d in run_dirs], title=title)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("table", "a terminal table", _text("table")),
    Format("md", "a markdown page: the table, rankings across datasets and provenance", _markdown, ("title",)),
    Format("csv", "one CSV row per leaderboard row, every column", _text("csv")),
    Format("json", "one JSON object per leaderboard row, every column", _text("json")),
    Format("html", "a self-contained page (see `benchbone report`)", _html, ("title",), page=True),
)}


# The formats each command offers (``benchbone COMMAND --format``); the leaderboard's are all of FORMATS.
OFFERED = {"leaderboard": tuple(FORMATS), "compare": ("table", "json", "html"), "select": ("table", "md", "json")}
TEXT = ("table", "md", "csv", "json")  # the formats of ``table_text``


def check(fmt: str, offered: tuple[str, ...] = TEXT) -> None:
    """A UsageError unless ``fmt`` is one of ``offered``."""
    if fmt not in offered:
        from benchbone.errors import UsageError

        raise UsageError(f"unknown format {fmt!r}; use one of {', '.join(offered)}")


def table_text(frame, fmt: str, shown=None, *, index: bool = False, orient: str = "records") -> str:
    """A table in a text format: csv and json keep ``frame``'s raw values (json as ``orient``); table and md
    print ``shown`` (``frame`` written for people; ``frame`` itself when None) with tabulate."""
    from tabulate import tabulate

    check(fmt)
    if fmt == "csv":
        return frame.to_csv(index=index)
    if fmt == "json":
        return frame.to_json(orient=orient, indent=2)
    return tabulate(frame if shown is None else shown, headers="keys", tablefmt="github" if fmt == "md" else "simple",
                    showindex="default" if index else False, disable_numparse=True)


def render(name: str, board, records: list[dict], run_dirs, **flags) -> str:
    """``board`` in format ``name``, given the flags that format reads (others are ignored)."""
    fmt = FORMATS[name]
    return fmt.render(board, records, run_dirs, **{k: flags[k] for k in fmt.options})


def help_text() -> str:
    return "; ".join(f"{f.name}: {f.help}" + (f" (reads --{', --'.join(f.options)})" if f.options else "")
                     for f in FORMATS.values())
