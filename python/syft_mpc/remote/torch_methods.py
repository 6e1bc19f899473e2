"""The pointer methods ``sy.TorchHook`` attaches to ``torch.Tensor`` and ``torch.nn.Module``:
``send``, ``get``, ``move``, ``copy``, ``remote_get``, ``remote_send``.

A sent module keeps its Parameter objects: each becomes a
:class:`~syft_mpc.remote.pointers.RemoteParameter` in place, so an optimizer made before
``send`` keeps working.
"""

from __future__ import annotations

import copy as _copy
from typing import Any, Callable

import torch
import torch.nn as nn

from syft_mpc.remote.messages import Describe, Store, new_id
from syft_mpc.remote.pointers import PointerTensor, RemoteParameter, become_remote, param_get, param_move
from syft_mpc.remote.workers import BaseWorker, local_worker, set_tensor_meta, tensor_meta

__all__ = ["MODULE_METHODS", "TENSOR_METHODS", "param_send"]


def param_send(p: nn.Parameter, worker: BaseWorker) -> None:
    """Sends parameter ``p`` to ``worker`` in place (the object stays the same)."""
    if isinstance(p, RemoteParameter):
        p._syft_ptr = p._syft_ptr.send(worker)
        return
    nid = new_id()
    local_worker._send(worker, Store(nid, p))
    become_remote(p, PointerTensor(local_worker, worker, nid, p.shape, p.dtype, p.requires_grad))


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
    owner = local_worker
    nid = new_id()
    owner._send(worker, Store(nid, self))
    tags, description = tensor_meta(self)
    ptr = PointerTensor(owner, worker, nid, self.shape, self.dtype, self.requires_grad)
    if tags or description is not None:  # searchable on the worker (worker.search)
        owner._send(worker, Describe(nid, tags, description))
        ptr.tags, ptr.description = set(tags), description
    return ptr


def tensor_tag(self: Any, *tags: str) -> Any:
    """Adds tags (``"#digits"``, ``"#target"``) to this tensor or pointer; returns it.

    Tags travel with ``.send()``, and ``worker.search(["#digits"])`` finds tensors by them.
    On a pointer, the tags are set on the tensor it points to as well."""
    for t in tags:
        if not isinstance(t, str) or not t:
            raise TypeError(f"tags are non-empty strings, got {t!r}")
    if isinstance(self, PointerTensor):
        self._send(Describe(self.id_at_location, list(tags), None))
    set_tensor_meta(self, tags, None)
    return self


def tensor_describe(self: Any, description: str) -> Any:
    """Sets a description (searchable by its words, shown by pointers to the tensor); returns the tensor."""
    if not isinstance(description, str):
        raise TypeError(f"a description is a string, got {type(description).__name__}")
    if isinstance(self, PointerTensor):
        self._send(Describe(self.id_at_location, [], description))
    set_tensor_meta(self, (), description)
    return self


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

    (The hook adds shared parameters: see :func:`syft_mpc.hook.module_get`.)
    """
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


TENSOR_METHODS: dict[str, Callable[..., Any]] = {
    "send": tensor_send,
    "get": tensor_get,
    "move": tensor_move,
    "copy": tensor_copy,
    "remote_get": _remote_only("remote_get"),
    "remote_send": _remote_only("remote_send"),
    "tag": tensor_tag,
    "describe": tensor_describe,
}
POINTER_METHODS: dict[str, Callable[..., Any]] = {"tag": tensor_tag, "describe": tensor_describe}
MODULE_METHODS: dict[str, Callable[..., Any]] = {
    "send": module_send,
    "get": module_get,
    "move": module_move,
    "copy": module_copy,
}
