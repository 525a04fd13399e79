"""What ``benchbone select`` answers: ``SelectResult``, ``OUT/select.json``, its table (table, md, json), plots
and HTML page.

``select.json`` is written first and atomically; the plots (``select.png``) and the page (``report.html``, the
report's Selection section) come after it, and one that fails is one line, never a lost answer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from benchbone.reporting.presentation import duration_text
from benchbone.reporting.select_report import candidate_order, estimator_panels, survivor_steps

FORMATS = ("table", "md", "json")
COLUMNS = ("candidate", "status", "params_m", "gmacs", "latency_ms", "throughput_ips", "screen_score", "rounds",
           "val_top1", "test_top1")


@dataclass
class SelectResult:
    """The answer: ``chosen``, ``survivors``, ``statement`` and per candidate what was measured (``data``:
    select.json's content). ``to_frame()`` gives a pandas DataFrame with a row per candidate."""
    data: dict

    chosen = property(lambda self: self.data["chosen"])
    survivors = property(lambda self: self.data["survivors"])
    statement = property(lambda self: self.data["statement"])
    guaranteed = property(lambda self: self.data["guaranteed"])
    spent_s = property(lambda self: self.data["spent_s"])
    full_grid_s = property(lambda self: self.data["full_grid_s"])

    def __repr__(self) -> str:
        return f"SelectResult(chosen={self.chosen!r}, survivors={self.survivors!r}, guaranteed={self.guaranteed})"

    @classmethod
    def from_selector(cls, s, wall_s: float) -> SelectResult:
        from benchbone.selection.screen import rank_figures

        sel, r = s.selection, s.r
        rounds_of = {c: 0 for c in s.candidates}
        val = {}
        for rnd in sel.history:
            for c in rnd.candidates:
                rounds_of[c] += 1
                val[c] = {"top1": round(rnd.accuracy[c], 6), "size": rnd.size, "round": rnd.index, "items": rnd.items}
        per = {}
        for label, cand in s.candidates.items():
            test = None
            if cand.test is not None and "top1" in cand.test:
                test = {"top1": round(cand.test["top1"], 6), "ci": [round(x, 6) for x in cand.test["ci"]],
                        "items": cand.test["items"], "train_size": cand.test["size"],
                        "seconds": round(cand.test["seconds"], 4)}
            per[label] = {
                "status": ("failed" if cand.status == "failed" else "chosen" if label == sel.chosen else "survivor"
                           if label in sel.survivors else "eliminated" if rounds_of[label] else cand.status),
                "why": cand.why, "backbone": cand.cell.backbone, "pretrained": cand.cell.pretrained, "layer": cand.cell.layer,
                "constraints": cand.constraints, "estimators": cand.scores, "rounds_survived": rounds_of[label] - (
                    1 if any(label in rnd.eliminated for rnd in sel.history) else 0),
                "rounds_evaluated": rounds_of[label], "validation": val.get(label), "test": test,
                "extraction": {str(k): v for k, v in cand.extract_s.items()},
            }
        exact = {c: v["top1"] for c, v in val.items()}
        first = dict(sel.history[0].accuracy) if sel.history else {}  # round 1: every kept candidate, one size
        full_grid = s.full_grid_s()
        statement = sel.statement
        chosen_test = per[sel.chosen]["test"]
        if chosen_test:
            statement += (f"; test top1 {100 * chosen_test['top1']:.1f}% [{100 * chosen_test['ci'][0]:.1f}, "
                          f"{100 * chosen_test['ci'][1]:.1f}]")
        budget = f" of {duration_text(r.budget_s)}" if r.budget_s else ""
        statement += f"; spent {duration_text(s.spent)}{budget}; the full grid would take ~{duration_text(full_grid)}"
        names = sorted({n for c in s.candidates.values() for n in c.scores})
        data = {
            "chosen": sel.chosen, "survivors": list(sel.survivors), "guaranteed": sel.guaranteed, "reason": sel.reason,
            "statement": statement, "epsilon": r.epsilon, "confidence": r.confidence, "margin": r.margin,
            "taper": r.taper,
            "alpha_per_test": sel.alpha_per_test, "strategy": r.strategy, "dataset": r.dataset,
            "screen_by": r.screen_by, "sizes": s.sizes, "final_size": sel.final_size,
            "items": {"pool": len(s.pool), "validation": len(s.val), "test": len(s.test_view)},
            "budget_s": r.budget_s, "spent_s": round(s.spent, 3), "full_grid_s": round(full_grid, 3),
            "spent_fraction": round(s.spent / full_grid, 4) if full_grid else None, "wall_s": round(wall_s, 3),
            "device": s.session.device, "command": r.command,
            "rounds": [{"index": rnd.index, "size": rnd.size, "candidates": list(rnd.candidates), "leader": rnd.leader,
                        "accuracy": {c: round(a, 6) for c, a in rnd.accuracy.items()},
                        "lower_bounds": {c: round(b, 6) for c, b in rnd.lower_bounds.items()},
                        "margin": round(100 * rnd.margin, 3), "eliminated": list(rnd.eliminated),
                        "validation_items": rnd.items,
                        "seconds": round(rnd.seconds, 3)} for rnd in sel.history],
            "estimators_vs_exact": {"round1": rank_figures({c: per[c]["estimators"] for c in per}, first, names)},
            "exact_last": exact,
            "candidates": per,
        }
        return cls(data)

    # ------------------------------------------------------------------ views
    def rows(self) -> list[dict]:
        out = []
        for label in candidate_order(self.data):
            c = self.data["candidates"][label]
            figures = c["constraints"] or {}
            score = (c["estimators"].get(self.data["screen_by"]) or {}).get("score")
            out.append({"candidate": label, "status": c["status"],
                        "params_m": round(figures["params"] / 1e6, 3) if figures else None,
                        "gmacs": figures.get("gmacs"), "latency_ms": figures.get("latency_ms"),
                        "throughput_ips": figures.get("throughput_ips"),
                        "screen_score": None if score is None else round(score, 4),
                        "rounds": c["rounds_evaluated"],
                        "val_top1": None if not c["validation"] else round(100 * c["validation"]["top1"], 2),
                        "test_top1": None if not c["test"] else round(100 * c["test"]["top1"], 2)})
        return out

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=COLUMNS)

    def to_text(self, fmt: str = "table") -> str:
        if fmt == "json":
            return json.dumps(self.data, indent=2)
        frame = self.to_frame().astype(object).where(self.to_frame().notna(), "")
        if fmt == "md":
            head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
            body = "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False))
            return f"{head}\n{body}\n\n{self.statement}"
        return frame.to_string(index=False) + "\n\n" + self.statement

    # ------------------------------------------------------------------ files
    def write(self, out: Path, say) -> None:
        from benchbone.records import write_atomic
        from benchbone.reporting import report

        out = Path(out)
        write_atomic(out / "select.json", json.dumps(self.data, indent=2) + "\n")
        write_atomic(out / "select.md", self.to_text("md") + "\n")
        for name, draw in (("select.png", lambda: write_atomic(out / "select.png", plot_png(self.data))),
                           ("report.html", lambda: report.write([out]))):
            try:
                draw()
            except Exception as exc:  # noqa: BLE001 (a secondary file: the answer is written already)
                say(f"benchbone: {name} not written ({type(exc).__name__}: {exc}); select.json is complete",
                    important=True)


def plot_png(data: dict) -> bytes:
    """Two panels: each estimator's score against exact validation accuracy (round 1), and survivors per round
    against device time spent (the figures of the report's Selection section)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = estimator_panels(data)
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 3.2), squeeze=False)
    for ax, (name, tau, points) in zip(axes[0], panels):
        ax.scatter([x for x, _, _ in points], [y for _, y, _ in points], s=14)
        ax.set_title(f"{name} (wtau {tau:.2f})", fontsize=9)
        ax.set_xlabel("score", fontsize=8)
        ax.set_ylabel("exact val top1, round 1 (%)", fontsize=8)
    ax = axes[0][-1]
    steps = survivor_steps(data)
    ax.step([x for x, _, _ in steps], [y for _, y, _ in steps], where="post")
    ax.set_xlabel("device time spent (s)", fontsize=8)
    ax.set_ylabel("survivors", fontsize=8)
    ax.set_title("survivors per round", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
