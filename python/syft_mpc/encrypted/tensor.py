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

This module is the core the op families build on: the share handles, the tensor, sharing,
operand handling (``run``, ``lift``, ``rescale``, ...), the op table (``implements``) and the
dispatch. The op families fill the table, each importing only the ones before it:
:mod:`~syft_mpc.encrypted.arithmetic`, :mod:`~syft_mpc.encrypted.comparisons`,
:mod:`~syft_mpc.encrypted.approx`, :mod:`~syft_mpc.encrypted.nn_ops` and
:mod:`~syft_mpc.encrypted.optim_ops` (``syft_mpc.encrypted`` imports them all).

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
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch.utils._pytree import tree_leaves

from syft_mpc import _native
from syft_mpc.encrypted import validation
from syft_mpc.encrypted.fixed_precision import FixedPrecisionTensor, outside_inference_mode
from syft_mpc.errors import UnsupportedOperationError
from syft_mpc.fixed_point import DEFAULT_BASE, DEFAULT_PRECISION, decode, encode, from_ring, scale_of, to_ring
from syft_mpc.mpc_session.driver import Group, group_of
from syft_mpc.mpc_session.ops import infer_shapes
from syft_mpc.remote.messages import Fetch, Store, new_id
from syft_mpc.remote.serde import ObjRef
from syft_mpc.remote.workers import BaseWorker, local_worker

__all__ = [
    "HIGH_PRECISION_SCALE",
    "MAX_PRODUCT_SCALE",
    "OP_TABLE",
    "ShareCell",
    "ShareHandle",
    "SharedTensor",
    "VIEW_OPS",
    "ViewCell",
    "ViewStep",
    "aligned",
    "check_writable",
    "check_writable_cell",
    "decomposition_of",
    "encode_at_scale",
    "encode_public",
    "fine_encoding",
    "implements",
    "is_shared",
    "lift",
    "lift_at",
    "precision_of",
    "public_value",
    "rescale",
    "run",
    "run_many",
    "share_encoded",
    "shared_operand",
    "sharing_group",
    "truncate",
    "truncation_kwargs",
    "work_scale",
]


# ============================================================================ share handles


class ShareHandle:
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


class ShareCell:
    """What a SharedTensor and its detached aliases point to (in-place ops replace ``shares``)."""

    __slots__ = ("shares", "pos_mask", "aux")

    def __init__(self, shares: ShareHandle, pos_mask: "ShareHandle | None" = None) -> None:
        self.shares = shares
        self.pos_mask = pos_mask  # shares of 1{x >= 0} (unscaled), kept by relu for its backward
        self.aux: "ShareHandle | None" = None  # kept for a backward: log_softmax's softmax, max_pool2d's one-hot argmax

    def state(self) -> tuple[Any, ...]:
        """What an in-place store changes (``restore`` puts it back if the op that made the new
        shares fails)."""
        return (self.shares, self.pos_mask, self.aux)

    def restore(self, state: tuple[Any, ...]) -> None:
        self.shares, self.pos_mask, self.aux = state


ViewStep = tuple[Any, tuple[Any, ...], dict[str, Any], "int | None"]
"""One view op from a view's base: (aten op, arguments after the tensor, keyword arguments,
which output of a multi-output op such as ``split``/``unbind``, or None)."""


