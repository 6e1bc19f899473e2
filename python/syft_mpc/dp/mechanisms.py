"""Laplace and Gaussian mechanisms for releasing statistics (Dwork & Roth 2014).

Both work on Python floats and on floating-point torch tensors (noise drawn
independently per element, in float64, then cast back to the tensor's dtype). The
noise comes from torch's generator (``generator=`` makes it reproducible); like most
floating-point samplers it is not hardened against the floating-point attacks of
Mironov (CCS 2012), so release rounded values when that threat matters.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, TypeVar, Union

import torch

from syft_mpc.dp.common import check_delta, check_epsilon, check_positive

Value = TypeVar("Value", float, torch.Tensor)
Calibration = Literal["analytic", "classic"]


def laplace_scale(sensitivity: float, epsilon: float) -> float:
    """Scale b = Δ₁/ε of Laplace noise that makes a query of L1 sensitivity Δ₁ ε-DP.

    Dwork & Roth 2014, Theorem 3.6.

    >>> laplace_scale(sensitivity=2.0, epsilon=0.5)
    4.0
    """
    return check_positive(sensitivity, "sensitivity") / check_epsilon(epsilon)


def _log_phi(x: float) -> float:
    """log Φ(x) for the standard normal CDF, accurate far into the lower tail."""
    if x > -20.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    # Asymptotic series of the Mills ratio (erfc underflows below about -38).
    x2 = x * x
    series = 1.0 - 1.0 / x2 + 3.0 / x2**2 - 15.0 / x2**3 + 105.0 / x2**4
    return -0.5 * x2 - math.log(-x) - 0.5 * math.log(2.0 * math.pi) + math.log(series)


def gaussian_delta(sigma_over_sensitivity: float, epsilon: float) -> float:
    """Exact δ(ε) of the Gaussian mechanism with noise σ = s·Δ₂ (Balle & Wang 2018, Thm. 8).

    δ(ε) = Φ(1/(2s) − εs) − e^ε Φ(−1/(2s) − εs): the privacy profile that the analytic
    calibration inverts.
    """
    s = sigma_over_sensitivity
    a = 1.0 / (2.0 * s) - epsilon * s
    b = -1.0 / (2.0 * s) - epsilon * s
    return math.exp(_log_phi(a)) - math.exp(epsilon + _log_phi(b))


def _analytic_sigma_ratio(epsilon: float, delta: float) -> float:
    # δ(s) falls monotonically from 1 (s → 0) to 0 (s → ∞): bracket, then bisect in
    # log space and return the upper end, for which δ(s) ≤ δ holds.
    lo, hi = 1.0, 1.0
    while gaussian_delta(hi, epsilon) > delta:
        hi *= 2.0
    while gaussian_delta(lo, epsilon) <= delta:
        lo /= 2.0
        if lo < 1e-300:  # pragma: no cover - δ(s) → 1 as s → 0 for every ε
            return hi
    for _ in range(200):
        if hi / lo - 1.0 < 1e-13:
            break
        mid = math.sqrt(lo * hi)
        if gaussian_delta(mid, epsilon) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def gaussian_sigma(
    sensitivity: float, epsilon: float, delta: float, *, calibration: Calibration = "analytic"
) -> float:
    """Standard deviation σ of Gaussian noise that makes a query of L2 sensitivity Δ₂ (ε, δ)-DP.

    ``calibration="analytic"`` (default) is the analytic Gaussian mechanism of Balle
    & Wang (ICML 2018): the smallest σ whose exact privacy profile satisfies
    δ(ε) ≤ δ, found by bisection. It is valid for every ε > 0 and never larger than
    the classic bound. ``calibration="classic"`` is σ = Δ₂·sqrt(2 ln(1.25/δ))/ε from
    Dwork & Roth 2014, Theorem A.1, which is only proven for ε < 1 and raises
    otherwise.

    >>> round(gaussian_sigma(1.0, 0.5, 1e-5, calibration="classic"), 4)
    9.6896
    >>> gaussian_sigma(1.0, 0.5, 1e-5) < gaussian_sigma(1.0, 0.5, 1e-5, calibration="classic")
    True
    """
    sens = check_positive(sensitivity, "sensitivity")
    eps = check_epsilon(epsilon)
    dlt = check_delta(delta)
    if calibration == "classic":
        if eps >= 1.0:
            raise ValueError(
                f"the classic Gaussian calibration is only valid for epsilon < 1 (got {eps}); "
                "use calibration='analytic'"
            )
        return sens * math.sqrt(2.0 * math.log(1.25 / dlt)) / eps
    if calibration == "analytic":
        return sens * _analytic_sigma_ratio(eps, dlt)
    raise ValueError(f"calibration must be 'analytic' or 'classic', got {calibration!r}")


class _Noise:
    """Draws float64 noise of a given shape: Laplace or Gaussian with a fixed scale."""

    def __init__(self, kind: Literal["laplace", "gaussian"], scale: float) -> None:
        self.kind = kind
        self.scale = scale

    def __call__(self, shape: torch.Size, device: torch.device, generator: Optional[torch.Generator]) -> torch.Tensor:
        if self.kind == "gaussian":
            return torch.randn(shape, dtype=torch.float64, device=device, generator=generator) * self.scale
        # Laplace(b) = b·(E₁ − E₂) with E₁, E₂ ~ Exp(1): no log(0) at the ends of [0, 1).
        e = torch.empty((2, *shape), dtype=torch.float64, device=device).exponential_(1.0, generator=generator)
        return (e[0] - e[1]) * self.scale


def _add_noise(
    value: Union[float, torch.Tensor], noise_of: _Noise, generator: Optional[torch.Generator]
) -> Union[float, torch.Tensor]:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"value must be a floating-point tensor, got dtype {value.dtype}")
        noise = noise_of(value.shape, value.device, generator)
        return (value.detach().to(torch.float64) + noise).to(value.dtype)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"value must be a float or a torch.Tensor, got {type(value).__name__}")
    device = generator.device if generator is not None else torch.device("cpu")
    return float(value) + float(noise_of(torch.Size(()), device, generator))


def laplace_mechanism(
    value: Value, sensitivity: float, epsilon: float, *, generator: Optional[torch.Generator] = None
) -> Value:
    """Releases ``value`` + Laplace(Δ₁/ε) noise per element: ε-DP for L1 sensitivity Δ₁.

    Dwork & Roth 2014, Theorem 3.6. ``sensitivity`` bounds the L1 norm of the change
    of the whole ``value`` (all elements together) when one record changes.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> noisy = laplace_mechanism(torch.tensor([10.0, 20.0]), sensitivity=1.0, epsilon=1.0, generator=g)
    >>> noisy.shape, noisy.dtype
    (torch.Size([2]), torch.float32)
    """
    scale = laplace_scale(sensitivity, epsilon)
    return _add_noise(value, _Noise("laplace", scale), generator)  # type: ignore[return-value]


def gaussian_mechanism(
    value: Value,
    sensitivity: float,
    epsilon: float,
    delta: float,
    *,
    generator: Optional[torch.Generator] = None,
    calibration: Calibration = "analytic",
) -> Value:
    """Releases ``value`` + N(0, σ²) noise per element: (ε, δ)-DP for L2 sensitivity Δ₂.

    σ comes from :func:`gaussian_sigma` (analytic calibration of Balle & Wang 2018 by
    default; ``calibration="classic"`` for Dwork & Roth 2014, Theorem A.1).

    >>> isinstance(gaussian_mechanism(3.0, sensitivity=1.0, epsilon=1.0, delta=1e-5), float)
    True
    """
    sigma = gaussian_sigma(sensitivity, epsilon, delta, calibration=calibration)
    return _add_noise(value, _Noise("gaussian", sigma), generator)  # type: ignore[return-value]
