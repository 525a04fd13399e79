"""A self-contained HTML leaderboard page: sortable, filterable table, plots, per-cell views and provenance.

The page has no external assets (styles, script, plots and data are inline; a Content-Security-Policy
forbids any fetch), so it opens from disk and publishes as a static file. Rows come from
``leaderboard.build``; provenance and per-cell artefacts come from the records.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from benchbone.records import check_output_file, read_records, write_atomic
from benchbone.reporting import leaderboard, select_report
from benchbone.reporting.presentation import (
    delta_text,
    html_text,
    interval_text,
    metric_text,
    missing,
    number_text,
    sort_value,
    tie_label,
)
from benchbone.reporting.report_cells import cell_views, provenance_html
from benchbone.reporting.report_plots import front_by_x, plots  # noqa: F401 - report.front_by_x, as before
from benchbone.reporting.report_plots import has as _has

# columns the leaderboard may carry: (column, header, higher is better, or None for text)
OPTIONAL = [("images_per_s", "images/s", True), ("peak_mem_mb", "peak MB", False), ("device", "device", None)]


def _tied(row: pd.Series) -> bool:
    """The leaderboard's ``tied`` flag (absent before it computes ties)."""
    value = row.get("tied")
    return not missing(value) and bool(value)


def _row_key(dataset, strategy, backbone, params: str) -> str:
    """A leaderboard row's key as the page's script writes it (JSON.stringify)."""
    return json.dumps([dataset, strategy, backbone, params], separators=(",", ":"), ensure_ascii=False)


