"""finetune: every weight trained with a new linear head; the best epoch is chosen on the validation split.

AdamW or SGD (momentum 0.9), a linear warm-up then a cosine schedule stepped per batch, label smoothing,
random resized crop and flip on train, gradient clipping; bf16 autocast and channels_last on CUDA.
A checkpoint (model, optimizer, schedule, best state, RNG state) is written atomically to ``ctx.workdir``
after each epoch, and a cell that failed or was interrupted resumes from it when run again.
A loss that becomes NaN or infinite fails the cell with a message that says so.
The shared backbone is never modified: training runs on a copy.

Under ``torchrun`` (WORLD_SIZE > 1) it trains with DistributedDataParallel (NCCL on CUDA, gloo on CPU),
each rank on its shard of the shuffled train order; both learning rates are multiplied by the world
size when ``lr_scaling="linear"`` (the default; "none" keeps them), and the effective rates, the global
batch and every rank's final-weights digest go into the record. Only rank 0 writes checkpoints.
"""
from __future__ import annotations

from benchbone import Predictions, UsageError, hookimpl

DEFAULTS = dict(epochs=3, batch_size=32, lr=1e-4, head_lr=1e-3, weight_decay=0.05, optimizer="adamw",
                warmup_epochs=0.5, label_smoothing=0.1, clip_grad=1.0, augment=True, lr_scaling="linear")
CHECKPOINT = "finetune-checkpoint.pt"


def check_params(p: dict) -> None:
    if p["optimizer"] not in ("adamw", "sgd"):
        raise UsageError(f"finetune: optimizer={p['optimizer']!r}; use adamw or sgd")
    if p["epochs"] < 1 or p["batch_size"] < 1 or p["lr"] <= 0 or p["head_lr"] <= 0:
        raise UsageError(f"finetune: need epochs >= 1, batch_size >= 1, lr > 0 and head_lr > 0, got epochs={p['epochs']}, "
                         f"batch_size={p['batch_size']}, lr={p['lr']}, head_lr={p['head_lr']}")
    if p["warmup_epochs"] < 0 or not 0 <= p["label_smoothing"] < 1 or p["clip_grad"] < 0:
        raise UsageError("finetune: need warmup_epochs >= 0, 0 <= label_smoothing < 1 and clip_grad >= 0 (0 = off)")
    if p["lr_scaling"] not in ("linear", "none"):
        raise UsageError(f"finetune: lr_scaling={p['lr_scaling']!r}; use linear (lr x world size) or none")


def weights_digest(model) -> str:
    """sha256 of a model's parameters and buffers, in state-dict order."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_atomic(state: dict, path) -> None:
    """``torch.save`` to a temporary file, then rename: a crash leaves the previous checkpoint whole."""
    import os

    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device) -> dict | None:
    """The checkpoint at ``path`` (``weights_only``: tensors and plain data, never code), or None when
    there is none or it cannot be read; a damaged one is reported and training starts over."""
    import warnings

    import torch

    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        warnings.warn(f"finetune checkpoint {path} is damaged ({type(exc).__name__}); training from epoch 1",
                      stacklevel=2)
        return None


def finetune(backbone, data, ctx) -> Predictions:
    """Train under torchrun's process group when WORLD_SIZE > 1 (initialised here unless it already is)."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 or dist.is_initialized():
        return _finetune(backbone, ctx, world)
    check_params(ctx.params)
    dist.init_process_group("nccl" if ctx.device.startswith("cuda") else "gloo")
    try:
        return _finetune(backbone, ctx, world)
    finally:
        dist.destroy_process_group()


def _finetune(backbone, ctx, world: int) -> Predictions:
    import contextlib
    import copy
    import math

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    p = ctx.params
    check_params(p)
    rank = dist.get_rank() if world > 1 else 0
    scale = world if p["lr_scaling"] == "linear" else 1
    cuda = ctx.device.startswith("cuda")
    head = torch.nn.Linear(backbone.num_features, ctx.num_classes)
    model = torch.nn.Sequential(copy.deepcopy(backbone.model), head).to(ctx.device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def inputs(x):
        return x.contiguous(memory_format=torch.channels_last) if cuda else x

    net = model
    if world > 1:
        device_ids = [torch.cuda.current_device()] if cuda else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    groups = [{"params": model[0].parameters(), "lr": p["lr"] * scale},
              {"params": head.parameters(), "lr": p["head_lr"] * scale}]
    if p["optimizer"] == "adamw":
        opt = torch.optim.AdamW(groups, weight_decay=p["weight_decay"])
    else:
        opt = torch.optim.SGD(groups, momentum=0.9, weight_decay=p["weight_decay"])
    steps_per_epoch = math.ceil(math.ceil(ctx.split_size("train") / world) / p["batch_size"])
    total, warmup = p["epochs"] * steps_per_epoch, int(p["warmup_epochs"] * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))

    def evaluate(split: str):
        model.eval()
        with torch.inference_mode(), autocast():
            return torch.cat([torch.softmax(model(inputs(x)).float(), dim=1).cpu() for x, _ in ctx.batches(split)])

    path = ctx.workdir / CHECKPOINT
    start, best, history, resumed = 0, (-1.0, None, 0), [], None
    state = load_checkpoint(path, ctx.device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"]["cpu"])
        if cuda and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        start, best, history = state["epoch"], state["best"], state["history"]
        resumed = start

    y_val = ctx.labels("val")
    for epoch in range(start, p["epochs"]):
        model.train()
        batches = ctx.batches("train", p["batch_size"], shuffle=True, augment=p["augment"], epoch=epoch,
                              shard=(rank, world) if world > 1 else None)
        running = 0.0
        for step, (x, y) in enumerate(ctx.progress(batches, desc=f"finetune epoch {epoch + 1}", total=steps_per_epoch)):
            with autocast():
                loss = F.cross_entropy(net(inputs(x)).float(), y, label_smoothing=p["label_smoothing"])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"finetune loss became {loss.item()} (not finite) at epoch {epoch + 1}, "
                                         f"step {step + 1}; lower the learning rate (--set finetune.lr=...)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if p["clip_grad"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), p["clip_grad"])
            opt.step()
            schedule.step()
            running += loss.item()
        if world > 1:  # every rank evaluates with rank 0's batch-norm statistics, so all choose alike
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)
        val_acc = (evaluate("val").argmax(1) == y_val).float().mean().item()
        history.append({"epoch": epoch + 1, "train_loss": round(running / steps_per_epoch, 6), "val_top1": round(val_acc, 6)})
        if val_acc > best[0]:
            best = (val_acc, copy.deepcopy(model.state_dict()), epoch + 1)
        if rank == 0:
            save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
                         "epoch": epoch + 1, "best": best, "history": history,
                         "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None}},
                        path)
    model.load_state_dict(best[1])
    scores = evaluate("test")
    ctx.info.update(best_epoch=best[2], val_top1=best[0], history=history, resumed_from_epoch=resumed,
                    steps_per_epoch=steps_per_epoch, warmup_steps=warmup, total_steps=total,
                    amp="bf16" if cuda else "off", channels_last=cuda, world_size=world,
                    global_batch_size=p["batch_size"] * world, lr_effective=p["lr"] * scale,
                    head_lr_effective=p["head_lr"] * scale)
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, weights_digest(model))
        ctx.info["weights_digest_per_rank"] = digests
    return Predictions(y_true=ctx.labels("test"), y_pred=scores.argmax(1), y_score=scores)


@hookimpl
def benchbone_register_strategies(register):
    register("finetune", finetune, **DEFAULTS)


finetune.check_params = check_params  # called with every cell's parameters before the first cell runs
