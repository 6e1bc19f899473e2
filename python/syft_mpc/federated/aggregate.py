"""Summing remote tensors: in the clear, or under secure aggregation with optional distributed noise.

:func:`secure_sum` is the additive secure aggregation of Bonawitz et al. 2017 in its
simplest (semi-honest, no drop-out) form, on this package's shares: each input's owner
encodes its tensor in fixed point, splits it into additive shares in Z_2^64 and stores one
share on each share holder itself (``ptr.fix_prec().share(...)``: the plaintext never
leaves its owner and never passes through the driver); the holders add their shares
locally (no interaction, no correlated randomness); the driver reconstructs only the sum.

Differential-privacy noise can be added to the *shared* sum before it is revealed
(``noise_std``): every one of the ``m`` holders adds its own Gaussian noise share of
variance ``noise_std² / (m - 1)``, drawn where it runs and never sent anywhere. The
revealed sum then carries noise of variance ``noise_std² · m / (m - 1)``, and any single
party — the driver, the crypto provider, or one holder that subtracts the noise it added
itself — is left with noise of variance at least ``noise_std²``, which is what the DP
accounting assumes (McMahan et al. 2018 with the trust model of distributed DP).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import torch

from syft_mpc.fixed_point import DEFAULT_BASE, DEFAULT_PRECISION
from syft_mpc.remote.pointers import PointerTensor

if TYPE_CHECKING:
    from syft_mpc.remote.workers import BaseWorker

__all__ = ["plain_sum", "secure_sum"]


def _check_inputs(pointers: Sequence[Any]) -> None:
    if not pointers:
        raise ValueError("nothing to sum: no input tensors")
    for p in pointers:
        if not isinstance(p, PointerTensor):
            raise TypeError(f"expected pointers to remote tensors, got {type(p).__name__}")
    shape = pointers[0].shape
    for p in pointers[1:]:
        if p.shape != shape:
            raise ValueError(
                f"the tensor on worker {pointers[0].location.id} has shape {tuple(shape)} but the one on "
                f"worker {p.location.id} has shape {tuple(p.shape)}; only tensors of one shape can be summed"
            )


def plain_sum(pointers: Sequence[PointerTensor]) -> torch.Tensor:
    """Fetches every tensor (``.get()``: the driver sees each one) and returns their sum in float64."""
    _check_inputs(pointers)
    total: "torch.Tensor | None" = None
    for p in pointers:
        v = p.get()
        assert isinstance(v, torch.Tensor)
        total = v.double() if total is None else total + v.double()
    assert total is not None
    return total


def secure_sum(
    pointers: Sequence[PointerTensor],
    holders: Sequence["BaseWorker"],
    crypto_provider: "BaseWorker",
    *,
    noise_std: float = 0.0,
    base: int = DEFAULT_BASE,
    precision_fractional: int = DEFAULT_PRECISION,
) -> torch.Tensor:
    """The sum of the remote tensors ``pointers``, revealing nothing but that (noisy) sum.

    Args:
        pointers: at least two pointers to float tensors of one shape (one per worker;
            the sum of a single tensor would reveal it).
        holders: at least two distinct workers that hold the shares (the inputs' owners
            themselves, or separate aggregators).
        crypto_provider: the group's crypto provider (not a holder); a sum uses no
            correlated randomness, so any worker, or the driver, can play it.
        noise_std: Gaussian noise std that any single party is left with (see the module
            docstring); 0 for no noise.
        base, precision_fractional: the fixed-point encoding (range ±2^47 / scale,
            resolution 1 / scale; the sum of k inputs is within k/2 units of the exact sum).

    Returns a float32 tensor (the decoded sum). The shares are freed afterwards.
    """
    from syft_mpc.encrypted.api import share_remote
    from syft_mpc.remote.messages import AddNoiseShare, new_id
    from syft_mpc.encrypted.tensor import SharedTensor
    from syft_mpc.remote.workers import local_worker

    _check_inputs(pointers)
    if len(pointers) < 2:
        raise ValueError(
            "secure aggregation needs at least 2 inputs: the 'sum' of one tensor is that tensor, revealed"
        )
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
    for p in pointers:
        if not p.dtype.is_floating_point:
            raise TypeError(f"the tensor on worker {p.location.id} is {p.dtype}; secure_sum takes float tensors")
    with torch.no_grad():
        shared = [share_remote(p, holders, crypto_provider, base=base, precision=precision_fractional) for p in pointers]
        total: Any = shared[0] + shared[1]
        for s in shared[2:]:
            total = total + s
        del shared
        if noise_std > 0:
            group = total.group
            per_holder = noise_std / math.sqrt(group.n - 1)
            nid = new_id()
            done: list[Any] = []
            try:
                for w in group.workers:
                    local_worker._send(w, AddNoiseShare(total.share_id, nid, float(per_holder), base, precision_fractional))
                    done.append(w)
            except BaseException:
                for w in done:
                    local_worker._queue_delete(w, nid)
                raise
            total = SharedTensor.from_stored(
                group, nid, tuple(total.shape), scale=total.scale, base=total.base,
                precision=total.precision_fractional, dtype=total.dtype,
            )
        out: torch.Tensor = total.decrypt()
    del total
    local_worker.flush_gc()  # free the shares now rather than with the next message
    return out
