"""finetune: every weight trained, a new linear head, the best epoch chosen on the validation split."""
from __future__ import annotations

import copy
import math

from benchbone import Predictions, hookimpl

DEFAULTS = dict(epochs=3, batch_size=32, lr=1e-4, head_lr=1e-3, weight_decay=0.05, optimizer="adamw",
                warmup_epochs=0.5, label_smoothing=0.1, clip_grad=1.0, augment=True)


def _evaluate(model, ctx, split: str):
    import torch

    model.eval()
    scores = []
    with torch.inference_mode():
        for x, _ in ctx.batches(split):
            scores.append(torch.softmax(model(x).float(), dim=1).cpu())
    return torch.cat(scores)


def finetune(backbone, data, ctx) -> Predictions:
    import torch
    import torch.nn.functional as F

    p = ctx.params
    head = torch.nn.Linear(backbone.num_features, ctx.num_classes)
    model = torch.nn.Sequential(backbone.model, head).to(ctx.device)
    groups = [{"params": backbone.model.parameters(), "lr": p["lr"]}, {"params": head.parameters(), "lr": p["head_lr"]}]
    if p["optimizer"] == "adamw":
        opt = torch.optim.AdamW(groups, weight_decay=p["weight_decay"])
    elif p["optimizer"] == "sgd":
        opt = torch.optim.SGD(groups, momentum=0.9, weight_decay=p["weight_decay"])
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', not {p['optimizer']!r}")
    steps_per_epoch = math.ceil(ctx.split_size("train") / p["batch_size"])
    total, warmup = p["epochs"] * steps_per_epoch, int(p["warmup_epochs"] * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    y_val = ctx.labels("val")
    best = (-1.0, None, -1)
    history = []
    for epoch in range(p["epochs"]):
        model.train()
        batches = ctx.batches("train", p["batch_size"], shuffle=True, augment=p["augment"], epoch=epoch)
        running = 0.0
        for step, (x, y) in enumerate(ctx.progress(batches, desc=f"finetune epoch {epoch + 1}", total=steps_per_epoch)):
            loss = F.cross_entropy(model(x), y, label_smoothing=p["label_smoothing"])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"finetune loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                         "lower the learning rate (--set finetune.lr=...)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if p["clip_grad"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), p["clip_grad"])
            opt.step()
            schedule.step()
            running += loss.item()
        val_acc = (_evaluate(model, ctx, "val").argmax(1) == y_val).float().mean().item()
        history.append({"epoch": epoch + 1, "train_loss": running / steps_per_epoch, "val_top1": val_acc})
        if val_acc > best[0]:
            best = (val_acc, copy.deepcopy(model.state_dict()), epoch + 1)
    model.load_state_dict(best[1])
    scores = _evaluate(model, ctx, "test")
    ctx.info.update(best_epoch=best[2], val_top1=best[0], history=history)
    return Predictions(y_true=ctx.labels("test"), y_pred=scores.argmax(1), y_score=scores)


@hookimpl
def benchbone_register_strategies(register):
    register("finetune", finetune, **DEFAULTS)
