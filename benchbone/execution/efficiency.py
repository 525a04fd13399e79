"""How big and how costly a backbone is: parameters and multiply-accumulates of one image."""
from __future__ import annotations

from typing import Any, Sequence

import torch


def count_parameters(model: torch.nn.Module) -> int:
    """The number of parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def gmacs(model: torch.nn.Module, input_size: Sequence[int]) -> float:
    """Giga multiply-accumulates of one forward pass on a single 3 x H x W image (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchbone.compute.threads import cpu_threads

    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else "cpu"
    x = torch.zeros(1, 3, *input_size, device=device)
    was_training = model.training
    model.eval()
    try:  # one batch-1 pass: on one CPU thread, which a busy machine slows 5x to 20x less than two
        with cpu_threads(1 if str(device) == "cpu" else None), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2e9


def describe(model: torch.nn.Module, input_size: Sequence[int], num_features: int) -> dict[str, Any]:
    """``params_m``, ``gmacs`` (at ``input_size``) and ``num_features``, the leaderboard's cost columns."""
    return {"params_m": round(count_parameters(model) / 1e6, 3), "gmacs": round(gmacs(model, input_size), 4),
            "num_features": int(num_features)}
