"""The leaderboard: a pure function of records, shown as a table and written as CSV, markdown and JSON."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from benchbone.errors import UsageError
from benchbone.records import write_atomic

KEYS = ["dataset", "strategy", "backbone", "params"]
COST = ["params_m", "gmacs", "num_features"]  # from each record's backbone_info
FORMATS = ("table", "md", "csv", "json")


def _metric_names(records: list[dict]) -> list[str]:
    names: list[str] = []
    for record in records:
        for name in record.get("higher_is_better", {}):
            if name not in names:
                names.append(name)
    return sorted(names, key=lambda n: (n != "top1", n))


def build(records: Iterable[dict], sort_by: str | None = None) -> pd.DataFrame:
    """One row per backbone x dataset x strategy x parameters, metrics averaged over seeds, ranked.

    Rows are ranked within each dataset and strategy by ``sort_by`` (default: the first metric)
    in that metric's direction; failed cells appear with their error.
    """
    records = list(records)
    if not records:
        return pd.DataFrame(columns=["rank", *KEYS, "seeds", "status"])
    metrics = _metric_names(records)
    directions = {m: r["higher_is_better"][m] for r in records for m in r.get("higher_is_better", {})}
    percent = {m: r.get("percent", {}).get(m, False) for r in records for m in r.get("higher_is_better", {})}
    sort_by = sort_by or (metrics[0] if metrics else None)  # top1 when present
    if sort_by is not None and sort_by not in metrics:
        raise UsageError(f"cannot sort by {sort_by!r}: the records hold {', '.join(metrics) or 'no metrics'}")
    rows = []
    for r in records:
        row = {k: r[k] for k in ("dataset", "strategy", "backbone", "seed", "status")}
        row["params"] = json.dumps(r.get("params", {}), sort_keys=True)
        row.update({m: r.get("metrics", {}).get(m) for m in metrics})
        row["time_s"] = r.get("timings", {}).get("total_s")
        row.update({c: r.get("backbone_info", {}).get(c) for c in COST})
        row["error"] = r.get("error")
        rows.append(row)
    flat = pd.DataFrame(rows)
    out = []
    for key, group in flat.groupby(KEYS, sort=False, dropna=False):
        ok = group[group.status == "ok"]
        row = dict(zip(KEYS, key))
        row["seeds"] = len(ok)
        row["status"] = "ok" if len(ok) == len(group) else ("failed" if ok.empty else f"{len(group) - len(ok)} failed")
        for m in metrics:
            values = ok[m].dropna().astype(float)
            row[m] = values.mean() if len(values) else float("nan")
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        for c in COST:
            row[c] = ok[c].dropna().iloc[0] if ok[c].notna().any() else None
        row["time_s"] = ok["time_s"].mean() if len(ok) else float("nan")
        errors = group["error"].dropna()
        row["error"] = errors.iloc[0] if len(errors) else ""
        out.append(row)
    board = pd.DataFrame(out)
    if sort_by is not None:
        ascending = not directions[sort_by]
        board = board.sort_values(["dataset", "strategy", sort_by, "backbone"],
                                  ascending=[True, True, ascending, True], na_position="last", kind="mergesort")
        board.insert(0, "rank", board.groupby(["dataset", "strategy"]).cumcount() + 1)
    else:
        board.insert(0, "rank", 1)
    board = board.reset_index(drop=True)
    board.attrs.update(metrics=metrics, directions=directions, percent=percent, sort_by=sort_by)
    return board


def _cell(value: float, std: float, percent: bool) -> str:
    if pd.isna(value):
        return "-"
    scale, digits = (100.0, 2) if percent else (1.0, 4)
    text = f"{value * scale:.{digits}f}"
    return text if pd.isna(std) else f"{text} ± {std * scale:.{digits}f}"


def display(board: pd.DataFrame) -> pd.DataFrame:
    """Human-readable columns: mean ± std, percentages, arrows for the metric direction."""
    metrics, directions, percent = board.attrs["metrics"], board.attrs["directions"], board.attrs["percent"]
    show = board[["rank", "dataset", "strategy", "backbone"]].copy()
    if board["params"].nunique() > 1:
        show["params"] = board["params"]
    for m in metrics:
        label = f"{m} {'↑' if directions[m] else '↓'}{' %' if percent[m] else ''}"
        show[label] = [_cell(v, s, percent[m]) for v, s in zip(board[m], board[f"{m}_std"])]
    show["params M"] = [f"{v:.2f}" if pd.notna(v) else "-" for v in board["params_m"]]
    show["GMACs"] = [f"{v:.3g}" if pd.notna(v) else "-" for v in board["gmacs"]]
    show["features"] = [f"{int(v)}" if pd.notna(v) else "-" for v in board["num_features"]]
    show["seeds"] = board["seeds"]
    show["time s"] = [f"{t:.1f}" if pd.notna(t) else "-" for t in board["time_s"]]
    if (board["status"] != "ok").any():
        show["status"] = [s if s == "ok" else f"{s}: {e}"[:120] for s, e in zip(board["status"], board["error"])]
    return show


def to_text(board: pd.DataFrame, fmt: str = "table") -> str:
    """The leaderboard as a terminal table, markdown, CSV or JSON."""
    from tabulate import tabulate

    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return board.to_csv(index=False)
    if fmt == "json":
        return board.to_json(orient="records", indent=2)
    if board.empty:
        return "(no records)"
    tablefmt = "github" if fmt == "md" else "simple"
    return tabulate(display(board), headers="keys", tablefmt=tablefmt, showindex=False, disable_numparse=True)


def markdown_page(board: pd.DataFrame, records: list[dict], title: str = "benchbone leaderboard") -> str:
    """A markdown page: the table, then how it was produced (commands, machine, versions)."""
    commands = sorted({r.get("command") for r in records if r.get("command")})
    devices = sorted({f"{r.get('device')} on {r.get('machine')}" for r in records if r.get("device")})
    versions = records[0].get("versions", {}) if records else {}
    lines = [f"# {title}", "", to_text(board, "md"), ""]
    if commands:
        lines += ["Produced by:", "", *[f"    {c}" for c in commands], ""]
    if devices:
        lines.append(f"Device: {', '.join(devices)}.  ")
    if versions:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".  ")
    finished = sorted(r.get("finished_at", "") for r in records if r.get("finished_at"))
    if finished:
        lines.append(f"Finished: {finished[-1]}.  ")
    notes = sorted({n for r in records for n in [r.get("data", {}).get("note")] if n})
    lines += [f"Note: {n}  " for n in notes]
    return "\n".join(lines) + "\n"


def write(board: pd.DataFrame, records: list[dict], run_dir: Path) -> list[Path]:
    """leaderboard.csv, leaderboard.md and leaderboard.json in ``run_dir``."""
    run_dir = Path(run_dir)
    paths = []
    for name, text in (("leaderboard.csv", to_text(board, "csv")), ("leaderboard.md", markdown_page(board, records)),
                       ("leaderboard.json", to_text(board, "json"))):
        write_atomic(run_dir / name, text)
        paths.append(run_dir / name)
    return paths
