"""Additively shared tensors with torch autograd: ``x.fix_prec().share(bob, alice, crypto_provider=james)``.

:class:`SharedTensor` is a wrapper tensor subclass (``_make_wrapper_subclass``) whose
data are additive shares in Z_2^64, one ``int64`` tensor per share holder, stored in
the holders' object stores under one id. Its ``__torch_dispatch__`` sits *below*
autograd, so ``torch.autograd`` and ``torch.optim`` work unchanged on shared
parameters: they only ever call aten ops, and each aten op maps to one of

* a linear op applied to every share as it is (view, transpose, add, sum, cat, ...):
  no communication, one message per holder;
* a local op with a public operand (add/mul/matmul/conv2d by a public tensor);
* an interactive op run by the holders' :class:`~syft_mpc.Party` objects (Beaver
  mul/matmul/conv2d, truncation, comparison), delivered to all holders concurrently.

Fixed point: a shared tensor carries ``scale`` (``base ** precision``; 1 for an integer
tensor). A product of two fixed-point values is truncated by ``scale`` right after it,
by the dealer-assisted protocol (any number of parties, exact up to one unit), or the
local SecureML one with ``truncation="local"`` (2 parties only). Operands may carry different
scales (an adaptive optimizer's state keeps 32 fractional bits): see ``rescale`` and ``mul``.

Ops whose operands are all public never reach this class (they are plain torch ops).

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob, alice, james = (sy.VirtualWorker(hook, id=i) for i in ("bob", "alice", "james"))
    >>> x = torch.tensor([1.5, -2.0]).fix_prec().share(bob, alice, crypto_provider=james)
    >>> x
    SharedTensor(shape=(2,), parties=(bob, alice), crypto_provider=james, fixed_precision=2^-16)
    >>> (x * x + 1).get().float_prec()
    tensor([3.2500, 5.0000])
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils._pytree import tree_leaves

from syft_mpc import _native
from syft_mpc.encrypted import validation as _validation
from syft_mpc.errors import UnsupportedOperationError
from syft_mpc.encrypted.fixed_precision import FixedPrecisionTensor
from syft_mpc.fixed_point import DEFAULT_BASE, DEFAULT_PRECISION, encode, from_ring, scale_of, to_ring
from syft_mpc.remote.messages import Fetch, Store, new_id
from syft_mpc.mpc_session.driver import Group, group_of
from syft_mpc.mpc_session.ops import ATEN_LINEAR_NAMES, infer_shapes
from syft_mpc.remote.serde import ObjRef
from syft_mpc.remote.workers import BaseWorker, local_worker

__all__ = ["SharedTensor", "share_encoded", "sharing_group"]

aten = torch.ops.aten


# ============================================================================ share handles


class _Shares:
    """The shares of one tensor: object ``id`` on every worker of ``group``; deleted with this handle."""

    __slots__ = ("group", "id", "shape", "__weakref__")

    def __init__(self, group: Group, obj_id: int, shape: Sequence[int]) -> None:
        self.group, self.id, self.shape = group, obj_id, torch.Size(shape)

    def __del__(self) -> None:
        try:
            from syft_mpc.remote.workers import local_worker

            for w in self.group.workers:
                local_worker._queue_delete(w, self.id)
        except Exception:  # interpreter shutdown
            pass

    @property
    def ref(self) -> ObjRef:
        return ObjRef(self.id)


class _Cell:
    """What a SharedTensor and its detached aliases point to (in-place ops replace ``shares``)."""

    __slots__ = ("shares", "pos_mask", "aux")

    def __init__(self, shares: _Shares, pos_mask: "_Shares | None" = None) -> None:
        self.shares = shares
        self.pos_mask = pos_mask  # shares of 1{x >= 0} (unscaled), kept by relu for its backward
        self.aux: "_Shares | None" = None  # softmax kept by log_softmax for its backward


class SharedTensor(torch.Tensor):
    """A tensor whose values are additively shared among workers (see the module docstring).

    Attributes: ``group`` (share holders and crypto provider), ``scale`` (the integer
    encoding 1.0; 1 for integer tensors), ``base`` and ``precision_fractional``.
    ``.get()`` reconstructs (a FixedPrecisionTensor, or an integer tensor);
    ``.decrypt()`` gives the float tensor directly.
    """

    _cell: _Cell
    scale: int
    base: int
    precision_fractional: int
    _from_pointer: bool = False  # made by sharing a remote tensor: .get() keeps it shared (see get)

    @staticmethod
    def __new__(cls, cell: _Cell, scale: int, base: int, precision: int, dtype: torch.dtype, requires_grad: bool = False) -> "SharedTensor":
        r = torch.Tensor._make_wrapper_subclass(cls, cell.shares.shape, dtype=dtype, device="cpu", requires_grad=requires_grad)
        r._cell = cell
        r.scale = scale
        r.base = base
        r.precision_fractional = precision
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def from_stored(
        cls,
        group: Group,
        share_id: int,
        shape: Sequence[int],
        *,
        scale: int,
        base: int = DEFAULT_BASE,
        precision: int = DEFAULT_PRECISION,
        dtype: torch.dtype = torch.float32,
        requires_grad: bool = False,
    ) -> "SharedTensor":
        """A handle on shares that every worker of ``group`` already stores as ``share_id``
        (a restored checkpoint, a secure sum, a tensor shared by its remote owner). The
        shares are deleted on the holders when the last handle on them goes away."""
        return cls(_Cell(_Shares(group, share_id, shape)), scale, base, precision, dtype, requires_grad)

    # ------------------------------------------------------------------ user API

    @property
    def group(self) -> Group:
        return self._cell.shares.group

    @property
    def workers(self) -> tuple[Any, ...]:
        return self.group.workers

    @property
    def crypto_provider(self) -> Any:
        return self.group.crypto_provider

    @property
    def share_id(self) -> int:
        """The id under which every share holder stores its share (once the operations posted
        to the holders without waiting have run: whoever asks is about to address the shares)."""
        self.group.flush()
        return self._cell.shares.id

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        parts = ", ".join(w.id for w in self.workers)
        fp = f", fixed_precision={self.base}^-{self.precision_fractional}" if self.scale != 1 else ", dtype=int64"
        rg = ", requires_grad=True" if self.requires_grad else ""
        gf = f", grad_fn=<{type(self.grad_fn).__name__}>" if self.grad_fn is not None else ""
        return (
            f"SharedTensor(shape={tuple(self.shape)}, parties=({parts}), "
            f"crypto_provider={self.crypto_provider.id}{fp}{rg}{gf})"
        )

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def _reconstruct(self) -> torch.Tensor:
        from syft_mpc.remote.workers import local_worker

        sh = self._cell.shares
        self.group.flush()  # operations posted without waiting (socket workers) have run, or raise here
        total = None
        for w in self.workers:
            s = local_worker._send(w, Fetch(sh.id, False))
            total = s if total is None else total + s  # int64 addition wraps: the ring sum
        assert total is not None
        return total.reshape(self.shape)

    def get(self) -> torch.Tensor:
        """Reconstructs the values: a FixedPrecisionTensor (``.float_prec()`` decodes it), or an integer tensor.

        The shares stay on the workers until this tensor (and its aliases) are garbage-collected.

        Exception, as in PySyft 0.2: sharing a *remote* tensor (``ptr.fix_prec().share(...)``)
        stands for a pointer to a shared tensor, whose ``.get()`` brings that tensor here
        still shared; so for such a tensor ``.get()`` returns a shared alias and reveals
        nothing (PySyft tutorial Part 10 aggregates that way). ``.decrypt()`` always reveals.
        """
        if self._from_pointer:
            return SharedTensor(self._cell, self.scale, self.base, self.precision_fractional, self.dtype, self.requires_grad)
        return self._reveal()

    def _reveal(self) -> torch.Tensor:
        enc = self._reconstruct()
        if self.scale == 1:
            return enc
        return FixedPrecisionTensor(enc, self.base, self.precision_fractional, self.dtype)

    def decrypt(self) -> torch.Tensor:
        """Reconstructs and decodes: a plain float (or integer) tensor."""
        v = self._reveal()
        return v.float_precision() if isinstance(v, FixedPrecisionTensor) else v

    def float_precision(self) -> torch.Tensor:
        raise TypeError("this tensor is shared: call .get() first (then .float_precision()), or .decrypt()")

    float_prec = float_precision

    def share(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this tensor is already shared; .get() it first to share it among other workers")

    def fix_precision(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("this tensor is already shared (and encoded); fix_precision() applies before .share()")

    fix_prec = fix_precision

    def send(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a shared tensor cannot be sent; its shares already live on the share holders")


# ============================================================================ sharing


def sharing_group(
    workers: Sequence[Any], crypto_provider: Any, *, base: int, scale: int, requires_grad: bool, truncation: "str | None"
) -> Group:
    """The group that will hold a new shared tensor, its session started; checks the arguments
    every way of sharing takes (``x.share(...)``, ``ptr.share(...)``)."""
    for w in workers:
        if not isinstance(w, BaseWorker):
            raise TypeError(f"share() takes workers, got {type(w).__name__}")
    if crypto_provider is not None and not isinstance(crypto_provider, BaseWorker):
        raise TypeError(f"crypto_provider must be a worker, got {type(crypto_provider).__name__}")
    if requires_grad and scale == 1:
        raise TypeError("an integer tensor cannot require gradients; share a fix_prec() tensor")
    group = group_of(list(workers), crypto_provider)
    if truncation is not None:
        if truncation not in ("dealer", "local"):
            raise ValueError("truncation must be 'dealer' (any number of parties) or 'local' (2 parties, SecureML)")
        if truncation == "local" and (group.n != 2 or base != 2):
            raise ValueError("local (SecureML) truncation needs exactly 2 parties and base 2")
        group.truncation = truncation
    group.ensure_session()
    return group


def share_encoded(
    enc: torch.Tensor,
    workers: Sequence[Any],
    crypto_provider: Any,
    *,
    scale: int,
    base: int = DEFAULT_BASE,
    precision: int = DEFAULT_PRECISION,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
    truncation: "str | None" = None,
) -> SharedTensor:
    """Splits int64 ring tensor ``enc`` into ``len(workers)`` uniformly random shares, stores one on each worker."""
    group = sharing_group(workers, crypto_provider, base=base, scale=scale, requires_grad=requires_grad, truncation=truncation)
    parts = _native.share(to_ring(enc.detach().to(torch.int64)), group.n)
    sid = new_id()
    for w, part in zip(group.workers, parts):
        local_worker._send(w, Store(sid, from_ring(part)))
    return SharedTensor.from_stored(group, sid, enc.shape, scale=scale, base=base, precision=precision, dtype=dtype, requires_grad=requires_grad)


# ============================================================================ operand handling


def _is_shared(v: Any) -> bool:
    return isinstance(v, SharedTensor)


def _public_value(v: Any) -> Any:
    """A public operand as a plain tensor or number (FixedPrecisionTensors are decoded)."""
    if isinstance(v, FixedPrecisionTensor):
        return v._value()
    return v


def _meta(args: Any, same_scale: bool = True) -> SharedTensor:
    """The first shared tensor among ``args``; checks they all share one group and (unless
    ``same_scale`` is False: add, sub, mul and in-place stores align scales themselves) one scale."""
    first = None
    for v in tree_leaves(args):
        if isinstance(v, SharedTensor):
            if first is None:
                first = v
            else:
                if v.group is not first.group:
                    raise ValueError(
                        f"this operation mixes tensors shared among different workers: {first.group} and {v.group}; "
                        "all operands must be shared among the same workers with the same crypto provider "
                        "(.get() one of them and share it again)"
                    )
                if same_scale and v.scale != first.scale:
                    raise ValueError(
                        f"this operation mixes shared tensors of different precisions (scale {first.scale} and {v.scale})"
                    )
    if first is None:
        raise TypeError("no shared operand")
    return first


def _precision_of(base: int, scale: int) -> int:
    p = round(math.log(scale, base))
    if base**p != scale:
        raise ValueError(f"scale {scale} is not a power of base {base}")
    return p


def _wrap(like: SharedTensor, ids: list[int], shapes: list[tuple[int, ...]], scale: "int | None" = None, dtype: "torch.dtype | None" = None) -> list[SharedTensor]:
    g = like.group
    sc = like.scale if scale is None else scale
    # a fixed-point result at another scale than ``like`` (a product kept at higher precision, a
    # rescaled tensor) gets the matching precision; integer (scale 1) results keep ``like``'s
    prec = like.precision_fractional if sc in (1, like.scale) else _precision_of(like.base, sc)
    return [SharedTensor(_Cell(_Shares(g, i, s)), sc, like.base, prec, dtype or like.dtype) for i, s in zip(ids, shapes)]


def _run(like: SharedTensor, op: str, *args: Any, n_out: int = 1, scale: "int | None" = None, dtype: "torch.dtype | None" = None, **kwargs: Any) -> Any:
    key: "list[Any] | None" = [op, n_out]
    enc_args = tuple([_encode_arg(v, key) for v in args])
    enc_kwargs = {k: _encode_arg(v, key) for k, v in kwargs.items()}
    shapes = _result_shapes(op, args, kwargs, n_out, key)
    ids, shapes = like.group.run(op, enc_args, enc_kwargs, n_out=n_out, shapes=shapes)
    out = _wrap(like, ids, shapes, scale, dtype)
    return out if n_out > 1 else out[0]


# ------------------------------------------------------------------ result shapes on the driver
# The driver describes each op's results itself (mpc_session.infer_shapes on meta tensors), so
# that socket workers can be sent MpcRuns without waiting for replies. Meta kernels cost tens of
# microseconds, so shapes are cached by everything they depend on: the op, each operand's shape
# (and dtype for public tensors; the values of boolean ones, which may select elements), and the
# other arguments' values.
_SHAPES_CACHE: dict[Any, Any] = {}
_SHAPES_CACHE_SIZE = 4096
_KEY_TYPES = (type(None), bool, int, float, str)


def _encode_arg(v: Any, key: "list[Any] | None") -> Any:
    """``v`` for an MpcRun (shared tensors as ObjRefs); appends its description to ``key``."""
    if isinstance(v, SharedTensor):
        if key is not None:
            key.append(v._cell.shares.shape)
        return v._cell.shares.ref
    tv = type(v)
    if tv is tuple or tv is list:
        if key is not None:
            key.append((tv, len(v)))
        return tv([_encode_arg(x, key) for x in v])
    if tv is dict:
        if key is not None:
            key.append((dict, tuple(v)))
        return {k: _encode_arg(x, key) for k, x in v.items()}
    if isinstance(v, FixedPrecisionTensor):
        raise TypeError("internal: a fixed-precision operand reached a share op unencoded")
    if key is not None:
        if isinstance(v, torch.Tensor):
            key.append((v.shape, v.dtype, v.detach().numpy().tobytes() if v.dtype == torch.bool else None))
        elif tv in _KEY_TYPES or isinstance(v, torch.dtype):
            key.append((tv, v))
        else:
            key.append(_UNCACHEABLE)
    return v


_UNCACHEABLE = object()


def _meta_args(v: Any) -> Any:
    """``v`` with every shared tensor replaced by a meta tensor of its shares' shape (for infer_shapes)."""
    if isinstance(v, SharedTensor):
        return torch.empty(v._cell.shares.shape, dtype=torch.int64, device="meta")
    tv = type(v)
    if tv is tuple or tv is list:
        return tv([_meta_args(x) for x in v])
    if tv is dict:
        return {k: _meta_args(x) for k, x in v.items()}
    return v


