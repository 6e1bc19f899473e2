"""Activation functions on shared tensors and their backward passes: GELU (erf and tanh forms),
SiLU, ELU, LeakyReLU, Softplus, Hardswish, Hardsigmoid, Hardtanh/ReLU6, clamp, abs, erf.

Two methods cover them all; each is one comparison's rounds, plus the series' two rounds where
there is one, and at most one Beaver product. Measured errors are in
``docs/ENCRYPTED_TENSORS.md`` (and asserted by ``tests/test_encrypted_layers.py``).

* **Piecewise-linear functions** (hardtanh, relu6, clamp, leaky_relu, abs, hardsigmoid,
  hardswish and the backward passes of these and of ELU): ``v = Σ_j 1{x < t_j}·p_j`` plus
  a base, for public thresholds t_j and shared pieces p_j, by one ``below_times`` call (one
  opening and one set of comparison tables for every threshold, the products with the pieces
  riding in the comparison's rounds; 6 rounds, no Beaver round). E.g. ``hardtanh(x) = hi +
  1{x < hi}·(x − hi) + 1{x < lo}·(lo − x)``; ``leaky_relu_backward = g + 1{x < 0}·(α − 1)·g``.
  Torch's boundary conventions (``x ≤ lo`` has no gradient) use the threshold lo + 1 unit.
* **Smooth saturating functions** (erf, GELU, SiLU, Softplus and their derivatives): one fitted
  Fourier series on [−c, c] evaluated with the dealer's trigonometric masks (Boura, Chillotti,
  Gama, Jetchev, Peceny, Petric, "High-Precision Privacy-Preserving Real-Valued Function
  Evaluation", FC 2018), and exactly the function's asymptote beyond ±c, selected by the same
  comparison (``approx.saturating``; 8 rounds, no Beaver product). A function that grows
  linearly is written as ``x/2 + e(x)`` with ``e`` even and bounded on [−c, c]: GELU(x) − x/2 =
  x·(Φ(x) − 1/2), so GELU needs no product at all (CrypTen 0.4 computes GELU as x·Φ(x) with Φ
  from its tanh/sigmoid, one product more; its erf is a Taylor series of 8 terms, accurate only
  for |x| ≲ 2). The cutoffs put the tails' error below 1e−5 (erf: 1 − erf(3) = 2.2e−5 is
  taken by the fit instead: the fit's tails meet ±1 within 1e−5 at 3; see ``ERF``). The series'
  own error is the dealer's 12-bit trigonometric values: √2·2^−13 per unit of Σ|coefficients|.
* ``elu``: α·(exp(x) − 1) for x < 0 (``approx.exp``, the limit approximation, valid for x ≥ −256)
  selected by one comparison. ``softplus_backward`` is grad·sigmoid(βx).

``clamp``'s backward (torch's formula: ``where(gt(x, lo).logical_and_(lt(x, hi)), g, 0)``)
reaches ``where`` and ``logical_and`` with shared conditions: ``where`` is one Beaver select
(``b + c·(a − b)``) and ``logical_and`` one product (the in-place form is registered with the
other in-place ops in :mod:`~syft_mpc.encrypted.optim_ops`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from syft_mpc.encrypted.approx import SaturatingSeries, exp, saturating, sigmoid
from syft_mpc.encrypted.arithmetic import add, mul, sub
from syft_mpc.encrypted.comparisons import below_sum, sign
from syft_mpc.encrypted.tensor import SharedTensor, implements, is_shared, lift, public_value, run
from syft_mpc.errors import UnsupportedOperationError

__all__ = [
    "ERF", "GELU", "GELU_GRAD", "GELU_TANH", "GELU_TANH_GRAD", "SILU", "SILU_GRAD", "SOFTPLUS",
    "clamp", "erf", "gelu", "leaky_relu", "logical_and", "where",
]

aten = torch.ops.aten

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_TANH_K = math.sqrt(2.0 / math.pi)


def _phi(x: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF."""
    out: torch.Tensor = 0.5 * (1 + torch.special.erf(x * _SQRT1_2))
    return out


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(_TANH_K * (x + 0.044715 * x**3)))


def _gelu_tanh_grad(x: torch.Tensor) -> torch.Tensor:
    inner = _TANH_K * (x + 0.044715 * x**3)
    t = torch.tanh(inner)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _TANH_K * (1 + 3 * 0.044715 * x * x)