class ViewCell(ShareCell):
    """The cell of a view of a shared tensor (``x[0]``, ``x[:, 1:]``, ``x.view(-1)``, ``x.t()``, ...).

    A view aliases the tensor it views, as in torch: it remembers its *root* (the cell of the
    tensor at the start of its chain of views; a view of a view has the same root) and the view
    ops from there (``steps``). Shares are never written in place (an in-place op gives the cell
    new shares), so aliasing is kept at the cell level, in two directions:

    * reading a view whose root got new shares (an in-place op on the base or on another view of
      it) takes the view's elements from them again (one ``aten.take`` on every holder);
    * an in-place op on the view writes the view's new shares into the root's
      (``aten.put``: the root's shares with the view's positions replaced; local, linear).

    Both address the root's elements through ``index()``: the view ops replayed on
    ``arange(root.numel())``, public (it depends on shapes only). A view that holds one root
    element at several positions (``expand``, an overlapping ``unfold``) can be read but not
    written into, as in torch.
    """

    __slots__ = ("root", "steps", "_own", "_of", "_index", "_distinct", "_pos_mask", "_aux")

    def __init__(self, root: ShareCell, steps: tuple[ViewStep, ...], shares: ShareHandle) -> None:
        assert not isinstance(root, ViewCell)
        self.root, self.steps = root, steps
        # the view's shares, and (weakly: replaced ones are deleted on the holders) the root's they came from
        self._own, self._of = shares, weakref.ref(root.shares)
        self._index: "torch.Tensor | None" = None
        self._distinct: "bool | None" = None
        self._pos_mask: "ShareHandle | None" = None
        self._aux: "ShareHandle | None" = None

    def _stale(self) -> bool:
        return self._of() is not self.root.shares

    @property
    def shares(self) -> ShareHandle:
        of = self.root.shares
        if self._of() is not of:
            self._own = _take(of, self.index())
            self._of = weakref.ref(of)
            self._pos_mask = self._aux = None
        return self._own

    @shares.setter
    def shares(self, new: ShareHandle) -> None:
        if tuple(new.shape) != tuple(self._own.shape):
            raise ValueError(f"internal: shares of shape {tuple(new.shape)} stored into a view of shape {tuple(self._own.shape)}")
        check_writable_cell(self)
        root = self.root
        root.shares = _put(root.shares, self.index(), new)
        root.pos_mask = root.aux = None
        self._own, self._of = new, weakref.ref(root.shares)
        self._pos_mask = self._aux = None

    # what ops keep for a backward belongs to the view's current values: forgotten once the root changed
    @property
    def pos_mask(self) -> "ShareHandle | None":
        return None if self._stale() else self._pos_mask

    @pos_mask.setter
    def pos_mask(self, v: "ShareHandle | None") -> None:
        self._pos_mask = v

    @property
    def aux(self) -> "ShareHandle | None":
        return None if self._stale() else self._aux

    @aux.setter
    def aux(self, v: "ShareHandle | None") -> None:
        self._aux = v

    def index(self) -> torch.Tensor:
        """The flat positions in the root of the view's elements, in the view's shape (int64, public)."""
        if self._index is None:
            shape = tuple(self.root.shares.shape)
            cur = torch.arange(math.prod(shape), dtype=torch.int64).reshape(shape)
            for func, args, kwargs, out in self.steps:
                # a wrapper reports contiguous strides, so torch asked for a view where the index (a
                # real strided tensor) may need a reshape: the same elements either way
                r = (_REPLAY.get(func) or func)(cur, *args, **kwargs)
                cur = r[out] if out is not None else r
            self._index = cur.contiguous()
        return self._index

    def writable(self) -> bool:
        """Whether every element of the view is a different element of the root."""
        if self._distinct is None:
            idx = self.index()
            self._distinct = bool(torch.unique(idx).numel() == idx.numel())
        return self._distinct

    def state(self) -> tuple[Any, ...]:
        root = self.root
        return (self._own, self._of, self._pos_mask, self._aux, root.shares, root.pos_mask, root.aux)

    def restore(self, state: tuple[Any, ...]) -> None:
        self._own, self._of, self._pos_mask, self._aux, self.root.shares, self.root.pos_mask, self.root.aux = state


def check_writable_cell(cell: ShareCell) -> None:
    """Raises UnsupportedOperationError if an in-place op cannot store into ``cell`` (a view
    whose elements are not distinct elements of the tensor it views)."""
    if isinstance(cell, ViewCell) and not cell.writable():
        kinds = sorted({str(f).split(".")[1] for f, *_ in cell.steps if f in _OVERLAPPING_VIEWS})
        raise UnsupportedOperationError(
            f"an in-place op (or copy_) into a view of a shared tensor made by {'/'.join(kinds) or 'a view op'} "
            "that shows one element of the viewed tensor at several positions is not supported (torch refuses "
            "it too: 'more than one element of the written-to tensor refers to a single memory location'). "
            "clone() the view first, or write into the viewed tensor itself"
        )


def _carrier(h: ShareHandle) -> "SharedTensor":
    """A throwaway tensor on shares ``h`` (what ``run`` takes; a view's take/put need no scale)."""
    return SharedTensor(ShareCell(h), 1, DEFAULT_BASE, DEFAULT_PRECISION, torch.int64)


def _take(root: ShareHandle, index: torch.Tensor) -> ShareHandle:
    c = _carrier(root)
    return run(c, "aten.take", c, index).cell.shares


def _put(root: ShareHandle, index: torch.Tensor, new: ShareHandle) -> ShareHandle:
    c = _carrier(root)
    return run(c, "aten.put", c, index, _carrier(new), False).cell.shares


