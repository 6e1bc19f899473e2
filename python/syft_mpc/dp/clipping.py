"""Joint L2 clipping of a model update (the sensitivity bound of DP-FedAvg)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from syft_mpc.dp.common import check_positive


def _global_norm(tensors: Sequence[torch.Tensor]) -> float:
    # float64 accumulation: the norm decides the sensitivity, so it must not round down.
    total = 0.0
    for t in tensors:
        total += float(t.detach().to(torch.float64).square().sum())
    return math.sqrt(total)


def clip_update(tensors: list[torch.Tensor], max_norm: float) -> tuple[list[torch.Tensor], float]:
    """Scales ``tensors`` jointly so that their global L2 norm is at most ``max_norm``.

    The update is treated as one vector (all tensors concatenated), as in DP-FedAvg
    (McMahan et al. 2018): clipping each tensor separately would bound the
    sensitivity only by ``max_norm * sqrt(len(tensors))``. Returns new tensors (the
    inputs are not modified) and the norm before clipping; an update already inside
    the ball is returned unchanged (copied). A clipped update's norm is checked in
    float64 and lies a relative 1e-9 to 1e-6 below ``max_norm``, so the bound survives
    rounding in the tensors' dtype and in whoever recomputes the norm.

    >>> import torch
    >>> clipped, norm = clip_update([torch.tensor([3.0]), torch.tensor([4.0])], max_norm=1.0)
    >>> norm, [round(float(t), 4) for t in clipped]
    (5.0, [0.6, 0.8])
    """
    bound = check_positive(max_norm, "max_norm")
    if not isinstance(tensors, (list, tuple)):
        raise TypeError(f"tensors must be a list of torch.Tensor, got {type(tensors).__name__}")
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"tensors[{i}] is a {type(t).__name__}, not a torch.Tensor")
        if not t.is_floating_point():
            raise ValueError(f"tensors[{i}] has dtype {t.dtype}; clipping needs floating-point tensors")
    norm = _global_norm(tensors)
    if not math.isfinite(norm):
        raise ValueError("the update contains inf or nan; refusing to clip a non-finite update")
    if norm <= bound:
        return [t.detach().clone() for t in tensors], norm
    # Aim a relative 1e-9 inside the ball, so that the bound still holds when the norm is
    # recomputed in another summation order; rounding to float32 can still leave it a
    # hair above, and a DP sensitivity bound must hold, so shrink until it does.
    target = bound * (1.0 - 1e-9)
    factor = target / norm
    clipped = [t.detach() * factor for t in tensors]
    for _ in range(8):
        new_norm = _global_norm(clipped)
        if new_norm <= target:
            break
        factor *= (target / new_norm) * (1.0 - 1e-6)
        clipped = [t.detach() * factor for t in tensors]
    return clipped, norm