def _silu_grad(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


# Each: the function on [−c, c] as a series, its asymptotes beyond. Cutoffs and periods chosen for
# the smallest fit error plus √2·2^−13·Σ|coefficients| (the dealer's 12-bit trigonometric values).
ERF = SaturatingSeries("erf", torch.special.erf, cutoff=3.0, period=10.0, harmonics=8, parity="odd", below=(0.0, -1.0))
"""erf: 8 sines on [−3, 3] (fit 6.1e−6), ±1 beyond (1 − erf(3) = 2.2e−5)."""
GELU = SaturatingSeries("gelu", lambda x: x * _phi(x), cutoff=4.5, period=14.0, harmonics=8, parity="even", above=(1.0, 0.0), slope=0.5)
"""GELU = x/2 + x·(Φ(x) − 1/2) on [−4.5, 4.5] (even part: 8 cosines, fit 5.3e−6), 0 and x beyond (|GELU(−4.5)| = 1.5e−5)."""
GELU_GRAD = SaturatingSeries("gelu'", lambda x: _phi(x) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi), cutoff=4.5, period=14.0, harmonics=8, parity="any")
"""GELU' = Φ(x) + x·φ(x) on [−4.5, 4.5] (fit 3.8e−5), 0 and 1 beyond."""
GELU_TANH = SaturatingSeries("gelu_tanh", _gelu_tanh, cutoff=4.5, period=14.0, harmonics=8, parity="even", above=(1.0, 0.0), slope=0.5)
"""GELU, tanh form (``approximate="tanh"``): as GELU (fit 8.5e−6)."""
GELU_TANH_GRAD = SaturatingSeries("gelu_tanh'", _gelu_tanh_grad, cutoff=4.5, period=14.0, harmonics=8, parity="any")
"""Its derivative (fit 6.1e−5)."""
SILU = SaturatingSeries("silu", lambda x: x * torch.sigmoid(x), cutoff=12.0, period=28.0, harmonics=16, parity="even", above=(1.0, 0.0), slope=0.5)
"""SiLU = x/2 + x·(σ(x) − 1/2) on [−12, 12] (16 cosines, fit 1.7e−5; |SiLU(−12)| = 7.4e−5), 0 and x beyond."""
SILU_GRAD = SaturatingSeries("silu'", _silu_grad, cutoff=12.0, period=30.0, harmonics=16, parity="any")
"""SiLU' = σ(x)·(1 + x·(1 − σ(x))) on [−12, 12] (fit 6.4e−5), 0 and 1 beyond."""
SOFTPLUS = SaturatingSeries("softplus", torch.nn.functional.softplus, cutoff=8.5, period=24.0, harmonics=8, parity="even", above=(1.0, 0.0), slope=0.5)
"""Softplus = x/2 + log(2·cosh(x/2)) on [−8.5, 8.5] (fit 7.8e−5), 0 and x beyond (softplus(−8.5) = 2.0e−4)."""


def _fixed(x: Any) -> SharedTensor:
    if not isinstance(x, SharedTensor) or x.scale == 1:
        raise TypeError("activations need a fixed-point shared tensor (x.fix_prec().share(...))")
    return x


def _cut(x: SharedTensor, t: float, inclusive: bool = False) -> int:
    """Threshold t as a ring value at ``x``'s scale; ``inclusive``: 1{x < cut} = 1{x ≤ t}."""
    return round(t * x.scale) + (1 if inclusive else 0)


def clamp(x: SharedTensor, lo: "float | None", hi: "float | None") -> SharedTensor:
    """min(max(x, lo), hi) for public bounds: ``hi + 1{x < hi}·(x − hi) + 1{x < lo}·(lo − x)``."""
    if lo is None and hi is None:
        raise ValueError("clamp needs at least one bound")
    if lo is not None and hi is not None and lo > hi:
        return lift(torch.full(x.shape, float(hi), dtype=torch.float64), x)  # torch: every element becomes hi
    if hi is None:
        assert lo is not None
        return add(x, below_sum(x, [_cut(x, lo)], [sub(lo, x)]))
    if lo is None:
        return add(below_sum(x, [_cut(x, hi)], [sub(x, hi)]), hi)
    return add(below_sum(x, [_cut(x, hi), _cut(x, lo)], [sub(x, hi), sub(lo, x)]), hi)


