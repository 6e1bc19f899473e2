"""``sy.TorchHook(torch)``: adds the PySyft methods to ``torch.Tensor`` and ``torch.nn.Module``.

The hook only attaches plain methods (``send``, ``get``, ``move``, ``copy``,
``remote_get``, ``remote_send``); it installs no ``__torch_function__`` and wraps no
torch function, so torch code on local tensors runs exactly as fast as before.
Hooking twice is harmless; importing :mod:`syft_mpc` without hooking changes nothing.

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob = sy.VirtualWorker(hook, id="bob")
    >>> model = torch.nn.Linear(2, 1)
    >>> w = model.weight
    >>> _ = model.send(bob)                   # in place: the same Parameter objects
    >>> model.weight is w, len(bob._objects)
    (True, 2)
    >>> _ = model.get()
    >>> type(model.weight).__name__, len(bob._objects)
    ('Parameter', 0)
"""

from __future__ import annotations

import copy as _copy
import types
from typing import Any, Callable

import torch
import torch.nn as nn

from syft_mpc.messages import Store, new_id
from syft_mpc.pointers import PointerTensor, RemoteParameter, param_get, param_move, param_send
from syft_mpc.workers import BaseWorker, local_worker

__all__ = ["TorchHook"]


def _owner() -> BaseWorker:
    return local_worker


# ---------------------------------------------------------------------- torch.Tensor


def tensor_send(self: torch.Tensor, worker: BaseWorker) -> Any:
    """Sends this tensor to ``worker`` and returns a :class:`PointerTensor` to it.

    ``requires_grad`` and ``.grad`` travel with the data. The local tensor is unchanged.
    A parameter of a sent module (already remote) is re-sent in place, making a chain.

        >>> import torch, syft_mpc as sy
        >>> hook = sy.TorchHook(torch)
        >>> bob = sy.VirtualWorker(hook, id="bob")
        >>> torch.tensor([1.0, 2.0], requires_grad=True).send(bob).requires_grad
        True
    """
    if not isinstance(worker, BaseWorker):
        raise TypeError(f"send() takes a worker, got {type(worker).__name__}")
    if isinstance(self, RemoteParameter):
        param_send(self, worker)
        return self
    owner = _owner()
    nid = new_id()
    owner._send(worker, Store(nid, self))
    return PointerTensor(owner, worker, nid, self.shape, self.dtype, self.requires_grad)


def _remote_only(name: str) -> Callable[..., Any]:
    def method(self: torch.Tensor, *args: Any) -> Any:
        if isinstance(self, RemoteParameter):
            return getattr(self._syft_ptr, name)(*args)
        raise TypeError(f"this tensor is local: .{name}() is for pointer tensors and sent parameters")

    method.__name__ = name
    method.__doc__ = f"For a parameter of a sent module: ``{name}`` on its pointer. Local tensors raise TypeError."
    return method


def tensor_get(self: torch.Tensor) -> torch.Tensor:
    """For a parameter of a sent module: brings its data back in place and returns it."""
    if isinstance(self, RemoteParameter):
        param_get(self)
        return self
    raise TypeError("this tensor is local: .get() is for pointer tensors and sent parameters")


def tensor_move(self: torch.Tensor, worker: BaseWorker) -> torch.Tensor:
    """For a parameter of a sent module: moves its data to ``worker`` in place."""
    if isinstance(self, RemoteParameter):
        param_move(self, worker)
        return self
    raise TypeError("this tensor is local: use .send(worker) (.move() is for pointer tensors)")


def tensor_copy(self: torch.Tensor) -> torch.Tensor:
    """A detached copy with the same ``requires_grad`` (remote for a sent parameter)."""
    if isinstance(self, RemoteParameter):
        return _copy.deepcopy(self)
    return self.detach().clone().requires_grad_(self.requires_grad)


# ---------------------------------------------------------------------- torch.nn.Module


def _buffers(module: nn.Module) -> list[tuple[nn.Module, str, Any]]:
    return [(m, name, b) for m in module.modules() for name, b in m._buffers.items() if b is not None]


def module_send(self: nn.Module, worker: BaseWorker) -> nn.Module:
    """Sends every parameter and buffer to ``worker``, in place; returns the module.

    Parameters stay the same Python objects, so an optimizer made before ``send``
    keeps working: ``opt.step()`` then updates the parameters on ``worker``.

        >>> import torch, syft_mpc as sy
        >>> hook = sy.TorchHook(torch)
        >>> bob = sy.VirtualWorker(hook, id="bob")
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> data = torch.ones(4, 3).send(bob)
        >>> _ = model.send(bob)
        >>> opt.zero_grad(); model(data).sum().backward(); opt.step()
        >>> model.get().weight.shape
        torch.Size([1, 3])
    """
    for p in self.parameters():
        param_send(p, worker)
    for m, name, b in _buffers(self):
        m._buffers[name] = b.send(worker)
    return self