def _json_script(element_id: str, data) -> str:
    text = json.dumps(data, allow_nan=False, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")  # no </script>
    return f'<script type="application/json" id="{element_id}">{text}</script>'


# ---------------------------------------------------------------- the table


def _columns(board: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(column, header, kind, first sort order) for each shown column; kind is text, num or metric."""
    metrics, directions, percent = board.attrs["metrics"], board.attrs["directions"], board.attrs["percent"]
    cols = [("rank", "rank", "num", "ascending"), ("dataset", "dataset", "text", "ascending"),
            ("strategy", "strategy", "text", "ascending"), ("backbone", "backbone", "text", "ascending")]
    if board["params_shown"].any():
        cols.append(("params_shown", "params", "text", "ascending"))
    for m in metrics:
        label = f"{m} {'↑' if directions[m] else '↓'}{' %' if percent[m] else ''}"
        cols.append((m, label, "metric", "descending" if directions[m] else "ascending"))
    if _has(board, "vs_leader"):
        sort_by = board.attrs["sort_by"]
        cols += [("vs_leader", f"Δ {sort_by} vs leader", "delta", "descending" if directions[sort_by] else "ascending"),
                 ("p_holm", "p Holm", "num", "ascending")]
    cols += [("params_m", "params M", "num", "ascending"), ("gmacs", "GMACs", "num", "ascending")]
    for col, label, higher in (o for o in OPTIONAL if _has(board, o[0])):
        kind = "text" if higher is None else "num"
        cols.append((col, label, kind, "descending" if higher else "ascending"))
    cols += [("num_features", "features", "num", "ascending"), ("seeds", "seeds", "num", "descending"),
             ("time_s", "time s", "num", "ascending"), ("status", "status", "text", "ascending")]
    return cols


def _td(board: pd.DataFrame, row: pd.Series, col: str, kind: str) -> str:
    value = row.get(col)
    if kind == "metric":
        text = html_text(metric_text(value, row.get(f"{col}_std"), board.attrs["percent"][col]))
        low, high = row.get(f"{col}_ci_low"), row.get(f"{col}_ci_high")
        if not missing(low) and not missing(high):
            text += (f' <span class="ci" title="confidence interval">'
                     f'{interval_text(low, high, board.attrs["percent"][col])}</span>')
        return f'<td class="n" data-v="{sort_value(value)}">{text}</td>'
    if kind == "delta":
        shown = delta_text(value, row.get("vs_leader_ci_low"), row.get("vs_leader_ci_high"),
                                       board.attrs["percent"][board.attrs["sort_by"]])
        return f'<td class="n" data-v="{sort_value(value)}">{html_text(shown)}</td>'
    if col == "rank":
        label = tie_label(row, board.attrs.get("sort_by"))
        badge = (f' <span class="tie" title="{html_text(row.get("note") or "not significantly different from the leader")}">'
                 f'{"≈ leader" if label == "tied" else html_text(label)}</span>' if label in ("tied", "not comparable") else "")
        return f'<td class="n" data-v="{int(value)}">{int(value)}{badge}</td>'
    if col == "status":
        error = row.get("error") or ""
        text = "ok" if value == "ok" else f"{value}: {error}"
        return f'<td class="status" data-v="{html_text(value)}" title="{html_text(error)}">{html_text(text)}</td>'
    if kind == "num":
        shown = ("-" if missing(value) else str(int(value)) if col in ("num_features", "seeds")
                 else f"{float(value):.0f}" if abs(float(value)) >= 1000 else number_text(value))  # 2400, not 2.4e+03
        return f'<td class="n" data-v="{sort_value(value)}">{shown}</td>'
    if col == "params_shown":
        return f'<td class="params" data-v="{html_text(value)}" title="{html_text(row["params"])}">{html_text(value)}</td>'
    return f'<td data-v="{html_text(value if not missing(value) else "")}">{html_text("-" if missing(value) else value)}</td>'


def _shown_params(board: pd.DataFrame) -> list[str]:
    """Per row, only the parameters that differ between rows of its strategy (defaults shared by all are noise)."""
    parsed = [json.loads(p) for p in board["params"]]
    varying: dict[str, set[str]] = {}  # per strategy, the keys whose value is not the same in all its rows
    for strategy in set(board["strategy"]):
        same = [q for s, q in zip(board["strategy"], parsed) if s == strategy]
        keys = {k for q in same for k in q}
        varying[strategy] = {k for k in keys if any(q.get(k) != same[0].get(k) for q in same)}
    return [", ".join(f"{k}={v}" for k, v in params.items() if k in varying[strategy])
            for strategy, params in zip(board["strategy"], parsed)]


def _table(board: pd.DataFrame) -> str:
    board = board.copy()
    board["params_shown"] = _shown_params(board)
    cols = _columns(board)
    head = "".join(
        f'<th data-first="{first}" data-column="{html_text(col)}" title="{html_text(_th_title(board, col))}">'
        f'{html_text(label)}</th>' for col, label, _, first in cols)
    rows = []
    for _, row in board.iterrows():
        classes = [c for c, on in (("failed", row["status"] != "ok"), ("leader", bool(row.get("leader")) and row["status"] == "ok"),
                                   ("tied", _tied(row))) if on]
        attrs = "".join(f' data-{k}="{html_text(row[k])}"' for k in ("dataset", "strategy", "backbone"))
        key = html_text(_row_key(row["dataset"], row["strategy"], row["backbone"], row["params"]))
        cells = "".join(_td(board, row, col, kind) for col, _, kind, _ in cols)
        rows.append(f'<tr class="{" ".join(classes)}"{attrs} data-key="{key}">{cells}</tr>')
    return (f'{_column_chooser(cols)}<div class="scroll board"><table id="board" class="sortable"><thead>'
            f'<tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _column_chooser(cols: list[tuple[str, str, str, str]]) -> str:
    """A fold-out list of checkboxes, one per column but the row's identity, to hide and show columns."""
    boxes = "".join(f'<label><input type="checkbox" checked data-column="{html_text(col)}"> {html_text(label)}</label>'
                    for col, label, _, _ in cols if col not in ("dataset", "strategy", "backbone"))
    return f'<details id="columns"><summary>columns</summary><div>{boxes}</div></details>'


def _th_title(board: pd.DataFrame, col: str) -> str:
    if col in board.attrs["metrics"]:
        way = "higher" if board.attrs["directions"][col] else "lower"
        return f"{col}: {way} is better; mean ± std over seeds; click to sort"
    return "click to sort"


def _filters(board: pd.DataFrame) -> str:
    selects = []
    for key in ("backbone", "dataset", "strategy"):
        options = "".join(f'<option value="{html_text(v)}">{html_text(v)}</option>' for v in sorted(board[key].unique()))
        selects.append(f'<label>{key} <select id="filter-{key}" data-filter="{key}">'
                       f'<option value="">all</option>{options}</select></label>')
    return (f'<div class="filters"><label>search <input id="search" type="search" '
            f'placeholder="backbone, dataset or strategy"></label>{"".join(selects)}'
            f' <span id="shown"></span></div>')


# ---------------------------------------------------------------- the tables below the plots


def _pivot(board: pd.DataFrame) -> str:
    """Backbones x (dataset, strategy): the ranking metric of each backbone's best parameters."""
    metric = board.attrs.get("sort_by")
    if metric is None:
        return ""
    best = board.sort_values("rank").drop_duplicates(["dataset", "strategy", "backbone"])
    columns = sorted(set(zip(best["dataset"], best["strategy"])))
    leaders = {k: g.loc[g["leader"], "backbone"].iloc[0] for k, g in best.groupby(["dataset", "strategy"])
               if g["leader"].any()}
    head = "".join(f"<th>{html_text(d)}<br><small>{html_text(s)}</small></th>" for d, s in columns)
    found = {(r["dataset"], r["strategy"], r["backbone"]): r for _, r in best.iterrows()}
    rows = []
    for backbone in sorted(best["backbone"].unique()):
        cells = []
        for key in columns:
            r = found.get((*key, backbone))
            if r is None:
                cells.append("<td>-</td>")
                continue
            text = "failed" if r["status"] == "failed" else metric_text(r[metric], r.get(f"{metric}_std"),
                                                                  board.attrs["percent"][metric])
            cls = ' class="n best"' if leaders.get(key) == backbone and r["status"] != "failed" else ' class="n"'
            cells.append(f"<td{cls}>{html_text(text)}</td>")
        rows.append(f"<tr><th>{html_text(backbone)}</th>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table id="pivot"><thead><tr><th>{html_text(metric)}</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _rankings(board: pd.DataFrame) -> str:
    """Per strategy on several datasets: mean ranks, Friedman and Nemenyi, and the CD diagram as inline SVG."""
    from benchbone.reporting import ranks

    parts = []
    for r in leaderboard.rankings(board):
        table = r.table()
        head = "".join(f"<th>{html_text(c)}</th>" for c in ["backbone", "mean rank", f"mean {r.metric}", *r.ranks.index])
        scale = 100.0 if board.attrs["percent"][r.metric] else 1.0
        rows = "".join(  # by column name, never itertuples: a metric name need not be an identifier
            f"<tr><td>{html_text(t['backbone'])}</td><td class=n>{t['mean_rank']:.2f}</td>"
            f"<td class=n>{t[f'mean_{r.metric}'] * scale:.{2 if scale == 100 else 4}f}</td>"
            + "".join(f"<td class=n>{r.ranks.at[d, t['backbone']]:g}</td>" for d in r.ranks.index) + "</tr>"
            for _, t in table.iterrows())
        svg = ""
        if r.nemenyi is not None:
            svg = ranks.cd_diagram(r, "svg").decode("utf-8")
            svg = svg[svg.index("<svg"):]  # inline: no XML prolog or doctype
        parts.append(f'<h3>{html_text(r.strategy)}: {html_text(r.metric)} ranked on {len(r.values)} datasets (1 = best)</h3>'
                     f'<div class="scroll"><table class="ranking"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
                     f'{_summary_html(leaderboard.ranking_summary(r))}<div class="cd">{svg}</div>')
    return "<h2>Across datasets</h2>" + "".join(parts) if parts else ""


def _summary_html(text: str) -> str:
    """A ranking's summary paragraph; a long list of the pairs that differ folds away under its count."""
    head, found, rest = text.partition("; pairs that differ: ")
    pairs, _, tail = rest.partition(". Diagram: ")
    if not found or len(pairs) < 300:
        return f'<p class="note">{html_text(text)}</p>'
    return (f'<div class="note"><p>{html_text(head)}. Diagram: {html_text(tail)}</p><details><summary>'
            f'{pairs.count(" vs ")} pairs differ</summary><p>{html_text(pairs)}.</p></details></div>')


# ---------------------------------------------------------------- the page


def _asset(name: str) -> str:
    """The report's stylesheet or script, shipped as package data beside this module (``assets/``)."""
    return (Path(__file__).parent / "assets" / name).read_text(encoding="utf-8")


def page(board: pd.DataFrame, records: list[dict], run_dirs: Iterable[Path] = (),
         title: str = "benchbone leaderboard", selections: Iterable[str] = ()) -> str:
    """The whole HTML page for a leaderboard ``board`` built from ``records`` (found in ``run_dirs``), and the
    Selection sections ``selections`` (``select_report.section``) below it; with no records, those alone."""
    run_dirs = [Path(d) for d in run_dirs]
    selections = "".join(selections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html_text(title)}</title>
<style>{_asset('report.css')}</style></head><body>
<h1>{html_text(title)}</h1>
{_leaderboard(board, records, run_dirs, selections) if records or not selections else selections}
<script>{_asset('report.js')}</script>
</body></html>
"""


def _leaderboard(board: pd.DataFrame, records: list[dict], run_dirs: list[Path], selections: str) -> str:
    """The leaderboard's sections: summary, table, plots, pivot, rankings, then ``selections``, cells and provenance."""
    failed = int((board["status"] != "ok").sum()) if not board.empty else 0
    summary = (f"{len(board)} rows from {len(records)} cells"
               + (f"; {failed} row(s) with failed cells" if failed else "")
               + (f"; ranked by {board.attrs['sort_by']} within each dataset and strategy" if board.attrs.get("sort_by") else ""))
    body = "<p>No records.</p>" if board.empty else (
        f"{_filters(board)}{_table(board)}"
        '<p class="note">Click a header to sort (metrics sort best first), double-click a row to see its cells, '
        '"columns" to hide some; the table scrolls in its box. '
        '↑ higher is better, ↓ lower is better; mean ± std over seeds, [confidence interval] where computed; '
        '"≈ leader": tied with the leader.</p>'
        f'<p class="note" id="method">{html_text(leaderboard.method_line(board))}</p>'
        f"<h2>Accuracy against cost</h2>{plots(board)}<h2>Backbones × datasets</h2>{_pivot(board)}"
        f"{_rankings(board)}")
    return f"""<p id="summary">{html_text(summary)}</p>
<h2>Leaderboard</h2>{body}
{selections}<h2>Cells</h2><p><label>cell <select id="cell-select"></select></label></p><div id="cell-view"></div>
<h2>Provenance</h2><div id="provenance">{provenance_html(records, run_dirs)}</div>
{_json_script("cells", cell_views(records, run_dirs))}
"""


def write(run_dirs: Iterable[Path], output: Path | None = None, sort_by: str | None = None, title: str | None = None,
          metric_registry=None, statistics: tuple[float, str] = (0.05, "percentile")) -> Path:
    """Write the page of ``run_dirs`` (run directories and ``benchbone select`` output directories) to ``output``
    (default ``<first dir>/report.html``); return its path. ``title`` defaults to "benchbone leaderboard", or
    "benchbone select" for select directories alone.

    ``statistics`` is (alpha, interval method) of the paired tests; ``metric_registry`` says how each
    metric is resampled (without it, rows are "not comparable").
    """
    dirs = [Path(d) for d in run_dirs]
    selected = [d for d in dirs if select_report.holds_selection(d)]
    selections = [select_report.section_of(d, i) for i, d in enumerate(selected)]
    run_dirs = [d for d in dirs if d not in selected or any((d / "records").glob("*.json"))]
    records = read_records(run_dirs)
    alpha, ci_method = statistics
    board = leaderboard.build(records, sort_by=sort_by, run_dirs=run_dirs, metric_registry=metric_registry,
                              alpha=alpha, ci_method=ci_method)
    output = Path(output) if output else dirs[0] / "report.html"
    check_output_file(output, "-o")
    title = title or ("benchbone select" if selections and not records else "benchbone leaderboard")
    write_atomic(output, page(board, records, run_dirs, title, selections))
    return output
