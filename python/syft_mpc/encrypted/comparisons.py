"""Comparisons on shared tensors: lt/gt/le/ge/eq, sign, relu, elementwise and tournament max/min.

Every comparison is the holders' ``ltz`` protocol (shares of 1{x < 0}, 6 rounds) on a
difference; eq runs both signs in one call. ``relu`` keeps its (unscaled) mask 1{x ≥ 0} for
``threshold_backward``. Elementwise ``maximum``/``minimum``: one comparison and one Beaver
select. Max/min/argmax/argmin along a dim (and max_pool2d, :mod:`~syft_mpc.encrypted.nn_ops`)
are tournaments of ⌈log2 n⌉ comparisons, each moving the winners' values and indices in the
comparison's own rounds (``ltz_times``: ``a + 1{a < b}·(b − a)``); of tied entries the first
wins, as in torch. Indices come back shared.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from syft_mpc.encrypted.arithmetic import add, mul, neg, sub
from syft_mpc.encrypted.tensor import (
    OP_TABLE,
    ShareCell,
    SharedTensor,
    aligned,
    implements,
    is_shared,
    lift,
    public_value,
    run,
    run_many,
)
from syft_mpc.errors import UnsupportedOperationError

__all__ = [
    "below_sum", "eq", "ge", "gt", "le", "lt", "ltz", "max_dim", "max_values", "maximum", "minimum", "relu", "sign",
    "threshold_backward", "tournament",
]

aten = torch.ops.aten


def ltz(x: SharedTensor, scale: "int | None" = None) -> SharedTensor:
    """Shares of 1{x < 0}, encoded at ``scale`` (default: ``x``'s; 1 for an unscaled bit)."""
    s = x.scale if scale is None else scale
    return run(x, "ltz", x, times=s, scale=s)


def relu(x: Any) -> Any:
    if not is_shared(x):
        return torch.relu(public_value(x))
    y, mask = run_many(x, "relu_mask", x, n_out=2)
    mask.scale = 1
    y.cell.pos_mask = mask.cell.shares
    return y


def threshold_backward(grad: Any, result: Any, threshold: Any) -> Any:
    if threshold != 0:
        raise UnsupportedOperationError("threshold_backward on shared tensors supports threshold 0 (ReLU) only")
    if not is_shared(result):
        return torch.ops.aten.threshold_backward(grad, public_value(result), threshold)
    m = result.cell.pos_mask
    if m is None:
        mask = ltz(neg(result), scale=1)  # 1{result > 0}
    else:
        mask = SharedTensor(ShareCell(m), 1, result.base, result.precision_fractional, result.dtype)
    if not is_shared(grad):
        grad = lift(grad, result)
    return run(result, "mul", grad, mask, divisor=1)


def _cmp_lt(a: Any, b: Any) -> SharedTensor:
    """Shares of 1{a < b} at the operands' scale."""
    d = sub(a, b)
    return ltz(d)


def _one_minus(bit: SharedTensor) -> SharedTensor:
    return sub(lift(1, bit), bit) if bit.scale != 1 else run(bit, "public_sub", torch.tensor(1, dtype=torch.int64), bit)


def lt(a: Any, b: Any) -> Any:
    return _cmp_lt(a, b)


def gt(a: Any, b: Any) -> Any:
    return _cmp_lt(b, a)


def ge(a: Any, b: Any) -> Any:
    return _one_minus(_cmp_lt(a, b))


def le(a: Any, b: Any) -> Any:
    return _one_minus(_cmp_lt(b, a))


def eq(a: Any, b: Any) -> Any:
    d = sub(a, b)
    both = ltz(run(d, "aten.stack", [d, neg(d)]))  # one comparison for a<b and a>b
    lt_, gt_ = both.unbind(0)
    return _one_minus(add(lt_, gt_))


def below_sum(x: SharedTensor, cuts: "list[int]", pieces: "list[Any]") -> SharedTensor:
    """Σ_j 1{x < cuts_j}·pieces_j for ring thresholds ``cuts`` (at ``x``'s scale) and pieces
    (shared or public, ``x``'s shape) in one comparison's rounds (``below_times``: one opening
    and one set of tables for every threshold, the products riding in its rounds)."""
    like = next((p for p in pieces if is_shared(p)), x)
    lifted = [p if is_shared(p) else lift(torch.as_tensor(public_value(p), dtype=torch.float64).expand(x.shape), like) for p in pieces]
    payload = run(lifted[0], "aten.stack", lifted, 0).unsqueeze(0)
    picked = run(x, "below_times", x, cuts, payload)
    return run(picked, "aten.sum_dim", picked, [0, 1], False)


def sign(x: Any) -> Any:
    """sign(x) = 1 − 1{x < 1 unit} − 1{x < 0} (0 at 0): one comparison with two thresholds."""
    return add(below_sum(x, [1, 0], [-1.0, -1.0]), 1)


def _select(bit: SharedTensor, x: SharedTensor, y: SharedTensor) -> SharedTensor:
    """bit ? x : y for an unscaled 0/1 sharing ``bit``."""
    return run(x, "select_mul", bit, x, y)


def tournament(both: SharedTensor, dim: int, largest: bool) -> SharedTensor:
    """Reduces ``both`` along ``dim`` to one entry: ⌈log2 n⌉ levels, each one comparison of the
    values (``both[..., 0]``) whose winners take their whole last dimension along (values with
    their indices or one-hot vectors): ``a + 1{key < 0}·(b − a)``, the products riding in the
    comparison's rounds (``ltz_times``) instead of a Beaver round of their own. Neighbours
    (2i, 2i + 1) are paired, so of tied entries the first wins, as in torch."""
    while both.shape[dim] > 1:
        m = both.shape[dim]
        end = m - m % 2
        a, b = run(both, "aten.slice", both, dim, 0, end, 2), run(both, "aten.slice", both, dim, 1, end, 2)
        va, vb = a.select(-1, 0), b.select(-1, 0)
        key = sub(va, vb) if largest else sub(vb, va)  # < 0: take b
        moved = run(key, "ltz_times", key, run(key, "aten.movedim", sub(b, a), -1, 0), scale=a.scale)
        top = add(a, run(key, "aten.movedim", moved, 0, -1))
        both = run(both, "aten.cat", [top, both.narrow(dim, m - 1, 1)], dim) if m % 2 else top
    return both


def max_dim(x: SharedTensor, dim: int, keepdim: bool = False, largest: bool = True) -> tuple[SharedTensor, SharedTensor]:
    """(values, indices) of the max (or min) along ``dim``: a tournament of ⌈log2 n⌉ comparisons,
    each taking the winners' values and indices in its own 6 rounds (``tournament``); ties
    go to the first index, as in torch.

    The indices come back shared (integer, like torch's argmax but secret)."""
    dim = dim % x.dim() if x.dim() else 0
    n = x.shape[dim]
    if n == 0:
        raise ValueError("max over an empty dimension")
    idx_shape = [1] * x.dim()
    idx_shape[dim] = n
    idx = torch.arange(n, dtype=torch.int64).reshape(idx_shape).expand(x.shape).contiguous()
    # Values and indices travel together along a new last dimension (each keeps its own
    # encoding: every step below is exact, sums and products with a bit).
    both = run(x, "aten.stack", [x, run(x, "from_public", idx, scale=1, dtype=torch.int64)], -1)
    vals, ids = tournament(both, dim, largest).unbind(-1)
    if not keepdim:
        vals, ids = vals.squeeze(dim), ids.squeeze(dim)
    return vals, SharedTensor(ids.cell, 1, x.base, x.precision_fractional, torch.int64)


def max_values(x: SharedTensor, dim: int, keepdim: bool = False) -> SharedTensor:
    """The max along ``dim`` without its index (softmax's shift): each tournament level takes
    max(a, b) = b + relu(a − b), one ReLU whose product rides in the comparison's last round,
    instead of a comparison then a selection of values and indices (one round and a Beaver
    product of twice the size less per level)."""
    dim = dim % x.dim() if x.dim() else 0
    if x.shape[dim] == 0:
        raise ValueError("max over an empty dimension")
    vals = x
    while vals.shape[dim] > 1:
        m = vals.shape[dim]
        a, b = vals.narrow(dim, 0, m // 2), vals.narrow(dim, m // 2, m // 2)
        top = add(b, run(x, "relu", sub(a, b)))
        vals = run(x, "aten.cat", [top, vals.narrow(dim, m - 1, 1)], dim) if m % 2 else top
    return vals if keepdim else vals.squeeze(dim)


@implements(aten.relu.default)
def _relu(x: Any) -> Any:
    return relu(x)


@implements(aten.threshold_backward.default)
def _threshold_backward(grad: Any, result: Any, threshold: Any) -> Any:
    return threshold_backward(grad, result, threshold)


# Comparisons take a tensor or a scalar on the right; both overloads map to one protocol.
for _packet, _fn in ((aten.lt, lt), (aten.gt, gt), (aten.le, le), (aten.ge, ge), (aten.eq, eq)):
    implements(_packet.Tensor, _packet.Scalar)(_fn)


@implements(aten.sign.default)
def _sign(x: Any) -> Any:
    return sign(x)


@implements(aten.max.dim)
def _max_dim(x: Any, dim: int, keepdim: bool = False) -> Any:
    return max_dim(x, dim, keepdim)


@implements(aten.min.dim)
def _min_dim(x: Any, dim: int, keepdim: bool = False) -> Any:
    return max_dim(x, dim, keepdim, largest=False)


@implements(aten.max.default)
def _max(x: Any) -> Any:
    return max_dim(x.reshape(-1), 0)[0]


@implements(aten.min.default)
def _min(x: Any) -> Any:
    return max_dim(x.reshape(-1), 0, largest=False)[0]


@implements(aten.argmax.default)
def _argmax(x: Any, dim: Any = None, keepdim: bool = False) -> Any:
    if dim is None:
        return max_dim(x.reshape(-1), 0)[1]
    return max_dim(x, dim, keepdim)[1]


@implements(aten.argmin.default)
def _argmin(x: Any, dim: Any = None, keepdim: bool = False) -> Any:
    if dim is None:
        return max_dim(x.reshape(-1), 0, largest=False)[1]
    return max_dim(x, dim, keepdim, largest=False)[1]


def maximum(a: Any, b: Any, largest: bool = True) -> Any:
    """Elementwise max (min): one comparison and one Beaver select."""
    if not is_shared(a) and not is_shared(b):
        return (torch.maximum if largest else torch.minimum)(public_value(a), public_value(b))
    like = a if is_shared(a) else b
    a, b = aligned(lift(a, like), lift(b, like))
    shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    a, b = a.expand(shape), b.expand(shape)
    bit = ltz(sub(a, b) if largest else sub(b, a), scale=1)  # 1: take b
    return _select(bit, b, a)


def minimum(a: Any, b: Any) -> Any:
    return maximum(a, b, largest=False)


OP_TABLE[aten.maximum.default] = maximum
OP_TABLE[aten.minimum.default] = minimum