def _result_shapes(op: str, args: Any, kwargs: Any, n_out: int, key: "list[Any] | None") -> Any:
    k = tuple(key) if key is not None and _UNCACHEABLE not in key else None
    if k is not None:
        hit = _SHAPES_CACHE.get(k, _UNCACHEABLE)
        if hit is not _UNCACHEABLE:
            return hit
    shapes = infer_shapes(op, _meta_args(args), _meta_args(kwargs), n_out)
    if k is not None:
        if len(_SHAPES_CACHE) >= _SHAPES_CACHE_SIZE:
            _SHAPES_CACHE.pop(next(iter(_SHAPES_CACHE)))
        _SHAPES_CACHE[k] = shapes
    return shapes


def _enc_public(v: Any, like: SharedTensor) -> tuple[torch.Tensor, bool]:
    """A public operand as an int64 ring tensor at ``like``'s scale; also whether it is integral
    (an integral public factor multiplies shares exactly, with no truncation)."""
    v = _public_value(v)
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, numbers.Number):
        v = torch.tensor(v, dtype=torch.float64 if isinstance(v, float) else torch.int64)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"unsupported operand of type {type(v).__name__} for a shared tensor")
    if v.dtype == torch.bool or not v.dtype.is_floating_point:
        return v.to(torch.int64), True
    return encode(v, like.base, like.precision_fractional) if like.scale != 1 else _int_or_fail(v), False


