"""retrieval: image retrieval on frozen features, recall@k and mAP (CLIP_benchmark's and mmpretrain's metrics).

Every test image is a query and the train split (train + val: nothing is tuned) the gallery; a gallery
image is relevant to a query when it has the query's class. Similarity is cosine. ``recall_at_k`` is the
share of queries with at least one relevant image among their k most similar (mmpretrain's
RetrievalRecall); ``map`` the mean over queries of the average precision of the whole ranked gallery
(scikit-learn's ``average_precision_score`` per query). Queries are ranked in chunks on the device.
The predicted class is the class of the most similar gallery image, so top1 equals recall_at_1.
"""
from __future__ import annotations

import math

from benchbone import Predictions, UsageError, hookimpl

KS = (1, 5, 10)
DEFAULTS = dict(chunk=256)


def retrieval_metrics(gallery, gallery_labels, queries, query_labels, ks=KS, chunk: int = 256,
                      progress=lambda starts: starts) -> tuple[dict[str, float], "object"]:
    """``({"recall_at_k": ..., "map": ...}, top-1 gallery label per query)`` for cosine similarity."""
    import torch
    import torch.nn.functional as F

    gallery = F.normalize(gallery.float(), dim=1)
    hits = {k: 0.0 for k in ks}
    ap_sum, top1 = 0.0, []
    ranks = torch.arange(1, len(gallery) + 1, device=gallery.device, dtype=torch.float32)  # no float64 on MPS
    for start in progress(range(0, len(queries), chunk)):
        sims = F.normalize(queries[start:start + chunk].float(), dim=1) @ gallery.T
        order = sims.argsort(dim=1, descending=True, stable=True)
        relevant = gallery_labels[order] == query_labels[start:start + chunk, None]
        for k in ks:
            hits[k] += relevant[:, :k].any(dim=1).sum().item()
        found = relevant.cumsum(dim=1, dtype=torch.float32)  # exact up to 2**24 gallery images
        counts = found[:, -1]
        precision_at_hits = (found / ranks * relevant).sum(dim=1)
        ap_sum += torch.where(counts > 0, precision_at_hits / counts.clamp(min=1), 0.0).sum().item()
        top1.append(gallery_labels[order[:, 0]])
    n = len(queries)
    metrics = {f"recall_at_{k}": hits[k] / n for k in ks}
    metrics["map"] = ap_sum / n
    return metrics, torch.cat(top1)


def retrieval(backbone, data, ctx) -> Predictions:
    import torch

    if ctx.params["chunk"] < 1:
        raise UsageError(f"retrieval: chunk={ctx.params['chunk']} must be >= 1")
    (Xtr, ytr), (Xva, yva), (Xte, yte) = (ctx.features(s) for s in ("train", "val", "test"))
    gallery, labels = torch.cat([Xtr, Xva]).to(ctx.device), torch.cat([ytr, yva]).to(ctx.device)
    metrics, nearest = retrieval_metrics(gallery, labels, Xte.to(ctx.device), yte.to(ctx.device),
                                         chunk=ctx.params["chunk"],
                                         progress=lambda starts: ctx.progress(starts, desc="retrieval"))
    ctx.info.update(gallery="train+val", gallery_size=len(gallery), queries=len(Xte), similarity="cosine",
                    relevance="same class", **metrics)
    return Predictions(y_true=yte, y_pred=nearest.cpu(), metrics=metrics)


def measured_by_retrieval(y_true, y_pred, y_score) -> float:
    """Retrieval metrics need each query's ranking of the gallery: only the retrieval strategy measures them."""
    return math.nan


@hookimpl
def benchbone_register_strategies(register):
    register("retrieval", retrieval, params=DEFAULTS,
             description="nearest train images of each test image: recall@k and mAP")


@hookimpl
def benchbone_register_metrics(register):
    for k in KS:
        register(f"recall_at_{k}", measured_by_retrieval, higher_is_better=True, percent=True, default=False,
                 description=f"retrieval: share of test queries with a same-class train image among the {k} nearest")
    register("map", measured_by_retrieval, higher_is_better=True, percent=True, default=False,
             description="retrieval: mean average precision of each test query's ranking of the train split")
