"""Optimizer state follows its parameters between workers.

torch's optimizers create their state (SGD's momentum buffers, Adam's moments) from the
gradient, so for a model sent to bob the state is a pointer to bob. When the model then
moves on (``model.send(alice)``, the federated loop of tutorial Part 6 with
``momentum=0.5``), the next ``opt.step()`` would mix bob's buffer with alice's parameter. A
global step pre-hook (installed by ``sy.TorchHook``) moves each state tensor to where its
parameter is before the step: ``ptr.move(alice)`` worker to worker, ``.get()`` when the model
came home, ``.send(worker)`` for state made while the model was local. 0-d state (Adam's
``step`` counter) stays local, where torch reads it. Moving the state reveals nothing the
moving model does not: both come from the same worker's updates.
"""

from __future__ import annotations

from typing import Any

import torch

from syft_mpc.errors import LocationError
from syft_mpc.remote.pointers import PointerTensor, RemoteParameter
from syft_mpc.remote.workers import BaseWorker

__all__ = ["install_state_follows_params", "state_follows_params"]


def _location(p: Any) -> "BaseWorker | None":
    """Where parameter ``p``'s data is (None: here)."""
    if isinstance(p, RemoteParameter):
        return p._syft_ptr.location
    return None


def state_follows_params(opt: torch.optim.Optimizer) -> None:
    """Moves every tensor in ``opt.state`` to its parameter's worker (see the module docstring)."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p)
            if not state:
                continue
            where = _location(p)
            for key, v in list(state.items()):
                if isinstance(v, PointerTensor):
                    if where is not None and v.location == where:
                        continue
                    try:
                        state[key] = v.get() if where is None else v.move(where)
                    except Exception as e:
                        dest = "here" if where is None else f"worker {where.id}"
                        raise LocationError(
                            f"{type(opt).__name__}'s state {key!r} of a parameter is on worker {v.location.id}, "
                            f"the parameter is {dest}, and the state could not follow it ({e}); make a new "
                            "optimizer for the model where it is now, or one optimizer per worker "
                            "(syft_mpc.federated.floptimizer.Optims)"
                        ) from e
                elif where is not None and isinstance(v, torch.Tensor) and v.dim() > 0 and not isinstance(v, RemoteParameter):
                    if type(v) is torch.Tensor:  # plain state made while the model was here
                        state[key] = v.send(where)  # type: ignore[attr-defined]


def _pre_hook(opt: Any, args: Any, kwargs: Any) -> None:
    state_follows_params(opt)


_handle: Any = None


def install_state_follows_params() -> None:
    """Registers (once) the global optimizer step pre-hook that runs :func:`state_follows_params`."""
    global _handle
    if _handle is None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        _handle = register_optimizer_step_pre_hook(_pre_hook)
