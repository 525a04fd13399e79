"""finetune: every weight trained with a new linear head, its learning rate chosen on the validation split.

The protocol (VTAB's, on benchbone's splits): a small sweep of learning rates (``sweep="small"``, three values,
sized for a CPU) or of learning rate x schedule length (``sweep="full"``, ten runs, for a GPU), each run kept at
its best epoch on validation and stopped early after ``patience`` epochs without improvement; the run and epoch
with the best validation accuracy are kept and scored once on test. There is no refit on train + val: the
best epoch is itself chosen on validation, and a refit would cost one more whole run. ``lr=X`` fixes the
backbone's learning rate (one run, no sweep); the head's is ``head_lr``, or 10 x the backbone's when None.
The head starts as linear-probe's logistic regression on the frozen features (LP-FT, ``head_init="probe"``,
Kumar et al. 2022: a random head's first gradients distort the pretrained features), or at random.

AdamW or SGD (momentum 0.9), weight decay on weights but not on biases and norm parameters, a linear warm-up
then a cosine schedule stepped per batch, label smoothing, gradient clipping; ``layer_decay`` < 1 scales the
learning rate of each block by ``layer_decay ** depth from the head`` (BEiT's layer-wise decay);
``batchnorm="frozen"`` (the default) normalises with the pretrained BatchNorm statistics, which the probe's head
was fitted under and which small batches could not estimate (the affine weights still train); ``"train"``
uses batch statistics and updates the running ones.
``augment=true`` applies the dataset's declared label-preserving augmentation (``ctx.augmentation``).
bf16 autocast and channels_last on CUDA; ``compile=true`` runs the training step through ``torch.compile``
(compiled again for each sweep run).

A checkpoint (sweep so far, model, optimizer, schedule, best state, RNG state) is written atomically to
``ctx.workdir`` after each epoch, and a cell that failed or was interrupted resumes from it when run again.
A loss that becomes NaN or infinite fails the cell with a message that says so.
The shared backbone is never modified: training runs on copies.

Under ``torchrun`` (WORLD_SIZE > 1) it trains with DistributedDataParallel (NCCL on CUDA, gloo on CPU),
each rank on its shard of the shuffled train order; the learning rates are multiplied by the world size
when ``lr_scaling="linear"`` (the default; "none" keeps them), and the effective rates, the global batch
and every rank's final-weights digest go into the record. Only rank 0 writes checkpoints.
"""
from __future__ import annotations

from benchbone import Predictions, UsageError, hookimpl
from benchbone.helpers import atomic_path, state_digest

DEFAULTS = dict(epochs=8, sweep="small", lr=None, head_lr=None, head_init="probe", patience=3, batch_size=32, weight_decay=0.05,
                optimizer="adamw", layer_decay=1.0, batchnorm="frozen", warmup_epochs=0.5, label_smoothing=0.1,
                clip_grad=1.0, augment=True, lr_scaling="linear", compile=False)
# Backbone learning rates of each sweep; the full one also doubles and triples the schedule.
SWEEPS = {"small": {"adamw": (1e-4, 3e-4, 1e-3), "sgd": (3e-3, 1e-2, 3e-2)},
          "full": {"adamw": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3), "sgd": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)}}
FULL_SCHEDULES = (1, 3)  # x epochs
HEAD_LR_FACTOR = 10
CHECKPOINT = "finetune-checkpoint.pt"
CHECKPOINT_FORMAT = 2


