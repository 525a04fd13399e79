"""The leaderboard: a pure function of records, shown as a table and written as CSV, markdown and JSON."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from benchbone.errors import UsageError
from benchbone.records import write_atomic
from benchbone.registry import natural_key
from benchbone.reporting import formats, groups, presentation, ranks, statistics
from benchbone.reporting.presentation import delta_text, interval_text, metric_text, tie_label

KEYS = ["dataset", "strategy", "backbone", "params"]
COST = ["params_m", "gmacs", "num_features"]  # from each record's backbone_info
MEASURED = ["images_per_s", "peak_mem_mb"]  # measured per cell, averaged over seeds


def ranking_metric(records: list[dict], metric_registry=None) -> str | None:
    """What a leaderboard ranks by unless told: the first metric the cells ran with (the first --metric or the
    suite's, else the first the metric plugins registered), None without metrics. A record without its cell's
    metrics (an older or hand-made one) offers those it has an interval for first, then the registry's order."""
    registered = list(metric_registry.registered()) if hasattr(metric_registry, "registered") else []
    for record in records:
        metrics = list((record.get("cell") or {}).get("metrics") or [])
        if not metrics:
            known = list(record.get("higher_is_better", {}))
            metrics = sorted(known, key=lambda m: (m not in (record.get("ci") or {}),
                                                   registered.index(m) if m in registered else len(registered),
                                                   known.index(m)))
        if metrics:
            return metrics[0]
    return None


def _metric_names(records: list[dict], metric_registry=None) -> list[str]:
    """The records' metrics: the ranking metric first, then the others in natural order (recall_at_5 before recall_at_10)."""
    names: list[str] = []
    for record in records:
        for name in record.get("higher_is_better", {}):
            if name not in names:
                names.append(name)
    first = ranking_metric(records, metric_registry)
    return sorted(names, key=lambda n: (n != first, natural_key(n)))


def build(records: Iterable[dict], sort_by: str | None = None, *, run_dirs: Iterable[Path] = (), metric_registry=None,
          alpha: float = statistics.ALPHA, ci_method: str = "percentile") -> pd.DataFrame:
    """One row per backbone x dataset x strategy x parameters, metrics averaged over seeds, ranked.

    Rows are ranked within each dataset and strategy by ``sort_by`` (default: the first metric)
    in that metric's direction; failed cells appear with their error.

    ``<metric>_ci_low``/``<metric>_ci_high`` are the 95% bootstrap interval over test items of each metric whose
    records carry one (those with per-item values, e.g. top1); with several seeds, the mean of the per-seed
    bounds (test-set uncertainty; the spread over seeds is ``<metric>_std``).
    ``leader`` marks the first row of each dataset x strategy in the ranking metric; every other row is
    compared with it on the same test items (``groups.leader_columns``, from the predictions.npz found
    in ``run_dirs``, the metric resampled as its entry in ``metric_registry`` declares): ``vs_leader``
    (row - leader), its interval, the bootstrap ``p``, ``p_holm`` and McNemar's p for top1. ``tied`` is
    True for a row not significantly different from the leader at ``alpha`` after Holm's correction; rows
    that cannot be compared have ``comparable`` False and say why in ``note``.
    ``images_per_s`` is feature-extraction throughput as measured when the features were extracted (also
    for cells that read them from the cache); ``peak_mem_mb`` is what the record's ``resources`` says it is.
    """
    records = list(records)
    if not records:
        return pd.DataFrame(columns=["rank", *KEYS, "seeds", "status"])
    metrics = _metric_names(records, metric_registry)
    directions = {m: r["higher_is_better"][m] for r in records for m in r.get("higher_is_better", {})}
    percent = {m: r.get("percent", {}).get(m, False) for r in records for m in r.get("higher_is_better", {})}
    sort_by = sort_by or ranking_metric(records, metric_registry)
    with_ci = [m for m in metrics if any(m in (r.get("ci") or {}) for r in records)]
    ci_columns = [f"{m}_ci_{end}" for m in with_ci for end in ("low", "high")]
    if sort_by is not None and sort_by not in metrics:
        raise UsageError(f"cannot sort by {sort_by!r}: the records hold {', '.join(metrics) or 'no metrics'}")
    rows = []
    for r in records:
        row = {k: r[k] for k in ("dataset", "strategy", "backbone", "seed", "status")}
        row["params"] = json.dumps(r.get("params", {}), sort_keys=True)
        row.update({m: r.get("metrics", {}).get(m) for m in metrics})
        for m in with_ci:
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = (r.get("ci") or {}).get(m) or (None, None)
        row["device"] = r.get("device")
        row["time_s"] = r.get("timings", {}).get("total_s")
        row["images_per_s"] = r.get("timings", {}).get("features_images_per_s")
        row["peak_mem_mb"] = (r.get("resources") or {}).get("peak_mem_mb")
        row.update({c: r.get("backbone_info", {}).get(c) for c in COST})
        row["error"] = r.get("error")
        row["items"] = statistics.items_key(r)
        rows.append(row)
    flat = pd.DataFrame(rows)
    out = []
    for key, group in flat.groupby(KEYS, sort=False, dropna=False):
        ok = group[group.status == "ok"]
        row = dict(zip(KEYS, key))
        if ok["items"].nunique() > 1:  # other data or test_per_class: not seeds of one row (compare refuses them too)
            raise UsageError(f"{row['backbone']} x {row['dataset']} x {row['strategy']}: its records scored different "
                             f"test items ({ok['items'].nunique()} sets: other data or test_per_class), which are not "
                             "seeds of one row; pass those run directories separately or rerun them on the same data")
        row["seeds"] = len(ok)
        row["status"] = "ok" if len(ok) == len(group) else ("failed" if ok.empty else f"{len(group) - len(ok)} failed")
        for m in metrics:
            values = ok[m].dropna().astype(float)
            row[m] = values.mean() if len(values) else float("nan")
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        for c in (*ci_columns, "time_s", *MEASURED):
            values = ok[c].dropna().astype(float)
            row[c] = values.mean() if len(values) else float("nan")
        for c in COST:
            row[c] = ok[c].dropna().iloc[0] if ok[c].notna().any() else None
        row["device"] = ", ".join(sorted(ok["device"].dropna().unique()))
        errors = group["error"].dropna()
        row["error"] = errors.iloc[0] if len(errors) else ""
        out.append(row)
    board = pd.DataFrame(out)
    statistics.check_options(alpha, ci_method)
    if sort_by is not None:
        ascending = not directions[sort_by]
        board = board.sort_values(["dataset", "strategy", sort_by, "backbone"],
                                  ascending=[True, True, ascending, True], na_position="last", kind="mergesort")
        board.insert(0, "rank", board.groupby(["dataset", "strategy"]).cumcount() + 1)
    else:
        board.insert(0, "rank", 1)
    board = board.reset_index(drop=True)
    compared = groups.leader_columns(board, records, [Path(d) for d in run_dirs], sort_by, directions,
                                         metric_registry, alpha, ci_method)
    board = pd.concat([board, compared], axis=1)
    board["test"] = statistics.TEST_NAME
    board["alpha"], board["ci_method"], board["correction"] = alpha, ci_method, statistics.CORRECTION
    board.attrs.update(metrics=metrics, directions=directions, percent=percent, sort_by=sort_by, alpha=alpha,
                       ci_method=ci_method,
                       corrupted=sorted({r["dataset"] for r in records if r.get("corruption")}))  # test conditions
    return board


def params_vary(board: pd.DataFrame) -> bool:
    """Whether some strategy appears with more than one parameter set (then rows need their parameters)."""
    return bool((board.groupby(["dataset", "strategy"])["params"].nunique() > 1).any())


def display(board: pd.DataFrame) -> pd.DataFrame:
    """Human-readable columns: mean ± std, percentages, arrows for the metric direction."""
    metrics, directions, percent = board.attrs["metrics"], board.attrs["directions"], board.attrs["percent"]
    show = board[["rank", "dataset", "strategy", "backbone"]].copy()
    if params_vary(board):
        show["params"] = board["params"]
    for m in metrics:
        label = f"{m} {'↑' if directions[m] else '↓'}{' %' if percent[m] else ''}"
        show[label] = [metric_text(v, s, percent[m]) for v, s in zip(board[m], board[f"{m}_std"])]
    ranked = board.attrs.get("sort_by")
    if ranked and f"{ranked}_ci_low" in board and board[f"{ranked}_ci_low"].notna().any():
        show[f"{ranked} 95% CI"] = [interval_text(lo, hi, percent[ranked])
                                    for lo, hi in zip(board[f"{ranked}_ci_low"], board[f"{ranked}_ci_high"])]
    if board.attrs.get("sort_by") is not None and "leader" in board:
        show[f"Δ {board.attrs['sort_by']} vs leader"] = _versus_leader(board)
        show["p Holm"] = [f"{p:.3g}" if pd.notna(p) else "-" for p in board["p_holm"]]
        show["tie"] = [tie_label(row, board.attrs["sort_by"]) for _, row in board.iterrows()]
    show["params M"] = [f"{v:.2f}" if pd.notna(v) else "-" for v in board["params_m"]]
    show["GMACs"] = [f"{v:.3g}" if pd.notna(v) else "-" for v in board["gmacs"]]
    show["features"] = [f"{int(v)}" if pd.notna(v) else "-" for v in board["num_features"]]
    show["img/s"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in board["images_per_s"]]
    show["peak MB"] = [f"{v:.0f}" if pd.notna(v) else "-" for v in board["peak_mem_mb"]]
    show["seeds"] = board["seeds"]
    show["time s"] = [f"{t:.1f}" if pd.notna(t) else "-" for t in board["time_s"]]
    if (board["status"] != "ok").any():
        show["status"] = [s if s == "ok" else f"{s}: {e}"[:120] for s, e in zip(board["status"], board["error"])]
    return show


def _versus_leader(board: pd.DataFrame) -> list[str]:
    percent = board.attrs["percent"][board.attrs["sort_by"]]
    return [delta_text(d, lo, hi, percent)
            for d, lo, hi in zip(board["vs_leader"], board["vs_leader_ci_low"], board["vs_leader_ci_high"])]


def method_line(board: pd.DataFrame) -> str:
    """The test, alpha and correction behind "tied", as written under every table."""
    return statistics.describe(board.attrs.get("alpha", statistics.ALPHA), board.attrs.get("ci_method", "percentile"))


def to_text(board: pd.DataFrame, fmt: str = "table") -> str:
    """The leaderboard as a terminal table, markdown, CSV or JSON."""

    formats.check(fmt)
    if fmt in ("csv", "json"):
        return formats.table_text(board, fmt)
    if board.empty:
        return "(no records)"
    table = formats.table_text(board, fmt, display(board))
    return f"{table}\n\n{method_line(board)}" if board.attrs.get("sort_by") else table


def markdown_page(board: pd.DataFrame, records: list[dict], title: str = "benchbone leaderboard") -> str:
    """A markdown page: the table, then how it was produced (commands, machine, versions)."""
    lines = [f"# {title}", "", to_text(board, "md"), ""]
    ranked = board.attrs.get("sort_by")
    if ranked and f"{ranked}_ci_low" in board and board[f"{ranked}_ci_low"].notna().any():
        lines += [f"{ranked} 95% CI: percentile bootstrap over test items (1,000 resamples; with several seeds, the mean "
                  f"of the per-seed bounds). leader: best {board.attrs.get('sort_by')} of its dataset x strategy; "
                  "Δ vs leader: row - leader with its paired interval; p Holm: the paired bootstrap's p-value after "
                  "Holm's correction (see docs/statistics.md). img/s: feature extraction, measured when the features "
                  "were extracted. peak MB: CUDA peak allocation of the cell, or on a CPU the process's peak RSS so "
                  "far.", ""]
    lines += ranking_lines(board)
    if board.attrs.get("sort_by"):
        lines += [f"Statistics by {statistics.library_versions()} (docs/statistics.md).", ""]
    return "\n".join(lines + provenance(records)) + "\n"


def rankings(board: pd.DataFrame) -> list[ranks.Ranking]:
    """Per strategy scored on several datasets: mean ranks, Friedman and Nemenyi in the ranking metric.

    Corrupted test conditions (``cifar10/fog-3``) are not datasets: they are left out, as
    ``leaderboard --robustness`` summarises them."""
    metric = board.attrs.get("sort_by")
    if metric is None or board.empty:
        return []
    clean = board[~board["dataset"].isin(board.attrs.get("corrupted", []))]
    return ranks.across_datasets(clean, metric, board.attrs["directions"][metric],
                                      board.attrs.get("alpha", statistics.ALPHA))


def ranking_lines(board: pd.DataFrame) -> list[str]:
    """Markdown sections, one per strategy, ranking the backbones across datasets."""
    from tabulate import tabulate

    lines = []
    for r in rankings(board):
        scale = 100.0 if board.attrs["percent"][r.metric] else 1.0
        table = r.table()
        table[f"mean_{r.metric}"] = [f"{v * scale:.2f}" if scale == 100 else f"{v:.4f}" for v in table[f"mean_{r.metric}"]]
        for dataset in r.ranks.index:
            table[dataset] = [f"{r.ranks.at[dataset, b]:g}" for b in table["backbone"]]
        table["mean_rank"] = [f"{v:.2f}" for v in table["mean_rank"]]
        table = table.rename(columns={"mean_rank": "mean rank", f"mean_{r.metric}":
                                      f"mean {r.metric}{' %' if scale == 100 else ''}"})
        lines += [f"## Across datasets: {r.strategy} ({r.metric}, {len(r.values)} datasets; rank 1 is best)", "",
                  tabulate(table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True), ""]
        lines.append(ranking_summary(r))
        lines.append("")
    return lines


def ranking_summary(r: ranks.Ranking) -> str:
    """One paragraph: Friedman, Nemenyi's critical difference, the pairs it separates, what was left out."""
    if r.nemenyi is None:
        return r.note + "."
    pairs = [f"{a} vs {b} (p = {r.nemenyi.at[a, b]:.3g})" for i, a in enumerate(r.mean_rank.index)
             for b in r.mean_rank.index[i + 1:] if r.nemenyi.at[a, b] < r.alpha]
    text = (f"Friedman test (scipy.stats.friedmanchisquare, {r.values.shape[1]} backbones, {len(r.values)} datasets): "
            f"chi2 = {r.friedman_statistic:.3f}, p = {r.friedman_p:.3g}. Nemenyi post-hoc test (scikit-posthocs) at "
            f"alpha = {r.alpha:g}: critical difference of mean ranks {r.critical_difference:.2f}; pairs that differ: "
            f"{', '.join(pairs) if pairs else 'none'}. Diagram: cd-{ranks.file_stem(r.strategy)}.svg (and .png).")
    if r.left_out:
        text += " Left out: " + "; ".join(f"{b} ({why})" for b, why in r.left_out.items()) + "."
    return text


def provenance(records: list[dict]) -> list[str]:
    """Markdown lines on how the records were produced: commands, machine, versions, finish time, notes."""
    facts = presentation.provenance(records)
    devices = sorted({f"{device} on {machine}" for device, machine, _ in facts["machines"]})
    lines = []
    if facts["commands"]:
        lines += ["Produced by:", "", *[f"    {c}" for c in facts["commands"]], ""]
    if devices:
        lines.append(f"Device: {', '.join(devices)}.  ")
    if facts["versions"]:
        lines.append(f"Versions: {'; '.join(facts['versions'])}.  ")
    if facts["finished"]:
        lines.append(f"Finished: {facts['finished'][-1]}.  ")
    return lines + [f"Note: {n}  " for n in facts["notes"]]


def _one_strategy(board: pd.DataFrame, strategy: str | None, flag: str) -> pd.DataFrame:
    strategies = sorted(board["strategy"].unique())
    if strategy is None:
        if len(strategies) > 1:
            raise UsageError(f"{flag} needs one strategy; pass --strategy with one of {', '.join(strategies)}")
        return board
    if strategy not in strategies:
        raise UsageError(f"--strategy {strategy!r} is not in these records; pass one of {', '.join(strategies)}")
    return board[board["strategy"] == strategy]


def label(board: pd.DataFrame) -> pd.Series:
    """Backbone names, with their parameters when several parameter sets share the board."""
    if params_vary(board):
        return board["backbone"] + " " + board["params"]
    return board["backbone"]


def pivot(board: pd.DataFrame, metric: str, strategy: str | None = None) -> pd.DataFrame:
    """``metric`` (mean over seeds) as a backbones x datasets table for one strategy, backbones by name."""
    metrics = board.attrs.get("metrics", [])
    if metric not in metrics:
        raise UsageError(f"--pivot {metric!r} is not a metric of these records; pass one of {', '.join(metrics)}")
    rows = _one_strategy(board, strategy, "--pivot")
    table = rows.assign(backbone=label(rows)).pivot_table(index="backbone", columns="dataset", values=metric,
                                                           aggfunc="first", dropna=False)
    table.columns.name = None
    table.attrs.update(metric=metric, strategy=rows["strategy"].iloc[0] if len(rows) else strategy,
                       percent=board.attrs["percent"][metric], higher_is_better=board.attrs["directions"][metric])
    return table


def pivot_text(table: pd.DataFrame, fmt: str = "table") -> str:
    """A pivot as a terminal table, markdown, CSV or JSON (CSV and JSON keep raw fractions)."""

    formats.check(fmt)
    if fmt in ("csv", "json"):
        return formats.table_text(table, fmt, index=True, orient="index")
    scale, digits = (100.0, 2) if table.attrs["percent"] else (1.0, 4)
    shown = table.apply(lambda col: [f"{v * scale:.{digits}f}" if pd.notna(v) else "-" for v in col])
    arrow = "↑" if table.attrs["higher_is_better"] else "↓"
    shown.index.name = f"{table.attrs['metric']} {arrow} ({table.attrs['strategy']})"
    return formats.table_text(table, fmt, shown, index=True)


def plot(board: pd.DataFrame, path: Path, metric: str | None = None, strategy: str | None = None) -> Path:
    """A PNG of ``metric`` (default: the board's ranking metric) against GMACs and against images/s, Pareto
    front marked, one point per ok row."""
    from benchbone.reporting.plots import accuracy_vs_cost_png

    metric = metric or board.attrs.get("sort_by")
    if metric not in board.attrs.get("metrics", []):
        raise UsageError(f"cannot plot {metric!r}: the records hold {', '.join(board.attrs.get('metrics', []))}")
    rows = board[board["status"] != "failed"]
    if strategy is not None:
        rows = _one_strategy(rows, strategy, "--plot")
    several = rows["dataset"].nunique() > 1 or rows["strategy"].nunique() > 1
    scale = 100.0 if board.attrs["percent"][metric] else 1.0
    points = [{"label": f"{b} ({s}, {d})" if several else b, "value": v * scale, "gmacs": g, "images_per_s": ips}
              for b, s, d, v, g, ips in zip(label(rows), rows["strategy"], rows["dataset"], rows[metric],
                                            rows["gmacs"].astype(float), rows["images_per_s"].astype(float))]
    title = f"{metric}{' %' if scale == 100 else ''} vs cost: " + ", ".join(
        f"{d} x {s}" for d, s in sorted(set(zip(rows["dataset"], rows["strategy"]))))
    png = accuracy_vs_cost_png(points, f"{metric}{' (%)' if scale == 100 else ''}", title)
    write_atomic(Path(path), png)
    return Path(path)


def write(board: pd.DataFrame, records: list[dict], run_dir: Path) -> list[Path]:
    """leaderboard.csv, leaderboard.md, leaderboard.json and the CD diagrams (cd-<strategy>.png, .svg) in ``run_dir``."""
    run_dir = Path(run_dir)
    paths = ranks.write_cd_diagrams(rankings(board), run_dir)
    for name, text in (("leaderboard.csv", to_text(board, "csv")), ("leaderboard.md", markdown_page(board, records)),
                       ("leaderboard.json", to_text(board, "json"))):
        write_atomic(run_dir / name, text)
        paths.append(run_dir / name)
    return paths
