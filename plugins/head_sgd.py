"""head-sgd: the classic transfer-learning protocol, kept as a baseline for linear-probe.

The backbone stays frozen (eval mode, no gradients) and a new linear head is trained with SGD
(lr 0.001, momentum 0.9, batch 64, 10 epochs) on images passed through the backbone every epoch:
no feature cache. ``augment=true`` adds the dataset's declared label-preserving augmentation
(``ctx.augmentation``, named in the record). The epoch with the best validation accuracy is kept and scored on test.
"""
from __future__ import annotations

from benchbone import Predictions, UsageError, hookimpl

DEFAULTS = dict(epochs=10, lr=0.001, momentum=0.9, batch_size=64, weight_decay=0.0, augment=False)


def check_params(p: dict) -> None:
    if p["epochs"] < 1 or p["lr"] <= 0 or p["batch_size"] < 1 or not 0 <= p["momentum"] < 1:
        raise UsageError(f"head-sgd: need epochs >= 1, lr > 0, batch_size >= 1 and 0 <= momentum < 1, got "
                         f"epochs={p['epochs']}, lr={p['lr']}, batch_size={p['batch_size']}, momentum={p['momentum']}")


def head_sgd(backbone, data, ctx) -> Predictions:
    import copy

    import torch
    import torch.nn.functional as F

    p = ctx.params
    check_params(p)
    body = backbone.model.to(ctx.device).eval()
    head = torch.nn.Linear(backbone.num_features, ctx.num_classes).to(ctx.device)
    opt = torch.optim.SGD(head.parameters(), lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])

    def predict(split: str):
        head.eval()
        with torch.inference_mode():
            return torch.cat([torch.softmax(head(body(x)).float(), 1).cpu() for x, _ in ctx.batches(split)])

    y_val, best, history = ctx.labels("val"), (-1.0, None, 0), []
    for epoch in ctx.progress(range(p["epochs"]), desc="head-sgd epochs"):
        head.train()
        total, steps = 0.0, 0
        for x, y in ctx.batches("train", p["batch_size"], shuffle=True, augment=p["augment"], epoch=epoch):
            with torch.no_grad():
                feats = body(x)
            loss = F.cross_entropy(head(feats), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"head-sgd loss became {loss.item()} at epoch {epoch + 1}; "
                                         "lower the learning rate (--set head-sgd.lr=...)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        val_acc = (predict("val").argmax(1) == y_val).float().mean().item()
        history.append({"epoch": epoch + 1, "train_loss": round(total / steps, 6), "val_top1": round(val_acc, 6)})
        if val_acc > best[0]:
            best = (val_acc, copy.deepcopy(head.state_dict()), epoch + 1)
    head.load_state_dict(best[1])
    scores = predict("test")
    ctx.info.update(best_epoch=best[2], val_top1=best[0], history=history, optimizer="sgd", feature_cache=False,
                    augmentation=ctx.augmentation.describe() if p["augment"] else None)
    return Predictions(y_true=ctx.labels("test"), y_pred=scores.argmax(1), y_score=scores)


@hookimpl
def benchbone_register_strategies(register):
    register("head-sgd", head_sgd, params=DEFAULTS, check=check_params,
             description="a linear head trained by SGD on a frozen backbone")
