"""Arithmetic on shared tensors: linear ops, sums, products, matmul and integer powers.

* Linear ops (views, cat/stack, slicing, transpose, sums, ``mpc_session.ops.ATEN_LINEAR_NAMES``)
  and additions/negation apply to every share as it is: no communication.
* A public operand is encoded at the shared tensor's scale and applied locally; a public float
  factor is encoded finely (``fine_encoding``) and the product truncated once.
* Two shared operands: one Beaver product (mul, matmul, addmm) by the holders' parties, kept at
  the larger operand scale (or ``out_scale``) by one truncation (dealer-assisted, or SecureML's
  local one for 2 parties).
* Integer powers by square and multiply; means as a sum times the public 1/n.

Division by a public value is here (``div_public``); the aten ``div`` and ``pow`` ops, which may
need an approximation (a shared divisor, the exponents 0.5 and −1), are registered in
:mod:`~syft_mpc.encrypted.approx`. The autograd plumbing (detach, clone, ``_to_copy``, the
``*_like`` constructors) is here too: it copies no shares.
"""

from __future__ import annotations

import math
from typing import Any, overload

import torch

from syft_mpc.encrypted.tensor import (
    HIGH_PRECISION_SCALE,
    MAX_PRODUCT_SCALE,
    OP_TABLE,
    ShareCell,
    SharedTensor,
    aligned,
    encode_at_scale,
    encode_public,
    fine_encoding,
    implements,
    is_shared,
    lift,
    public_value,
    run,
    run_many,
    shared_operand,
    truncate,
    truncation_kwargs,
)
from syft_mpc.errors import UnsupportedOperationError
from syft_mpc.mpc_session.ops import ATEN_LINEAR_NAMES

__all__ = ["add", "addmm", "bilinear", "div_public", "matmul", "mul", "neg", "pow_int", "sub"]

aten = torch.ops.aten


# With a shared operand, add, sub, neg and mul give a shared tensor; with public ones, torch's result.
@overload
def add(a: SharedTensor, b: Any, alpha: Any = 1) -> SharedTensor: ...
@overload
def add(a: Any, b: SharedTensor, alpha: Any = 1) -> SharedTensor: ...
@overload
def add(a: Any, b: Any, alpha: Any = 1) -> Any: ...


def add(a: Any, b: Any, alpha: Any = 1) -> Any:
    if alpha != 1:
        b = mul(b, alpha)
    if is_shared(a) and is_shared(b):
        a, b = aligned(a, b)
        return run(a, "aten.add", a, b)
    if not is_shared(a) and not is_shared(b):
        return torch.add(public_value(a), public_value(b))
    x, c = (a, b) if is_shared(a) else (b, a)
    return run(x, "add_public", x, encode_at_scale(c, x))


@overload
def neg(a: SharedTensor) -> SharedTensor: ...
@overload
def neg(a: Any) -> Any: ...


def neg(a: Any) -> Any:
    if not is_shared(a):
        return -public_value(a)
    return run(a, "aten.neg", a)


@overload
def sub(a: SharedTensor, b: Any, alpha: Any = 1) -> SharedTensor: ...
@overload
def sub(a: Any, b: SharedTensor, alpha: Any = 1) -> SharedTensor: ...
@overload
def sub(a: Any, b: Any, alpha: Any = 1) -> Any: ...


def sub(a: Any, b: Any, alpha: Any = 1) -> Any:
    if alpha != 1:
        b = mul(b, alpha)
    if is_shared(a) and is_shared(b):
        a, b = aligned(a, b)
        return run(a, "aten.sub", a, b)
    if is_shared(a):
        return add(a, neg(b))
    if not is_shared(b):
        return torch.sub(public_value(a), public_value(b))
    return run(b, "public_sub", encode_at_scale(a, b), b)


@overload
def mul(a: SharedTensor, b: Any, out_scale: "int | None" = None) -> SharedTensor: ...
@overload
def mul(a: Any, b: SharedTensor, out_scale: "int | None" = None) -> SharedTensor: ...
@overload
def mul(a: Any, b: Any, out_scale: "int | None" = None) -> Any: ...


