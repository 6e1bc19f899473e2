"""What optimizers reach on shared tensors: in-place ops, copy_, out= variants, addcmul/addcdiv,
lerp, sqrt_ and the ``_foreach_`` ops.

``torch.optim`` updates parameters and their state in place. An in-place op on a shared tensor
computes its result out of place (the op families before this one) and swaps the destination's
shares for the result's (``_set_shares``; shares are never mutated, so aliases stay valid): the
result is rescaled to the destination's precision (a high-precision accumulator stays at 32
fractional bits) and broadcast to its shape. A destination that is a view writes the new shares
through into the tensor it views (``tensor.ViewCell``); one that repeats an element of it
(``expand``) is refused before any work. While the op that made the result may still fail
(posted to socket workers without waiting), a failure puts the old shares back. ``addcmul`` keeps
its product at the accumulator's precision (Adam's second moment, exact); ``_foreach_`` ops apply
their op to each tensor of the list.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from syft_mpc.encrypted.activations import logical_and
from syft_mpc.encrypted.approx import div, sqrt
from syft_mpc.encrypted.arithmetic import add, mul, neg, sub
from syft_mpc.encrypted.comparisons import maximum, minimum, relu
from syft_mpc.encrypted.tensor import (
    OP_TABLE,
    ShareCell,
    SharedTensor,
    check_writable,
    implements,
    is_shared,
    lift,
    public_value,
    rescale,
    run,
    shared_operand,
)
from syft_mpc.errors import UnsupportedOperationError

__all__ = ["addcdiv", "addcmul", "lerp"]

aten = torch.ops.aten


def _set_shares(dst: SharedTensor, src: Any) -> SharedTensor:
    """Stores ``src`` (shared or public) into ``dst``: ``dst``'s cell takes ``src``'s shares, at
    ``dst``'s precision and broadcast to its shape; every alias of ``dst`` sees them (a view
    writes them through into the tensor it views: ``tensor.ViewCell``)."""
    check_writable(dst)
    if not is_shared(src):
        src = lift(src, dst)
    if src.group is not dst.group or src.scale != dst.scale:
        shared_operand((dst, src), same_scale=src.scale == 1 or dst.scale == 1)
        src = rescale(src, dst.scale)  # an in-place result keeps the destination's precision
    if tuple(src.shape) != tuple(dst.shape):
        src = run(src, "aten.clone", run(src, "aten.expand", src, list(dst.shape)))
    cell = dst.cell
    g = dst.group
    if g.has_posted:  # the op that made ``src`` may still fail: a failure puts the old shares back
        g.on_failure(_restorer(cell, cell.state()))
    cell.shares = src.cell.shares
    cell.pos_mask = None
    cell.aux = None
    return dst


def _restorer(cell: ShareCell, state: tuple[Any, ...]) -> Callable[[], None]:
    def restore() -> None:
        cell.restore(state)

    return restore


@implements(aten.copy_.default)
def _copy_(dst: Any, src: Any, non_blocking: bool = False) -> Any:
    if not is_shared(dst):
        raise UnsupportedOperationError("a shared value cannot be copied into a plain tensor; use .get()")
    check_writable(dst, src)
    return _set_shares(dst, src)


def _inplace(fn: Callable[..., Any]) -> Callable[..., Any]:
    def impl(dst: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_shared(dst):
            raise UnsupportedOperationError("an in-place op cannot store a shared result into a plain tensor")
        check_writable(dst, args, kwargs)  # before the op's work
        return _set_shares(dst, fn(dst, *args, **kwargs))

    return impl


OP_TABLE[aten.add_.Tensor] = _inplace(add)
OP_TABLE[aten.add_.Scalar] = _inplace(add)
OP_TABLE[aten.sub_.Tensor] = _inplace(sub)
OP_TABLE[aten.sub_.Scalar] = _inplace(sub)
OP_TABLE[aten.mul_.Tensor] = _inplace(mul)
OP_TABLE[aten.mul_.Scalar] = _inplace(mul)
OP_TABLE[aten.div_.Tensor] = _inplace(div)
OP_TABLE[aten.div_.Scalar] = _inplace(div)
OP_TABLE[aten.neg_.default] = _inplace(neg)
OP_TABLE[aten.relu_.default] = _inplace(relu)
OP_TABLE[aten.logical_and_.default] = _inplace(logical_and)  # clamp's backward
OP_TABLE[aten.zero_.default] = _inplace(lambda x: lift(torch.zeros(x.shape, dtype=torch.int64), x))
OP_TABLE[aten.fill_.Scalar] = _inplace(lambda x, v: v)  # x[0] = 2.5 (stored, broadcast, by _set_shares)
OP_TABLE[aten.fill_.Tensor] = _inplace(lambda x, v: v)
OP_TABLE[aten.sigmoid_.default] = _inplace(torch.sigmoid)  # GRU cells (torch's RNN.cpp works in place)
OP_TABLE[aten.tanh_.default] = _inplace(torch.tanh)


def addcmul(x: Any, t1: Any, t2: Any, value: Any = 1) -> Any:
    """x + value·t1·t2, the product kept at ``x``'s precision: a gradient's square added to a
    high-precision accumulator is exact (16 + 16 fractional bits, no truncation)."""
    return add(x, mul(mul(t1, t2, out_scale=x.scale if is_shared(x) else None), value))


def addcdiv(x: Any, t1: Any, t2: Any, value: Any = 1) -> Any:
    return add(x, mul(div(t1, t2), value))


OP_TABLE[aten.addcmul.default] = addcmul
OP_TABLE[aten.addcmul_.default] = _inplace(addcmul)
OP_TABLE[aten.addcdiv.default] = addcdiv
OP_TABLE[aten.addcdiv_.default] = _inplace(addcdiv)


def _out_variant(fn: Callable[..., Any]) -> Callable[..., Any]:
    def impl(*args: Any, out: Any, **kwargs: Any) -> Any:
        if not is_shared(out):
            raise UnsupportedOperationError("a shared result cannot be written into a plain tensor (out=)")
        return _set_shares(out, fn(*args, **kwargs))

    return impl


OP_TABLE[aten.maximum.out] = _out_variant(maximum)
OP_TABLE[aten.minimum.out] = _out_variant(minimum)


def lerp(x: Any, end: Any, weight: Any) -> Any:
    """x + weight·(end − x) (Adam's moment update)."""
    return add(x, mul(sub(end, x), weight))


def _sqrt(x: Any) -> Any:
    if not is_shared(x):
        return torch.sqrt(public_value(x))
    return sqrt(x)


OP_TABLE[aten.lerp.Scalar] = lerp
OP_TABLE[aten.lerp.Tensor] = lerp
OP_TABLE[aten.lerp_.Scalar] = _inplace(lerp)
OP_TABLE[aten.lerp_.Tensor] = _inplace(lerp)
OP_TABLE[aten.sqrt_.default] = _inplace(_sqrt)


def _foreach(fn: Callable[..., Any], inplace: bool) -> Callable[..., Any]:
    def impl(xs: Any, *args: Any, **kwargs: Any) -> Any:
        outs = []
        for i, x in enumerate(xs):
            a = [v[i] if isinstance(v, (list, tuple)) else v for v in args]
            k = {n: (v[i] if isinstance(v, (list, tuple)) else v) for n, v in kwargs.items()}
            r = fn(x, *a, **k)
            if inplace:
                if is_shared(x):
                    _set_shares(x, r)
                else:
                    x.copy_(r)
            outs.append(r)
        return None if inplace else outs

    return impl


for _name, _fn in (("add", add), ("sub", sub), ("mul", mul), ("div", div), ("maximum", maximum), ("minimum", minimum)):
    for _ov in ("List", "Scalar", "Tensor", "ScalarList"):
        for _suffix, _inp in (("", False), ("_", True)):
            _pkt = getattr(aten, f"_foreach_{_name}{_suffix}", None)
            if _pkt is not None and hasattr(_pkt, _ov):
                OP_TABLE[getattr(_pkt, _ov)] = _foreach(_fn, _inp)
_fn3: Callable[..., Any]
for _name, _fn3 in (("lerp", lerp), ("addcmul", addcmul), ("addcdiv", addcdiv)):
    for _ov in ("Scalar", "List", "Tensor", "ScalarList"):
        for _suffix, _inp in (("", False), ("_", True)):
            _pkt = getattr(aten, f"_foreach_{_name}{_suffix}", None)
            if _pkt is not None and hasattr(_pkt, _ov):
                OP_TABLE[getattr(_pkt, _ov)] = _foreach(_fn3, _inp)
OP_TABLE[aten._foreach_sqrt.default] = _foreach(_sqrt, False)
OP_TABLE[aten._foreach_sqrt_.default] = _foreach(_sqrt, True)
OP_TABLE[aten._foreach_neg.default] = _foreach(neg, False)
OP_TABLE[aten._foreach_neg_.default] = _foreach(neg, True)
OP_TABLE[aten._foreach_zero_.default] = _foreach(lambda x: lift(torch.zeros(x.shape, dtype=torch.int64), x) if is_shared(x) else torch.zeros_like(x), True)
