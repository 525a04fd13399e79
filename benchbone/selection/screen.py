"""The screen of ``benchbone select``: estimator scores on a small subsample, the order and the first cut.

Every estimator registered through ``benchbone_register_estimators`` is called on the screen subsample's
features of each candidate; the static prior (``needs=("meta",)``) on the candidate's metadata. Those that
need source logits (``nce``, ``leep``) score only a candidate whose backbone has a source head
(``Backbone.source_head``) and whose features are the backbone's own (no ``--set layer``, no ``--weights``):
the head maps the screen's features to the logits, with no second pass over the images. Each score is timed
and kept in the cache directory (``<cache>/estimates/``) keyed by the features' identity, the rows and the
estimator (and a digest of the logits), so a rerun reads it back. An estimator that raises or returns NaN is
left out for that candidate with one line; the others go on.

The screen only orders the candidates and makes the first cut: the top ``keep`` by the screening estimator
(LogME by default), plus the static prior's top pick when the cut missed it. Nothing is eliminated by a
score afterwards; only exact evaluations do that (``elimination``).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from benchbone.errors import UsageError, first_line
from benchbone.selection.probes import ONE_THREAD_BELOW, one_thread

PRIOR = "static-prior"


def usable(registry, asked: list[str] | None, say) -> list[str]:
    """The estimators to compute: ``asked`` (names or patterns) or every registered one; one line for each asked
    one that needs source logits, which scores only the candidates with a source head."""
    names = registry.resolve(asked) if asked else list(registry.registered())
    for name in names:
        if asked and "source_logits" in _needs(registry.get(name)):
            say(f"benchbone: estimator {name} scores only the candidates whose backbone keeps its source "
                "classifier (Backbone.source_head), at its own features (no --set layer, no --weights)")
    return names


def _needs(entry) -> tuple[str, ...]:
    return tuple(entry.meta.get("needs") or ("features", "labels"))


def source_logits(backbone, cell, features, say, label: str) -> np.ndarray | None:
    """The source classifier's logits [N, S] of ``features`` (the backbone's pooled output): its ``source_head``
    on them, on the CPU. None without a head, at an intermediate layer (``--set layer``), with weights from a
    file (``--weights``, which the head does not match), or when the head fails (one line)."""
    if backbone.source_head is None or cell.layer or cell.weights:
        return None
    import torch

    try:
        with torch.inference_mode():
            logits = backbone.source_head(torch.tensor(features, dtype=torch.float32))
        return np.asarray(logits.detach().float().cpu().numpy())
    except Exception as exc:  # noqa: BLE001 (a plugin's head may fail in any way: its estimators are left out)
        say(f"benchbone: the source head of {label} failed: {first_line(exc)}; "
            "no source-logit estimates for it", important=True)
        return None


def _cache_path(root: Path | None, key: dict) -> Path | None:
    from benchbone.digests import json_digest

    return Path(root) / "estimates" / f"{json_digest(key, length=32)}.json" if root else None


def score(registry, names: list[str], features, labels, meta: dict, identity: dict, root: Path | None,
          say, label: str, logits=None) -> dict[str, dict]:
    """``{estimator: {"score", "seconds", "cached"}}`` for one candidate; failures and NaN left out with a line,
    and those that need source logits without a line when ``logits`` is None."""
    from benchbone.digests import array_digest
    from benchbone.records import write_atomic
    from benchbone.registry import Reading, read_only

    out = {}
    if logits is not None:
        logits, logits_digest = read_only(np.array(logits, copy=True)), array_digest(logits)
    reading = Reading({"features": read_only(np.array(features, copy=True)),  # the estimators read them in turn
                       "labels": read_only(np.array(labels, copy=True)), "source_logits": logits}, keep=True)
    for name in names:
        entry = registry.get(name)
        needs = _needs(entry)
        if "source_logits" in needs and logits is None:
            continue
        key = {"estimate": name, "plugin": entry.plugin, **({"meta": meta} if "meta" in needs else identity),
               **({"source_logits": logits_digest} if "source_logits" in needs else {})}
        path = _cache_path(root, key)
        if path is not None and path.is_file():
            try:
                kept = json.loads(path.read_text(encoding="utf-8"))
                if kept["key"] == json.loads(json.dumps(key)):
                    out[name] = {"score": kept["score"], "seconds": kept["seconds"], "cached": True}
                    continue
            except (OSError, ValueError, KeyError):
                pass
        t = time.perf_counter()
        try:
            with one_thread(np.size(features) < ONE_THREAD_BELOW):  # as the probes: see ``probes.one_thread``
                value = entry.obj(meta) if "meta" in needs else reading.call(
                    "estimator", entry.plugin, lambda x, y, z, fn=entry.obj, logits="source_logits" in needs:
                    fn(x, y, z if logits else None))
            value = float(value)
        except Exception as exc:  # noqa: BLE001 (a plugin may fail in any way: that candidate's score is left out)
            say(f"benchbone: estimator {name} failed on {label}: {first_line(exc)}; ignored", important=True)
            continue
        seconds = time.perf_counter() - t
        if not math.isfinite(value):
            say(f"benchbone: estimator {name} returned {value} on {label}; ignored", important=True)
            continue
        out[name] = {"score": value, "seconds": round(seconds, 4), "cached": False}
        if path is not None:
            try:
                write_atomic(path, json.dumps({"key": key, "score": value, "seconds": round(seconds, 4)}))
            except UsageError:
                pass
    return out


def step(sel, cand) -> None:
    """The screen of one candidate of the ``Selector`` ``sel`` (what a screen job runs too): its features of the
    first subsample through the feature cache, with its source logits where it has a head (``source_logits``),
    and its estimator scores (``score``) in ``cand``, charged to ``sel.spent``."""
    X, y = cand.features[0] = sel.features(cand, sel.chunks[0], 0)
    cand.charged.add(0)
    sel.spent += cand.extract_s[0]["seconds"]
    backbone, preprocess, _ = sel._build(cand)
    identity = {"features": sel._identity(cand, backbone), "rows": sel.chunks[0].digest(),
                "preprocess": preprocess.describe()}
    registry = sel.pm.registries().estimators
    wanted = any("source_logits" in _needs(registry.get(n)) for n in sel.estimator_names)
    logits = source_logits(backbone, cand.cell, X, sel.say, cand.label) if wanted else None
    cand.scores = score(registry, sel.estimator_names, X, y, cand.meta, identity, sel.session.store.root, sel.say,
                        cand.label, logits)
    sel.spent += sum(s["seconds"] for s in cand.scores.values())


def first_cut(labels: list[str], scores: dict[str, dict], by: str, keep: int) -> tuple[list[str], dict]:
    """The screen's order (by ``by``, candidates without that score last, in the given order) and the first
    cut: the top ``keep`` plus the static prior's top pick. Returns (kept in order, {label: why kept or cut})."""
    def value(label, name):
        entry = scores[label].get(name)
        return entry["score"] if entry else -math.inf

    order = sorted(labels, key=lambda c: -value(c, by))  # stable: ties keep the given order
    kept = order[:keep]
    why = {c: f"top {keep} by {by}" for c in kept}
    with_prior = [c for c in labels if PRIOR in scores[c]]
    if with_prior:
        top = max(with_prior, key=lambda c: value(c, PRIOR))
        if top not in kept:
            kept.append(top)
            why[top] = f"{PRIOR}'s top pick"
    for c in order:
        why.setdefault(c, f"cut by the screen (rank {order.index(c) + 1} by {by})")
    return kept, why


