"""knn: cosine k-nearest-neighbour classification on frozen features, as in DINO (Caron et al. 2021).

Features are L2-normalised; each test image takes its ``k`` most similar images from the bank
(train + val: nothing is tuned on val, so it joins the bank as linear-probe's refit does), and each
neighbour votes for its class with weight ``exp(similarity / temperature)``. Scores are the votes
normalised to sum to one. Test images are processed in batches on the device; a bank too large for the
device is streamed in row chunks (memory-mapped features are never copied whole).
"""
from __future__ import annotations

from benchbone import Predictions, UsageError, hookimpl
from benchbone.compute.chunks import fits_in_memory, row_chunks

DEFAULTS = dict(k=20, temperature=0.07, chunk=1024)


def knn_scores(bank, bank_labels, queries, num_classes: int, k: int, temperature: float, chunk: int = 1024,
               progress=lambda starts: starts, bank_rows: int | None = None):
    """Normalised temperature-weighted votes [Q, num_classes] of the ``k`` cosine-nearest bank rows.

    ``bank`` is a tensor or a list of row blocks searched as one (never concatenated); ``bank_labels`` is on
    the device. The normalised bank is held on the device when it fits there (or with ``bank_rows``, in
    chunks of that many rows); otherwise each query chunk streams the bank in row chunks, keeping the best
    ``k`` so far: the same votes, and memory bounded by one chunk, whatever the size of the bank.
    """
    import torch
    import torch.nn.functional as F

    parts = list(bank) if isinstance(bank, (list, tuple)) else [bank]
    device, width = bank_labels.device, parts[0].shape[1]
    dtype = torch.promote_types(parts[0].dtype, torch.float32)
    size, whole = sum(len(part) for part in parts), None
    if bank_rows is None and fits_in_memory(2 * size * width * dtype.itemsize, device):
        whole = F.normalize(torch.cat(parts).to(device, dtype), dim=1)

    def bank_chunks():
        if whole is not None:
            yield 0, whole
            return
        offset = 0
        for part in parts:
            for start, stop in row_chunks(len(part), width, dtype.itemsize, bank_rows):
                yield offset + start, F.normalize(part[start:stop].to(device, dtype), dim=1)
            offset += len(part)

    out = []
    for start in progress(range(0, len(queries), chunk)):
        query = F.normalize(queries[start:start + chunk].to(device, dtype), dim=1)
        top = torch.empty((len(query), 0), dtype=dtype, device=device)
        idx = torch.zeros((len(query), 0), dtype=torch.long, device=device)
        for first, rows in bank_chunks():
            sims, found = (query @ rows.T).topk(min(k, len(rows)), dim=1)
            top, best = torch.cat([top, sims], 1).topk(min(k, top.shape[1] + sims.shape[1]), dim=1)
            idx = torch.cat([idx, found + first], 1).gather(1, best)
        votes = torch.zeros(len(query), num_classes, dtype=top.dtype, device=device)
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
    labels = torch.cat([ytr, yva]).to(ctx.device)
    k = min(p["k"], len(labels))
    scores = knn_scores([Xtr, Xva], labels, Xte, ctx.num_classes, k, p["temperature"], p["chunk"],
                        progress=lambda starts: ctx.progress(starts, desc="knn")).float().cpu()
    ctx.info.update(k_used=k, temperature=p["temperature"], bank="train+val", bank_size=len(labels), metric="cosine")
    return Predictions(y_true=yte, y_pred=scores.argmax(1), y_score=scores)


@hookimpl
def benchbone_register_strategies(register):
    register("knn", knn, params=DEFAULTS, check=check_params,
             description="weighted k-nearest neighbours on cosine similarity of frozen features")
