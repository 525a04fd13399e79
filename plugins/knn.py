"""knn: cosine k-nearest-neighbour classification on frozen features, as in DINO (Caron et al. 2021).

Features are L2-normalised; each test image takes its ``k`` most similar images from the bank
(train + val: nothing is tuned on val, so it joins the bank as linear-probe's refit does), and each
neighbour votes for its class with weight ``exp(similarity / temperature)``. Scores are the votes
normalised to sum to one. Test images are processed in batches on the device.
"""
from __future__ import annotations

from benchbone import Predictions, UsageError, hookimpl

DEFAULTS = dict(k=20, temperature=0.07, chunk=1024)


def knn_scores(bank, bank_labels, queries, num_classes: int, k: int, temperature: float, chunk: int = 1024,
               progress=lambda starts: starts):
    """Normalised temperature-weighted votes [Q, num_classes] of the ``k`` cosine-nearest bank rows."""
    import torch
    import torch.nn.functional as F

    bank = F.normalize(bank, dim=1)
    out = []
    for start in progress(range(0, len(queries), chunk)):
        sims = F.normalize(queries[start:start + chunk], dim=1) @ bank.T
        top, idx = sims.topk(k, dim=1)
        votes = torch.zeros(len(sims), num_classes, dtype=sims.dtype, device=sims.device)
        votes.scatter_add_(1, bank_labels[idx], (top / temperature).exp())
        out.append(votes / votes.sum(1, keepdim=True))
    return torch.cat(out)


def check_params(p: dict) -> None:
    if p["k"] < 1 or p["temperature"] <= 0 or p["chunk"] < 1:
        raise UsageError(f"knn: need k >= 1, temperature > 0 and chunk >= 1, got k={p['k']}, "
                         f"temperature={p['temperature']}, chunk={p['chunk']}")


def knn(backbone, data, ctx) -> Predictions:
    import torch

    p = ctx.params
    check_params(p)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = (ctx.features(s) for s in ("train", "val", "test"))
    bank = torch.cat([Xtr, Xva]).to(ctx.device)
    labels = torch.cat([ytr, yva]).to(ctx.device)
    k = min(p["k"], len(bank))
    scores = knn_scores(bank, labels, Xte.to(ctx.device), ctx.num_classes, k, p["temperature"], p["chunk"],
                        progress=lambda starts: ctx.progress(starts, desc="knn")).float().cpu()
    ctx.info.update(k_used=k, temperature=p["temperature"], bank="train+val", bank_size=len(bank), metric="cosine")
    return Predictions(y_true=yte, y_pred=scores.argmax(1), y_score=scores)


@hookimpl
def benchbone_register_strategies(register):
    register("knn", knn, params=DEFAULTS, check=check_params,
             description="weighted k-nearest neighbours on cosine similarity of frozen features")