def leaky_relu(x: SharedTensor, slope: float) -> SharedTensor:
    """x + 1{x < 0}·(α − 1)·x."""
    return add(x, below_sum(x, [0], [mul(x, slope - 1)]))


def erf(x: SharedTensor) -> SharedTensor:
    return saturating(x, ERF)


def gelu(x: SharedTensor, approximate: str = "none") -> SharedTensor:
    return saturating(x, GELU if approximate == "none" else GELU_TANH)


def where(cond: Any, a: Any, b: Any) -> Any:
    """cond ? a : b. A shared condition (a comparison's bit): ``b + cond·(a − b)``, one Beaver
    product; a public one selects locally."""
    if not is_shared(cond):
        c = public_value(cond).to(torch.bool)
        return add(mul(a, c.to(torch.int64)), mul(b, (~c).to(torch.int64)))
    d = sub(a, b)
    if not is_shared(d):
        d = lift(d, cond)
    return add(b, mul(cond, d) if cond.scale != 1 else run(d, "mul", cond, d, divisor=1))


def logical_and(a: Any, b: Any) -> Any:
    """a ∧ b of 0/1 values: their product."""
    return mul(a, b)


# ------------------------------------------------------------------ aten ops


def _float(v: Any) -> "float | None":
    return None if v is None else float(public_value(v))


@implements(aten.clamp.default)
def _clamp(x: Any, min: Any = None, max: Any = None) -> Any:  # noqa: A002 (torch's argument names)
    return clamp(_fixed(x), _float(min), _float(max))


@implements(aten.clamp_min.default)
def _clamp_min(x: Any, min: Any) -> Any:  # noqa: A002
    return clamp(_fixed(x), _float(min), None)


@implements(aten.clamp_max.default)
def _clamp_max(x: Any, max: Any) -> Any:  # noqa: A002
    return clamp(_fixed(x), None, _float(max))


@implements(aten.clamp.Tensor)
def _clamp_tensor(x: Any, min: Any = None, max: Any = None) -> Any:  # noqa: A002
    for v in (min, max):
        if v is not None and (is_shared(v) or public_value(v).numel() != 1):
            raise UnsupportedOperationError("clamp on shared tensors takes public scalar bounds")
    return clamp(_fixed(x), _float(min), _float(max))


@implements(aten.hardtanh.default)
def _hardtanh(x: Any, min_val: Any = -1.0, max_val: Any = 1.0) -> Any:
    return clamp(_fixed(x), float(min_val), float(max_val))


@implements(aten.hardtanh_backward.default)
def _hardtanh_backward(grad: Any, x: Any, min_val: Any, max_val: Any) -> Any:
    # torch: no gradient where x ≤ min or x ≥ max
    x = _fixed(x)
    return below_sum(x, [_cut(x, max_val), _cut(x, min_val, inclusive=True)], [grad, mul(grad, -1)])


@implements(aten.leaky_relu.default)
def _leaky_relu(x: Any, negative_slope: Any = 0.01) -> Any:
    return leaky_relu(_fixed(x), float(negative_slope))


@implements(aten.leaky_relu_backward.default)
def _leaky_relu_backward(grad: Any, x: Any, negative_slope: Any, self_is_result: bool) -> Any:
    # torch: the slope where x ≤ 0 (x is the result when self_is_result: same sign for α > 0)
    x = _fixed(x)
    return add(grad, below_sum(x, [_cut(x, 0, inclusive=True)], [mul(grad, float(negative_slope) - 1)]))


@implements(aten.abs.default)
def _abs(x: Any) -> Any:
    x = _fixed(x)
    return add(x, below_sum(x, [0], [mul(x, -2)]))


@implements(aten.sgn.default)
def _sgn(x: Any) -> Any:
    return sign(_fixed(x))


@implements(aten.hardsigmoid.default)
def _hardsigmoid(x: Any) -> Any:
    x = _fixed(x)
    mid = add(mul(x, 1.0 / 6), 0.5)
    return add(below_sum(x, [_cut(x, 3), _cut(x, -3)], [sub(mid, 1), mul(mid, -1)]), 1)


@implements(aten.hardsigmoid_backward.default)
def _hardsigmoid_backward(grad: Any, x: Any) -> Any:
    # torch: grad/6 where −3 < x < 3
    x = _fixed(x)
    g6 = mul(grad, 1.0 / 6)
    return below_sum(x, [_cut(x, 3), _cut(x, -3, inclusive=True)], [g6, mul(g6, -1)])


