"""Pointer tensors: local handles to tensors stored on other workers.

A :class:`PointerTensor` names an object ``id_at_location`` in the object store of
worker ``location``; its ``owner`` is the worker that holds the handle (the driver,
``sy.local_worker``, or another worker in a pointer chain). Torch operations on
pointers run at their location: ``__torch_function__`` (a classmethod) turns
``torch.add(x, y)``, ``F.relu(x)``, ``x.sum()`` or ``x + y`` into a
:class:`~syft_mpc.remote.messages.Command` for an operation in :mod:`syft_mpc.remote.allowlist`.
The driver picks the result's id up front; the reply carries the result's shape and
dtype so ``ptr.shape`` never needs another round trip.

:class:`RemoteParameter` is what an ``nn.Parameter`` becomes when its module is sent
(``model.send(bob)``): the same Python object, its class switched in place, its data
replaced by a stride-0 placeholder with the right shape and dtype, and every torch
operation on it forwarded to the pointer it wraps. That is how an optimizer created
before ``model.send(bob)`` keeps working: ``opt.step()`` runs torch's own update code,
and each ``param.add_(grad, ...)`` it issues runs on bob.

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob = sy.VirtualWorker(hook, id="bob")
    >>> x = torch.tensor([1.0, 2.0, 3.0]).send(bob)
    >>> y = (x * 2 + 1).sum()
    >>> y.shape, y.location.id
    (torch.Size([]), 'bob')
    >>> y.get()
    tensor(15.)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
import torch.nn as nn

from syft_mpc.remote import allowlist
from syft_mpc.errors import LocationError, ObjectNotFoundError, UnsupportedOperationError
from syft_mpc.remote.messages import Command, Fetch, GetAttr, Move, RemoteGet, SetAttr, Store, new_id
from syft_mpc.remote.serde import ObjRef, PointerDesc

if TYPE_CHECKING:
    from syft_mpc.remote.workers import BaseWorker

__all__ = ["PointerTensor", "RemoteParameter", "remote_call"]


class PointerTensor:
    """A handle to a tensor (or to another pointer) stored on a remote worker.

    Made by ``tensor.send(worker)`` (after ``sy.TorchHook(torch)``) and by any torch
    operation on pointers. Attributes: ``location`` (the worker holding the object),
    ``id_at_location`` (its id there), ``owner`` (the worker holding this handle),
    ``id`` (this handle's own id), ``shape`` and ``dtype`` (known locally).

    When the last reference to an owning pointer goes away, the object is deleted at
    its location (the deletion rides on the next message to that worker, or on
    ``owner.flush_gc()``). ``.get()`` and ``.move()`` transfer ownership, so nothing
    is deleted twice.

        >>> import torch, syft_mpc as sy
        >>> hook = sy.TorchHook(torch)
        >>> bob = sy.VirtualWorker(hook, id="bob")
        >>> ptr = torch.tensor([1, 2, 3]).send(bob)
        >>> ptr.location is bob, ptr.owner is sy.local_worker, ptr.shape
        (True, True, torch.Size([3]))
        >>> ptr.id_at_location in bob._objects
        True
        >>> (ptr + ptr).get()
        tensor([2, 4, 6])
    """

    __slots__ = (
        "owner",
        "location",
        "id",
        "id_at_location",
        "_shape",
        "_dtype",
        "_requires_grad",
        "garbage_collect_data",
        "_consumed",
        "tags",
        "description",
        "__weakref__",
    )

    def __init__(
        self,
        owner: "BaseWorker",
        location: "BaseWorker",
        id_at_location: int,
        shape: "torch.Size | None" = None,
        dtype: torch.dtype = torch.float32,
        requires_grad: bool = False,
        garbage_collect_data: bool = True,
        id: "int | None" = None,
    ) -> None:
        self.owner = owner
        self.location = location
        self.id_at_location = id_at_location
        self.id = new_id() if id is None else id
        self._shape = shape
        self._dtype = dtype
        self._requires_grad = requires_grad
        self.garbage_collect_data = garbage_collect_data
        self._consumed: "str | None" = None
        self.tags: "set[str] | None" = None  # what worker.search() found it by
        self.description: "str | None" = None

    # ------------------------------------------------------------------ metadata

    @property
    def shape(self) -> torch.Size:
        """The remote tensor's shape (asked from the location only if the reply did not say)."""
        if self._shape is None:
            size = self._call("Tensor.size", (self,), {})
            self._shape = torch.Size(size)
        return self._shape

    @property
    def dtype(self) -> torch.dtype:
        """The remote tensor's dtype."""
        return self._dtype

    @property
    def requires_grad(self) -> bool:
        """Whether the remote tensor requires grad (as of the last reply about it)."""
        return self._requires_grad

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def is_sparse(self) -> bool:
        """Always False: only dense tensors are sent."""
        return False

    def size(self, dim: "int | None" = None) -> "torch.Size | int":
        """Like ``Tensor.size``, answered locally."""
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        """Like ``Tensor.dim``, answered locally."""
        return len(self.shape)

    def numel(self) -> int:
        """Number of elements, answered locally."""
        return self.shape.numel()

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return int(self.shape[0])

    def __repr__(self) -> str:
        out = f"(Wrapper)>[PointerTensor | {self.owner.id}:{self.id} -> {self.location.id}:{self.id_at_location}]"
        if self.tags:
            out += "\n\tTags: " + " ".join(sorted(self.tags))
        if self.tags or self.description is not None:
            out += f"\n\tShape: {self._shape}"
        if self.description is not None:
            first = self.description.strip().split("\n")[0]
            out += f"\n\tDescription: {first[:80]}{'...' if len(self.description.strip()) > len(first[:80]) else ''}"
        return out

    __str__ = __repr__

    def __bool__(self) -> bool:
        raise TypeError(
            f"the value of {self!r} is on worker {self.location.id}; use .get() to bring it here first"
        )

    def __iter__(self) -> Any:
        raise TypeError(f"cannot iterate over {self!r}: index it (ptr[i]) or .get() it")

    __hash__ = object.__hash__

    # ------------------------------------------------------------------ ownership

    def _check_alive(self) -> None:
        if self._consumed is not None:
            raise ObjectNotFoundError(
                f"tensor {self.id_at_location} is not on worker {self.location.id} ({self._consumed}); "
                "use the pointer or tensor that call returned"
            )

    def _consume(self, why: str) -> None:
        self.garbage_collect_data = False
        self._consumed = why

    def __del__(self) -> None:
        try:
            if self.garbage_collect_data and self._consumed is None:
                self.owner._queue_delete(self.location, self.id_at_location)
        except Exception:  # interpreter shutdown: nothing left to clean up
            pass

    def _desc(self) -> PointerDesc:
        return PointerDesc(self.location.id, self.id_at_location, self._shape, self._dtype, self._requires_grad)

    def _send(self, body: Any) -> Any:
        self._check_alive()
        return self.owner._send(self.location, body)

    # ------------------------------------------------------------------ the pointer API

    def get(self) -> "torch.Tensor | PointerTensor":
        """Brings the object here and removes it from its location.

        For a pointer to a pointer (``x.send(bob).send(alice)``) this returns the inner
        pointer (``.get().get()`` unwinds the chain).

            >>> import torch, syft_mpc as sy
            >>> hook = sy.TorchHook(torch)
            >>> bob = sy.VirtualWorker(hook, id="bob")
            >>> x = torch.tensor([1, 2]).send(bob)
            >>> x.get(), len(bob._objects)
            (tensor([1, 2]), 0)
        """
        value = self._send(Fetch(self.id_at_location, True))
        self._consume("it was retrieved with .get()")
        if isinstance(value, PointerDesc):
            value = self.owner._pointer_from_desc(value)
        if self.tags or self.description is not None:  # a searched tensor keeps what it was found by
            value.tags = set(self.tags or ())
            value.description = self.description
        return value  # type: ignore[no-any-return]

    def send(self, worker: "BaseWorker") -> "PointerTensor":
        """Sends this pointer to ``worker``: it now holds a pointer to the data, which does not move.

        Returns a pointer to ``worker``'s pointer. This pointer stays usable but no
        longer owns the data (``worker``'s pointer does).
        """
        self._check_alive()
        nid = new_id()
        self.owner._send(worker, Store(nid, self._desc()))
        self.garbage_collect_data = False
        return PointerTensor(self.owner, worker, nid, self._shape, self._dtype, self._requires_grad)

    def move(self, worker: "BaseWorker") -> "PointerTensor":
        """Moves the data from its location straight to ``worker``; the old location keeps nothing.

            >>> import torch, syft_mpc as sy
            >>> hook = sy.TorchHook(torch)
            >>> bob, alice = sy.VirtualWorker(hook, id="bob"), sy.VirtualWorker(hook, id="alice")
            >>> x = torch.tensor([1, 2]).send(bob).move(alice)
            >>> x.location.id, len(bob._objects), len(alice._objects)
            ('alice', 0, 1)
        """
        if worker == self.location:
            self._check_alive()
            return self
        nid = new_id()
        self._send(Move(self.id_at_location, worker.id, nid, False))
        self._consume(f"it was moved to {worker.id}")
        return PointerTensor(self.owner, worker, nid, self._shape, self._dtype, self._requires_grad)

    def remote_send(self, worker: "BaseWorker") -> "PointerTensor":
        """Sends the data from its location to ``worker``; the location keeps a pointer to it.

        This pointer (returned) now points at that pointer: a chain me -> location -> worker.
        """
        self._send(Move(self.id_at_location, worker.id, new_id(), True))
        return self

    def remote_get(self) -> "PointerTensor":
        """For a pointer to a pointer: the location fetches the data to itself. Returns this pointer."""
        self._send(RemoteGet(self.id_at_location))
        return self

    def copy(self) -> "PointerTensor":
        """A new remote tensor with the same values (detached, same ``requires_grad``), at the same location."""
        out = self._call("op.copy", (self,), {})
        assert isinstance(out, PointerTensor)
        return out

    def __deepcopy__(self, memo: dict[int, Any]) -> "PointerTensor":
        return self.copy()

    @property
    def grad(self) -> "PointerTensor | None":
        """A pointer to the remote tensor's ``.grad`` (None if it has none)."""
        grad: "PointerTensor | None" = self._getattr("grad")
        return grad

    @grad.setter
    def grad(self, value: "PointerTensor | None") -> None:
        self._setattr("grad", value)

    @property
    def data(self) -> "PointerTensor":
        """A pointer to the remote tensor's ``.data`` (shares its storage, detached)."""
        data: PointerTensor = self._getattr("data")
        return data

    @data.setter
    def data(self, value: "PointerTensor") -> None:
        self._setattr("data", value)

    @property
    def is_leaf(self) -> bool:
        """Whether the remote tensor is an autograd leaf (asked from the location)."""
        return bool(self._getattr("is_leaf"))

    def _getattr(self, name: str) -> Any:
        rid = new_id()
        value = self._send(GetAttr(self.id_at_location, name, rid))
        return _materialize(value, self.owner, self.location, {self.id_at_location: self})

    def _setattr(self, name: str, value: Any) -> None:
        if isinstance(value, (PointerTensor, RemoteParameter)):
            ptr = _as_pointer(value)
            if ptr.location != self.location:
                raise LocationError(
                    f"cannot set .{name} of a tensor on {self.location.id} to a tensor on {ptr.location.id}"
                )
            ptr._check_alive()
            value = ObjRef(ptr.id_at_location)
        elif isinstance(value, torch.Tensor):
            raise LocationError(
                f"cannot set .{name} of a tensor on {self.location.id} to a local tensor; "
                f"send it first with .send({self.location.id})"
            )
        self._send(SetAttr(self.id_at_location, name, value))
        if name == "requires_grad":
            self._requires_grad = bool(value)

    # ------------------------------------------------------------------ torch integration

    def _call(self, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return remote_call(op, args, kwargs)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if not name.startswith("_") and allowlist.is_method(name):
            return functools.partial(_method_call, "Tensor." + name, self)
        raise AttributeError(
            f"'PointerTensor' has no attribute {name!r}"
            + ("" if name.startswith("_") else f": Tensor.{name} is not in syft_mpc's allowlist of remote operations")
        )

    @classmethod
    def __torch_function__(
        cls, func: Callable[..., Any], types: Iterable[type], args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        return _torch_function(func, types, args, kwargs)

    def __setitem__(self, index: Any, value: Any) -> None:
        remote_call("op.setitem", (self, index, value), {})


def _method_call(op: str, self: Any, *args: Any, **kwargs: Any) -> Any:
    return remote_call(op, (self, *args), kwargs)


def _make_operator(op: str) -> Callable[..., Any]:
    def operator(self: PointerTensor, *args: Any) -> Any:
        return remote_call(op, (self, *args), {})

    operator.__name__ = op
    return operator


for _name in (
    "add radd sub rsub mul rmul truediv rtruediv floordiv rfloordiv mod rmod pow rpow matmul rmatmul "
    "neg abs getitem eq ne lt le gt ge and rand or ror xor rxor invert lshift rshift "
    "iadd isub imul itruediv ifloordiv ipow iand ior ixor"
).split():
    if "op." + _name in allowlist.OPS:
        setattr(PointerTensor, f"__{_name}__", _make_operator("op." + _name))


class RemoteParameter(nn.Parameter):
    """An ``nn.Parameter`` whose data lives on a remote worker (see ``nn.Module.send``).

    Every torch operation on it, including ``.grad`` and ``.data``, is forwarded to
    its pointer, ``self._syft_ptr``; shape, dtype and device are answered locally from
    a stride-0 placeholder. ``param.get()`` brings the data back into the same object.
    """

    _syft_ptr: PointerTensor

    def __repr__(self) -> str:  # type: ignore[override]
        return f"Parameter containing:\n{self._syft_ptr!r}"

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce_ex__(self, proto: Any) -> Any:
        raise TypeError("a remote parameter cannot be saved or serialized; .get() its module first")

    def __deepcopy__(self, memo: dict[int, Any]) -> "RemoteParameter":
        new = make_remote_parameter(self._syft_ptr.copy(), requires_grad=self.requires_grad)
        memo[id(self)] = new
        return new

    @classmethod
    def __torch_function__(
        cls, func: Callable[..., Any], types: Iterable[type], args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if func in _LOCAL_FUNCS:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))
        if func in _REQUIRES_GRAD_FUNCS:  # keep the placeholder's flag and the remote tensor's in step
            self = args[0]
            flag = bool(args[1]) if len(args) > 1 else bool((kwargs or {}).get("requires_grad", True))
            self._syft_ptr._setattr("requires_grad", flag)
            with torch._C.DisableTorchFunctionSubclass():
                torch.Tensor.requires_grad.__set__(self, flag)  # type: ignore[attr-defined]
            return self if func is torch.Tensor.requires_grad_ else None
        attr = _PROPERTIES.get(func)
        if attr is not None:
            name, is_set = attr
            ptr = args[0]._syft_ptr
            if is_set:
                ptr._setattr(name, args[1])
                return None
            return ptr._getattr(name)
        return _torch_function(func, types, args, kwargs)


def make_remote_parameter(ptr: PointerTensor, requires_grad: bool = True) -> RemoteParameter:
    """A new :class:`RemoteParameter` wrapping ``ptr``."""
    p = nn.Parameter(_placeholder(ptr.shape, ptr.dtype), requires_grad=requires_grad)
    p.__class__ = RemoteParameter
    p._syft_ptr = ptr  # type: ignore[attr-defined]
    return p  # type: ignore[return-value]


def _placeholder(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    # One element, expanded: right shape and dtype for torch's checks, no memory, no data.
    return torch.zeros((), dtype=dtype).expand(shape)


def become_remote(p: nn.Parameter, ptr: PointerTensor) -> None:
    """Turns parameter ``p`` into a :class:`RemoteParameter` for ``ptr`` in place (the object
    stays the same, so optimizers holding it keep working); its local data is dropped."""
    with torch.no_grad():
        p.data = _placeholder(p.shape, p.dtype)
    p.grad = None
    p.__class__ = RemoteParameter
    p._syft_ptr = ptr  # type: ignore[attr-defined]


def param_get(p: RemoteParameter) -> None:
    """Brings parameter ``p`` back in place (one level of a pointer chain at a time)."""
    value = p._syft_ptr.get()
    if isinstance(value, PointerTensor):
        p._syft_ptr = value
        return
    p.__class__ = nn.Parameter  # type: ignore[assignment]
    del p._syft_ptr
    with torch.no_grad():
        p.data = value.detach()
    p.grad = value.grad


def param_move(p: RemoteParameter, worker: "BaseWorker") -> None:
    """Moves parameter ``p``'s data to ``worker``; the object stays the same."""
    p._syft_ptr = p._syft_ptr.move(worker)


# Functions on a RemoteParameter answered from its placeholder (metadata only).
_LOCAL_FUNCS: set[Any] = {
    torch.Tensor.__hash__,
    torch.Tensor.size,
    torch.Tensor.dim,
    torch.Tensor.numel,
    torch.Tensor.nelement,
    torch.Tensor.ndimension,
    torch.Tensor.element_size,
    torch.Tensor.is_floating_point,
    torch.Tensor.is_complex,
    torch.Tensor.__len__,
    torch.is_complex,
    torch.is_floating_point,
}
for _prop in (
    "shape",
    "dtype",
    "device",
    "ndim",
    "layout",
    "requires_grad",
    "is_leaf",
    "is_sparse",
    "is_cuda",
    "is_meta",
    "is_quantized",
    "is_nested",
    "is_mkldnn",
    "grad_fn",
    "_base",
    "names",
):
    if hasattr(torch.Tensor, _prop):
        _LOCAL_FUNCS.add(getattr(torch.Tensor, _prop).__get__)
_REQUIRES_GRAD_FUNCS = {torch.Tensor.requires_grad_, torch.Tensor.requires_grad.__set__}  # type: ignore[attr-defined]
_PROPERTIES: dict[Any, tuple[str, bool]] = {}
for _prop in ("grad", "data"):
    _PROPERTIES[getattr(torch.Tensor, _prop).__get__] = (_prop, False)
    _PROPERTIES[getattr(torch.Tensor, _prop).__set__] = (_prop, True)


# ---------------------------------------------------------------------- remote calls


def _as_pointer(x: Any) -> PointerTensor:
    ptr: PointerTensor = x._syft_ptr if isinstance(x, RemoteParameter) else x
    return ptr


def _torch_function(func: Callable[..., Any], types: Iterable[type], args: tuple[Any, ...], kwargs: Any) -> Any:
    name = allowlist.name_of(func)
    if name is None:
        if any(not issubclass(t, (PointerTensor, RemoteParameter)) for t in types):
            return NotImplemented  # let another tensor-like type handle it
        qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
        raise UnsupportedOperationError(
            f"{getattr(func, '__module__', None) or 'torch'}.{qual} cannot run on pointer tensors: it is not in "
            "syft_mpc.remote.allowlist.OPS (use .get() to compute locally)"
        )
    return remote_call(name, args, kwargs or {})


class _Refs:
    """Collects the pointers in a call's arguments and checks they share one location."""

    __slots__ = ("owner", "location", "by_id")

    def __init__(self) -> None:
        self.owner: "BaseWorker | None" = None
        self.location: "BaseWorker | None" = None
        self.by_id: dict[int, Any] = {}

    def convert(self, v: Any) -> Any:
        if isinstance(v, (PointerTensor, RemoteParameter)):
            orig = v
            p = _as_pointer(v)
            p._check_alive()
            if self.location is None:
                self.owner, self.location = p.owner, p.location
            elif p.location != self.location:
                raise LocationError(
                    f"this operation mixes a tensor on worker {self.location.id} with one on worker "
                    f"{p.location.id}; move one of them first (ptr.move(worker))"
                )
            self.by_id.setdefault(p.id_at_location, orig)
            return ObjRef(p.id_at_location)
        if isinstance(v, torch.Tensor):
            raise LocationError(
                "this operation mixes a local tensor with a pointer tensor; send the local tensor to the "
                "pointer's worker first (t.send(worker))"
            )
        tv = type(v)
        if tv is tuple or tv is list:
            return tv(self.convert(x) for x in v)
        if tv is dict:
            return {k: self.convert(x) for k, x in v.items()}
        return v


def remote_call(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Runs allowlisted operation ``op`` at the location of the pointers in ``args``/``kwargs``.

    Tensor results come back as pointers (ids chosen here, up front); in-place
    operations return the argument they modified; plain values (sizes, bools) come
    back as values.
    """
    refs = _Refs()
    enc_args = tuple([refs.convert(a) for a in args])
    enc_kwargs = {k: refs.convert(v) for k, v in kwargs.items()} if kwargs else {}
    if refs.location is None or refs.owner is None:
        raise LocationError(f"{op} has no pointer argument: nothing says where to run it")
    rid = new_id()
    cmd = Command(op, enc_args, enc_kwargs, rid, torch.is_grad_enabled())
    desc = _infer(op, enc_args, enc_kwargs, refs.by_id) if getattr(refs.location, "async_commands", False) else None
    value = refs.owner._send(refs.location, cmd, post=desc is not None)
    if value is None and desc is not None:  # posted: the result is described locally
        return PointerTensor(refs.owner, refs.location, rid, *desc)
    return _materialize(value, refs.owner, refs.location, refs.by_id)


def _infer(
    op: str, args: tuple[Any, ...], kwargs: dict[str, Any], by_id: dict[int, Any]
) -> "tuple[torch.Size, torch.dtype, bool] | None":
    """Shape, dtype and requires_grad of ``op``'s result, computed here on meta tensors
    (no data, no round trip), or None when the op must run synchronously: inference
    fails (data-dependent shapes, unknown input shapes, ...), the result is not one new
    tensor (plain values, tuples, None), or it is one of the inputs (in-place ops, and
    ops that may return their input, e.g. ``contiguous``)."""
    fn = allowlist.OPS.get(op)
    if fn is None or "out" in kwargs:
        return None
    # Meta kernels cost ~100 us (torch's Python meta registrations), so results are cached
    # by everything they depend on: op, grad mode, every pointer's shape/dtype/requires_grad
    # (and which arguments are the same pointer), and the other arguments' types and values.
    try:
        key: Any = (op, torch.is_grad_enabled(), _key(args, by_id, {}), _key(kwargs, by_id, {}))
        hit = _INFER_CACHE.get(key, _MISS)
    except _Uncacheable:
        key, hit = None, _MISS
    if hit is not _MISS:
        return hit  # type: ignore[no-any-return]
    metas: dict[int, torch.Tensor] = {}
    desc: "tuple[torch.Size, torch.dtype, bool] | None" = None
    try:
        result = fn(*_to_meta(args, by_id, metas), **_to_meta(kwargs, by_id, metas))
        if type(result) is torch.Tensor and result.device.type == "meta" and not any(result is m for m in metas.values()):
            desc = (result.shape, result.dtype, result.requires_grad)
    except Exception:
        desc = None
    if key is not None:
        if len(_INFER_CACHE) >= _INFER_CACHE_SIZE:
            _INFER_CACHE.pop(next(iter(_INFER_CACHE)))
        _INFER_CACHE[key] = desc
    return desc


_INFER_CACHE: dict[Any, Any] = {}
_INFER_CACHE_SIZE = 4096
_MISS = object()
_PLAIN_KEY_TYPES = (type(None), bool, int, float, complex, str, torch.dtype, torch.device, torch.memory_format)


class _Uncacheable(Exception):
    pass


def _key(v: Any, by_id: dict[int, Any], seen: dict[int, int]) -> Any:
    """A hashable description of an argument for the inference cache (raises _Uncacheable)."""
    if isinstance(v, ObjRef):
        p = _as_pointer(by_id[v.id])
        return ("P", seen.setdefault(v.id, len(seen)), p._shape, p._dtype, p._requires_grad)
    tv = type(v)
    if tv is tuple or tv is list or tv is torch.Size:
        return (tv, tuple(_key(x, by_id, seen) for x in v))
    if tv is dict:
        return (dict, tuple((k, _key(x, by_id, seen)) for k, x in v.items()))
    if tv is slice:
        return (slice, _key(v.start, by_id, seen), _key(v.stop, by_id, seen), _key(v.step, by_id, seen))
    if v is Ellipsis:
        return (tv,)
    if tv in _PLAIN_KEY_TYPES:
        return (tv, v)
    raise _Uncacheable


def _to_meta(v: Any, by_id: dict[int, Any], metas: dict[int, torch.Tensor]) -> Any:
    if isinstance(v, ObjRef):
        m = metas.get(v.id)
        if m is None:
            p = _as_pointer(by_id[v.id])
            if p._shape is None:
                raise LookupError("unknown shape")
            m = torch.empty(p._shape, dtype=p._dtype, device="meta")
            if p._requires_grad:
                m.requires_grad_(True)
            metas[v.id] = m
        return m
    tv = type(v)
    if tv is tuple or tv is list:
        return tv(_to_meta(x, by_id, metas) for x in v)
    if tv is dict:
        return {k: _to_meta(x, by_id, metas) for k, x in v.items()}
    return v


def _materialize(value: Any, owner: "BaseWorker", location: "BaseWorker", by_id: dict[int, Any]) -> Any:
    if isinstance(value, PointerDesc):
        return PointerTensor(owner, location, value.id, value.shape, value.dtype, value.requires_grad)
    if isinstance(value, ObjRef):
        return by_id[value.id]
    if type(value) is tuple:
        return tuple(_materialize(v, owner, location, by_id) for v in value)
    return value
