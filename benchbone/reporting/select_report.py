"""The report's Selection section: what ``benchbone select`` answered, read from its ``OUT/select.json``.

Reporting sits below selection, so the page reads the published file (docs/select.md), never the selection
package; ``benchbone select`` writes ``OUT/report.html`` through ``report.write`` once select.json is written.
The figures of ``select.png`` (``estimator_panels``, ``survivor_steps``) are computed here for both.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from benchbone.errors import UsageError
from benchbone.reporting.presentation import duration_text, html_text, interval_text, missing, number_text, sort_value
from benchbone.reporting.report_plots import scatter

STATUS_ORDER = ("chosen", "survivor", "eliminated", "screened out", "constraint", "failed")
REASONS = {"one left": "one candidate was left", "within epsilon": "the leader is within epsilon of every other survivor",
           "budget": "the budget ran out before the next round", "sizes": "the whole pool did not separate the survivors"}


def holds_selection(folder: Path) -> bool:
    """Whether ``folder`` is an output directory of ``benchbone select``."""
    return (Path(folder) / "select.json").is_file()


def section_of(folder: Path, index: int = 0) -> str:
    """The Selection section of the select output ``folder``; a damaged select.json is one UsageError naming it."""
    path = Path(folder) / "select.json"
    try:
        return section(json.loads(path.read_text(encoding="utf-8")), index)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise UsageError(f"{path} is damaged or not written by `benchbone select` ({type(exc).__name__}: {exc}); "
                         "run its select command again to rewrite it") from None


def _status_rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER)


def candidate_order(data: dict) -> list[str]:
    """The candidates as select lists them: chosen, survivors, eliminated, then the dropped; best validation first."""
    def key(label: str) -> tuple[int, float]:
        c = data["candidates"][label]
        return _status_rank(c["status"]), -((c["validation"] or {}).get("top1") or 0)

    return sorted(data["candidates"], key=key)


def estimator_panels(data: dict) -> list[tuple[str, float, list[tuple[float, float, str]]]]:
    """Per estimator: its weighted Kendall tau against exact validation top-1 in round 1 (every kept candidate at
    one size; NaN under 3 candidates) and the points (score, top-1 %, candidate)."""
    from scipy import stats

    first = data["rounds"][0]["accuracy"] if data["rounds"] else {}
    candidates = data["candidates"]
    panels = []
    for name in sorted({n for c in candidates.values() for n in c["estimators"]}):
        points = [(float(candidates[c]["estimators"][name]["score"]), 100 * a, c) for c, a in first.items()
                  if name in candidates[c]["estimators"]]
        tau = stats.weightedtau([p[0] for p in points], [p[1] for p in points]).statistic if len(points) >= 3 else math.nan
        panels.append((name, float(tau), points))
    return panels


def survivor_steps(data: dict) -> list[tuple[float, int, str]]:
    """(device seconds spent, survivors, step): after the constraints and the screen, each round, and the test."""
    rounds = data["rounds"]
    tests = sum(c["test"]["seconds"] for c in data["candidates"].values() if c["test"])
    spent = data["spent_s"] - tests - sum(r["seconds"] for r in rounds)
    steps = [(spent, len(rounds[0]["candidates"]) if rounds else len(data["survivors"]), "screen")]
    for r in rounds:
        spent += r["seconds"]
        steps.append((spent, len(r["candidates"]) - len(r["eliminated"]), f"round {r['index']} ({r['size']:,} images)"))
    return [*steps, (data["spent_s"], steps[-1][1], "test")]


# ---------------------------------------------------------------- the section


def section(data: dict, index: int = 0) -> str:
    """The Selection section of one select.json's content; ``index`` tells several on one page apart."""
    return (f'<section class="selection" id="selection-{index}"><h2>Selection: {html_text(data["dataset"])}</h2>'
            f'{_statement(data)}<h3>Candidates</h3>{_candidates(data, index)}<h3>Rounds</h3>{_rounds(data)}'
            f'<h3>Estimators against exact accuracy; survivors against time</h3>{_plots(data)}</section>')


def _statement(data: dict) -> str:
    guarantee = f"{'yes' if data['guaranteed'] else 'no'}: {REASONS.get(data['reason'], data['reason'])}"
    budget = f" of a {duration_text(data['budget_s'])} budget" if data["budget_s"] else ""
    share = f" (spent: {100 * data['spent_fraction']:.0f}% of that)" if data["spent_fraction"] else ""
    items = data["items"]
    facts = [
        ("chosen", f"<b>{html_text(data['chosen'])}</b>; survivors {html_text(', '.join(data['survivors']))}"),
        ("guarantee", html_text(guarantee)),
        ("epsilon", html_text(f"{data['epsilon']:g} points with {100 * data['confidence']:g}% confidence; margin "
                              f"{data['margin']:g} points{_taper(data)}, alpha {data['alpha_per_test']:.3g} per test")),
        ("device time", html_text(f"spent {duration_text(data['spent_s'])}{budget}; the full grid would take "
                                  f"~{duration_text(data['full_grid_s'])}{share}")),
        ("probes", html_text(f"{data['strategy']} on {', '.join(f'{n:,}' for n in data['sizes'])} images of a pool "
                             f"of {items['pool']:,}; {items['validation']:,} validation and {items['test']:,} test "
                             f"items; screened by {data['screen_by']}")),
        ("command", f"<code>{html_text(data['command'])}</code> on {html_text(data['device'])}"),
    ]
    rows = "".join(f"<dt>{name}</dt><dd>{text}</dd>" for name, text in facts)
    return f'<p class="statement">{html_text(data["statement"])}</p><dl class="facts">{rows}</dl>'