def module_get(self: nn.Module) -> nn.Module:
    """Brings every parameter and buffer back, in place; returns the module.

    Shared parameters are reconstructed (to fixed precision: ``model.get().float_precision()``).
    """
    from syft_mpc.encrypted_api import module_get_shared

    module_get_shared(self)
    for p in self.parameters():
        if isinstance(p, RemoteParameter):
            param_get(p)
    for m, name, b in _buffers(self):
        if isinstance(b, PointerTensor):
            m._buffers[name] = b.get()  # type: ignore[assignment]
    return self


def module_move(self: nn.Module, worker: BaseWorker) -> nn.Module:
    """Moves every remote parameter and buffer straight to ``worker``, in place; returns the module."""
    for p in self.parameters():
        if not isinstance(p, RemoteParameter):
            raise TypeError("move() needs a module that was sent; use send() for a local module")
        param_move(p, worker)
    for m, name, b in _buffers(self):
        if isinstance(b, PointerTensor):
            m._buffers[name] = b.move(worker)  # type: ignore[assignment]
    return self


def module_copy(self: nn.Module) -> nn.Module:
    """A deep copy; for a sent module the copy's parameters are new remote tensors at the same place."""
    return _copy.deepcopy(self)


_TENSOR_METHODS: dict[str, Callable[..., Any]] = {
    "send": tensor_send,
    "get": tensor_get,
    "move": tensor_move,
    "copy": tensor_copy,
    "remote_get": _remote_only("remote_get"),
    "remote_send": _remote_only("remote_send"),
}
_MODULE_METHODS: dict[str, Callable[..., Any]] = {
    "send": module_send,
    "get": module_get,
    "move": module_move,
    "copy": module_copy,
}


def _attach(cls: type, methods: dict[str, Callable[..., Any]], module: str = __name__) -> None:
    for name, fn in methods.items():
        existing = cls.__dict__.get(name)
        if existing is not None and existing is not fn:
            if getattr(existing, "__module__", None) != module:
                raise RuntimeError(f"cannot hook {cls.__name__}.{name}: torch already defines it")
        setattr(cls, name, fn)


class TorchHook:
    """Hooks torch for syft_mpc: ``hook = sy.TorchHook(torch)``.

    Adds ``send``, ``get``, ``move``, ``copy``, ``remote_get`` and ``remote_send`` to
    ``torch.Tensor``, ``send``, ``get``, ``move``, ``copy`` to ``torch.nn.Module`` and
    ``federate`` to ``torch.utils.data.Dataset`` (plain methods; nothing else in torch
    changes). Idempotent.

    Attributes:
        torch: the hooked module.
        local_worker: the driver worker (``sy.local_worker``, id ``"me"``).

        >>> import torch, syft_mpc as sy
        >>> hook = sy.TorchHook(torch)
        >>> hook.local_worker is sy.local_worker, sy.TorchHook(torch).local_worker.id
        (True, 'me')
    """

    def __init__(self, torch_module: types.ModuleType = torch, local_worker: "BaseWorker | None" = None, **_: Any):
        if torch_module is not torch:
            raise TypeError("TorchHook expects the torch module: sy.TorchHook(torch)")
        self.torch = torch_module
        self.local_worker = local_worker if local_worker is not None else _owner()
        _attach(torch.Tensor, _TENSOR_METHODS)
        _attach(nn.Module, _MODULE_METHODS)
        from syft_mpc import encrypted_api  # fix_prec / share / encrypt (issue 5)

        _attach(torch.Tensor, encrypted_api.TENSOR_METHODS, encrypted_api.__name__)
        _attach(nn.Module, encrypted_api.MODULE_METHODS, encrypted_api.__name__)
        _attach(torch.optim.Optimizer, encrypted_api.OPTIMIZER_METHODS, encrypted_api.__name__)
        _attach(PointerTensor, encrypted_api.POINTER_METHODS, encrypted_api.__name__)  # ptr.fix_prec().share(...)
        encrypted_api.install_optimizer_check()  # Adam & co. on shared parameters: a clear error
        from syft_mpc.federated import dataset as fl_dataset  # dataset.federate((bob, alice)), as in PySyft

        dataset_methods: dict[str, Callable[..., Any]] = {"federate": fl_dataset.dataset_federate}
        _attach(torch.utils.data.Dataset, dataset_methods, fl_dataset.__name__)

    def __repr__(self) -> str:
        return f"<TorchHook local_worker:{self.local_worker.id}>"
