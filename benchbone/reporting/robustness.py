"""Corruption robustness from records: mean corruption accuracy, mCE and relative mCE (Hendrycks & Dietterich 2019).

A pure function of records, as the leaderboard is: the clean cells and the cells of ``--set corruption=...``
(their records carry ``corruption``) of each backbone x dataset x strategy x parameters.
"""
from __future__ import annotations

import json

import pandas as pd

from benchbone.errors import UsageError
from benchbone.inputs.corruptions import STANDARD
from benchbone.reporting import formats

KEYS = ["dataset", "strategy", "params"]


def conditions(records: list[dict], metric: str = "top1") -> pd.DataFrame:
    """One row per backbone, dataset, strategy, parameters, corruption and severity ("clean", 0 for clean
    test images): ``metric`` averaged over the seeds of the "ok" records."""
    rows = []
    for r in records:
        if r.get("status") != "ok" or metric not in r.get("metrics", {}):
            continue
        corruption = r.get("corruption") or {}
        rows.append({"backbone": r["backbone"], "dataset": r["cell"]["dataset"], "strategy": r["strategy"],
                     "params": json.dumps(r.get("params", {}), sort_keys=True),
                     "corruption": corruption.get("name", "clean"), "severity": corruption.get("severity", 0),
                     "value": float(r["metrics"][metric])})
    if not rows:
        return pd.DataFrame(columns=["backbone", *KEYS, "corruption", "severity", "value"])
    return pd.DataFrame(rows).groupby(["backbone", *KEYS, "corruption", "severity"], as_index=False)["value"].mean()


def table(records: list[dict], baseline: str, metric: str = "top1") -> pd.DataFrame:
    """Per backbone x dataset x strategy x parameters: clean accuracy, mean corruption accuracy, the gap
    (clean minus mean corrupted), mCE and relative mCE against the ``baseline`` backbone's row (in %, as
    the paper reports them), and the corruption error CE of each corruption.

    Errors are 1 - ``metric``. CE of corruption c = sum over severities of the row's errors / the baseline's;
    mCE = mean CE over the standard corruptions (over all of the row's when it has none of them); relative CE uses each error minus the row's clean error. A UsageError
    names what is missing: no corrupted records, an unknown baseline, or conditions the baseline lacks.
    """
    data = conditions(records, metric)
    corrupted = data[data.corruption != "clean"]
    if corrupted.empty:
        raise UsageError("--robustness: these records have no corrupted test conditions; run with "
                         "--set corruption=all (or NAME[,NAME]) first")
    if baseline not in set(data.backbone):
        raise UsageError(f"--robustness {baseline!r}: no such backbone in these records; use one of "
                         f"{', '.join(sorted(set(data.backbone)))}")
    out = []
    for key, group in data.groupby(KEYS, sort=True):
        base = group[group.backbone == baseline]
        if base.empty:
            continue
        base_clean = base[base.corruption == "clean"]["value"]
        base_err = base[base.corruption != "clean"].set_index(["corruption", "severity"])["value"].rsub(1)
        for backbone, rows in group.groupby("backbone", sort=True):
            clean = rows[rows.corruption == "clean"]["value"]
            err = rows[rows.corruption != "clean"].set_index(["corruption", "severity"])["value"].rsub(1)
            if err.empty:
                continue
            missing = sorted(set(err.index) - set(base_err.index))
            if missing:
                raise UsageError(f"--robustness {baseline!r}: the baseline has no record of {missing[0][0]} at "
                                 f"severity {missing[0][1]} ({key[0]}, {key[1]}); pick a baseline run under the same "
                                 "corruptions")
            row = dict(zip(KEYS, key), backbone=backbone, baseline=baseline,
                       clean=clean.iloc[0] if len(clean) else float("nan"), corrupted=1 - err.mean(),
                       conditions=len(err))
            row["gap"] = row["clean"] - row["corrupted"]
            ce, relative = {}, {}
            for name, errors in err.groupby(level="corruption", sort=False):
                base_sum = base_err.loc[name].loc[errors.index.get_level_values("severity")].sum()
                ce[name] = errors.sum() / base_sum if base_sum > 0 else float("nan")
                base_rel = base_sum - len(errors) * (1 - base_clean.iloc[0]) if len(base_clean) else float("nan")
                rel = errors.sum() - len(errors) * (1 - row["clean"])
                relative[name] = rel / base_rel if base_rel and base_rel > 0 else float("nan")
            counted = [n for n in ce if n in STANDARD] or list(ce)  # the paper's: extras get a CE, not a vote
            row["mCE"] = 100 * pd.Series(ce)[counted].mean(skipna=False)  # undefined where the baseline made no error
            row["relative_mCE"] = 100 * pd.Series(relative)[counted].mean(skipna=False)
            row.update({f"CE {name}": 100 * value for name, value in ce.items()})
            out.append(row)
    if not out:
        raise UsageError(f"--robustness {baseline!r}: the baseline shares no dataset and strategy with a "
                         "corrupted row")
    board = pd.DataFrame(out).sort_values([*KEYS, "mCE", "backbone"], kind="mergesort").reset_index(drop=True)
    board.attrs["metric"] = metric
    return board


def to_text(board: pd.DataFrame, fmt: str = "table") -> str:
    """The robustness table as a terminal table, markdown, CSV or JSON (CSV and JSON keep raw numbers)."""

    if fmt in ("csv", "json"):
        return formats.table_text(board, fmt)
    shown = board[["dataset", "strategy", "backbone"]].copy()
    if board["params"].nunique() > 1:
        shown["params"] = board["params"]
    metric = board.attrs.get("metric", "top1")
    for column, title in (("clean", f"clean {metric} %"), ("corrupted", f"mean corrupted {metric} %"),
                          ("gap", "gap (clean - corrupted) %")):
        shown[title] = [f"{v * 100:.2f}" if pd.notna(v) else "-" for v in board[column]]
    for column in ["mCE", "relative_mCE", *[c for c in board if c.startswith("CE ")]]:
        shown[column.replace("_", " ")] = [f"{v:.1f}" if pd.notna(v) else "-" for v in board[column]]
    table_text = formats.table_text(board, fmt, shown)
    note = (f"mCE and relative mCE in % of the baseline {board['baseline'].iloc[0]} (100 = as robust as it; lower is "
            f"better), over {int(board['conditions'].max())} corruption x severity conditions; errors are 1 - {metric}. "
            "Relative mCE is undefined (-) where the baseline lost no accuracy under some corruption.")
    return f"{table_text}\n\n{note}"