class SharedTensor(torch.Tensor):
    """A tensor whose values are additively shared among workers (see the module docstring).

    Attributes: ``group`` (share holders and crypto provider), ``scale`` (the integer
    encoding 1.0; 1 for integer tensors), ``base`` and ``precision_fractional``.
    ``.get()`` reconstructs (a FixedPrecisionTensor, or an integer tensor);
    ``.decrypt()`` gives the float tensor directly.
    """

    _cell: ShareCell
    scale: int
    base: int
    precision_fractional: int
    _from_pointer: bool = False  # made by sharing a remote tensor: .get() keeps it shared (see get)

    @staticmethod
    def __new__(
        cls, cell: ShareCell, scale: int, base: int, precision: int, dtype: torch.dtype, requires_grad: bool = False,
        strides: "Sequence[int] | None" = None,
    ) -> "SharedTensor":
        # strides: contiguous, but for an expanded view (see _as_views)
        with outside_inference_mode():
            r = torch.Tensor._make_wrapper_subclass(cls, cell.shares.shape, strides=strides, dtype=dtype, device=torch.device("cpu"), requires_grad=requires_grad)
        r._cell = cell
        r.scale = scale
        r.base = base
        r.precision_fractional = precision
        return r

    # torch's stubs type the base's as a classmethod; the disabled impl is a builtin, called without cls
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

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
        return cls(ShareCell(ShareHandle(group, share_id, shape)), scale, base, precision, dtype, requires_grad)

    if TYPE_CHECKING:
        # The dispatch gives shared results for these views of a shared tensor (torch's stubs say Tensor).
        def unbind(self, *args: Any, **kwargs: Any) -> tuple[SharedTensor, ...]: ...
        def select(self, *args: Any, **kwargs: Any) -> SharedTensor: ...
        def narrow(self, *args: Any, **kwargs: Any) -> SharedTensor: ...
        def squeeze(self, *args: Any, **kwargs: Any) -> SharedTensor: ...
        def unsqueeze(self, *args: Any, **kwargs: Any) -> SharedTensor: ...
        def reshape(self, *args: Any, **kwargs: Any) -> SharedTensor: ...
        def permute(self, *args: Any, **kwargs: Any) -> SharedTensor: ...
        def expand(self, *args: Any, **kwargs: Any) -> SharedTensor: ...

    @property
    def cell(self) -> ShareCell:
        """The shares this tensor points to, with what ops keep for a backward pass (shared with its
        detached aliases; an in-place op replaces the cell's shares)."""
        return self._cell

    @cell.setter
    def cell(self, cell: ShareCell) -> None:
        """Points this tensor (not its aliases) at other shares: an in-place metadata change
        such as ``transpose_`` makes it a view of the cell it had."""
        self._cell = cell

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
        total: "torch.Tensor | None" = None
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
    # group_of raises its own error for a missing crypto provider (its annotation leaves None out)
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


def is_shared(v: Any) -> bool:
    return isinstance(v, SharedTensor)


def public_value(v: Any) -> Any:
    """A public operand as a plain tensor or number (FixedPrecisionTensors are decoded)."""
    if isinstance(v, FixedPrecisionTensor):
        return v._value()
    return v


def shared_operand(args: Any, same_scale: bool = True) -> SharedTensor:
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


def precision_of(base: int, scale: int) -> int:
    p = round(math.log(scale, base))
    if base**p != scale:
        raise ValueError(f"scale {scale} is not a power of base {base}")
    return p


def _wrap(like: SharedTensor, ids: list[int], shapes: list[tuple[int, ...]], scale: "int | None" = None, dtype: "torch.dtype | None" = None) -> list[SharedTensor]:
    g = like.group
    sc = like.scale if scale is None else scale
    # a fixed-point result at another scale than ``like`` (a product kept at higher precision, a
    # rescaled tensor) gets the matching precision; integer (scale 1) results keep ``like``'s
    prec = like.precision_fractional if sc in (1, like.scale) else precision_of(like.base, sc)
    return [SharedTensor(ShareCell(ShareHandle(g, i, s)), sc, like.base, prec, dtype or like.dtype) for i, s in zip(ids, shapes)]


