"""DP-SGD on one worker (Abadi et al. 2016) through Opacus."""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Union

import torch
from torch import nn
from torch.nn import functional as F

from syft_mpc.dp.common import (
    check_delta,
    check_positive,
    check_positive_int,
    make_accountant,
    require_opacus,
)

_OPACUS_PARAM_ATTRS = ("grad_sample", "summed_grad", "_forward_counter", "_current_grad_sample", "_norm_sample")


def _check_inputs(model: Any, data: Any, targets: Any) -> int:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no trainable parameters")
    if not isinstance(data, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError("data and targets must be torch.Tensor")
    if data.dim() < 1 or targets.dim() != 1:
        raise ValueError(
            f"data must have shape (n, ...) and targets shape (n,), got {tuple(data.shape)} and {tuple(targets.shape)}"
        )
    n = data.shape[0]
    if n != targets.shape[0]:
        raise ValueError(f"len(data) = {n} but len(targets) = {targets.shape[0]}; they must match")
    if n < 1:
        raise ValueError("data is empty: DP-SGD needs at least one example")
    if not data.is_floating_point():
        raise ValueError(f"data must be a floating-point tensor, got {data.dtype}")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"targets must be integer class labels, got {targets.dtype}")
    if targets.min() < 0:
        raise ValueError("targets must be class indices >= 0")
    if not bool(torch.isfinite(data).all()):
        raise ValueError("data contains inf or nan")
    # Checked first: the trial forward below must not touch buffers (BatchNorm statistics).
    errors = _grad_sample_errors(model)
    if errors:
        raise ValueError(
            "Opacus cannot compute per-sample gradients for this model "
            f"({'; '.join(str(e) for e in errors)}); e.g. replace BatchNorm by GroupNorm "
            "(opacus.validators.ModuleValidator.fix does this)"
        )
    # One example through the model, before any hook is attached: a wrong output shape
    # or a label outside the classes fails here, not in the middle of training.
    with torch.no_grad():
        out = model(data[:1])
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must map a batch (b, ...) to class scores (b, num_classes); got {shape} for b = 1")
    if int(targets.max()) >= out.shape[1]:
        raise ValueError(f"targets go up to {int(targets.max())} but the model scores {out.shape[1]} classes")
    return int(n)


def _grad_sample_errors(model: nn.Module) -> list[Exception]:
    from opacus import GradSampleModule  # type: ignore[import-untyped]

    return list(GradSampleModule.validate(module=model, strict=False))


