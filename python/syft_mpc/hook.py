"""``sy.TorchHook(torch)``: adds the PySyft methods to torch; the composition root of the package.

This module is where the layers meet: it attaches the methods of the pointer layer
(:mod:`syft_mpc.remote.torch_methods`), of encrypted tensors (:mod:`syft_mpc.encrypted.api`)
and of federated datasets to torch's classes, and registers the request handlers of MPC
sessions, checkpoints and federated learning with every worker (:func:`install_handlers`,
run when this module is imported). Nothing below it knows these plug-ins.

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

import types
from typing import Any, Callable

import torch
import torch.nn as nn

from syft_mpc.checkpoint import worker as checkpoint_worker
from syft_mpc.encrypted import api as encrypted_api
from syft_mpc.federated import dataset as fl_dataset
from syft_mpc.federated import worker as federated_worker
from syft_mpc.mpc_session import worker as mpc_worker
from syft_mpc.plans import worker as plans_worker
from syft_mpc.plans.protocol import PointerProtocol
from syft_mpc.remote import optim_state, torch_methods
from syft_mpc.remote.messages import ProtocolDef
from syft_mpc.remote.pointers import PointerTensor
from syft_mpc.remote.workers import BaseWorker, local_worker, register_handler, register_searchable

__all__ = ["TorchHook", "install_handlers"]


def install_handlers() -> None:
    """Registers the request handlers of MPC sessions, checkpoints, federated learning and
    plans with every worker (idempotent)."""
    for handlers in (mpc_worker.HANDLERS, checkpoint_worker.HANDLERS, federated_worker.HANDLERS, plans_worker.HANDLERS):
        for msg_type, handler in handlers.items():
            register_handler(msg_type, handler)
    register_searchable(ProtocolDef, lambda owner, location, obj_id: PointerProtocol(owner, location, obj_id))


install_handlers()


def module_get(self: nn.Module) -> nn.Module:
    """Brings every parameter and buffer back, in place; returns the module.

    Shared parameters are reconstructed (to fixed precision: ``model.get().float_precision()``).
    """
    encrypted_api.module_get_shared(self)
    return torch_methods.module_get(self)


def _attach(cls: type, methods: dict[str, Callable[..., Any]]) -> None:
    for name, fn in methods.items():
        existing = cls.__dict__.get(name)
        if existing is not None and existing is not fn:
            if not str(getattr(existing, "__module__", "")).startswith("syft_mpc."):
                raise RuntimeError(f"cannot hook {cls.__name__}.{name}: torch already defines it")
        setattr(cls, name, fn)


class TorchHook:
    """Hooks torch for syft_mpc: ``hook = sy.TorchHook(torch)``.

    Adds ``send``, ``get``, ``move``, ``copy``, ``remote_get`` and ``remote_send`` to
    ``torch.Tensor``, ``send``, ``get``, ``move``, ``copy`` to ``torch.nn.Module``,
    ``fix_precision``/``share``/``encrypt`` and their inverses to tensors, modules, optimizers
    and pointers, and ``federate`` to ``torch.utils.data.Dataset`` (plain methods; nothing
    else in torch changes). Idempotent.

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
        self.local_worker = local_worker if local_worker is not None else _driver()
        _attach(torch.Tensor, torch_methods.TENSOR_METHODS)
        module_methods: dict[str, Callable[..., Any]] = {**torch_methods.MODULE_METHODS, "get": module_get}
        _attach(nn.Module, module_methods)
        _attach(torch.Tensor, encrypted_api.TENSOR_METHODS)
        _attach(nn.Module, encrypted_api.MODULE_METHODS)
        _attach(torch.optim.Optimizer, encrypted_api.OPTIMIZER_METHODS)
        _attach(PointerTensor, encrypted_api.POINTER_METHODS)  # ptr.fix_prec().share(...)
        _attach(PointerTensor, torch_methods.POINTER_METHODS)  # ptr.tag(...), ptr.describe(...)
        encrypted_api.install_optimizer_check()  # adaptive optimizers on shared parameters: prepared at the first step
        optim_state.install_state_follows_params()  # momentum buffers move with model.send()/.get()
        _attach(torch.utils.data.Dataset, {"federate": fl_dataset.dataset_federate})  # dataset.federate((bob, alice))

    def __repr__(self) -> str:
        return f"<TorchHook local_worker:{self.local_worker.id}>"


def _driver() -> BaseWorker:
    return local_worker
