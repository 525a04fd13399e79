"""The exact steps of ``benchbone select``, each kept as a small record in ``OUT/steps/``: a candidate's probe (or
strategy) fitted on the first images of the pool and scored on the validation items (and at the end the test
items), with the device seconds it took when it first ran, which a rerun charges again."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from benchbone.selection import probes


def evaluate(sel, cand, size: int, steps: Path, test: bool = False):
    """Fit the probe (or run the strategy) of ``cand`` (of ``Selector`` ``sel``) on the first ``size`` images of
    the pool; (correct per validation item, None at a strategy's test step; seconds), and with ``test`` the test
    items' correctness in ``cand.test``. Kept in ``steps/`` with the seconds it first took."""
    from benchbone.records import write_atomic

    r_index = sel.sizes.index(size)
    path, key, kept = record(sel, cand, size, steps, test)
    if kept is None:
        work = Path(sel.r.out) / "work" / path.stem  # the strategy's ctx.workdir: a killed step resumes from it
        kept = _fit(sel, cand, r_index, test, work, steps)
        kept["key"] = key
        write_atomic(path, json.dumps(kept, default=str))
        shutil.rmtree(work, ignore_errors=True)
    cand.charged.update([key for part in sel.parts(r_index) for key, _ in part] + (["test"] if test else []))
    if not test:
        cand.fit_rate = kept["fit_s"] / size
        cand.fit_s[size] = kept["fit_s"]
    unpack = (lambda hexed, n: np.unpackbits(np.frombuffer(bytes.fromhex(hexed), np.uint8))[:n].astype(bool))
    if test:
        cand.test = {"correct": unpack(kept["test_correct"], kept["test_n"]), "info": kept["info"],
                     "seconds": kept["seconds"]}
    return (unpack(kept["correct"], kept["n"]) if "correct" in kept else None), kept["seconds"]


def record(sel, cand, size: int, steps: Path, test: bool) -> tuple:
    """(path, key, the record kept there or None) of ``cand``'s step at ``size``."""
    from benchbone.digests import json_digest

    key = {"candidate": cand.cell.id, "state": cand.state, "size": size, "sizes": sel.sizes, "val": sel.val.digest(),
           "val_items": sel.val_sizes[sel.sizes.index(size)], "pool": sel.pool.digest(),
           "strategy": cand.cell.strategy, "params": dict(cand.cell.params),
           "test": sel.test_view.digest() if test else None}
    path = steps / f"{json_digest(key, length=24)}.json"
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        kept = kept if kept["key"] == json.loads(json.dumps(key)) else None
    except (OSError, ValueError, KeyError):  # none yet, unreadable, or another step's
        kept = None
    return path, key, kept


def _fit(sel, cand, r_index: int, test: bool, work: Path, steps: Path) -> dict:
    if sel.generic:  # the registered strategy on the round's images, scoring the validation (or test) items
        return probes.strategy_step(sel, cand, sel.chunks[:r_index + 1],
                                    sel.test_view if test else sel.val_prefix(r_index), test, work)
    training, validation = sel.parts(r_index)
    X, y, seconds = _rows(sel, cand, training)
    X_val, y_val, val_seconds = _rows(sel, cand, validation)
    seconds += val_seconds
    evaluated = [X_val]
    if test:
        evaluated.append(sel.features(cand, sel.test_view, "test")[0])
        seconds += cand.extract_s["test"]["seconds"]
    t = time.perf_counter()
    if test and cand.probe is not None and cand.probe[0] == len(y):  # the final round's probe, kept in memory
        predicted = [cand.probe[1](x) for x in evaluated]
        info = {**cand.probe[2], "refit": False}
    else:  # the probe's sweep starts around the C its previous round chose (``probes.window_sweep``)
        previous = record(sel, cand, sel.sizes[r_index - 1], steps, False)[2] if r_index else None
        predicted, info, predict = probes.fit(sel.r.strategy, X, y, evaluated, len(sel.data.classes),
                                              dict(cand.cell.params), cand.cell.seed, sel.session.device,
                                              around=(previous or {}).get("info", {}).get("C"))
        cand.probe = (len(y), predict, info)
    fit_s = time.perf_counter() - t
    correct = predicted[0] == y_val
    out = {"n": len(correct), "correct": np.packbits(correct).tobytes().hex(), "seconds": seconds + fit_s,
           "fit_s": fit_s, "info": info}
    if test:
        right = predicted[1] == np.asarray(sel.test_view.labels)
        out.update(test_n=len(right), test_correct=np.packbits(right).tobytes().hex())
    return out


def _rows(sel, cand, parts: list) -> tuple:
    """(X, y, seconds) of ``parts`` ((key, SplitView) pairs of ``Selector.parts``) through the feature cache, kept in
    ``cand.features``; the seconds are the extraction seconds of the parts not yet charged to ``cand``."""
    seconds = 0.0
    for key, view in parts:
        if cand.features.get(key) is None:
            cand.features[key] = sel.features(cand, view, key)
        seconds += 0.0 if key in cand.charged else cand.extract_s[key]["seconds"]
    return (np.concatenate([cand.features[key][0] for key, _ in parts]),
            np.concatenate([cand.features[key][1] for key, _ in parts]), seconds)
