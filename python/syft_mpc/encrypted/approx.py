"""Approximations of non-linear functions on shared fixed-point tensors (CrypTen's methods).

Every approximation here takes and returns :class:`~syft_mpc.encrypted.tensor.SharedTensor`
and is built from the secure primitives (Beaver products with truncation, comparisons); none
opens a value. Methods, ranges and measured errors are in ``docs/ENCRYPTED_TENSORS.md``.

* ``exp``: ``(1 + t + t²/2)^(2^7)`` with t = x/2^7, the squarings at 28 fractional bits (8 products).
* ``reciprocal``: Newton–Raphson ``y ← y(2 − xy)``, 10 iterations from
  ``y0 = 3·exp(0.5 − x) + 0.003``; signs handled by one comparison unless ``all_pos``.
* ``log``: Householder iterations (order 8, 3 iterations) from
  ``y0 = x/120 − 20·exp(−2x − 1) + 3``.
* ``sqrt``: Newton–Raphson on ``1/sqrt`` (3 iterations) then ``x · (1/sqrt x)``; for a
  high-precision tensor (an optimizer's second moment, 32 fractional bits) normalized first to
  [1/4, 1) by one batched comparison with the powers 4^j.
* High-precision tensors (scale above ``HIGH_PRECISION_SCALE``) are narrowed to 16 bits for
  Newton starting points; ``reciprocal`` keeps their full precision in each step's ``x·y²``.
* ``saturating``: a fitted Fourier series on [−c, c] (two rounds with the dealer's
  trigonometric masks), the tails (constants or lines) selected by one comparison with ±c; ``sigmoid``
  is one (8 sines on [−8.5, 8.5], tails 0 and 1), :mod:`~syft_mpc.encrypted.activations` has more.
* ``inv_sqrt_normalized`` (aten ``rsqrt``): x ∈ [2^−16, 2^16) normalized to [1/4, 1) by one
  batched comparison with the powers 4^j, then 3 Newton steps from a minimax line.
* Polynomials (``_poly``) compute only the powers up to half the degree (one giant step).
* ``tanh``: ``2·sigmoid(2x) − 1``.
* ``softmax``/``log_softmax``: subtract the (tournament) max along ``dim``, ``exp``; the
  sum s ∈ [1, n] is normalized to u ∈ [1/2, 1) by one comparison with the powers of two,
  then 1/s from 3 Newton steps on u and log s from a degree-6 polynomial in u.
* ``logsumexp``: the max plus the log of the normalized sum, as ``log_softmax``; ``amax``/``amin``:
  one tournament per reduced dimension; ``expm1``: ``exp(x) − 1``.
* ``div`` by a shared value: ``a · reciprocal(b)``; ``pow_scalar``: ``x ** 0.5`` is ``sqrt``,
  ``x ** -0.5`` is ``rsqrt``, a negative integer power is a power of ``reciprocal``. The aten ``div`` and ``pow`` ops are registered here since they
  may need an approximation (a public divisor and integer powers come from
  :mod:`~syft_mpc.encrypted.arithmetic`), as are the backward passes of softmax, log_softmax,
  sigmoid and tanh.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from syft_mpc.encrypted.arithmetic import add, div_public, mul, neg, pow_int, sub
from syft_mpc.encrypted.comparisons import ltz, max_values
from syft_mpc.encrypted.tensor import (
    HIGH_PRECISION_SCALE,
    ShareCell,
    SharedTensor,
    fine_encoding,
    implements,
    is_shared,
    lift,
    precision_of,
    public_value,
    rescale,
    run,
    work_scale,
)
from syft_mpc.errors import UnsupportedOperationError

__all__ = [
    "SIGMOID", "SaturatingSeries", "div", "exp", "fourier_fit", "inv_sqrt", "inv_sqrt_normalized", "log", "log_softmax",
    "normalized_sum_reciprocal", "pow_scalar", "reciprocal", "saturating", "sigmoid", "softmax", "sqrt", "tanh", "unit_log",
]

EXP_ITERATIONS = 8
RECIPROCAL_ITERATIONS = 10
LOG_ITERATIONS = 3
LOG_ORDER = 8
SQRT_ITERATIONS = 3
UNIT_RECIPROCAL_ITERATIONS = 3  # on [1/2, 1] from the minimax line: relative error 1/17, squared per iteration


def _sum(x: SharedTensor, dim: int, keepdim: bool = True) -> SharedTensor:
    return run(x, "aten.sum_dim", x, [dim], keepdim)


EXP_SQUARINGS = 7
EXP_WORK_BITS = 28
"""Fractional bits of exp's intermediate values (dealer truncation): 2^-28 rounding, amplified by
the squarings to ≈ 2^-21 relative, where 16 bits amplified 2^8-fold gave 4e-3."""
EXP_WORK_BITS_LOCAL = 20  # local truncation fails with probability ≈ |product|/2^64: keep products small
EXP_MAX = 12.0
"""exp's documented upper end: the last squarings run at fewer fractional bits so that e^x·2^k fits."""