def run_many(like: SharedTensor, op: str, *args: Any, n_out: int, scale: "int | None" = None, dtype: "torch.dtype | None" = None, **kwargs: Any) -> list[SharedTensor]:
    """Runs MPC op ``op`` (``mpc_session.ops``) on the holders of ``like``: its ``n_out`` results,
    shared tensors like ``like`` (at ``scale`` and of ``dtype`` where given)."""
    key: "list[Any] | None" = [op, n_out]
    enc_args = tuple([_encode_arg(v, key) for v in args])
    enc_kwargs = {k: _encode_arg(v, key) for k, v in kwargs.items()}
    shapes = _result_shapes(op, args, kwargs, n_out, key)
    ids, shapes = like.group.run(op, enc_args, enc_kwargs, n_out=n_out, shapes=shapes)
    return _wrap(like, ids, shapes, scale, dtype)


def run(like: SharedTensor, op: str, *args: Any, scale: "int | None" = None, dtype: "torch.dtype | None" = None, **kwargs: Any) -> SharedTensor:
    """Runs MPC op ``op`` with one result (see ``run_many``)."""
    return run_many(like, op, *args, n_out=1, scale=scale, dtype=dtype, **kwargs)[0]


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


def encode_public(v: Any, like: SharedTensor) -> tuple[torch.Tensor, bool]:
    """A public operand as an int64 ring tensor at ``like``'s scale; also whether it is integral
    (an integral public factor multiplies shares exactly, with no truncation)."""
    v = public_value(v)
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


def encode_at_scale(v: Any, like: SharedTensor) -> torch.Tensor:
    """A public value as int64 ring elements at ``like``'s scale (an integral one multiplied up by
    the scale): what adds to the shares of ``like``."""
    c, integral = encode_public(v, like)
    if integral and like.scale != 1:
        c = c * like.scale
    return c


def lift(v: Any, like: SharedTensor) -> SharedTensor:
    """A public value as a (trivial) sharing at ``like``'s scale, without communication."""
    if isinstance(v, SharedTensor):
        return v
    return run(like, "from_public", encode_at_scale(v, like))


def fine_encoding(c: Any, like: SharedTensor) -> tuple[torch.Tensor, int]:
    """A public float factor encoded with ~20 significant bits (at least the tensor's precision), and its divisor.

    Multiplying by a small public constant (1/n in a mean, a learning rate) at 16 fractional
    bits would cost up to 2^-17 / |c| of relative error; here it costs about 2^-20.
    """
    cv = torch.as_tensor(public_value(c), dtype=torch.float64)
    if like.base != 2:
        return encode(cv, like.base, like.precision_fractional), like.scale
    m = float(cv.abs().max()) if cv.numel() else 0.0
    bits = min(like.precision_fractional, DEFAULT_PRECISION)  # a high-precision tensor needs no more: |x·c| must fit
    if m > 0:
        bits = min(40, max(bits, 20 - math.ceil(math.log2(m))))
    return torch.round(cv * float(1 << bits)).to(torch.int64), 1 << bits


def truncation_kwargs(like: SharedTensor) -> dict[str, Any]:
    return {"divisor": like.scale, "local": like.group.truncation == "local"}