def check_params(p: dict) -> None:
    if p["optimizer"] not in ("adamw", "sgd"):
        raise UsageError(f"finetune: optimizer={p['optimizer']!r}; use adamw or sgd")
    if p["sweep"] not in SWEEPS:
        raise UsageError(f"finetune: sweep={p['sweep']!r}; use small (3 learning rates) or full (10 runs, for a GPU)")
    for key in ("lr", "head_lr"):
        if p[key] is not None and (isinstance(p[key], bool) or not isinstance(p[key], (int, float)) or p[key] <= 0):
            raise UsageError(f"finetune: {key}={p[key]!r} must be a positive number (or none to sweep)")
    if p["epochs"] < 1 or p["batch_size"] < 1 or p["patience"] < 0:
        raise UsageError(f"finetune: need epochs >= 1, batch_size >= 1 and patience >= 0 (0 = never stop early), "
                         f"got epochs={p['epochs']}, batch_size={p['batch_size']}, patience={p['patience']}")
    if p["warmup_epochs"] < 0 or not 0 <= p["label_smoothing"] < 1 or p["clip_grad"] < 0:
        raise UsageError("finetune: need warmup_epochs >= 0, 0 <= label_smoothing < 1 and clip_grad >= 0 (0 = off)")
    if not 0 < p["layer_decay"] <= 1:
        raise UsageError(f"finetune: layer_decay={p['layer_decay']} must lie in (0, 1] (1 = off)")
    if p["head_init"] not in ("probe", "random"):
        raise UsageError(f"finetune: head_init={p['head_init']!r}; use probe (LP-FT) or random")
    if p["batchnorm"] not in ("train", "frozen"):
        raise UsageError(f"finetune: batchnorm={p['batchnorm']!r}; use frozen (pretrained statistics) or train")
    if p["lr_scaling"] not in ("linear", "none"):
        raise UsageError(f"finetune: lr_scaling={p['lr_scaling']!r}; use linear (lr x world size) or none")


def sweep_points(p: dict) -> list[dict]:
    """The runs to train: backbone and head learning rates and schedule length of each, in order."""
    lrs = [float(p["lr"])] if p["lr"] is not None else SWEEPS[p["sweep"]][p["optimizer"]]
    schedules = FULL_SCHEDULES if p["sweep"] == "full" and p["lr"] is None else (1,)
    return [{"lr": lr, "head_lr": float(p["head_lr"]) if p["head_lr"] is not None else HEAD_LR_FACTOR * lr,
             "epochs": p["epochs"] * times} for times in schedules for lr in lrs]


def block_depths(module) -> list[tuple[int, list]]:
    """``module``'s trainable parameters grouped by depth, input side first: the parameters before the first
    numbered block (``blocks.0``, ``layer1.0``, ``features.3``) are the stem, each numbered block is one level,
    and what follows the last is one more (the neck)."""
    named = [(n.split("."), q) for n, q in module.named_parameters() if q.requires_grad]
    common = 0
    while named and all(len(parts) > common + 1 and parts[common] == named[0][0][common] for parts, _ in named):
        common += 1  # a wrapper's prefix (``0.`` of a Sequential) names no block
    keys, groups, in_blocks = [], {}, False
    for parts, q in named:
        parts = parts[common:-1]
        numbered = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        in_blocks = in_blocks or numbered is not None
        key = ".".join(parts[:numbered + 1]) if numbered is not None else ("neck" if in_blocks else "stem")
        if key not in groups:
            keys.append(key)
            groups[key] = []
        groups[key].append(q)
    return [(len(keys) - i, groups[k]) for i, k in enumerate(keys)]


def param_groups(body, head, lr: float, head_lr: float, p: dict) -> list[dict]:
    """Optimizer groups: the head at ``head_lr``; the body at ``lr`` scaled by ``layer_decay ** depth``
    (depth 1 next to the head); no weight decay on biases and norm parameters (tensors of one dimension)."""
    levels = block_depths(body) if p["layer_decay"] < 1 else [(1, [q for q in body.parameters() if q.requires_grad])]
    out = []
    for rate, params in [(head_lr, list(head.parameters()))] + [(lr * p["layer_decay"] ** d, q) for d, q in levels]:
        for decay, chosen in ((p["weight_decay"], [q for q in params if q.ndim > 1]), (0.0, [q for q in params if q.ndim <= 1])):
            if chosen:
                out.append({"params": chosen, "lr": rate, "weight_decay": decay})
    return out