def _square(y: SharedTensor, out_bits: int) -> SharedTensor:
    """y² at 2^out_bits: one Beaver product at the product scale, truncated (any scale: ``mul``'s
    limits are for tensors of unknown magnitude; exp's are bounded by its range)."""
    out = 1 << out_bits
    return run(y, "mul", y, y, divisor=max(1, y.scale * y.scale // out), local=y.group.truncation == "local", scale=out)


def _as_scale(x: SharedTensor, scale: int) -> SharedTensor:
    """The same shares read at another scale (x·2^-k for free: ``x`` at ``scale = x.scale·2^k``)."""
    return SharedTensor(x.cell, scale, x.base, precision_of(x.base, scale), x.dtype)


def exp(x: SharedTensor) -> SharedTensor:
    """exp(x) = p(x/2^7)^(2^7) with p(t) = 1 + t + t²/2 (second-order Taylor), for x ≤ 12.

    x/2^7 costs nothing (the same shares read at 2^7 times the scale); p takes one product; the
    7 squarings run at 2^-28 (2^-20 with local truncation) so that the rounding of each, doubled by
    every later squaring, stays far below the output's resolution; the last three squarings step
    the scale down so that e^x·2^k fits the ring up to x = 12. 8 products, as CrypTen's
    ``(1 + x/2^8)^(2^8)`` (whose x/2^8 costs one more truncation). Relative error ≈ x³/(6·2^14)
    from p (the t³/6 term, 2^7 times); p > 0 everywhere and p(t) < 1 for t ∈ (−2, 0), so the
    result decreases to exactly representable 0 and stays below 2^-16 down to x ≈ −244 (garbage
    below: masked softmax entries are zeroed by a public mask, ``attention.py``). Base 10 falls
    back to the limit approximation at the tensor's scale."""
    x = _narrowed(x)
    if x.base != 2:
        y = add(mul(x, 1.0 / (1 << EXP_ITERATIONS)), 1)
        for _ in range(EXP_ITERATIONS):
            y = mul(y, y)
        return y
    bits = EXP_WORK_BITS if x.group.truncation != "local" else EXP_WORK_BITS_LOCAL
    out_bits = precision_of(2, x.scale)
    t = _as_scale(x, x.scale << EXP_SQUARINGS)  # x / 2^7
    if t.scale < (1 << bits):
        t = rescale(t, 1 << bits)
    elif t.scale > (1 << bits):
        t = rescale(t, 1 << bits)
    half_sq = _as_scale(_square(t, bits - 1), 1 << bits)  # t²/2: t² at half the scale, read at the full one
    y = add(add(t, half_sq), 1)
    # scale before each squaring: y_j = e^(x/2^(7-j)) ≤ e^(12/2^(7-j)) needs y_j·2^(2·bits_j) < 2^62
    steps = [bits] * (EXP_SQUARINGS - 3) + [min(bits, 26), min(bits, 22), out_bits]
    for b in steps:
        y = _square(y, b)
    return y


def _sign_bits(x: SharedTensor) -> tuple[SharedTensor, SharedTensor]:
    """(1{x<0}, sign = 1 − 2·1{x<0}), both unscaled integers: a product with them is exact (no truncation)."""
    lt = ltz(x, scale=1)
    return lt, sub(1, mul(lt, 2))


def _narrowed(x: SharedTensor) -> SharedTensor:
    """A high-precision tensor (an optimizer accumulator) at the scale its approximations run at."""
    return rescale(x, work_scale(x)) if x.scale > HIGH_PRECISION_SCALE else x


def reciprocal(
    x: SharedTensor, all_pos: bool = False, initial: "Any | None" = None, iterations: int = RECIPROCAL_ITERATIONS
) -> SharedTensor:
    """1/x by Newton–Raphson. Documented range: 0.01 ≤ |x| ≤ 200 (relative error < 1e-3 for |x| in [0.1, 100]).

    A high-precision ``x`` keeps its precision in ``x·y²`` (truncated to ``y``'s scale): the
    result, at the work scale, is then as precise as if ``x`` were exact, e.g. 1/(√v̂ + ε) in Adam."""
    if not all_pos:
        _, sgn = _sign_bits(x)
        return mul(reciprocal(mul(x, sgn), all_pos=True), sgn)
    xn = _narrowed(x)
    if initial is None:
        y = add(mul(exp(sub(0.5, xn)), 3), 0.003)  # CrypTen's start
    else:
        y = lift(initial, xn) if not isinstance(initial, SharedTensor) else initial
    for _ in range(iterations):
        y = sub(mul(y, 2), mul(x, mul(y, y), out_scale=y.scale))
    return y


def log(x: SharedTensor) -> SharedTensor:
    """Natural log for x > 0 (documented range [1e-2, 100]) by Householder iterations
    ``y ← y − Σ_{i=1..8} h^i/i`` with ``h = 1 − x·e^−y``, from CrypTen's start
    ``x/120 − 20·exp(−2x − 1) + 3``."""
    y = add(sub(mul(x, 1.0 / 120), mul(exp(sub(mul(x, -2), 1)), 20)), 3.0)
    for _ in range(LOG_ITERATIONS):
        h = sub(1, mul(x, exp(neg(y))))
        y = sub(y, _log_series(h))
    return y


def _powers(h: SharedTensor, k: int) -> SharedTensor:
    """h^1 .. h^k stacked along a new first dim, by doubling: h^(m+j) = h^m·h^j for j ≤ m,
    one Beaver product of a stacked tensor per doubling (⌈log2 k⌉ rounds, not k − 1)."""
    powers = h.unsqueeze(0)
    while powers.shape[0] < k:
        m = powers.shape[0]
        top = powers.narrow(0, m - 1, 1)  # h^m
        powers = run(h, "aten.cat", [powers, mul(top, powers.narrow(0, 0, min(m, k - m)))], 0)
    return powers


def _poly(h: SharedTensor, coef: "list[float]") -> SharedTensor:
    """Σ_{i=0..k} coef[i]·h^i with one giant step (Paterson & Stockmeyer, SIAM J. Comput.
    1973): for m = ⌈k/2⌉, ``Σ_{i≤m} c_i·h^i + h^m·Σ_{j≤k−m} c_{m+j}·h^j``. Only h..h^m are
    computed (⌈log2 m⌉ product rounds) plus one product, about half the products of every
    power up to h^k, in the same number of rounds. Both inner sums take the public
    coefficients at one fine encoding and are truncated together, once."""
    const, coef = coef[0], list(coef[1:])
    k = len(coef)
    m = (k + 1) // 2
    powers = _powers(h, m)
    rows = [coef[:m], coef[m:] + [0.0] * (2 * m - k)]  # (2, m): the low and high halves
    c = torch.tensor(rows, dtype=torch.float64).reshape((2, m) + (1,) * h.dim())
    ce, divisor = fine_encoding(c, h)
    sums = _sum(run(h, "mul_public", powers.unsqueeze(0), ce), 1, keepdim=False)  # (2, ...)
    lo, hi = run(h, "truncate", sums, divisor=divisor, local=h.group.truncation == "local").unbind(0)
    return add(add(lo, mul(powers.select(0, m - 1), hi)) if k > m else lo, const)


def _log_series(h: SharedTensor) -> SharedTensor:
    """Σ_{i=1..LOG_ORDER} h^i / i."""
    return _poly(h, [0.0] + [1.0 / i for i in range(1, LOG_ORDER + 1)])


def _at_least(x: SharedTensor, thresholds: "list[float]") -> SharedTensor:
    """Unscaled bits 1{x ≥ t_j}, shape (J, *x.shape): one batched comparison."""
    col = (len(thresholds),) + (1,) * x.dim()
    return sub(1, ltz(sub(x.unsqueeze(0), torch.tensor(thresholds, dtype=torch.float64).reshape(col)), scale=1))


def _bits_dot(bits: SharedTensor, rows: "list[list[float]]", like: SharedTensor) -> "list[SharedTensor]":
    """Σ_j bits_j·row_j for each row of public coefficients, at ``like``'s work scale. Exact
    (integer bits times encoded constants, no truncation)."""
    work = work_scale(like)
    col = (len(rows), len(rows[0])) + (1,) * (bits.dim() - 1)
    coef = torch.round(torch.tensor(rows, dtype=torch.float64).reshape(col) * work).to(torch.int64)
    dots = run(bits, "aten.sum_dim", run(bits, "mul_public", bits.unsqueeze(0), coef), [1], False)
    return [SharedTensor(t.cell, work, like.base, precision_of(like.base, work), like.dtype) for t in dots.unbind(0)]


def _binary_normalized(x: SharedTensor, hi: float) -> "tuple[SharedTensor, SharedTensor, SharedTensor]":
    """For x ∈ [1, hi] (a sum of softmax exps): ``(u, a, k)`` with, for x ∈ [2^i, 2^(i+1)),
    a = 2^−(i+1), u = x·a ∈ [1/2, 1) and k = i + 1, from one batched comparison with the
    powers 2^j, j = 1..⌈log2 hi⌉ − 1 (a and k are linear in its bits)."""
    js = range(1, math.ceil(math.log2(hi))) if hi > 2 else range(0)
    if not js:
        return mul(x, 0.5), lift(0.5, x), lift(1.0, x)
    bits = _at_least(x, [2.0**j for j in js])
    a, k = _bits_dot(bits, [[-(2.0 ** -(j + 1)) for j in js], [1.0 for _ in js]], x)
    a, k = add(a, 0.5), add(k, 1)
    return mul(x, a), a, k


def _unit_reciprocal(u: SharedTensor) -> SharedTensor:
    """1/u for u ∈ [1/2, 1]: Newton–Raphson from the minimax line 48/17 − 32/17·u (relative
    error ≤ 1/17, squared by each of the 3 iterations)."""
    return reciprocal(u, all_pos=True, initial=sub(48.0 / 17, mul(u, 32.0 / 17)), iterations=UNIT_RECIPROCAL_ITERATIONS)


LOG_UNIT_CENTER = 0.75
LOG_UNIT_POLY = (-0.2876819463, 1.3333584109, -0.8889606615, 0.7865764501, -0.7839341102, 0.9632840004, -1.1013159117)
"""log(0.75 + t) on t ∈ [−1/4, 1/4] (u ∈ [1/2, 1]): Chebyshev fit of degree 6, max error 3.5e−6."""


def normalized_sum_reciprocal(s: SharedTensor, hi: float) -> "tuple[SharedTensor, SharedTensor, SharedTensor]":
    """For a sum s ∈ [1, hi] (of softmax exponentials): (1/s, u, k) with s = u·2^k, u ∈ [1/2, 1)
    (``_binary_normalized``), 1/s = 2^−k·(1/u) by 3 Newton steps. s = 0 (a row masked
    entirely) gives a finite value."""
    u, a, k = _binary_normalized(s, hi)
    return mul(_unit_reciprocal(u), a), u, k


def unit_log(u: SharedTensor) -> SharedTensor:
    """log(u) for u ∈ [1/2, 1] (see ``_unit_log``)."""
    return _unit_log(u)


def _unit_log(u: SharedTensor) -> SharedTensor:
    """log(u) for u ∈ [1/2, 1]: a degree-6 polynomial in t = u − 3/4 (3 product rounds)."""
    return _poly(sub(u, LOG_UNIT_CENTER), list(LOG_UNIT_POLY))


def inv_sqrt(x: SharedTensor, initial: "SharedTensor | None" = None) -> SharedTensor:
    """1/sqrt(x) for x > 0 by Newton–Raphson (3 iterations) from CrypTen's initial guess (or ``initial``)."""
    if x.scale > HIGH_PRECISION_SCALE:
        return reciprocal(sqrt(x), all_pos=True)
    y = initial if initial is not None else add(sub(mul(exp(neg(add(mul(x, 0.5), 0.2))), 2.2), mul(x, 1.0 / 1024)), 0.2)
    for _ in range(SQRT_ITERATIONS):
        y = mul(mul(y, sub(3, mul(x, mul(y, y)))), 0.5)
    return y


SQRT_THRESHOLDS = range(-16, 8)
"""Exponents j of the thresholds 4^j that normalize a high-precision sqrt argument: [2^-32, 2^16)."""
_INV_SQRT_LINE = (2.1328, -1.2187)  # minimax line for 1/sqrt on [1/4, 1]: relative error 8.6e-2


def sqrt(x: SharedTensor) -> SharedTensor:
    """sqrt(x) = x · inv_sqrt(x), for x ≥ 0 (documented range [0.01, 100]).

    A high-precision ``x`` (a second-moment accumulator, 32 fractional bits: values down to 2^-32
    that Newton's method from a fixed start cannot reach) is normalized first: one batched
    comparison with the thresholds 4^j gives shared bits b_j = 1{x ≥ 4^j}, hence (linearly, with
    public coefficients) A = 4^-(i+1) and B = 2^(i+1) for x ∈ [4^i, 4^(i+1)); then
    sqrt(x) = B · sqrt(x·A) with x·A ∈ [1/4, 1), where 3 Newton steps from a minimax line reach
    the 16-bit resolution. The result keeps 32 fractional bits (relative error ≈ 2^-15);
    x < 2^-32 (including small negative rounding) gives 0."""
    if x.scale <= HIGH_PRECISION_SCALE:
        return mul(x, inv_sqrt(x))
    work = work_scale(x)
    js = list(SQRT_THRESHOLDS)
    ge = _at_least(x, [4.0**j for j in js])  # (J, *x.shape), unscaled bits
    lo = js[0]
    a = [4.0 ** -(lo + 1)] + [4.0 ** -(j + 1) - 4.0**-j for j in js[1:]]  # telescoping: Σ_{j ≤ i} = 4^-(i+1)
    b = [2.0 ** (lo + 1)] + [2.0**j for j in js[1:]]  # Σ_{j ≤ i} = 2^(i+1)
    big_a, big_b = _bits_dot(ge, [a, b], x)
    y = mul(x, big_a, out_scale=work)  # ∈ [1/4, 1) at the work scale
    line = add(mul(y, _INV_SQRT_LINE[1]), _INV_SQRT_LINE[0])
    return mul(mul(y, inv_sqrt(y, initial=line)), big_b, out_scale=work * work)


INV_SQRT_THRESHOLDS = range(-8, 8)
"""Exponents j of the thresholds 4^j that normalize ``inv_sqrt_normalized``'s argument: [2^-16, 2^16)."""


def inv_sqrt_normalized(x: SharedTensor) -> SharedTensor:
    """1/sqrt(x) for x ∈ [2^−16, 2^16) (a variance plus eps in a normalization layer), at any
    magnitude in that range. One batched comparison with the thresholds 4^j gives shared bits
    b_j = 1{x ≥ 4^j}, hence (linear in the bits, public coefficients, all powers of two and so
    exact at 16 bits) A = 4^−(i+1) and C = 2^−(i+1) for x ∈ [4^i, 4^(i+1)); then
    1/sqrt(x) = C · 1/sqrt(x·A) with x·A ∈ [1/4, 1), where 3 Newton steps from a minimax line
    (relative error 8.6e−2, squared by each step) reach the 16-bit resolution.
    Cost: one comparison (6 rounds), 3 Newton steps (3 products each), 2 products.
    x < 2^−16 (no threshold passed) gives 0."""
    x = _narrowed(x)
    js = list(INV_SQRT_THRESHOLDS)
    ge = _at_least(x, [4.0**j for j in js])
    lo = js[0]
    a = [4.0 ** -(lo + 1)] + [4.0 ** -(j + 1) - 4.0**-j for j in js[1:]]  # Σ_{j ≤ i} = 4^-(i+1)
    c = [2.0 ** -(lo + 1)] + [2.0 ** -(j + 1) - 2.0**-j for j in js[1:]]  # Σ_{j ≤ i} = 2^-(i+1)
    big_a, big_c = _bits_dot(ge, [a, c], x)
    y = mul(x, big_a)  # ∈ [1/4, 1)
    line = add(mul(y, _INV_SQRT_LINE[1]), _INV_SQRT_LINE[0])
    return mul(inv_sqrt(y, initial=line), big_c)


@dataclass(frozen=True, eq=False)
class SaturatingSeries:
    """A function that is a Fourier series on [−cutoff, cutoff] and a straight line on each side
    (``below``/``above``: (slope, intercept), e.g. 0 and 1 for the sigmoid, 0 and x for GELU).

    ``parity`` of ``fn(x) − slope·x``: "odd" (odd about ``fn(0)``: sines only, the constant is
    fn(0)), "even" (a constant and cosines) or "any" (both). The coefficients are fitted (minimax: least squares
    reweighted by the error, Lawson's iteration) on 2001 points for the exact period the ring
    gives at each scale (``fourier_fit``)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    cutoff: float
    period: float
    harmonics: int
    parity: str = "odd"
    below: "tuple[float, float]" = (0.0, 0.0)
    above: "tuple[float, float]" = (0.0, 1.0)
    slope: float = 0.0
    """A linear part s·x left out of the series (computed locally): GELU = x/2 + an even function."""


@functools.lru_cache(maxsize=None)
def fourier_fit(series: SaturatingSeries, scale: int) -> "tuple[int, float, list[float], list[float]]":
    """``(multiplier, constant, a, b)``: ``fn(x) ≈ constant + Σ_k a_k·cos(2πk·x/P) + b_k·sin(2πk·x/P)``
    on [−cutoff, cutoff], where the angle is the fixed-point encoding times ``multiplier``, mod
    2^32, so the period P is 2^32/(scale·multiplier) ≈ ``series.period``."""
    multiplier = max(1, round(2**32 / (scale * series.period)))
    period = 2**32 / (scale * multiplier)
    u = torch.linspace(-series.cutoff, series.cutoff, 2001, dtype=torch.float64)
    k = torch.arange(1, series.harmonics + 1, dtype=torch.float64)
    angle = 2 * math.pi * u[:, None] * k / period
    target = series.fn(u).to(torch.float64) - series.slope * u
    const = float(series.fn(torch.zeros(1, dtype=torch.float64))[0]) if series.parity == "odd" else 0.0
    cols = [] if series.parity == "odd" else [torch.ones_like(u)[:, None]]
    if series.parity != "odd":
        cols.append(torch.cos(angle))
    if series.parity != "even":
        cols.append(torch.sin(angle))
    basis = torch.cat(cols, 1)
    w = torch.ones_like(u)
    for _ in range(100):
        sol = torch.linalg.lstsq(basis * w[:, None], (target - const) * w).solution
        err = (basis @ sol - (target - const)).abs()
        w = w * (err / err.max() + 1e-3).sqrt()
        w = w / w.max()
    coef = sol.tolist()
    if series.parity != "odd":
        const, coef = coef[0], coef[1:]
    zeros = [0.0] * series.harmonics
    a = coef[: series.harmonics] if series.parity != "odd" else zeros
    b = coef[-series.harmonics :] if series.parity != "even" else zeros
    return multiplier, const, a, b


def _tail(x: SharedTensor, line: "tuple[float, float]") -> Any:
    slope, intercept = line
    if slope == 0:
        return intercept
    return add(x if slope == 1 else mul(x, slope), intercept)


def saturating(x: SharedTensor, series: SaturatingSeries) -> SharedTensor:
    """``series`` at ``x``: the Fourier series in two rounds (``fourier``: the dealer's
    trigonometric masks, Boura et al. FC 2018, then a division into the tensor's scale), the
    tails selected by one comparison with the thresholds ±cutoff (one opening and one set of
    tables for both: ``below_times``), the products riding in its rounds:
    ``above + 1{x < c}·(f − above) + 1{x < −c}·(below − f)``. 8 rounds, no Beaver product.

    The protocol needs Σ|a_k| + |b_k| ≤ 1: the coefficients are divided by the next power of two
    s above their sum and the series is divided into the tensor's scale times s (its error,
    √2·2^−13 per unit of the sum, is then the unscaled sum's)."""
    x = _narrowed(x)
    multiplier, const, a, b = fourier_fit(series, x.scale)
    s = 2.0 ** max(0, math.ceil(math.log2(max(sum(map(abs, a)) + sum(map(abs, b)), 1e-9))))
    # The series runs at 2^29 fractional bits; the op divides it down to x's scale (a base-10
    # scale is matched to within a relative 2^−13 of one output unit).
    divisor = max(1, round((1 << 29) / (x.scale * s)))
    f = add(run(x, "fourier", x, multiplier, [v / s for v in a], [v / s for v in b], divisor), const)
    if series.slope:
        f = add(f, mul(x, series.slope))
    cut = round(series.cutoff * x.scale)
    lo, hi = _tail(x, series.below), _tail(x, series.above)
    payload = run(f, "aten.stack", [sub(f, hi), sub(lo, f)], 0).unsqueeze(0)
    picked = run(x, "below_times", x, [cut, -cut], payload)
    out: SharedTensor = add(run(picked, "aten.sum_dim", picked, [0, 1], False), hi)
    return out


SIGMOID = SaturatingSeries("sigmoid", torch.sigmoid, cutoff=8.5, period=24.0, harmonics=8)
"""Beyond ±8.5 the sigmoid is 1 or 0 exactly (1 − sigmoid(8.5) = 2.0e−4). The period leaves room on
either side for the series to turn back smoothly, which is what makes 8 harmonics enough (fit 2.7e−4)."""


def sigmoid(x: SharedTensor) -> SharedTensor:
    """A Fourier series of 8 sines on [−8.5, 8.5], exactly 1 above and 0 below (``saturating``):
    ``σ = 1 − 1{x < 8.5}·(1 − f) − 1{x < −8.5}·f``. 8 rounds; no Beaver product."""
    return saturating(x, SIGMOID)


def tanh(x: SharedTensor) -> SharedTensor:
    """2·sigmoid(2x) − 1."""
    return sub(mul(sigmoid(mul(x, 2)), 2), 1)


def _shifted(x: SharedTensor, dim: int) -> SharedTensor:
    return sub(x, max_values(x, dim, keepdim=True))  # <= 0


def softmax(x: SharedTensor, dim: int) -> SharedTensor:
    """exp(x − max) / Σ exp(x − max) along ``dim``. The sum s lies in [1, n]: normalized to
    u ∈ [1/2, 1) by one comparison with the powers of two (see ``_binary_normalized``),
    1/s = a·(1/u) takes 3 Newton steps instead of CrypTen's exp start and 10 steps."""
    e = exp(_shifted(x, dim))
    u, a, _ = _binary_normalized(_sum(e, dim), x.shape[dim])
    return mul(e, mul(_unit_reciprocal(u), a))


def log_softmax(x: SharedTensor, dim: int) -> tuple[SharedTensor, SharedTensor]:
    """(log_softmax, softmax) along ``dim``: z − log Σ exp(z) with z = x − max. The softmax is kept for the backward pass.

    One normalization of the sum s ∈ [1, n] (s = u·2^k, u ∈ [1/2, 1)) serves both
    log s = log u + k·ln 2 (a degree-6 polynomial in u) and 1/s = 2^−k·(1/u)."""
    z = _shifted(x, dim)
    e = exp(z)
    u, a, k = _binary_normalized(_sum(e, dim), x.shape[dim])
    log_s = add(_unit_log(u), mul(k, math.log(2)))
    return sub(z, log_s), mul(e, mul(_unit_reciprocal(u), a))


def div(a: Any, b: Any, rounding_mode: "str | None" = None) -> Any:
    """a / b: a product with ``reciprocal(b)`` for a shared ``b``, with the public 1/b otherwise."""
    if rounding_mode is not None:
        raise UnsupportedOperationError("division with a rounding mode is not supported on shared tensors")
    if is_shared(b):
        return mul(a, reciprocal(b))
    return div_public(a, b)


def pow_scalar(x: Any, e: Any) -> Any:
    """x ** e: ``sqrt`` for e = 0.5, integer powers e ≥ 0 by square and multiply (⌈log2 e⌉
    squarings), negative integers as ``reciprocal(x) ** −e``, −0.5 as ``rsqrt``."""
    if is_shared(x) and e == 0.5:
        return sqrt(x)
    if is_shared(x) and e == -0.5:
        return inv_sqrt_normalized(x)
    if is_shared(x) and isinstance(e, (int, float)) and e < 0 and float(e).is_integer():
        r = reciprocal(x)
        return r if e == -1 else pow_int(r, -int(e))
    return pow_int(x, e)


def _check(x: Any) -> SharedTensor:
    if not isinstance(x, SharedTensor) or x.scale == 1:
        raise TypeError("approximations need a fixed-point shared tensor (x.fix_prec().share(...))")
    return x


# ------------------------------------------------------------------ aten ops (autograd reaches these)
aten = torch.ops.aten


def _unary(fn: Any) -> Any:
    def impl(x: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(_check(x), *args, **kwargs)

    return impl


implements(aten.exp.default)(_unary(exp))
implements(aten.expm1.default)(_unary(lambda x: sub(exp(x), 1)))


def _extreme(x: Any, dim: Any, keepdim: bool, largest: bool) -> Any:
    """Largest (smallest) value over ``dim`` (all if empty): one tournament per dimension."""
    dims = sorted({d % x.dim() for d in (dim if dim else range(x.dim()))}, reverse=True)
    y = x if largest else neg(x)
    for d in dims:
        y = max_values(y, d, keepdim=keepdim)
    return y if largest else neg(y)


@implements(aten.logsumexp.default)
def _logsumexp(x: Any, dim: Any, keepdim: bool = False) -> Any:
    """m + log Σ exp(x − m), m the maximum: the sum s ∈ [1, n] normalized as in ``log_softmax``."""
    x = _check(x)
    dims = sorted({d % x.dim() for d in (dim if dim else range(x.dim()))})
    m = _extreme(x, dims, True, True)
    s = run(x, "aten.sum_dim", exp(sub(x, m)), dims, True)
    u, _, k = _binary_normalized(s, math.prod(x.shape[d] for d in dims))
    out = add(add(_unit_log(u), mul(k, math.log(2))), m)
    return out if keepdim else run(out, "aten.squeeze_dims", out, dims)


@implements(aten.amax.default)
def _amax(x: Any, dim: Any = (), keepdim: bool = False) -> Any:
    return _extreme(x, dim, keepdim, True)


@implements(aten.amin.default)
def _amin(x: Any, dim: Any = (), keepdim: bool = False) -> Any:
    return _extreme(x, dim, keepdim, False)
implements(aten.reciprocal.default)(_unary(reciprocal))
implements(aten.log.default)(_unary(log))
implements(aten.sqrt.default)(_unary(sqrt))
implements(aten.rsqrt.default)(_unary(inv_sqrt_normalized))
implements(aten.sigmoid.default)(_unary(sigmoid))
implements(aten.tanh.default)(_unary(tanh))


@implements(aten.div.Tensor, aten.div.Scalar)
def _div(a: Any, b: Any) -> Any:
    return div(a, b)


@implements(aten.div.Tensor_mode)
def _div_mode(a: Any, b: Any, rounding_mode: Any = None) -> Any:
    return div(a, b, rounding_mode)


@implements(aten.pow.Tensor_Scalar)
def _pow(x: Any, e: Any) -> Any:
    return pow_scalar(x, e)


@implements(aten._softmax.default)
def _softmax(x: Any, dim: int, half_to_float: bool = False) -> Any:
    return softmax(_check(x), dim)


@implements(aten._log_softmax.default)
def _log_softmax(x: Any, dim: int, half_to_float: bool = False) -> Any:
    ls, sm = log_softmax(_check(x), dim)
    ls.cell.aux = sm.cell.shares  # softmax, for _log_softmax_backward_data
    return ls


def _aux_or(out: SharedTensor, compute: Callable[[], SharedTensor]) -> SharedTensor:
    aux = out.cell.aux
    if aux is None:
        return compute()
    return SharedTensor(ShareCell(aux), out.scale, out.base, out.precision_fractional, out.dtype)


@implements(aten._log_softmax_backward_data.default)
def _log_softmax_backward(grad: Any, output: Any, dim: int, input_dtype: Any = None) -> Any:
    # d/dx log_softmax: grad - softmax * sum(grad)
    sm = _aux_or(output, lambda: exp(output)) if is_shared(output) else torch.exp(public_value(output))
    gs = _sum(grad, dim) if is_shared(grad) else public_value(grad).sum(dim, keepdim=True)
    return sub(grad, mul(sm, gs))


@implements(aten._softmax_backward_data.default)
def _softmax_backward(grad: Any, output: Any, dim: int, input_dtype: Any = None) -> Any:
    gy = mul(grad, output)
    s = _sum(gy, dim) if is_shared(gy) else gy.sum(dim, keepdim=True)
    return sub(gy, mul(output, s))


@implements(aten.sigmoid_backward.default)
def _sigmoid_backward(grad: Any, out: Any) -> Any:
    return mul(grad, mul(out, sub(1, out)))


@implements(aten.tanh_backward.default)
def _tanh_backward(grad: Any, out: Any) -> Any:
    return mul(grad, sub(1, mul(out, out)))