def _taper(data: dict) -> str:
    return f" at the first size, tapered (gamma {data['taper']:g}) to none at the last" if data.get("taper") else ""


def _num(value, fmt: str = ".3g", title: str = "", shown: str | None = None) -> str:
    """A number cell of a sortable table: its full value to sort by, in ``fmt`` (or as ``shown``) to read."""
    tip = f' title="{html_text(title)}"' if title else ""
    return f'<td class="n" data-v="{sort_value(value)}"{tip}>{number_text(value, fmt) if shown is None else shown}</td>'


def _candidates(data: dict, index: int) -> str:
    names = sorted({n for c in data["candidates"].values() for n in c["estimators"]})
    heads = [("candidate", "ascending", "click to sort"), ("status", "ascending", ", ".join(STATUS_ORDER)),
             ("why", "ascending", "why kept or dropped"), ("params M", "ascending", "measured"),
             ("GMACs", "ascending", "measured"), ("latency ms", "ascending", "batch 1, measured"),
             ("images/s", "descending", "measured"),
             *((f"{n}{' (screen)' if n == data['screen_by'] else ''}", "descending",
                f"{n}'s score: higher predicts better transfer") for n in names),
             ("rounds", "descending", "rounds of exact evaluation"),
             ("val top1 %", "descending", "exact validation top-1 in the last round evaluated"),
             ("test top1 %", "descending", "top-1 on the test split, with its 95% bootstrap interval")]
    head = "".join(f'<th data-first="{first}" title="{html_text(tip)}">{html_text(label)}</th>'
                   for label, first, tip in heads)
    rows = []
    for label in candidate_order(data):
        c = data["candidates"][label]
        figures, val, test = c["constraints"] or {}, c["validation"], c["test"]
        status = c["status"]
        params = figures.get("params")
        cells = [f'<td data-v="{html_text(label)}">{html_text(label)}</td>',
                 f'<td data-v="{_status_rank(status)}">{html_text(status)}</td>',
                 f'<td class="why" data-v="{html_text(c["why"] or "")}">{html_text(c["why"] or "-")}</td>',
                 _num(None if params is None else params / 1e6), _num(figures.get("gmacs")),
                 _num(figures.get("latency_ms")), _num(figures.get("throughput_ips"), ".0f")]
        cells += [_num((c["estimators"].get(n) or {}).get("score"), ".4g") for n in names]
        cells.append(_num(c["rounds_evaluated"], ".0f", f"{c['rounds_survived']} survived of {c['rounds_evaluated']}"))
        cells.append(_num(None) if not val else _num(
            val["top1"], title=f"round {val['round']}, {val['size']:,} training images"
            + (f", {val['items']:,} validation items" if val.get("items") else ""), shown=f"{100 * val['top1']:.2f}"))
        cells.append(_num(None) if not test else _num(
            test["top1"], title=f"{test['items']} test items, probe trained on {test['train_size']:,} images",
            shown=f"{100 * test['top1']:.2f} <span class=\"ci\">{interval_text(*test['ci'], True)}</span>"))
        cls = {"chosen": "leader", "failed": "failed"}.get(status, "dropped" if status in STATUS_ORDER[3:] else "")
        rows.append(f'<tr class="{cls}" data-candidate="{html_text(label)}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="sortable candidates" id="candidates-{index}"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div><p class="note">Click a header to sort. Scores only '
            'order the screen; only exact evaluations eliminate.</p>')


def _rounds(data: dict) -> str:
    steps = survivor_steps(data)
    rows = "".join(
        f"<tr><td class=n>{r['index']}</td><td class=n>{r['size']:,}</td>"
        f"<td class=n>{'-' if r.get('validation_items') is None else format(r['validation_items'], ',')}</td>"
        f"<td class=n>{len(r['candidates'])}</td>"
        f"<td class=n>{'-' if r.get('margin') is None else format(r['margin'], '.2g')}</td>"
        f"<td>{html_text(r['leader'])} ({100 * r['accuracy'][r['leader']]:.2f}%)</td>"
        f"<td>{html_text(', '.join(r['eliminated']) or '-')}</td><td class=n>{alive}</td>"
        f"<td class=n>{r['seconds']:.3g}</td><td class=n>{spent:.3g}</td></tr>"
        for r, (spent, alive, _) in zip(data["rounds"], steps[1:]))
    if not rows:
        return '<p class="note">No round of exact evaluation ran.</p>'
    return ('<div class="scroll"><table class="rounds"><thead><tr><th>round</th><th>training images</th>'
            '<th>validation items</th><th>candidates</th>'
            '<th title="points behind the leader, with confidence, to be dropped">margin</th>'
            '<th>leader (val top1)</th><th>eliminated</th><th>survivors after</th><th>seconds</th>'
            f'<th>device s spent</th></tr></thead><tbody>{rows}</tbody></table></div>')


def _plots(data: dict) -> str:
    figures = []
    for name, tau, points in estimator_panels(data):
        if points:
            caption = f"{name}{' (screen)' if name == data['screen_by'] else ''}: weighted τ " + (
                "n/a" if missing(tau) else f"{tau:.2f}")
            figures.append(f"<figure><figcaption>{html_text(caption)}</figcaption>"
                           f"{scatter(points, f'{name} score', 'exact val top1 %, round 1', None)}</figure>")
    figures.append("<figure><figcaption>survivors against device time</figcaption>"
                   f"{scatter(survivor_steps(data), 'device time spent (s)', 'survivors', None, steps=True)}</figure>")
    return ('<p class="note">Each estimator\'s score against the exact validation top-1 of round 1 (every kept '
            'candidate trained on the same images); weighted τ: weighted Kendall tau, the top weighted (n/a under '
            'three candidates or for constant scores). Hover a point for its candidate.</p>' + "".join(figures))
