"""PySyft 0.2's ``sy.TrainConfig``: a model, a loss and training settings sent to a worker, which
then trains on a dataset it holds by key (``worker.fit(dataset_key=...)``) and evaluates
(``worker.evaluate(...)``), one request each.

PySyft sent ``torch.jit`` code. Here the model (an ``nn.Module`` or a ``torch.jit.trace``\\ d one)
and the loss function are traced on the driver into plans (:mod:`syft_mpc.plans`): graphs of
allowlisted aten ops that the worker checks and runs, never code. What travels
(:class:`~syft_mpc.remote.messages.TrainConfigStore`):

* the forward pass ``(x, *params) -> output`` and the loss ``(output, target) -> loss``, each
  traced at ``batch_size`` and at 1 (a graph has fixed shapes; evaluation runs the samples that
  do not fill a batch one by one);
* the training step ``(x, target, *params) -> (loss, *params - lr * grad)`` at ``batch_size``
  (forward, loss, backward and the SGD update in one graph), run once per batch by ``fit``;
* the parameters, stored on the worker where ``train_config.model_ptr`` points.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from syft_mpc.errors import PlanError
from syft_mpc.plans.plan import Plan
from syft_mpc.remote.messages import TrainConfigStore, new_id
from syft_mpc.remote.pointers import PointerTensor
from syft_mpc.remote.workers import BaseWorker, local_worker

__all__ = ["ModelPointer", "ObjectWrapper", "TrainConfig"]

OPTIMIZERS = ("SGD",)


@dataclass
class ObjectWrapper:
    """What ``model_ptr.get()`` returns (PySyft's wrapper): the trained model is ``.obj``."""

    obj: Any
    id: int


def _example_input(model: nn.Module, example_input: "torch.Tensor | None") -> torch.Tensor:
    """One input sample (batch dimension 1): given, or read from a ``torch.jit.trace``\\ d model's graph."""
    if example_input is not None:
        return example_input[:1].detach()
    if isinstance(model, torch.jit.ScriptModule):
        inputs = list(model.graph.inputs())[1:]
        sizes = inputs[0].type().sizes() if len(inputs) == 1 else None  # type: ignore[attr-defined]
        if sizes:
            return torch.zeros([1, *sizes[1:]], dtype=inputs[0].type().dtype() or torch.float32)
    raise PlanError(
        "TrainConfig needs the shape of one input: pass example_input=<a batch of inputs>, "
        "or a model made by torch.jit.trace(model, example_batch)"
    )


def _set_param(module: nn.Module, name: str, value: torch.Tensor) -> None:
    *path, last = name.split(".")
    for p in path:
        module = getattr(module, p)
    if isinstance(module, torch.jit.ScriptModule):
        module._c.setattr(last, value)  # a traced module's parameter slot
    else:
        module._parameters[last] = value  # type: ignore[assignment]


def _call_with(model: nn.Module, names: Sequence[str], params: Sequence[torch.Tensor], x: torch.Tensor) -> Any:
    """``model(x)`` with ``params`` in place of its parameters, so that tracing sees them as inputs
    (``torch.func.functional_call`` refuses jit modules, hence the swap and restore)."""
    own = dict(model.named_parameters())
    for n, p in zip(names, params):
        _set_param(model, n, p)
    try:
        return model(x)
    finally:
        for n in names:
            _set_param(model, n, own[n])


class ModelPointer:
    """Points to the model parameters a :class:`TrainConfig` stored on a worker (``model_ptr``)."""

    def __init__(self, config: "TrainConfig", location: BaseWorker, params: list[PointerTensor]) -> None:
        self.config, self.location, self.params = config, location, params

    def get(self) -> ObjectWrapper:
        """Brings the (trained) parameters back in a copy of the model: ``.get().obj``."""
        model = copy.deepcopy(self.config.model)
        values = [p.copy().get() for p in self.params]  # the worker keeps its copy (evaluate may follow)
        if any(not isinstance(v, torch.Tensor) for v in values):
            raise PlanError(f"worker {self.location.id} returned parameters that are not tensors")
        with torch.no_grad():
            for p, v in zip(model.parameters(), values):
                p.copy_(v)  # type: ignore[arg-type]
        return ObjectWrapper(model, self.config.id)

    def __repr__(self) -> str:
        return f"[ModelPointer -> {self.location.id}: {len(self.params)} parameters]"


class TrainConfig:
    """PySyft 0.2's ``sy.TrainConfig(model, loss_fn, batch_size, epochs, optimizer, optimizer_args, ...)``.

    Args:
        model: an ``nn.Module`` or a ``torch.jit.trace``\\ d one; its forward must be traceable to
            allowlisted aten ops (``docs/PLANS.md``).
        loss_fn: ``loss_fn(output, target) -> scalar`` (a function, a ``torch.jit.script``\\ ed one).
        batch_size, epochs, shuffle: as a ``DataLoader`` on the worker (full batches only).
        max_nr_batches: stop a ``fit`` after this many batches (``<= 0``: no limit).
        optimizer: ``"SGD"`` (the update is traced into the training step).
        optimizer_args: ``{"lr": ...}``; ``None`` makes a configuration that only evaluates.
        example_input: a batch of inputs (only its shape and dtype are used); read from the
            graph of a traced model when not given.
        example_target: a batch of targets (default: class indices, ``int64`` of shape ``(batch,)``).
        seed: the worker's shuffling seed.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[..., torch.Tensor],
        batch_size: int = 32,
        epochs: int = 1,
        optimizer: str = "SGD",
        optimizer_args: "dict[str, Any] | None" = None,
        shuffle: bool = True,
        max_nr_batches: int = -1,
        example_input: "torch.Tensor | None" = None,
        example_target: "torch.Tensor | None" = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise TypeError(f"TrainConfig got unexpected arguments {sorted(kwargs)}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"TrainConfig's model is an nn.Module (or a traced one), not a {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("TrainConfig's loss_fn must be callable: loss_fn(output, target) -> loss")
        if not isinstance(batch_size, int) or batch_size < 1 or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"batch_size and epochs must be positive integers, got {batch_size!r} and {epochs!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {optimizer!r} is not supported here; use one of {list(OPTIMIZERS)}")
        lr: "float | None" = None
        if optimizer_args is not None:
            extra = set(optimizer_args) - {"lr"}
            if extra or "lr" not in optimizer_args:
                raise ValueError(f"optimizer_args for SGD are {{'lr': ...}}, got {sorted(optimizer_args)}")
            lr = float(optimizer_args["lr"])
            if not 0.0 < lr < 1e6:
                raise ValueError(f"the learning rate must be positive, got {lr}")
        self.model, self.loss_fn = model, loss_fn
        self.batch_size, self.epochs, self.shuffle = batch_size, epochs, bool(shuffle)
        self.max_nr_batches = int(max_nr_batches) if max_nr_batches and max_nr_batches > 0 else -1
        self.optimizer, self.optimizer_args, self.lr = optimizer, optimizer_args, lr
        self.seed = seed or int(torch.randint(1, 2**62, (1,)).item())
        self.id = new_id()
        self.location: "BaseWorker | None" = None
        self.model_ptr: "ModelPointer | None" = None
        self._example = _example_input(model, example_input)
        self._example_target = example_target
        self._plans: "tuple[list[Any], list[Any], Any] | None" = None

    # ------------------------------------------------------------------ tracing

    def _targets(self, n: int) -> torch.Tensor:
        t = self._example_target
        if t is None:
            return torch.zeros(n, dtype=torch.long)
        return t[:1].detach().expand(n, *t.shape[1:]).clone()

    def _inputs(self, n: int) -> torch.Tensor:
        return self._example.expand(n, *self._example.shape[1:]).clone()

    def _build(self) -> "tuple[list[Any], list[Any], Any]":
        model, loss_fn, lr = self.model, self.loss_fn, self.lr
        names = [n for n, _ in model.named_parameters()]
        params = [p.detach() for p in model.parameters()]
        forward, losses = [], []
        for n in (self.batch_size, 1):
            fwd = Plan(name="forward", forward_func=lambda x, *ps: _call_with(model, names, ps, x))
            fwd.build(self._inputs(n), *params)
            out = fwd.definition
            with torch.no_grad():
                example_out = _call_with(model, names, params, self._inputs(n)).detach()
            loss = Plan(name="loss", forward_func=lambda o, t: loss_fn(o, t))
            loss.build(example_out, self._targets(n))
            forward.append(out)
            losses.append(loss.definition)
        step = None
        if lr is not None:
            def train_step(x: torch.Tensor, t: torch.Tensor, *ps: torch.Tensor) -> Any:
                loss = loss_fn(_call_with(model, names, ps, x), t)
                grads = torch.autograd.grad(loss, ps)
                return (loss, *[p - lr * g for p, g in zip(ps, grads)])

            plan = Plan(name="train_step", forward_func=train_step)
            plan.build(self._inputs(self.batch_size), self._targets(self.batch_size), *[p.clone().requires_grad_() for p in params])
            step = plan.definition
        return forward, losses, step

    # ------------------------------------------------------------------ sending

    def send(self, location: BaseWorker) -> "TrainConfig":
        """Stores the configuration (plans and parameters) on ``location``, which ``fit`` and
        ``evaluate`` then use (PySyft: the last configuration sent to a worker)."""
        if self._plans is None:
            self._plans = self._build()
        forward, losses, step = self._plans
        params = [p.detach().clone() for p in self.model.parameters()]
        if self.location is not None:  # sent again: a fresh copy under new ids
            self.id = new_id()
        pids = [new_id() for _ in params]
        msg = TrainConfigStore(
            self.id, [self.batch_size, 1], forward, losses, step, params, pids,
            self.shuffle, self.max_nr_batches, self.epochs, self.seed,
        )
        local_worker._send(location, msg)
        self.location = location
        ptrs = [PointerTensor(local_worker, location, pid, p.shape, p.dtype, False) for pid, p in zip(pids, params)]
        self.model_ptr = ModelPointer(self, location, ptrs)
        weakref.finalize(self, local_worker._queue_delete, location, self.id)  # the config goes with this object
        location.train_config = self
        return self

    def __repr__(self) -> str:
        where = f" on {self.location.id}" if self.location is not None else ""
        return (
            f"<TrainConfig id:{self.id}{where} batch_size:{self.batch_size} epochs:{self.epochs} "
            f"optimizer:{self.optimizer} {self.optimizer_args}>"
        )