def _int_or_fail(v: torch.Tensor) -> torch.Tensor:
    if not torch.equal(v, v.round()):
        raise TypeError("a float operand with an integer shared tensor: fix_prec() the shared tensor instead")
    return v.to(torch.int64)


def _lift(v: Any, like: SharedTensor) -> SharedTensor:
    """A public value as a (trivial) sharing at ``like``'s scale, without communication."""
    if isinstance(v, SharedTensor):
        return v
    c, integral = _enc_public(v, like)
    if integral and like.scale != 1:
        c = c * like.scale
    return _run(like, "from_public", c)


def _trunc_kwargs(like: SharedTensor) -> dict[str, Any]:
    return {"divisor": like.scale, "local": like.group.truncation == "local"}


def _truncate(x: SharedTensor) -> SharedTensor:
    if x.scale == 1:
        return x
    return _run(x, "truncate", x, **_trunc_kwargs(x))


# ------------------------------------------------------------------ mixed scales
# A shared tensor may carry more fractional bits than its operands (an optimizer's second-moment
# accumulator: the square of a 16-bit gradient kept exactly at 32 bits). Addition and in-place
# stores align scales; a product is kept at the larger operand scale (or ``out_scale``).
HIGH_PRECISION_SCALE = 1 << 24
"""Tensors above this scale are *high-precision*: they cannot be multiplied by themselves (the
product would leave the ring), so approximations run on a copy narrowed to ``work_scale``."""
MAX_PRODUCT_SCALE = 1 << 48  # a product at this scale still holds |x·y| < 2^14 below 2^62


def work_scale(x: SharedTensor) -> int:
    """The scale approximations of a high-precision tensor run at: 16 fractional bits (base 2), 4 digits (base 10)."""
    return min(x.scale, 1 << 16 if x.base == 2 else 10**4)


