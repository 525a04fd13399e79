"""The report's per-cell views (confusion matrix, per-class accuracy: read from each record's artefacts, inside
its run directory) and its provenance section."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from benchbone.reporting import presentation
from benchbone.reporting.presentation import html_text, missing, number_text


def _artefact(record: dict, name: str, run_dirs: list[Path]) -> Path | None:
    """The artefact file ``name`` of a record, found in the run directories; a path that would lead outside
    its run directory (``../``, absolute, a link out) is reported in one line and skipped."""
    from benchbone.records import artefact_file

    return artefact_file(record, name, run_dirs)


def _read_artefact(path: Path | None, read):
    """``read(path)``, or None with a one-line warning when the file is not what benchbone wrote."""
    if path is None:
        return None
    try:
        return read(path)
    except Exception as exc:  # a damaged or foreign file: the page still comes out
        warnings.warn(f"artefact {path} is unreadable ({type(exc).__name__}: {exc}); skipped", stacklevel=2)
        return None


def _confusion(path: Path) -> tuple[list[str], list[list[int]]]:
    frame = pd.read_csv(path, index_col=0)
    return [str(c) for c in frame.columns], frame.to_numpy().astype(int).tolist()


def _per_class(path: Path) -> list[dict]:
    frame = pd.read_csv(path)
    return [{"class": str(c), "support": int(s), "accuracy": _clean(float(a))}
            for c, s, a in zip(frame["class"], frame["support"], frame["accuracy"])]


def _clean(value):
    return None if missing(value) else value


def cell_views(records: list[dict], run_dirs: list[Path]) -> list[dict]:
    """Per cell: its label, row key, status, error, and confusion matrix and per-class accuracy if written."""
    cells = []
    for r in sorted(records, key=lambda r: (r["dataset"], r["strategy"], r["backbone"], r.get("seed", 0))):
        view = {"id": r["cell_id"], "label": f"{r['backbone']} × {r['dataset']} × {r['strategy']}, seed {r.get('seed')}",
                "key": [r["dataset"], r["strategy"], r["backbone"], json.dumps(r.get("params", {}), sort_keys=True)],
                "status": r.get("status"), "error": r.get("error"),
                "metrics": {k: _clean(v) for k, v in (r.get("metrics") or {}).items()}}
        confusion = _read_artefact(_artefact(r, "confusion_csv", run_dirs), _confusion)
        if confusion:
            view["classes"], view["confusion"] = confusion
        per_class = _read_artefact(_artefact(r, "per_class_csv", run_dirs), _per_class)
        if per_class:
            view["per_class"] = per_class
        cells.append(view)
    return cells


def _loggers(records: list[dict]) -> list[str]:
    """The loggers the records went to: plugins registered by ``--log-to`` under their ``KIND:TARGET`` name."""
    return sorted({name for r in records for name in (r.get("plugin_versions") or {}) if ":" in name})


def provenance_html(records: list[dict], run_dirs: list[Path]) -> str:
    facts = presentation.provenance(records)
    started, finished = facts["started"], facts["finished"]
    loggers = _loggers(records)
    plugins = [p for p in facts["plugins"] if not any(p == name or p.startswith(f"{name} ") for name in loggers)]
    items = [("run directories", [str(d) for d in run_dirs]), ("commands", facts["commands"]),
             ("machines", [f"{device} on {machine} ({host})" for device, machine, host in facts["machines"]]),
             ("date", [f"{(started or finished)[0]} to {finished[-1]}"] if finished else []),
             ("versions", facts["versions"]), ("plugins", plugins), ("loggers", loggers)]
    parts = ["<dl>"]
    for name, values in items:
        shown = "".join(f"<code>{html_text(v)}</code><br>" for v in values) or "-"
        parts.append(f'<dt>{name}</dt><dd id="prov-{name.replace(" ", "-")}">{shown}</dd>')
    parts.append("</dl>")

    backbones: dict[str, dict] = {}
    for r in records:
        info = r.get("backbone_info")
        if info and r["backbone"] not in backbones:
            backbones[r["backbone"]] = info
    rows = "".join(
        f"<tr><td>{html_text(b)}</td><td><code>{html_text(i.get('weights'))}</code></td><td>{html_text(_preprocess(i))}</td>"
        f"<td class=n>{number_text(i.get('params_m'))}</td><td class=n>{number_text(i.get('gmacs'))}</td></tr>"
        for b, i in sorted(backbones.items()))
    parts.append('<h3>Backbones</h3><div class="scroll"><table id="backbones"><thead><tr><th>backbone</th><th>weights</th>'
                 f'<th>preprocessing</th><th>params M</th><th>GMACs</th></tr></thead><tbody>{rows}</tbody></table></div>')
    parts.append(_splits(records))
    return "".join(parts)


def _splits(records: list[dict]) -> str:
    """One row per dataset and seed (seeds that carved the same splits share a row): sizes and index digests."""
    seeds: dict[tuple, set] = {}
    for r in records:
        if r.get("data"):
            d = r["data"]
            key = (r["dataset"], *(d.get(k) for k in ("num_classes", "train", "val", "test")), bool(d.get("val_carved")),
                   json.dumps(d.get("indices_digest", {}), sort_keys=True))
            seeds.setdefault(key, set()).add(r.get("seed"))
    ordered = sorted(seeds.items(), key=lambda kv: (kv[0][0], sorted(map(str, kv[1]))))
    rows = "".join(
        f"<tr><td>{html_text(d)}</td><td class=n>{html_text(', '.join(str(s) for s in sorted(ss, key=str)))}</td>"
        f"<td class=n>{c}</td><td class=n>{tr}</td><td class=n>{va}{' (carved)' if carved else ''}</td><td class=n>{te}</td>"
        f"<td><code>{html_text(_digests(json.loads(dig)))}</code></td></tr>"
        for (d, c, tr, va, te, carved, dig), ss in ordered)
    return ('<h3>Data splits</h3><p class="note">Per dataset and seed, the images each split held (seeds that drew '
            'the same images share a row); the digests tell which.</p><div class="scroll"><table id="splits"><thead><tr><th>dataset</th><th>seed</th><th>classes</th>'
            f'<th>train</th><th>val</th><th>test</th><th>index digests</th></tr></thead><tbody>{rows}</tbody></table></div>')


def _digests(digests: dict) -> str:
    """"train …, val …, test …": the splits in the order a cell uses them, any others after."""
    order = {"train": 0, "val": 1, "test": 2}
    return ", ".join(f"{k} {v}" for k, v in sorted(digests.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])))


def _preprocess(info: dict) -> str:
    p = info.get("preprocess") or {}
    if not p:
        return "-"
    size = "x".join(map(str, p.get("size", info.get("input_size", []))))
    return (f"{size}, {p.get('interpolation', '')}, crop {p.get('crop_pct', '')}, mean {p.get('mean')}, "
            f"std {p.get('std')}")