def keep_count(n: int, keep: float | None) -> int:
    """``keep``: a count (>= 1), a fraction of the candidates (< 1), or None (a quarter, at least 2): at least 2."""
    if keep is None:
        return min(n, max(2, math.ceil(n / 4)))
    if keep < 1:
        return min(n, max(2, math.ceil(keep * n)))
    return min(n, max(2, int(keep)))


def rank_figures(scores: dict[str, dict], accuracy: dict[str, float], names: list[str]) -> dict[str, dict]:
    """Per estimator, against ``accuracy`` (candidate -> exact accuracy): weighted Kendall tau
    (``scipy.stats.weightedtau``, the top weighted), rel@1 and rel@3 (the best accuracy among the estimator's
    top 1 or 3 over the best of all)."""
    from scipy import stats

    out = {}
    for name in names:
        have = [c for c in accuracy if name in scores.get(c, {})]
        if len(have) < 3:
            continue
        s = np.array([scores[c][name]["score"] for c in have])
        a = np.array([accuracy[c] for c in have])
        top = [have[i] for i in np.argsort(-s, kind="stable")]
        best = max(a)
        out[name] = {"weighted_tau": round(float(stats.weightedtau(s, a).statistic), 4),
                     "rel@1": round(accuracy[top[0]] / best, 4) if best > 0 else None,
                     "rel@3": round(max(accuracy[c] for c in top[:3]) / best, 4) if best > 0 else None,
                     "candidates": len(have)}
    return out
