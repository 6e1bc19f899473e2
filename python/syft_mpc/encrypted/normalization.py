"""Normalization layers on shared tensors: BatchNorm (eval and train), LayerNorm, GroupNorm and
their backward passes.

Torch's own decompositions (``torch._decomp``) reduce ``native_batch_norm``,
``_native_batch_norm_legit*``, ``native_layer_norm`` and the three backward ops to ops the
shared tensor already has (sums, products, ``rsqrt``, ``copy_`` for the running statistics) plus
``var_mean``, implemented here: the mean is a local sum times the public 1/n, the variance the
mean of the squared deviations (one Beaver product, 2 rounds with its truncation), so it is
exact to a few units of 2^−16 (no E[x²] − E[x]² cancellation). ``native_group_norm``'s
decomposition views the input with ``as_strided``, which shares do not support: it is written
here as a reshape to (N, G, −1), the same ``var_mean`` and ``rsqrt`` over the last dimension, and
the affine per channel. Its backward is torch's decomposition.

The inverse square root of ``var + eps`` is ``approx.inv_sqrt_normalized`` (aten ``rsqrt``):
one batched comparison with the powers 4^j normalizes the argument to [1/4, 1) (any value in
[2^−16, 2^16)), then 3 Newton steps; relative error ≈ 2e−4 plus one unit. Precision: at 16
fractional bits, a variance below ≈ 1e−3 has few significant bits, and eps = 1e−5 encodes
as one unit (1.5e−5); a channel whose values vary by less than ≈ 0.03 is normalized by a
noisy 1/σ (as in any 16-bit fixed point; CrypTen has the same limit).

Cost (per layer, forward): the variance product, one comparison and ≈ 11 products on the
per-channel (or per-row) statistics, and two products on the whole tensor (x − mean)·rstd and
·weight, i.e. ≈ 30 rounds, independent of the batch size. With training, the running
statistics are updated in place in shares (``model.fix_precision().share(...)`` shares the
float buffers of a module along with its parameters); public running statistics serve eval mode
(public ``rsqrt``, then local products).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
from torch._decomp import get_decompositions

from syft_mpc.encrypted.arithmetic import mul, sub
from syft_mpc.encrypted.tensor import OP_TABLE, SharedTensor, implements, is_shared, public_value, run
from syft_mpc.errors import UnsupportedOperationError

__all__ = ["var_mean"]

aten = torch.ops.aten


def var_mean(x: SharedTensor, dims: "list[int] | None", correction: float = 1, keepdim: bool = False) -> tuple[SharedTensor, SharedTensor]:
    """(variance, mean) over ``dims`` (all if None): the mean of the squared deviations, divided
    by n − correction. One Beaver product."""
    dims = list(range(x.dim())) if dims is None else [d % max(1, x.dim()) for d in dims]
    n = math.prod(x.shape[d] for d in dims) if dims else 1
    mean = mul(run(x, "aten.sum_dim", x, dims, True), 1.0 / max(1, n))
    d = sub(x, mean)
    var = mul(run(d, "aten.sum_dim", mul(d, d), dims, keepdim), 1.0 / max(1.0, n - correction))
    return var, mean if keepdim else run(mean, "aten.squeeze_dims", mean, dims)


@implements(aten.var_mean.correction)
def _var_mean(x: Any, dim: Any = None, *, correction: Any = None, keepdim: bool = False) -> Any:
    return var_mean(x, None if dim is None else list(dim), 1 if correction is None else float(correction), keepdim)


@implements(aten.var_mean.dim)
def _var_mean_dim(x: Any, dim: Any = None, unbiased: bool = True, keepdim: bool = False) -> Any:
    return var_mean(x, None if dim is None else list(dim), 1 if unbiased else 0, keepdim)


@implements(aten.var.correction)
def _var(x: Any, dim: Any = None, *, correction: Any = None, keepdim: bool = False) -> Any:
    return var_mean(x, None if dim is None else list(dim), 1 if correction is None else float(correction), keepdim)[0]


_DECOMPOSED = get_decompositions(
    [
        aten.native_batch_norm.default,
        aten.native_batch_norm_backward.default,
        aten._native_batch_norm_legit.default,
        aten._native_batch_norm_legit.no_stats,
        aten._native_batch_norm_legit_no_training.default,
        aten.native_layer_norm.default,
        aten.native_layer_norm_backward.default,
        aten.native_group_norm_backward.default,
    ]
)


_EVAL_AFFINE: "OrderedDict[tuple[Any, ...], tuple[Any, Any]]" = OrderedDict()
_EVAL_AFFINE_SIZE = 512


def _key(v: Any) -> Any:
    """What identifies a batch norm statistic's current value: its shares' object id (an in-place
    update, e.g. a training step, gives new shares and so a new key), or None when public."""
    return v.cell.shares.id if is_shared(v) else None


def _eval_affine(weight: Any, bias: Any, mean: Any, var: Any, eps: float) -> tuple[Any, Any]:
    """(a, b) with BN_eval(x) = a·x + b per channel: a = γ/√(var + eps), b = β − mean·a. They
    depend on the model only, so with shared statistics they are computed once (rsqrt and two
    products on C values) and kept, keyed by the shares' ids; later inferences cost one product."""
    shared = [v for v in (weight, bias, mean, var) if is_shared(v)]
    key = (tuple(_key(v) for v in (weight, bias, mean, var)), float(eps)) if shared else None
    if key is not None and key in _EVAL_AFFINE:
        _EVAL_AFFINE.move_to_end(key)
        return _EVAL_AFFINE[key]
    if is_shared(var):
        rstd = torch.rsqrt(var + eps)
    else:
        rstd = torch.rsqrt(public_value(var).double() + eps)
    a = rstd if weight is None else mul(rstd, weight if is_shared(weight) else public_value(weight))
    b = mul(mean if is_shared(mean) else public_value(mean), a)
    b = (0 - b) if bias is None else sub(bias if is_shared(bias) else public_value(bias), b)
    if key is not None:
        _EVAL_AFFINE[key] = (a, b)
        if len(_EVAL_AFFINE) > _EVAL_AFFINE_SIZE:
            _EVAL_AFFINE.popitem(last=False)
    return a, b


