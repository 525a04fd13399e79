"""Published numbers to reproduce: ``[[expect]]`` tables of a suite file, checked against a leaderboard.

Each entry names a row (backbone, dataset, strategy), a metric, the published ``value`` in the units the
leaderboard shows (percent for percent metrics), a ``tolerance`` in the same units and its ``source``::

    [[expect]]
    backbone = "tv/resnet50.IMAGENET1K_V1"
    dataset = "cifar10"
    strategy = "linear-probe"
    metric = "top1"
    value = 91.47
    tolerance = 1.0
    source = "Ericsson et al. 2021, How well do self-supervised models transfer?, Table ..."
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import tomllib

from benchbone.errors import UsageError
from benchbone.reporting import formats

FIELDS = {"backbone": str, "dataset": str, "strategy": str, "metric": str, "value": (int, float),
          "tolerance": (int, float), "source": str}


def load(path: str | Path) -> list[dict]:
    """The ``[[expect]]`` entries of ``path``, every field checked."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read --expect file {path}: {exc.strerror or exc}; pass a suite file with "
                         "[[expect]] tables") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: malformed TOML: {exc}") from None
    entries = data.get("expect")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path} has no [[expect]] tables; add one per published number (see docs/statistics.md)")
    for number, entry in enumerate(entries, 1):
        for name, kind in FIELDS.items():
            if not isinstance(entry.get(name), kind) or isinstance(entry.get(name), bool):
                raise UsageError(f"{path}: [[expect]] number {number} needs {name} "
                                 f"({'a number' if kind != str else 'a string'})")
        if entry["tolerance"] < 0:
            raise UsageError(f"{path}: [[expect]] number {number}: tolerance must not be negative")
    return entries


def check(board: pd.DataFrame, entries: list[dict]) -> pd.DataFrame:
    """Measured against expected for each entry: measured, difference, whether it lies within the tolerance."""
    rows = []
    for e in entries:
        metric = e["metric"]
        hit = board[(board["backbone"] == e["backbone"]) & (board["dataset"] == e["dataset"])
                    & (board["strategy"] == e["strategy"]) & (board["status"] != "failed")]
        measured = math.nan
        if metric in board.attrs.get("metrics", []) and len(hit):
            scale = 100.0 if board.attrs["percent"][metric] else 1.0
            measured = float(hit.sort_values("rank").iloc[0][metric]) * scale
        diff = measured - e["value"]
        rows.append({"backbone": e["backbone"], "dataset": e["dataset"], "strategy": e["strategy"], "metric": metric,
                     "expected": e["value"], "measured": measured, "difference": diff, "tolerance": e["tolerance"],
                     "within": bool(abs(diff) <= e["tolerance"]) if not math.isnan(diff) else False,
                     "status": "not run" if math.isnan(measured) else ("ok" if abs(diff) <= e["tolerance"] else
                                                                       "outside tolerance"),
                     "source": e["source"]})
    return pd.DataFrame(rows)


def to_text(table: pd.DataFrame, fmt: str = "table") -> str:

    if fmt in ("csv", "json"):
        return formats.table_text(table, fmt)
    shown = table.assign(**{c: [f"{v:.2f}" if not math.isnan(v) else "-" for v in table[c]]
                            for c in ("expected", "measured", "difference")})
    shown["difference"] = [f"+{d}" if d[0].isdigit() else d for d in shown["difference"]]
    return formats.table_text(table, fmt, shown.drop(columns=["within"]))