def probe_head(ctx) -> tuple:
    """LP-FT's head (Kumar et al., 2022): ``(weight [K, D], bias [K], C)`` of linear-probe's logistic regression
    on the frozen backbone's train features, C chosen on validation, standardisation folded into the weights."""
    from benchbone.compute.logistic import LogisticObjective, unpack
    from benchbone.compute.sweep import SWEEP_DEFAULTS, choose_c

    (X, y), (Xva, yva) = ctx.features("train"), ctx.features("val")
    objective = LogisticObjective(X, y, ctx.num_classes, standardize=True)
    _, (C, _, fit) = choose_c(objective, Xva, yva, SWEEP_DEFAULTS, ctx.progress)
    W, b = unpack(objective, fit.x)  # on (X - mean) / std
    return (W / objective.std[:, None]).T.contiguous(), b - (objective.mean / objective.std) @ W, C


def freeze_batchnorm(model) -> None:
    """BatchNorm layers to eval mode: normalised with the pretrained running statistics, which stay as they are."""
    import torch

    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)):
            m.eval()


def save_atomic(state: dict, path) -> None:
    """``torch.save`` through ``atomic_path``: a crash leaves the previous checkpoint whole."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path, device) -> dict | None:
    """The checkpoint at ``path`` (``weights_only``: tensors and plain data, never code), or None when
    there is none or it cannot be read; a damaged one is reported and training starts over."""
    import warnings

    import torch

    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {state.get('format')!r}, not {CHECKPOINT_FORMAT}")
        return state
    except Exception as exc:
        warnings.warn(f"finetune checkpoint {path} is damaged ({type(exc).__name__}: {exc}); training from the start",
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
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    steps_per_epoch = math.ceil(math.ceil(ctx.split_size("train") / world) / p["batch_size"])
    warmup = int(p["warmup_epochs"] * steps_per_epoch)
    points, y_val = sweep_points(p), ctx.labels("val")

    def inputs(x):
        return x.contiguous(memory_format=torch.channels_last) if cuda else x

    def evaluate(model, split: str):
        model.eval()
        with torch.inference_mode(), autocast():
            return torch.cat([torch.softmax(model(inputs(x)).float(), dim=1).cpu() for x, _ in ctx.batches(split)])

    probe = probe_head(ctx) if p["head_init"] == "probe" else None

    def new_run(point: dict):
        """A fresh copy of the backbone with a new head (the probe's, or seeded per sweep point), its optimizer and schedule."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed * 1_000_003 + 17 + points.index(point))
            head = torch.nn.Linear(backbone.num_features, ctx.num_classes)
        if probe is not None:
            with torch.no_grad():
                head.weight.copy_(probe[0])
                head.bias.copy_(probe[1])
        model = torch.nn.Sequential(copy.deepcopy(backbone.model), head).to(ctx.device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        groups = param_groups(model[0], head, point["lr"] * scale, point["head_lr"] * scale, p)
        opt = torch.optim.AdamW(groups) if p["optimizer"] == "adamw" else torch.optim.SGD(groups, momentum=0.9)
        total = point["epochs"] * steps_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else
                                                     0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
        return model, opt, schedule

    path = ctx.workdir / CHECKPOINT
    state = load_checkpoint(path, ctx.device)
    resumed = None if state is None else {"sweep_point": state["point"], "epoch": state["epoch"]}
    done, history = (state["sweep"], state["history"]) if state else ([], [])
    best = state["best"] if state else (-1.0, None, None, 0)  # val top1, weights, sweep point, epoch
    for index, point in enumerate(points):
        if index < len(done):
            continue
        model, opt, schedule = new_run(point)
        step = model
        if world > 1:
            step = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if cuda else None)
        if p["compile"]:
            step = torch.compile(step)
        start, run_best, stale, diverged = 0, (-1.0, 0), 0, None
        torch.manual_seed(ctx.seed * 1_000_003 + 31 + index)
        if state is not None and state["point"] == index:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            torch.set_rng_state(state["rng"]["cpu"])
            if cuda and state["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"])
            start, run_best, stale = state["epoch"], state["run_best"], state["stale"]
        for epoch in range(start, point["epochs"]):
            if p["patience"] and stale >= p["patience"]:
                break
            model.train()
            if p["batchnorm"] == "frozen":
                freeze_batchnorm(model)
            batches = ctx.batches("train", p["batch_size"], shuffle=True, augment=p["augment"], epoch=epoch,
                                  shard=(rank, world) if world > 1 else None)
            running = torch.zeros((), device=ctx.device)
            desc = f"finetune lr {point['lr']:g} ({index + 1}/{len(points)}) epoch {epoch + 1}"
            for x, y in ctx.progress(batches, desc=desc, total=steps_per_epoch):
                with autocast():
                    loss = F.cross_entropy(step(inputs(x)).float(), y, label_smoothing=p["label_smoothing"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if p["clip_grad"]:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), p["clip_grad"])
                opt.step()
                schedule.step()
                running += loss.detach()  # summed on the device: no synchronisation per step
            running = running.item() / steps_per_epoch
            if world > 1:  # every rank evaluates with rank 0's batch-norm statistics, so all choose alike
                for buffer in model.buffers():
                    dist.broadcast(buffer, 0)
            val_scores = evaluate(model, "val")
            if not math.isfinite(running) or not torch.isfinite(val_scores).all():  # this run is over, the sweep goes on
                diverged = f"lr {point['lr']:g}: train loss {running:.4g} at epoch {epoch + 1}"
                break
            val_acc = (val_scores.argmax(1) == y_val).float().mean().item()
            history.append({"sweep_point": index, "epoch": epoch + 1, "train_loss": round(running, 6),
                            "val_top1": round(val_acc, 6)})
            run_best, stale = ((val_acc, epoch + 1), 0) if val_acc > run_best[0] else (run_best, stale + 1)
            if val_acc > best[0]:
                best = (val_acc, copy.deepcopy(model.state_dict()), index, epoch + 1)
            if rank == 0:
                save_atomic({"format": CHECKPOINT_FORMAT, "point": index, "epoch": epoch + 1, "sweep": done,
                             "history": history, "best": best, "run_best": run_best, "stale": stale,
                             "model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
                             "rng": {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None}},
                            path)
        epochs_run = sum(1 for h in history if h["sweep_point"] == index)
        done = done + [{**point, "val_top1": run_best[0], "best_epoch": run_best[1], "epochs_run": epochs_run,
                        "stopped_early": epochs_run < point["epochs"], "diverged": diverged}]
        state = None
    if best[1] is None:
        raise FloatingPointError("finetune diverged (loss or validation scores NaN or infinite) in every run ("
                                 + "; ".join(d["diverged"] for d in done) + "); lower the learning rate (--set finetune.lr=...)")
    model.load_state_dict(best[1])  # the same architecture as the last run's
    scores = evaluate(model, "test")
    chosen = points[best[2]]
    ctx.info.update(chosen={**chosen, "best_epoch": best[3]}, val_top1=best[0], sweep=done, history=history,
                    best_epoch=best[3], protocol="best sweep run and epoch on val, scored once on test (no refit)",
                    augmentation=ctx.augmentation.describe() if p["augment"] else None, batchnorm=p["batchnorm"],
                    head_init=f"linear probe, C={probe[2]:g}" if probe is not None else "random",
                    resumed_from_epoch=resumed["epoch"] if resumed else None,
                    resumed_at_sweep_point=resumed["sweep_point"] if resumed else None,
                    steps_per_epoch=steps_per_epoch, warmup_steps=warmup,
                    amp="bf16" if cuda else "off",
                    channels_last=cuda, world_size=world, global_batch_size=p["batch_size"] * world,
                    lr_effective=chosen["lr"] * scale, head_lr_effective=chosen["head_lr"] * scale)
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, state_digest(model))
        ctx.info["weights_digest_per_rank"] = digests
    return Predictions(y_true=ctx.labels("test"), y_pred=scores.argmax(1), y_score=scores)


@hookimpl
def benchbone_register_strategies(register):
    register("finetune", finetune, params=DEFAULTS, types={"lr": float, "head_lr": float}, check=check_params,
             description="fine-tune the whole network, learning rate chosen on the validation split")