def _batch_norm_eval(x: Any, weight: Any, bias: Any, mean: Any, var: Any, eps: float) -> Any:
    """Eval-mode batch norm as a·x + b (:func:`_eval_affine`): one product on the whole tensor."""
    col = (1, -1) + (1,) * (x.dim() - 2)
    a, b = _eval_affine(weight, bias, mean, var, eps)
    a = a.reshape(col) if is_shared(a) else public_value(a).to(torch.float64).reshape(col)
    b = b.reshape(col) if is_shared(b) else public_value(b).to(torch.float64).reshape(col)
    y = mul(x, a) if is_shared(x) else mul(public_value(x), a)
    return y + b


def _with_public_stats_check(op: Any, fn: Any) -> Any:
    """``fn`` (a decomposition), refusing a training batch norm with public running statistics;
    eval mode with running statistics is :func:`_batch_norm_eval`."""

    def impl(*args: Any, **kwargs: Any) -> Any:
        # both ops take (input, weight, bias, running_mean, running_var, training, momentum, eps)
        if op == aten._native_batch_norm_legit_no_training.default:  # (x, w, b, mean, var, momentum, eps)
            x, w, b, rm, rv = args[:5]
            eps = kwargs.get("eps", args[6] if len(args) > 6 else 1e-5)
            return _batch_norm_eval(x, w, b, rm, rv, eps), torch.zeros(0), torch.zeros(0)
        if op == aten.native_batch_norm.default and not args[5] and args[3] is not None and args[4] is not None:
            x, w, b, rm, rv = args[:5]
            return _batch_norm_eval(x, w, b, rm, rv, args[7]), torch.zeros(0), torch.zeros(0)
        if op in (aten.native_batch_norm.default, aten._native_batch_norm_legit.default):
            training, stats = args[5], args[3:5]
            if training and any(s is not None and not is_shared(s) for s in stats):
                raise UnsupportedOperationError(
                    "batch norm in training mode on shared inputs updates its running statistics in shares: "
                    "share the module (model.fix_precision().share(...) shares its buffers too), or use eval mode"
                )
        return fn(*args, **kwargs)

    return impl


for _op, _fn in _DECOMPOSED.items():
    OP_TABLE[_op] = _with_public_stats_check(_op, _fn)


@implements(aten.native_group_norm.default)
def _native_group_norm(x: Any, weight: Any, bias: Any, n: int, c: int, hw: int, group: int, eps: float) -> Any:
    xr = x.reshape(n, group, -1)
    var, mean = var_mean(xr, [2], correction=0, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    y: Any = mul(sub(xr, mean), rstd).reshape(x.shape)
    col = (1, c) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = mul(y, weight.reshape(col) if is_shared(weight) else public_value(weight).reshape(col))
    if bias is not None:
        y = y + (bias.reshape(col) if is_shared(bias) else public_value(bias).reshape(col))
    return y, mean.reshape(n, group), rstd.reshape(n, group)


@implements(aten.to.dtype)
def _to_dtype(x: Any, dtype: Any, non_blocking: bool = False, copy: bool = False, memory_format: Any = None) -> Any:
    # torch's decompositions convert to their computation dtype (a no-op for float32 shares)
    return x if dtype == x.dtype and not copy else aten._to_copy(x, dtype=dtype)