def rescale(x: SharedTensor, scale: int) -> SharedTensor:
    """``x`` encoded at ``scale``: up is exact and local (a public integer factor), down is one truncation."""
    if scale == x.scale:
        return x
    hi, lo = max(scale, x.scale), min(scale, x.scale)
    if hi % lo or x.scale == 1 or scale == 1:
        raise ValueError(f"cannot rescale a shared tensor from scale {x.scale} to {scale}")
    out: SharedTensor
    if scale > x.scale:
        out = _run(x, "mul_public", x, torch.tensor(scale // x.scale, dtype=torch.int64), scale=scale)
    else:
        out = _run(x, "truncate", x, divisor=x.scale // scale, local=x.group.truncation == "local", scale=scale)
    return out


def _aligned(a: SharedTensor, b: SharedTensor) -> tuple[SharedTensor, SharedTensor]:
    """Both at the larger of their scales (exact: the lower one is multiplied up)."""
    _meta((a, b), same_scale=a.scale == 1 or b.scale == 1)  # integer and fixed point do not mix
    s = max(a.scale, b.scale)
    return rescale(a, s), rescale(b, s)


def lift_at(v: torch.Tensor, like: SharedTensor, precision: int) -> SharedTensor:
    """Public float tensor ``v`` as a (trivial) sharing among ``like``'s holders at ``precision``, without communication."""
    out: SharedTensor = _run(like, "from_public", encode(v, like.base, precision), scale=scale_of(like.base, precision))
    return out


# ============================================================================ ops

_IMPLS: dict[Any, Callable[..., Any]] = {}


def implements(*ops: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for op in ops:
            _IMPLS[op] = fn
        return fn

    return deco


def add(a: Any, b: Any, alpha: Any = 1) -> Any:
    if alpha != 1:
        b = mul(b, alpha)
    if _is_shared(a) and _is_shared(b):
        a, b = _aligned(a, b)
        return _run(a, "aten.add", a, b)
    if not _is_shared(a) and not _is_shared(b):
        return torch.add(_public_value(a), _public_value(b))
    x, c = (a, b) if _is_shared(a) else (b, a)
    ce, integral = _enc_public(c, x)
    if integral and x.scale != 1:
        ce = ce * x.scale
    return _run(x, "add_public", x, ce)


def neg(a: Any) -> Any:
    if not _is_shared(a):
        return -_public_value(a)
    return _run(a, "aten.neg", a)


def sub(a: Any, b: Any, alpha: Any = 1) -> Any:
    if alpha != 1:
        b = mul(b, alpha)
    if _is_shared(a) and _is_shared(b):
        a, b = _aligned(a, b)
        return _run(a, "aten.sub", a, b)
    if _is_shared(a):
        return add(a, neg(b))
    if not _is_shared(b):
        return torch.sub(_public_value(a), _public_value(b))
    ce, integral = _enc_public(a, b)
    if integral and b.scale != 1:
        ce = ce * b.scale
    return _run(b, "public_sub", ce, b)


def mul(a: Any, b: Any, out_scale: "int | None" = None) -> Any:
    """a·b. Two shared operands: one Beaver product at scale ``a.scale·b.scale``, truncated to
    ``out_scale`` (default: the larger operand scale; no truncation when it is the product's)."""
    if _is_shared(a) and _is_shared(b):
        m = _meta((a, b), same_scale=False)
        prod = a.scale * b.scale
        if prod > MAX_PRODUCT_SCALE and max(a.scale, b.scale) > HIGH_PRECISION_SCALE:
            raise UnsupportedOperationError(
                f"a product of shared tensors at scales {a.scale} and {b.scale} does not fit the 64-bit ring"
            )
        divisor = max(1, prod // (out_scale or max(a.scale, b.scale)))
        like = a if a.scale >= b.scale else b
        return _run(like, "mul", a, b, divisor=divisor, local=m.group.truncation == "local", scale=prod // divisor)
    if not _is_shared(a) and not _is_shared(b):
        return torch.mul(_public_value(a), _public_value(b))
    x, c = (a, b) if _is_shared(a) else (b, a)
    cv = _public_value(c)
    if isinstance(cv, float) and cv.is_integer() and abs(cv) < 2**62:
        cv = int(cv)
    ce, integral = _enc_public(cv, x)
    if integral:
        return _run(x, "mul_public", x, ce)
    ce, divisor = _fine_encoding(cv, x)
    z = _run(x, "mul_public", x, ce)
    return _run(z, "truncate", z, divisor=divisor, local=x.group.truncation == "local")


def _fine_encoding(c: Any, like: SharedTensor) -> tuple[torch.Tensor, int]:
    """A public float factor encoded with ~20 significant bits (at least the tensor's precision), and its divisor.

    Multiplying by a small public constant (1/n in a mean, a learning rate) at 16 fractional
    bits would cost up to 2^-17 / |c| of relative error; here it costs about 2^-20.
    """
    cv = torch.as_tensor(_public_value(c), dtype=torch.float64)
    if like.base != 2:
        return encode(cv, like.base, like.precision_fractional), like.scale
    m = float(cv.abs().max()) if cv.numel() else 0.0
    bits = min(like.precision_fractional, DEFAULT_PRECISION)  # a high-precision tensor needs no more: |x·c| must fit
    if m > 0:
        bits = min(40, max(bits, 20 - math.ceil(math.log2(m))))
    return torch.round(cv * float(1 << bits)).to(torch.int64), 1 << bits


def div(a: Any, b: Any, rounding_mode: "str | None" = None) -> Any:
    if rounding_mode is not None:
        raise UnsupportedOperationError("division with a rounding mode is not supported on shared tensors")
    if _is_shared(b):
        from syft_mpc.encrypted import approx

        return mul(a, approx.reciprocal(b))
    bv = _public_value(b)
    if _is_shared(a) and a.scale == 1:
        raise TypeError("an integer shared tensor cannot be divided; fix_prec() it before sharing")
    if isinstance(bv, torch.Tensor):
        return mul(a, 1.0 / bv.to(torch.float64))
    return mul(a, 1.0 / float(bv))


def matmul(a: Any, b: Any) -> Any:
    if _is_shared(a) and _is_shared(b):
        m = _meta((a, b))
        return _run(m, "matmul", a, b, **_trunc_kwargs(m))
    if not _is_shared(a) and not _is_shared(b):
        return torch.matmul(_public_value(a), _public_value(b))
    x = a if _is_shared(a) else b
    ca, ia = (_enc_public(a, x) if not _is_shared(a) else (a, True))
    cb, ib = (_enc_public(b, x) if not _is_shared(b) else (b, True))
    z = _run(x, "matmul_public", ca, cb)
    return z if (ia and ib) else _truncate(z)


def addmm(bias: Any, a: Any, b: Any, beta: Any = 1, alpha: Any = 1) -> Any:
    prod = matmul(a, b)
    if alpha != 1:
        prod = mul(prod, alpha)
    if beta == 0:
        return prod
    if beta != 1:
        bias = mul(bias, beta)
    return add(prod, bias)


def _ltz(x: SharedTensor, scale: "int | None" = None) -> SharedTensor:
    s = x.scale if scale is None else scale
    return _run(x, "ltz", x, times=s, scale=s)


def relu(x: Any) -> Any:
    if not _is_shared(x):
        return torch.relu(_public_value(x))
    y, mask = _run(x, "relu_mask", x, n_out=2)
    mask.scale = 1
    y._cell.pos_mask = mask._cell.shares
    return y


def threshold_backward(grad: Any, result: Any, threshold: Any) -> Any:
    if threshold != 0:
        raise UnsupportedOperationError("threshold_backward on shared tensors supports threshold 0 (ReLU) only")
    if not _is_shared(result):
        return torch.ops.aten.threshold_backward(grad, _public_value(result), threshold)
    m = result._cell.pos_mask
    if m is None:
        mask = _ltz(neg(result), scale=1)  # 1{result > 0}
    else:
        mask = SharedTensor(_Cell(m), 1, result.base, result.precision_fractional, result.dtype)
    if not _is_shared(grad):
        grad = _lift(grad, result)
    return _run(result, "mul", grad, mask, divisor=1)


def _cmp_lt(a: Any, b: Any) -> SharedTensor:
    """Shares of 1{a < b} at the operands' scale."""
    d = sub(a, b)
    return _ltz(d)


def _one_minus(bit: SharedTensor) -> SharedTensor:
    return sub(_lift(1, bit), bit) if bit.scale != 1 else _run(bit, "public_sub", torch.tensor(1, dtype=torch.int64), bit)


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
    both = _ltz(_run(d, "aten.stack", [d, neg(d)]))  # one comparison for a<b and a>b
    lt_, gt_ = both.unbind(0)
    return _one_minus(add(lt_, gt_))


def sign(x: Any) -> Any:
    # sign(x) = 1 - 2·1{x<0} - 1{x=0}
    lt_ = _ltz(x)
    is_zero = eq(x, 0)
    return sub(sub(_lift(1, x), mul(lt_, 2)), is_zero)


def _select(bit: SharedTensor, x: SharedTensor, y: SharedTensor) -> SharedTensor:
    """bit ? x : y for an unscaled 0/1 sharing ``bit``."""
    return _run(x, "select_mul", bit, x, y)


def _tournament(both: SharedTensor, dim: int, largest: bool) -> SharedTensor:
    """Reduces ``both`` along ``dim`` to one entry: ⌈log2 n⌉ levels, each one comparison of the
    values (``both[..., 0]``) whose winners take their whole last dimension along (values with
    their indices or one-hot vectors): ``a + 1{key < 0}·(b − a)``, the products riding in the
    comparison's rounds (``ltz_times``) instead of a Beaver round of their own. Neighbours
    (2i, 2i + 1) are paired, so of tied entries the first wins, as in torch."""
    while both.shape[dim] > 1:
        m = both.shape[dim]
        end = m - m % 2
        a, b = _run(both, "aten.slice", both, dim, 0, end, 2), _run(both, "aten.slice", both, dim, 1, end, 2)
        va, vb = a.select(-1, 0), b.select(-1, 0)
        key = sub(va, vb) if largest else sub(vb, va)  # < 0: take b
        moved = _run(key, "ltz_times", key, _run(key, "aten.movedim", sub(b, a), -1, 0), scale=a.scale)
        top = add(a, _run(key, "aten.movedim", moved, 0, -1))
        both = _run(both, "aten.cat", [top, both.narrow(dim, m - 1, 1)], dim) if m % 2 else top
    return both


def max_dim(x: SharedTensor, dim: int, keepdim: bool = False, largest: bool = True) -> tuple[SharedTensor, SharedTensor]:
    """(values, indices) of the max (or min) along ``dim``: a tournament of ⌈log2 n⌉ comparisons,
    each taking the winners' values and indices in its own 6 rounds (``_tournament``); ties
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
    both = _run(x, "aten.stack", [x, _run(x, "from_public", idx, scale=1, dtype=torch.int64)], -1)
    vals, ids = _tournament(both, dim, largest).unbind(-1)
    if not keepdim:
        vals, ids = vals.squeeze(dim), ids.squeeze(dim)
    return vals, SharedTensor(ids._cell, 1, x.base, x.precision_fractional, torch.int64)


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
        top = add(b, _run(x, "relu", sub(a, b)))
        vals = _run(x, "aten.cat", [top, vals.narrow(dim, m - 1, 1)], dim) if m % 2 else top
    return vals if keepdim else vals.squeeze(dim)


def pow_scalar(x: Any, e: Any) -> Any:
    if not _is_shared(x):
        return torch.pow(_public_value(x), e)
    if isinstance(e, float) and e.is_integer():
        e = int(e)
    if not isinstance(e, int) or e < 0:
        if e == 0.5:
            from syft_mpc.encrypted import approx

            return approx.sqrt(x)
        if e == -1:
            from syft_mpc.encrypted import approx

            return approx.reciprocal(x)
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
    like = _meta((args, kwargs))
    name = ATEN_LINEAR_NAMES[func]
    if name in ("aten.cat", "aten.stack"):
        args = ([_lift(v, like) for v in args[0]], *args[1:])
    if name in ("aten.add", "aten.sub") and not all(_is_shared(v) for v in args[:2]):
        return (add if name == "aten.add" else sub)(*args, **kwargs)
    multi = name in ("aten.split", "aten.split_with_sizes", "aten.unbind")
    if multi:
        shapes = [tuple(t.shape) for t in func(torch.empty(like.shape, device="meta"), *args[1:], **kwargs)]
        return list(_run(like, name, *args, n_out=len(shapes), **kwargs)) if len(shapes) > 1 else [_run(like, name, *args, **kwargs)]
    return _run(like, name, *args, **kwargs)


for _op in ATEN_LINEAR_NAMES:
    _IMPLS[_op] = lambda *a, _op=_op, **k: _linear_forward(_op, a, k)


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


@implements(aten.div.Tensor, aten.div.Scalar)
def _div(a: Any, b: Any) -> Any:
    return div(a, b)


@implements(aten.div.Tensor_mode)
def _div_mode(a: Any, b: Any, rounding_mode: Any = None) -> Any:
    return div(a, b, rounding_mode)


@implements(aten.neg.default)
def _neg(a: Any) -> Any:
    return neg(a)


@implements(aten.mm.default, aten.bmm.default, aten.matmul.default, aten.mv.default, aten.dot.default)
def _mm(a: Any, b: Any) -> Any:
    return matmul(a, b)


@implements(aten.addmm.default)
def _addmm(bias: Any, a: Any, b: Any, beta: Any = 1, alpha: Any = 1) -> Any:
    return addmm(bias, a, b, beta=beta, alpha=alpha)


@implements(aten.relu.default)
def _relu(x: Any) -> Any:
    return relu(x)


@implements(aten.threshold_backward.default)
def _threshold_backward(grad: Any, result: Any, threshold: Any) -> Any:
    return threshold_backward(grad, result, threshold)


@implements(aten.pow.Tensor_Scalar)
def _pow(x: Any, e: Any) -> Any:
    return pow_scalar(x, e)


@implements(aten.mean.default)
def _mean(x: SharedTensor, dtype: Any = None) -> Any:
    return mul(_run(x, "aten.sum", x), 1.0 / max(1, x.numel()))


@implements(aten.mean.dim)
def _mean_dim(x: SharedTensor, dim: Any, keepdim: bool = False, dtype: Any = None) -> Any:
    dims = [dim] if isinstance(dim, int) else list(dim or range(x.dim()))
    n = math.prod(x.shape[d] for d in dims) if dims else x.numel()
    return mul(_run(x, "aten.sum_dim", x, dims, keepdim), 1.0 / max(1, n))


@implements(aten.sum.dim_IntList)
def _sum_dim(x: SharedTensor, dim: Any, keepdim: bool = False, dtype: Any = None) -> Any:
    return _run(x, "aten.sum_dim", x, list(dim) if dim is not None else None, keepdim)


@implements(aten.sum.default)
def _sum(x: SharedTensor, dtype: Any = None) -> Any:
    return _run(x, "aten.sum", x)


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


@implements(aten.convolution.default)
def _convolution(x: Any, w: Any, bias: Any, stride: Any, padding: Any, dilation: Any, transposed: bool, output_padding: Any, groups: int) -> Any:
    if transposed:
        raise UnsupportedOperationError("transposed convolution is not supported on shared tensors")
    if len(stride) != 2:
        raise UnsupportedOperationError("only 2-d convolution is supported on shared tensors")
    kw = {"stride": list(stride), "padding": list(padding), "dilation": list(dilation), "groups": int(groups)}
    if _is_shared(x) and _is_shared(w):
        m = _meta((x, w))
        out = _run(m, "conv2d", x, w, **kw, **_trunc_kwargs(m))
    else:
        like = x if _is_shared(x) else w
        ca, ia = (_enc_public(x, like) if not _is_shared(x) else (x, True))
        cb, ib = (_enc_public(w, like) if not _is_shared(w) else (w, True))
        out = _run(like, "conv2d_public", ca, cb, **kw)
        if not (ia and ib):
            out = _truncate(out)
    if bias is not None:
        out = add(out, bias.reshape(1, -1, 1, 1) if _is_shared(bias) else _public_value(bias).reshape(1, -1, 1, 1))
    return out


@implements(aten.avg_pool2d.default)
def _avg_pool2d(x: Any, kernel_size: Any, stride: Any = (), padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Any = None) -> Any:
    k = _pair(kernel_size)
    s = _pair(stride) if stride else k
    p = _pair(padding)
    if ceil_mode or (not count_include_pad and p != (0, 0)):
        raise UnsupportedOperationError("avg_pool2d on shared tensors: ceil_mode and count_include_pad=False are not supported")
    c = x.shape[1]
    ones = torch.ones((c, 1, *k), dtype=torch.int64)
    summed = _run(x, "conv2d_public", x, ones, stride=list(s), padding=list(p), dilation=[1, 1], groups=c)
    return mul(summed, 1.0 / (divisor_override or k[0] * k[1]))


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    return (v[0], v[0]) if len(v) == 1 else (int(v[0]), int(v[1]))


_POOL_PAD = -(1 << 60)
"""Encoded value of max_pool2d's padding: far below any encodable value (|x| < 2^47), so a padded
position never wins, as torch's −inf padding; differences with real values stay far from 2^63."""


def _pool_out(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> tuple[int, int]:
    """torch's max_pool2d output length along one axis, and how far its last window reads past
    the padded input (ceil_mode: a partial window at the end)."""
    eff = d * (k - 1) + 1
    o = (n + 2 * p - eff + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (o - 1) * s >= n + p:  # the last window must start inside the input or its left padding
        o -= 1
    return o, max(0, (o - 1) * s + eff - (n + 2 * p))


def _pool_windows(x: SharedTensor, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int], d: tuple[int, int], ceil_mode: bool) -> tuple[Any, tuple[int, int]]:
    """max_pool2d's windows as views of the shares, ``(n, c, oh, ow, kh*kw)``, and the extra
    right/bottom padding that ceil_mode's partial windows read. Padded positions hold the public
    ``_POOL_PAD`` (zero-padded shares plus a public mask: no communication)."""
    n, c, h, w = x.shape
    oh, eh = _pool_out(h, k[0], s[0], p[0], d[0], ceil_mode)
    ow, ew = _pool_out(w, k[1], s[1], p[1], d[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"max_pool2d: output size {oh}x{ow} is too small for input {h}x{w}")
    xp = x
    if p != (0, 0) or eh or ew:
        xp = torch.ops.aten.constant_pad_nd(x, [p[1], p[1] + ew, p[0], p[0] + eh], 0)
        mask = torch.full(tuple(xp.shape[-2:]), _POOL_PAD, dtype=torch.int64)
        mask[p[0] : p[0] + h, p[1] : p[1] + w] = 0
        xp = _run(xp, "add_public", xp, mask)
    win = xp.unfold(2, d[0] * (k[0] - 1) + 1, s[0]).unfold(3, d[1] * (k[1] - 1) + 1, s[1])
    if d != (1, 1):
        win = win[..., :: d[0], :: d[1]]
    return win[:, :, :oh, :ow].reshape(n, c, oh, ow, k[0] * k[1]), (eh, ew)


def _pool_args(kernel_size: Any, stride: Any, padding: Any, dilation: Any) -> tuple[tuple[int, int], ...]:
    k = _pair(kernel_size)
    return k, (_pair(stride) if stride else k), _pair(padding), _pair(dilation)


def _max_pool2d_onehot(x: SharedTensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False) -> tuple[SharedTensor, SharedTensor]:
    """max_pool2d that also returns, for each window, the shared one-hot vector of its argmax
    (shape ``(n, c, oh, ow, kh*kw)``, unscaled): a tournament of ⌈log2(kh·kw)⌉ comparisons, each
    taking the winners' values and one-hot vectors in its own rounds (``_tournament``; ties go
    to the first position of the window, as in torch)."""
    k, s, p, d = _pool_args(kernel_size, stride, padding, dilation)
    win, _ = _pool_windows(x, k, s, p, d, ceil_mode)
    n, c, oh, ow, kk = win.shape
    vals: Any = win.reshape(n, c, oh, ow, kk, 1)
    hot = _run(x, "from_public", torch.eye(kk, dtype=torch.int64).expand(n, c, oh, ow, kk, kk).contiguous(), scale=1, dtype=torch.int64)
    both = _tournament(_run(x, "aten.cat", [vals, hot], 5), 4, largest=True)  # value and one-hot vector
    vals, hot = both.narrow(5, 0, 1), both.narrow(5, 1, kk)
    out = vals.reshape(n, c, oh, ow)
    hot = hot.reshape(n, c, oh, ow, kk)
    return out, SharedTensor(hot._cell, 1, x.base, x.precision_fractional, torch.int64)


@implements(aten.max_pool2d_with_indices.default)
def _max_pool2d_with_indices(x: Any, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False) -> Any:
    out, hot = _max_pool2d_onehot(x, kernel_size, stride or None, padding, dilation, ceil_mode)
    # The indices (argmax within each window, row-major) stay secret: a shared int64 tensor, which
    # also carries the one-hot selection the backward pass needs.
    kk = hot.shape[-1]
    idx = _run(hot, "aten.sum_dim", _run(hot, "mul_public", hot, torch.arange(kk, dtype=torch.int64)), [4], False)
    idx = SharedTensor(idx._cell, 1, x.base, x.precision_fractional, torch.int64)
    idx._cell.aux = hot._cell.shares
    return out, idx


@implements(aten.max_pool2d_with_indices_backward.default)
def _max_pool2d_with_indices_backward(grad: Any, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool, indices: Any) -> Any:
    """Routes each window's gradient to its (secret) argmax: one Beaver product with the one-hot
    selection kept by the forward pass, then col2im (sums overlapping windows; what lands on
    padding is dropped)."""
    if not _is_shared(indices) or indices._cell.aux is None:
        raise UnsupportedOperationError(
            "max_pool2d backward on shared tensors needs the indices of a shared max_pool2d forward pass"
        )
    k, s, p, d = _pool_args(kernel_size, stride, padding, dilation)
    h, w = x.shape[-2:]
    extra = (_pool_out(h, k[0], s[0], p[0], d[0], ceil_mode)[1], _pool_out(w, k[1], s[1], p[1], d[1], ceil_mode)[1])
    like = x if _is_shared(x) else indices
    n, c, oh, ow = indices.shape
    hot = SharedTensor(_Cell(indices._cell.aux), 1, like.base, like.precision_fractional, torch.int64)
    if not _is_shared(grad):
        grad = _lift(grad, like)
    g = _run(grad, "mul", grad.reshape(n, c, oh, ow, 1), hot, divisor=1)  # (n, c, oh, ow, kk) at grad's scale
    cols = g.permute(0, 1, 4, 2, 3).reshape(n, c * k[0] * k[1], oh * ow)
    return _col2im(cols, c, (h, w), k, d, p, s, extra)


def _col2im(cols: SharedTensor, c: int, hw: tuple[int, int], k: Any, dilation: Any, padding: Any, stride: Any, extra: tuple[int, int] = (0, 0)) -> Any:
    """col2im (the adjoint of im2col: sums each column entry into the pixel it came from) on
    shares. torch has no int64 col2im on CPU, so it is a scatter_add with a public index map
    (the im2col of the pixel numbers), local on every share. ``extra``: padding beyond the
    symmetric one on the bottom/right (ceil_mode pooling), cropped like it."""
    n, ckk, L = cols.shape
    kk = ckk // c
    hp, wp = hw[0] + 2 * padding[0] + extra[0], hw[1] + 2 * padding[1] + extra[1]
    pix = torch.arange(hp * wp, dtype=torch.float64).reshape(1, 1, hp, wp)
    index = torch.nn.functional.unfold(pix, tuple(k), dilation=tuple(dilation), stride=tuple(stride)).round().to(torch.int64)
    if index.shape[-1] != L:
        raise UnsupportedOperationError(f"col2im on shares: {L} columns for an output of {index.shape[-1]}")
    index = index.reshape(1, 1, kk * L).expand(n, c, kk * L).contiguous()
    zeros = _lift(torch.zeros((n, c, hp * wp), dtype=torch.int64), cols)
    out = torch.ops.aten.scatter_add(zeros, 2, index, cols.reshape(n, c, kk * L)).reshape(n, c, hp, wp)
    if (hp, wp) != tuple(hw):
        out = out[:, :, padding[0] : padding[0] + hw[0], padding[1] : padding[1] + hw[1]]
    return out


@implements(aten.convolution_backward.default)
def _convolution_backward(
    grad: Any, x: Any, w: Any, bias_sizes: Any, stride: Any, padding: Any, dilation: Any,
    transposed: bool, output_padding: Any, groups: int, output_mask: Any,
) -> Any:
    """Gradients of conv2d as products on im2col columns (one Beaver matmul each when both
    operands are shared, a local one otherwise): with cols = im2col(x) of shape (N·L, C·kh·kw)
    and G = grad as (O, N·L), grad_w = G @ cols and grad_x = col2im(Wᵀ @ G). With ``groups`` g,
    channels and filters split into g independent blocks: the same products as one batched
    (g, ·, ·) matmul (depthwise: C = g)."""
    if transposed or len(stride) != 2:
        raise UnsupportedOperationError("conv2d backward on shared tensors supports non-transposed 2-d convolution")
    o, cg, kh, kw = w.shape
    g = int(groups)
    og, c, kk = o // g, cg * g, kh * kw
    n, _, oh, ow = grad.shape
    L = oh * ow
    g3 = grad.reshape(n, g, og, L).permute(1, 2, 0, 3).reshape(g, og, n * L)
    gx = gw = gb = None
    if output_mask[1]:
        # im2col (torch has no int64 im2col on CPU): pad, then windows as views of the shares
        xv = x if _is_shared(x) else _public_value(x)
        if padding[0] or padding[1]:
            xv = torch.ops.aten.constant_pad_nd(xv, [padding[1], padding[1], padding[0], padding[0]], 0)
        dk = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
        win = xv.unfold(2, dk[0], stride[0]).unfold(3, dk[1], stride[1])  # (N, C, oh, ow, dk0, dk1)
        if dilation[0] != 1 or dilation[1] != 1:
            win = win[..., :: dilation[0], :: dilation[1]]
        cols = win[:, :, :oh, :ow].reshape(n, g, cg, L, kk).permute(1, 0, 3, 2, 4).reshape(g, n * L, cg * kk)
        gw = matmul(g3, cols).reshape(o, cg, kh, kw)
    if output_mask[0]:
        dcols = matmul(w.reshape(g, og, cg * kk).transpose(1, 2), g3)  # (g, Cg*kh*kw, N*L)
        dcols = dcols.reshape(g, cg, kk, n, L).permute(3, 0, 1, 2, 4).reshape(n, c * kk, L)
        gx = _col2im(dcols, c, tuple(x.shape[-2:]), (kh, kw), tuple(dilation), tuple(padding), tuple(stride))
    if output_mask[2]:
        gb = grad.sum((0, 2, 3))
    return gx, gw, gb


@implements(aten.max_pool2d.default)
def _max_pool2d(x: Any, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False) -> Any:
    return _max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)[0]


# ------------------------------------------------------------------ autograd plumbing


@implements(aten.detach.default, aten.alias.default)
def _detach(x: SharedTensor) -> SharedTensor:
    return SharedTensor(x._cell, x.scale, x.base, x.precision_fractional, x.dtype)


@implements(aten.clone.default)
def _clone(x: SharedTensor, memory_format: Any = None) -> SharedTensor:
    # Shares are never mutated in place (in-place ops swap the cell's handle), so sharing them is a copy.
    return SharedTensor(_Cell(x._cell.shares, x._cell.pos_mask), x.scale, x.base, x.precision_fractional, x.dtype)


@implements(aten._to_copy.default)
def _to_copy(x: SharedTensor, dtype: Any = None, layout: Any = None, device: Any = None, pin_memory: Any = None, non_blocking: bool = False, memory_format: Any = None) -> SharedTensor:
    if device is not None and torch.device(device).type != "cpu":
        raise UnsupportedOperationError("shared tensors live on CPU workers")
    if dtype is not None and dtype != x.dtype and not (dtype.is_floating_point and x.dtype.is_floating_point):
        raise UnsupportedOperationError(f"a shared tensor cannot be converted from {x.dtype} to {dtype}")
    return SharedTensor(x._cell, x.scale, x.base, x.precision_fractional, dtype or x.dtype)


@implements(aten.ones_like.default)
def _ones_like(x: SharedTensor, dtype: Any = None, **_: Any) -> torch.Tensor:
    return torch.ones(x.shape, dtype=dtype or x.dtype)  # public: no communication


@implements(aten.zeros_like.default, aten.empty_like.default)
def _zeros_like(x: SharedTensor, dtype: Any = None, **_: Any) -> torch.Tensor:
    return torch.zeros(x.shape, dtype=dtype or x.dtype)


@implements(aten.full_like.default)
def _full_like(x: SharedTensor, value: Any, **kw: Any) -> torch.Tensor:
    return torch.full(x.shape, value, dtype=kw.get("dtype") or x.dtype)


def _set_shares(dst: SharedTensor, src: Any) -> SharedTensor:
    if not _is_shared(src):
        src = _lift(src, dst)
    if src.group is not dst.group or src.scale != dst.scale:
        _meta((dst, src), same_scale=src.scale == 1 or dst.scale == 1)
        src = rescale(src, dst.scale)  # an in-place result keeps the destination's precision
    if tuple(src.shape) != tuple(dst.shape):
        src = _run(src, "aten.clone", _run(src, "aten.expand", src, list(dst.shape)))
    cell = dst._cell
    g = dst.group
    if g._posted:  # the op that made ``src`` may still fail: a failure puts the old shares back
        g.on_failure(_restorer(cell, cell.shares, cell.pos_mask, cell.aux))
    cell.shares = src._cell.shares
    cell.pos_mask = None
    cell.aux = None
    return dst


def _restorer(cell: _Cell, shares: _Shares, pos_mask: "_Shares | None", aux: "_Shares | None") -> Callable[[], None]:
    def restore() -> None:
        cell.shares, cell.pos_mask, cell.aux = shares, pos_mask, aux

    return restore


@implements(aten.copy_.default)
def _copy_(dst: Any, src: Any, non_blocking: bool = False) -> Any:
    if not _is_shared(dst):
        raise UnsupportedOperationError("a shared value cannot be copied into a plain tensor; use .get()")
    return _set_shares(dst, src)


def _inplace(fn: Callable[..., Any]) -> Callable[..., Any]:
    def impl(dst: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_shared(dst):
            raise UnsupportedOperationError("an in-place op cannot store a shared result into a plain tensor")
        return _set_shares(dst, fn(dst, *args, **kwargs))

    return impl


_IMPLS[aten.add_.Tensor] = _inplace(add)
_IMPLS[aten.add_.Scalar] = _inplace(add)
_IMPLS[aten.sub_.Tensor] = _inplace(sub)
_IMPLS[aten.sub_.Scalar] = _inplace(sub)
_IMPLS[aten.mul_.Tensor] = _inplace(mul)
_IMPLS[aten.mul_.Scalar] = _inplace(mul)
_IMPLS[aten.div_.Tensor] = _inplace(div)
_IMPLS[aten.div_.Scalar] = _inplace(div)
_IMPLS[aten.neg_.default] = _inplace(neg)
_IMPLS[aten.relu_.default] = _inplace(relu)
_IMPLS[aten.zero_.default] = _inplace(lambda x: _lift(torch.zeros(x.shape, dtype=torch.int64), x))


def addcmul(x: Any, t1: Any, t2: Any, value: Any = 1) -> Any:
    """x + value·t1·t2, the product kept at ``x``'s precision: a gradient's square added to a
    high-precision accumulator is exact (16 + 16 fractional bits, no truncation)."""
    return add(x, mul(mul(t1, t2, out_scale=x.scale if _is_shared(x) else None), value))


def addcdiv(x: Any, t1: Any, t2: Any, value: Any = 1) -> Any:
    return add(x, mul(div(t1, t2), value))


def maximum(a: Any, b: Any, largest: bool = True) -> Any:
    """Elementwise max (min): one comparison and one Beaver select."""
    if not _is_shared(a) and not _is_shared(b):
        return (torch.maximum if largest else torch.minimum)(_public_value(a), _public_value(b))
    like = a if _is_shared(a) else b
    a, b = _aligned(_lift(a, like), _lift(b, like))
    shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    a, b = a.expand(shape), b.expand(shape)
    bit = _ltz(sub(a, b) if largest else sub(b, a), scale=1)  # 1: take b
    return _select(bit, b, a)


def minimum(a: Any, b: Any) -> Any:
    return maximum(a, b, largest=False)


_IMPLS[aten.addcmul.default] = addcmul
_IMPLS[aten.addcmul_.default] = _inplace(addcmul)
_IMPLS[aten.addcdiv.default] = addcdiv
_IMPLS[aten.addcdiv_.default] = _inplace(addcdiv)
_IMPLS[aten.maximum.default] = maximum
_IMPLS[aten.minimum.default] = minimum


def _out_variant(fn: Callable[..., Any]) -> Callable[..., Any]:
    def impl(*args: Any, out: Any, **kwargs: Any) -> Any:
        if not _is_shared(out):
            raise UnsupportedOperationError("a shared result cannot be written into a plain tensor (out=)")
        return _set_shares(out, fn(*args, **kwargs))

    return impl


_IMPLS[aten.maximum.out] = _out_variant(maximum)
_IMPLS[aten.minimum.out] = _out_variant(minimum)


def lerp(x: Any, end: Any, weight: Any) -> Any:
    """x + weight·(end − x) (Adam's moment update)."""
    return add(x, mul(sub(end, x), weight))


def _sqrt(x: Any) -> Any:
    if not _is_shared(x):
        return torch.sqrt(_public_value(x))
    from syft_mpc.encrypted import approx

    return approx.sqrt(x)


_IMPLS[aten.lerp.Scalar] = lerp
_IMPLS[aten.lerp.Tensor] = lerp
_IMPLS[aten.lerp_.Scalar] = _inplace(lerp)
_IMPLS[aten.lerp_.Tensor] = _inplace(lerp)
_IMPLS[aten.sqrt_.default] = _inplace(_sqrt)


def _foreach(fn: Callable[..., Any], inplace: bool) -> Callable[..., Any]:
    def impl(xs: Any, *args: Any, **kwargs: Any) -> Any:
        outs = []
        for i, x in enumerate(xs):
            a = [v[i] if isinstance(v, (list, tuple)) else v for v in args]
            k = {n: (v[i] if isinstance(v, (list, tuple)) else v) for n, v in kwargs.items()}
            r = fn(x, *a, **k)
            if inplace:
                if _is_shared(x):
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
                _IMPLS[getattr(_pkt, _ov)] = _foreach(_fn, _inp)
_fn3: Callable[..., Any]
for _name, _fn3 in (("lerp", lerp), ("addcmul", addcmul), ("addcdiv", addcdiv)):
    for _ov in ("Scalar", "List", "Tensor", "ScalarList"):
        for _suffix, _inp in (("", False), ("_", True)):
            _pkt = getattr(aten, f"_foreach_{_name}{_suffix}", None)
            if _pkt is not None and hasattr(_pkt, _ov):
                _IMPLS[getattr(_pkt, _ov)] = _foreach(_fn3, _inp)
_IMPLS[aten._foreach_sqrt.default] = _foreach(_sqrt, False)
_IMPLS[aten._foreach_sqrt_.default] = _foreach(_sqrt, True)
_IMPLS[aten._foreach_neg.default] = _foreach(neg, False)
_IMPLS[aten._foreach_neg_.default] = _foreach(neg, True)
_IMPLS[aten._foreach_zero_.default] = _foreach(lambda x: _lift(torch.zeros(x.shape, dtype=torch.int64), x) if _is_shared(x) else torch.zeros_like(x), True)


@implements(aten.expand_as.default)
def _expand_as(x: Any, other: Any) -> Any:
    return x.expand(other.shape)


@implements(aten.is_same_size.default)
def _is_same_size(a: Any, b: Any) -> bool:
    return tuple(a.shape) == tuple(b.shape)


def _dispatch(func: Any, types: Any, args: Any, kwargs: Any) -> Any:
    impl = _IMPLS.get(func)
    if impl is None:
        raise UnsupportedOperationError(
            f"{func} is not supported on shared tensors (supported: arithmetic, matmul/linear, conv2d, pooling, "
            "comparisons, relu, max/argmax, shape ops; see docs/ENCRYPTED_TENSORS.md). Use .get() to compute in plaintext"
        )
    return impl(*args, **kwargs)


def _torch_dispatch(cls: Any, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
    if _validation._STATE["on"] and func in _IMPLS:  # debugging mode: reveals everything (validation_mode.py)
        return _validation.checked(func, lambda *a, **k: _dispatch(func, types, a, k), args, kwargs or {})
    return _dispatch(func, types, args, kwargs or {})


SharedTensor.__torch_dispatch__ = classmethod(_torch_dispatch)  # type: ignore[assignment]


def _operator(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def op(self: Any, other: Any) -> Any:
        return fn(self, other)

    return op


# torch.Tensor's arithmetic operators turn any TypeError raised below them into
# NotImplemented, so `x / 2` on an integer shared tensor said "unsupported operand type(s)"
# instead of why (it must be fix_prec()'d first), and `x // 2` hid that floor division is
# not supported. The operators of shared tensors call the torch functions directly, which
# let the error through.
for _name, _fn in {
    "__add__": torch.add,
    "__radd__": torch.add,
    "__sub__": torch.sub,
    "__rsub__": torch.rsub,
    "__mul__": torch.mul,
    "__rmul__": torch.mul,
    "__truediv__": torch.div,
    "__floordiv__": torch.floor_divide,
    "__mod__": torch.remainder,
    "__matmul__": torch.matmul,
    "__rmatmul__": lambda self, other: torch.matmul(other, self),
    "__pow__": torch.pow,
}.items():
    setattr(SharedTensor, _name, _operator(_fn))