def truncate(x: SharedTensor) -> SharedTensor:
    if x.scale == 1:
        return x
    return run(x, "truncate", x, **truncation_kwargs(x))


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
    # Up from scale 1 is exact too: an integer n at scale s is n·s, its fixed-point encoding
    # (how argmax indices and comparison bits meet fixed-point tensors, as in PySyft).
    if hi % lo or scale == 1:
        raise ValueError(f"cannot rescale a shared tensor from scale {x.scale} to {scale}")
    out: SharedTensor
    if scale > x.scale:
        out = run(x, "mul_public", x, torch.tensor(scale // x.scale, dtype=torch.int64), scale=scale)
    else:
        out = run(x, "truncate", x, divisor=x.scale // scale, local=x.group.truncation == "local", scale=scale)
    return out


def aligned(a: SharedTensor, b: SharedTensor) -> tuple[SharedTensor, SharedTensor]:
    """Both at the larger of their scales (exact: the lower one is multiplied up; an integer
    tensor, scale 1, is encoded at the other's fixed point)."""
    shared_operand((a, b), same_scale=False)
    s = max(a.scale, b.scale)
    return _up(a, s, b), _up(b, s, a)


def _up(x: SharedTensor, scale: int, other: SharedTensor) -> SharedTensor:
    if x.scale == 1 and scale != 1:  # an integer sharing becomes a fixed-point one, of the other's dtype
        return run(x, "mul_public", x, torch.tensor(scale, dtype=torch.int64), scale=scale, dtype=other.dtype)
    return rescale(x, scale)


def lift_at(v: torch.Tensor, like: SharedTensor, precision: int) -> SharedTensor:
    """Public float tensor ``v`` as a (trivial) sharing among ``like``'s holders at ``precision``, without communication."""
    return run(like, "from_public", encode(v, like.base, precision), scale=scale_of(like.base, precision))


# ============================================================================ op table and dispatch

OP_TABLE: dict[Any, Callable[..., Any]] = {}
"""aten op (an OpOverload) -> its implementation on shared tensors; filled by the op families."""


def implements(*ops: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``fn`` implements each of the aten ``ops`` on shared tensors."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        for op in ops:
            OP_TABLE[op] = fn
        return fn

    return deco


# ------------------------------------------------------------------ decomposition fallback
# An aten op with no entry in OP_TABLE is run through torch's own decomposition of it into
# simpler aten ops (torch._decomp's table, the one torch.compile uses; CompositeImplicitAutograd
# ops through ``OpOverload.decompose``), applied to the shared tensors as they are: every op the
# decomposition calls dispatches here again, so it reaches the implemented primitives recursively.
# The table is read once, at the first miss (importing it costs ~0.3 s).
_DECOMPOSITIONS: "dict[Any, Callable[..., Any]] | None" = None
_DECOMPOSING = threading.local()  # .ops: the ops being decomposed on this thread, innermost last (a cycle is refused, not looped)
_PRIMS_AS_ATEN: dict[str, Callable[..., Any]] = {
    "prims.where.default": lambda c, a, b: torch.ops.aten.where.self(c, *(v if isinstance(v, torch.Tensor) else torch.tensor(v) for v in (a, b))),
    "prims.expm1.default": torch.ops.aten.expm1.default,
    "prims.amax.default": lambda x, dims, output_dtype=None: torch.ops.aten.amax.default(x, dims or []),
    "prims.amin.default": lambda x, dims, output_dtype=None: torch.ops.aten.amin.default(x, dims or []),
}  # ops being decomposed, innermost last (a cycle is refused, not looped)


def decomposition_of(func: Any) -> "Callable[..., Any] | None":
    """Torch's decomposition of aten op ``func`` into simpler aten ops, or None."""
    global _DECOMPOSITIONS
    if _DECOMPOSITIONS is None:
        from torch._decomp import decomposition_table

        _DECOMPOSITIONS = dict(decomposition_table)
    fn = _DECOMPOSITIONS.get(func)
    if fn is not None:
        return fn
    same = _PRIMS_AS_ATEN.get(str(func))
    if same is not None:  # a decomposition written with torch's primitives (torch._refs)
        return same
    if isinstance(func, torch._ops.OpOverload) and func.has_kernel_for_dispatch_key(torch._C.DispatchKey.CompositeImplicitAutograd):
        return func.decompose
    return None


def _unsupported(func: Any, why: str = "") -> UnsupportedOperationError:
    return UnsupportedOperationError(
        f"{func} is not supported on shared tensors{why} (supported: arithmetic, matmul/linear, convolutions, pooling, "
        "comparisons, activations, softmax, normalization, attention, embeddings, shape ops, and every op torch "
        "decomposes into these; see docs/ENCRYPTED_TENSORS.md). Use .get() to compute in plaintext, or implement it "
        "with syft_mpc.encrypted.tensor.implements"
    )


# ------------------------------------------------------------------ views
_aten = torch.ops.aten
VIEW_OPS: frozenset[Any] = frozenset(
    {
        _aten.view.default, _aten.reshape.default, _aten.flatten.using_ints, _aten.unsqueeze.default,
        _aten.squeeze.default, _aten.squeeze.dim, _aten.squeeze.dims, _aten.permute.default, _aten.transpose.int,
        _aten.t.default, _aten.movedim.int, _aten.select.int, _aten.slice.Tensor, _aten.narrow.default,
        _aten.diagonal.default, _aten.split.Tensor, _aten.split_with_sizes.default, _aten.unbind.int,
        _aten.expand.default, _aten.unfold.default,
    }
)
"""The aten ops whose results alias their input in torch (views): the dispatch gives their shared
results a :class:`ViewCell`, so that in-place ops on them write through. ``detach``/``alias``
keep the input's own cell; copies (``clone``, advanced indexing, ``index_select``) get new ones."""
_REPLAY = {_aten.view.default: _aten.reshape.default}
_OVERLAPPING_VIEWS = frozenset({_aten.expand.default, _aten.unfold.default})


def _as_views(out: Any, x: Any, step: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> Any:
    """Makes the shared results of view op ``step`` on ``x`` views of ``x``'s root; returns ``out``
    (an expanded view as a new wrapper, with torch's strides: see below)."""
    if not isinstance(x, SharedTensor):
        return out
    parent = x._cell
    root, steps = (parent.root, parent.steps) if isinstance(parent, ViewCell) else (parent, ())
    multi = isinstance(out, (list, tuple))
    for i, o in enumerate(out if multi else (out,)):
        if isinstance(o, SharedTensor) and o._cell is not parent and not isinstance(o._cell, ViewCell):
            o._cell = ViewCell(root, (*steps, (*step, i if multi else None)), o._cell.shares)
    if step[0] is _aten.expand.default and isinstance(out, SharedTensor):
        # An expanded view reports its stride-0 dimensions, as in torch, so that torch treats it as
        # one: autograd's AccumulateGrad then copies such a gradient (sum's backward is an expand)
        # instead of keeping it as .grad, where the next accumulation would write into it.
        strides = torch.empty_strided(x.shape, x.stride(), device="meta").expand(*step[1], **step[2]).stride()
        if 0 in strides and math.prod(out.shape) > 1:
            out = SharedTensor(out._cell, out.scale, out.base, out.precision_fractional, out.dtype, strides=strides)
    return out


def check_writable(t: Any, *operands: Any) -> None:
    """Raises UnsupportedOperationError if an in-place op with ``operands`` cannot store into
    shared tensor ``t``: a view showing one element of its base at several positions (``expand``,
    overlapping ``unfold``), or a view that autograd would have to differentiate through."""
    if not isinstance(t, SharedTensor):
        return
    check_writable_cell(t._cell)
    # torch differentiates an in-place op on a view (CopySlices) by as_strided on the base's
    # gradient, with the view's strides and offset, which a wrapper of shares does not carry
    # (it reports contiguous strides): refused here, before any gradient could come out wrong
    if torch.is_grad_enabled() and t._is_view() and any(isinstance(v, torch.Tensor) and v.requires_grad for v in tree_leaves((t, operands))):
        raise UnsupportedOperationError(
            "an in-place op on a view of a shared tensor that requires grad (or with an operand that does) is "
            "not supported under autograd: torch would differentiate it through as_strided, which shared "
            "tensors do not support. Compute it out of place (torch.cat, torch.stack, torch.where, "
            "index_put, slice_scatter), or under torch.no_grad() if no gradient is needed"
        )


def _dispatch(func: Any, types: Any, args: Any, kwargs: Any) -> Any:
    impl = OP_TABLE.get(func)
    if impl is not None:
        out = impl(*args, **kwargs)
        if func in VIEW_OPS:
            out = _as_views(out, args[0], (func, tuple(args[1:]), dict(kwargs)))
        return out
    _decomposing: list[Any] = _DECOMPOSING.__dict__.setdefault("ops", [])
    decomposed = decomposition_of(func) if func not in _decomposing else None
    if decomposed is None:
        raise _unsupported(func, " and torch has no decomposition of it" if func not in _decomposing else "")
    _decomposing.append(func)
    try:
        return decomposed(*args, **kwargs)
    except UnsupportedOperationError as e:
        if len(_decomposing) > 1:  # the outermost decomposed op names itself
            raise
        raise UnsupportedOperationError(f"{e} (decomposed from {func}, which torch reduces to it)") from None
    finally:
        _decomposing.pop()


def _plaintext(v: Any) -> Any:
    """For validation mode: a shared or fixed-point value reconstructed and decoded (float64;
    an integer tensor as it is), anything else unchanged."""
    if isinstance(v, SharedTensor):
        enc = v._reconstruct()
        if v.scale == 1:
            return enc
        return decode(enc, v.base, v.precision_fractional, torch.float64)
    if isinstance(v, FixedPrecisionTensor):
        return v._value()
    return v


def _torch_dispatch(cls: Any, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
    if validation.validation_enabled() and func in OP_TABLE:  # debugging mode: reveals everything (validation.py)
        return validation.checked(func, lambda *a, **k: _dispatch(func, types, a, k), args, kwargs or {}, _plaintext)
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
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
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
}
for _name, _fn in _OPERATORS.items():
    setattr(SharedTensor, _name, _operator(_fn))