def dp_sgd_fit(
    model: nn.Module,
    data: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    noise_multiplier: float,
    max_grad_norm: float,
    delta: float,
    seed: Optional[int] = None,
    accountant: Union[str, Any] = "rdp",
) -> dict[str, Any]:
    """Trains ``model`` in place with DP-SGD and returns the privacy spent.

    Each of ``steps`` steps samples every example independently with probability
    q = ``batch_size / len(data)`` (Poisson sampling, which the accountant's
    amplification assumes), clips every per-sample gradient to L2 norm
    ``max_grad_norm``, adds N(0, (noise_multiplier·max_grad_norm)²) to their sum,
    divides by the expected batch size and takes an SGD step (Abadi et al. 2016). The
    loss is cross-entropy on integer ``targets``. Per-sample gradients, clipping and
    noise come from Opacus (``GradSampleModule`` + ``DPOptimizer``); the steps are
    accounted by an Opacus accountant (RDP, Mironov 2017, by default).

    ``accountant`` is ``"rdp"``/``"prv"`` for a fresh accountant (the returned ε then
    covers this call only), or an accountant object from
    :func:`~syft_mpc.dp.make_accountant` reused across calls, so that the returned ε
    is cumulative over all the calls that stepped it (a worker's federated rounds).

    Afterwards ``model`` is a plain ``nn.Module`` again: Opacus's hooks and
    per-parameter attributes are removed and ``.grad`` is cleared, also when
    training fails. Returns ``{"loss", "epsilon", "n_samples", "steps",
    "sample_rate", "noise_multiplier", "delta"}``; ``loss`` is the mean cross-entropy
    over the examples sampled during training (measured before each update) and is
    NOT differentially private itself: do not release it beyond the data owner.

    >>> import torch
    >>> model = torch.nn.Linear(4, 2)
    >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    >>> out = dp_sgd_fit(model, x, y, steps=5, lr=0.1, batch_size=16, noise_multiplier=1.0,
    ...                  max_grad_norm=1.0, delta=1e-5, seed=0)
    >>> sorted(out)[:3], out["n_samples"], out["epsilon"] > 0
    (['delta', 'epsilon', 'loss'], 64, True)
    """
    n_steps = check_positive_int(steps, "steps")
    learning_rate = check_positive(lr, "lr")
    bs = check_positive_int(batch_size, "batch_size")
    sigma = check_positive(noise_multiplier, "noise_multiplier")
    clip = check_positive(max_grad_norm, "max_grad_norm")
    dlt = check_delta(delta)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    require_opacus()
    n = _check_inputs(model, data, targets)
    if bs > n:
        raise ValueError(f"batch_size = {bs} exceeds len(data) = {n}; the sample rate batch_size/n must be <= 1")
    sample_rate = bs / n
    acct = make_accountant(accountant) if isinstance(accountant, str) else accountant
    if not (hasattr(acct, "step") and hasattr(acct, "get_epsilon")):
        raise TypeError("accountant must be 'rdp', 'prv' or an Opacus accountant (see syft_mpc.dp.make_accountant)")

    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer  # type: ignore[import-untyped]

    # Two streams (sampling, noise), both from `seed` when given.
    gen = torch.Generator(device=data.device)
    noise_gen = torch.Generator(device=data.device)
    if seed is None:
        gen.seed()
        noise_gen.seed()
    else:
        seeds = torch.randint(0, 2**62, (2,), generator=torch.Generator().manual_seed(seed))
        gen.manual_seed(int(seeds[0]))
        noise_gen.manual_seed(int(seeds[1]))

    was_training = model.training
    # Sum-reduced loss: grad_sample is then each example's own gradient, and DPOptimizer
    # ("mean") divides the noisy sum by the EXPECTED batch size, as DP-SGD with Poisson
    # sampling requires (the realised batch size is data-dependent).
    gsm = GradSampleModule(model, loss_reduction="sum")
    loss_sum, seen = 0.0, 0
    try:
        optimizer = DPOptimizer(
            torch.optim.SGD(model.parameters(), lr=learning_rate),
            noise_multiplier=sigma,
            max_grad_norm=clip,
            expected_batch_size=bs,
            loss_reduction="mean",
            generator=noise_gen,
        )
        gsm.train()
        for _ in range(n_steps):
            mask = torch.rand(n, generator=gen, device=data.device) < sample_rate
            xb, yb = data[mask], targets[mask].long()
            optimizer.zero_grad(set_to_none=True)
            # An empty batch still takes a step: its update is pure noise, and skipping
            # it would make the number of noisy releases data-dependent.
            loss = F.cross_entropy(gsm(xb), yb, reduction="sum")
            with warnings.catch_warnings():
                # The data do not require grad, so torch notes that Opacus's full backward
                # hooks see only output gradients: that is all they use.
                warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
                loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            acct.step(noise_multiplier=sigma, sample_rate=sample_rate)
            loss_sum += float(loss.detach())
            seen += int(yb.shape[0])
    finally:
        gsm.to_standard_module()
        for p in model.parameters():
            for attr in _OPACUS_PARAM_ATTRS:
                if hasattr(p, attr):
                    delattr(p, attr)
            p.grad = None
        model.train(was_training)

    return {
        "loss": loss_sum / seen if seen else math.nan,
        "epsilon": float(acct.get_epsilon(delta=dlt)),
        "n_samples": n,
        "steps": n_steps,
        "sample_rate": sample_rate,
        "noise_multiplier": sigma,
        "delta": dlt,
    }