def mul(a: Any, b: Any, out_scale: "int | None" = None) -> Any:
    """a·b. Two shared operands: one Beaver product at scale ``a.scale·b.scale``, truncated to
    ``out_scale`` (default: the larger operand scale; no truncation when it is the product's)."""
    if is_shared(a) and is_shared(b):
        m = shared_operand((a, b), same_scale=False)
        prod = a.scale * b.scale
        if prod > MAX_PRODUCT_SCALE and max(a.scale, b.scale) > HIGH_PRECISION_SCALE:
            raise UnsupportedOperationError(
                f"a product of shared tensors at scales {a.scale} and {b.scale} does not fit the 64-bit ring"
            )
        divisor = max(1, prod // (out_scale or max(a.scale, b.scale)))
        like = a if a.scale >= b.scale else b
        return run(like, "mul", a, b, divisor=divisor, local=m.group.truncation == "local", scale=prod // divisor)
    if not is_shared(a) and not is_shared(b):
        return torch.mul(public_value(a), public_value(b))
    x, c = (a, b) if is_shared(a) else (b, a)
    cv = public_value(c)
    if isinstance(cv, float) and cv.is_integer() and abs(cv) < 2**62:
        cv = int(cv)
    ce, integral = encode_public(cv, x)
    if integral:
        return run(x, "mul_public", x, ce)
    ce, divisor = fine_encoding(cv, x)
    z = run(x, "mul_public", x, ce)
    return run(z, "truncate", z, divisor=divisor, local=x.group.truncation == "local")


def div_public(a: Any, b: Any) -> Any:
    """a / b for a public divisor ``b``: a product with the public 1/b. (A shared divisor needs
    ``approx.reciprocal``: ``approx.div`` takes both.)"""
    bv = public_value(b)
    if is_shared(a) and a.scale == 1:
        raise TypeError("an integer shared tensor cannot be divided; fix_prec() it before sharing")
    if isinstance(bv, torch.Tensor):
        return mul(a, 1.0 / bv.to(torch.float64))
    return mul(a, 1.0 / float(bv))


def bilinear(op: str, a: Any, b: Any, **kwargs: Any) -> SharedTensor:
    """Bilinear MPC op ``op`` (``matmul``, ``conv2d``) of ``a`` and ``b``, one of them at least
    shared: with both shared, one Beaver product and its truncation; with one public,
    ``{op}_public`` on the shares and the encoded public operand, local, then one truncation
    unless that operand is integral."""
    if is_shared(a) and is_shared(b):
        m = shared_operand((a, b))
        return run(m, op, a, b, **kwargs, **truncation_kwargs(m))
    x = a if is_shared(a) else b
    ca, ia = (encode_public(a, x) if not is_shared(a) else (a, True))
    cb, ib = (encode_public(b, x) if not is_shared(b) else (b, True))
    z = run(x, f"{op}_public", ca, cb, **kwargs)
    return z if (ia and ib) else truncate(z)


def matmul(a: Any, b: Any) -> Any:
    if not is_shared(a) and not is_shared(b):
        return torch.matmul(public_value(a), public_value(b))
    return bilinear("matmul", a, b)


def addmm(bias: Any, a: Any, b: Any, beta: Any = 1, alpha: Any = 1) -> Any:
    prod = matmul(a, b)
    if alpha != 1:
        prod = mul(prod, alpha)
    if beta == 0:
        return prod
    if beta != 1:
        bias = mul(bias, beta)
    return add(prod, bias)


def pow_int(x: Any, e: Any) -> Any:
    """x ** e for an integer e ≥ 0: square and multiply (⌈log2 e⌉ squarings). ``approx.pow_scalar``
    adds the exponents 0.5 and −1, hence the error's wording."""
    if not is_shared(x):
        return torch.pow(public_value(x), e)
    if isinstance(e, float) and e.is_integer():
        e = int(e)
    if not isinstance(e, int) or e < 0:
        raise UnsupportedOperationError(f"x ** {e} on a shared tensor: only non-negative integer powers, 0.5 and -1")
    if e == 0:
        return torch.ones(x.shape, dtype=x.dtype)
    result = None
    base = x
    while e:
        if e & 1:
            result = base if result is None else mul(result, base)
        e >>= 1
        if e:
            base = mul(base, base)
    return result


def _linear_forward(func: Any, args: Any, kwargs: Any) -> Any:
    """A structural/linear aten op: applied to every share (public tensors in a cat/stack are lifted)."""
    like = shared_operand((args, kwargs))
    name = ATEN_LINEAR_NAMES[func]
    if name in ("aten.cat", "aten.stack"):
        args = ([lift(v, like) for v in args[0]], *args[1:])
    if name in ("aten.add", "aten.sub") and not all(is_shared(v) for v in args[:2]):
        return (add if name == "aten.add" else sub)(*args, **kwargs)
    multi = name in ("aten.split", "aten.split_with_sizes", "aten.unbind")
    if multi:
        shapes = [tuple(t.shape) for t in func(torch.empty(like.shape, device="meta"), *args[1:], **kwargs)]
        return run_many(like, name, *args, n_out=max(1, len(shapes)), **kwargs)
    return run(like, name, *args, **kwargs)


for _op in ATEN_LINEAR_NAMES:
    OP_TABLE[_op] = lambda *a, _op=_op, **k: _linear_forward(_op, a, k)


@implements(aten.add.Tensor, aten.add.Scalar)
def _add(a: Any, b: Any, alpha: Any = 1) -> Any:
    return add(a, b, alpha)


@implements(aten.sub.Tensor, aten.sub.Scalar)
def _sub(a: Any, b: Any, alpha: Any = 1) -> Any:
    return sub(a, b, alpha)


@implements(aten.rsub.Tensor, aten.rsub.Scalar)
def _rsub(a: Any, b: Any, alpha: Any = 1) -> Any:
    return sub(b, mul(a, alpha) if alpha != 1 else a)


@implements(aten.mul.Tensor, aten.mul.Scalar)
def _mul(a: Any, b: Any) -> Any:
    return mul(a, b)


@implements(aten.neg.default)
def _neg(a: Any) -> Any:
    return neg(a)


@implements(aten.mm.default, aten.bmm.default, aten.matmul.default, aten.mv.default, aten.dot.default)
def _mm(a: Any, b: Any) -> Any:
    return matmul(a, b)


@implements(aten.addmm.default)
def _addmm(bias: Any, a: Any, b: Any, beta: Any = 1, alpha: Any = 1) -> Any:
    return addmm(bias, a, b, beta=beta, alpha=alpha)


@implements(aten.mean.default)
def _mean(x: SharedTensor, dtype: Any = None) -> Any:
    return mul(run(x, "aten.sum", x), 1.0 / max(1, x.numel()))


@implements(aten.mean.dim)
def _mean_dim(x: SharedTensor, dim: Any, keepdim: bool = False, dtype: Any = None) -> Any:
    dims = [dim] if isinstance(dim, int) else list(dim or range(x.dim()))
    n = math.prod(x.shape[d] for d in dims) if dims else x.numel()
    return mul(run(x, "aten.sum_dim", x, dims, keepdim), 1.0 / max(1, n))


@implements(aten.sum.dim_IntList)
def _sum_dim(x: SharedTensor, dim: Any, keepdim: bool = False, dtype: Any = None) -> Any:
    return run(x, "aten.sum_dim", x, list(dim) if dim is not None else None, keepdim)


@implements(aten.sum.default)
def _sum(x: SharedTensor, dtype: Any = None) -> Any:
    return run(x, "aten.sum", x)


# ------------------------------------------------------------------ autograd plumbing


@implements(aten.detach.default, aten.alias.default)
def _detach(x: SharedTensor) -> SharedTensor:
    return SharedTensor(x.cell, x.scale, x.base, x.precision_fractional, x.dtype)


@implements(aten.clone.default)
def _clone(x: SharedTensor, memory_format: Any = None) -> SharedTensor:
    # Shares are never mutated in place (in-place ops swap the cell's handle), so sharing them is a copy.
    return SharedTensor(ShareCell(x.cell.shares, x.cell.pos_mask), x.scale, x.base, x.precision_fractional, x.dtype)


@implements(aten._to_copy.default)
def _to_copy(x: SharedTensor, dtype: Any = None, layout: Any = None, device: Any = None, pin_memory: Any = None, non_blocking: bool = False, memory_format: Any = None) -> SharedTensor:
    if device is not None and torch.device(device).type != "cpu":
        raise UnsupportedOperationError("shared tensors live on CPU workers")
    if dtype is not None and dtype != x.dtype and not (dtype.is_floating_point and x.dtype.is_floating_point):
        raise UnsupportedOperationError(f"a shared tensor cannot be converted from {x.dtype} to {dtype}")
    # a copy (as clone): an in-place op on it must leave x alone
    c = x.cell
    cell = ShareCell(c.shares, c.pos_mask)
    cell.aux = c.aux
    return SharedTensor(cell, x.scale, x.base, x.precision_fractional, dtype or x.dtype)


@implements(aten.ones_like.default)
def _ones_like(x: SharedTensor, dtype: Any = None, **_: Any) -> torch.Tensor:
    return torch.ones(x.shape, dtype=dtype or x.dtype)  # public: no communication


@implements(aten.zeros_like.default, aten.empty_like.default)
def _zeros_like(x: SharedTensor, dtype: Any = None, **_: Any) -> torch.Tensor:
    return torch.zeros(x.shape, dtype=dtype or x.dtype)


@implements(aten.new_zeros.default, aten.new_empty.default)
def _new_zeros(x: SharedTensor, size: Any, dtype: Any = None, **_: Any) -> torch.Tensor:
    return torch.zeros(tuple(size), dtype=dtype or x.dtype)  # public, as zeros_like


@implements(aten.new_ones.default)
def _new_ones(x: SharedTensor, size: Any, dtype: Any = None, **_: Any) -> torch.Tensor:
    return torch.ones(tuple(size), dtype=dtype or x.dtype)


@implements(aten.full_like.default)
def _full_like(x: SharedTensor, value: Any, **kw: Any) -> torch.Tensor:
    return torch.full(x.shape, value, dtype=kw.get("dtype") or x.dtype)


@implements(aten.expand_as.default)
def _expand_as(x: Any, other: Any) -> Any:
    return x.expand(other.shape)


@implements(aten.is_same_size.default)
def _is_same_size(a: Any, b: Any) -> bool:
    return tuple(a.shape) == tuple(b.shape)