@implements(aten.hardswish.default)
def _hardswish(x: Any) -> Any:
    """x·(x + 3)/6 on [−3, 3] (one product), 0 below, x above."""
    x = _fixed(x)
    mid = mul(mul(x, add(x, 3)), 1.0 / 6)
    return add(x, below_sum(x, [_cut(x, 3), _cut(x, -3)], [sub(mid, x), mul(mid, -1)]))


@implements(aten.hardswish_backward.default)
def _hardswish_backward(grad: Any, x: Any) -> Any:
    # torch (CPU): 0 where x ≤ −3, grad·(x/3 + 1/2) where −3 < x < 3, grad where x ≥ 3
    x = _fixed(x)
    mid = mul(grad, add(mul(x, 1.0 / 3), 0.5))
    return add(grad, below_sum(x, [_cut(x, 3), _cut(x, -3, inclusive=True)], [sub(mid, grad), mul(mid, -1)]))


@implements(aten.erf.default)
def _erf(x: Any) -> Any:
    return erf(_fixed(x))


@implements(aten.gelu.default)
def _gelu(x: Any, approximate: str = "none") -> Any:
    return gelu(_fixed(x), approximate)


@implements(aten.gelu_backward.default)
def _gelu_backward(grad: Any, x: Any, approximate: str = "none") -> Any:
    return mul(grad, saturating(_fixed(x), GELU_GRAD if approximate == "none" else GELU_TANH_GRAD))


@implements(aten.silu.default)
def _silu(x: Any) -> Any:
    return saturating(_fixed(x), SILU)


@implements(aten.silu_backward.default)
def _silu_backward(grad: Any, x: Any) -> Any:
    return mul(grad, saturating(_fixed(x), SILU_GRAD))


@implements(aten.softplus.default)
def _softplus(x: Any, beta: Any = 1.0, threshold: Any = 20.0) -> Any:
    """softplus(βx)/β; torch's linear region beyond ``threshold`` starts at βx = 8.5 here (2e−4 apart)."""
    b = float(beta)
    y = saturating(mul(_fixed(x), b) if b != 1 else _fixed(x), SOFTPLUS)
    return y if b == 1 else mul(y, 1.0 / b)


@implements(aten.softplus_backward.default)
def _softplus_backward(grad: Any, x: Any, beta: Any, threshold: Any) -> Any:
    b = float(beta)
    return mul(grad, sigmoid(mul(_fixed(x), b) if b != 1 else _fixed(x)))


@implements(aten.elu.default)
def _elu(x: Any, alpha: Any = 1.0, scale: Any = 1.0, input_scale: Any = 1.0) -> Any:
    """scale·x for x > 0, α·scale·(exp(input_scale·x) − 1) otherwise: the exponential (valid for
    input_scale·x ≥ −256; its garbage beyond is multiplied by a zero bit) chosen by one comparison."""
    x = _fixed(x)
    a, s, si = float(alpha), float(scale), float(input_scale)
    pos = mul(x, s) if s != 1 else x
    neg = mul(sub(exp(mul(x, si) if si != 1 else x), 1), a * s)
    return add(pos, below_sum(x, [0], [sub(neg, pos)]))


@implements(aten.elu_backward.default)
def _elu_backward(grad: Any, alpha: Any, scale: Any, input_scale: Any, is_result: bool, self_or_result: Any) -> Any:
    # torch: grad·scale where x > 0; where x ≤ 0 grad·input_scale·(result + α·scale) (is_result) or
    # grad·input_scale·α·scale·exp(input_scale·x)
    x = _fixed(self_or_result)
    a, s, si = float(alpha), float(scale), float(input_scale)
    if is_result:
        d_neg = mul(add(x, a * s), si)
    else:
        d_neg = mul(exp(mul(x, si) if si != 1 else x), a * s * si)
    g_pos = mul(grad, s) if s != 1 else grad
    return add(g_pos, below_sum(x, [_cut(x, 0, inclusive=True)], [sub(mul(grad, d_neg), g_pos)]))


@implements(aten.where.self)
def _where(cond: Any, a: Any, b: Any) -> Any:
    return where(cond, a, b)


@implements(aten.logical_and.default)
def _logical_and(a: Any, b: Any) -> Any:
    return logical_and(a, b)
