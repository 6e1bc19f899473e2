"""Protocols (PySyft's ``sy.Protocol``): plans that run one after the other on several workers.

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> @sy.func2plan(args_shape=[(1,)])
    ... def inc(x):
    ...     return x + 1
    >>> protocol = sy.Protocol([("w1", inc), ("w2", inc)])
    >>> _ = protocol.deploy(sy.VirtualWorker(hook, id="w_a"), sy.VirtualWorker(hook, id="w_b"))
    >>> protocol.run(torch.tensor([1.0])).get()
    tensor([3.])

A protocol is made of ``(worker, plan)`` pairs, where ``worker`` is a worker or a name that
stands for one: ``deploy(*workers)`` gives the names, in order of first appearance, the workers
given, and sends each plan to its worker. ``run(x)`` sends ``x`` to the first worker, runs its
plan, moves the result to the next worker, and so on; the result is a pointer to the last
plan's output. ``send(worker)`` stores the protocol on a worker, which then coordinates
``run`` on data it holds (the result is a pointer to a pointer).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from syft_mpc.errors import LocationError, PlanError
from syft_mpc.plans.plan import Plan, PointerPlan
from syft_mpc.remote.messages import Fetch, PlanDef, PlanStore, ProtocolDef, ProtocolRun, new_id
from syft_mpc.remote.pointers import PointerTensor
from syft_mpc.remote.serde import ObjRef
from syft_mpc.remote.workers import BaseWorker, local_worker

__all__ = ["Protocol", "PointerProtocol"]


class Protocol:
    """A sequence of ``(worker or name, plan)`` steps; see the module docstring."""

    def __init__(self, plans: Sequence[tuple["BaseWorker | str", Plan]], id: "int | None" = None) -> None:
        if not plans:
            raise ValueError("a protocol needs at least one (worker, plan) pair")
        for entry in plans:
            if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], Plan)):
                raise TypeError("a protocol is made of (worker or name, plan) pairs")
            if not isinstance(entry[0], (str, BaseWorker)):
                raise TypeError(f"a protocol step names its worker by a worker or a string, not {type(entry[0]).__name__}")
        self.plans: list[tuple["BaseWorker | str", Plan]] = list(plans)
        self.id = new_id() if id is None else id
        self.owner: BaseWorker = local_worker
        self.tags: set[str] = set()
        self.description = ""
        self.location: "BaseWorker | None" = None
        self.pointer: "PointerProtocol | None" = None
        self._remote_id = 0
        self._deployed: list[PointerPlan] = []

    # ------------------------------------------------------------------ labels (PySyft)

    def tag(self, *tags: str) -> "Protocol":
        """Adds tags (kept with the protocol when it is sent)."""
        self.tags.update(tags)
        return self

    def describe(self, description: str) -> "Protocol":
        """Sets the description (kept with the protocol when it is sent)."""
        self.description = description
        return self

    # ------------------------------------------------------------------ deploying and running

    @property
    def workers(self) -> list["BaseWorker | str"]:
        """The worker (or the name standing for one) of each step."""
        return [w for w, _ in self.plans]

    def _roles(self) -> list[str]:
        return [w if isinstance(w, str) else w.id for w, _ in self.plans]

    @property
    def is_deployed(self) -> bool:
        """Whether every plan is on its worker."""
        return len(self._deployed) == len(self.plans)

    def deploy(self, *workers: BaseWorker) -> "Protocol":
        """Binds the names to ``workers`` (in order of first appearance) and sends each plan to its worker."""
        names: list[str] = []
        for w, _ in self.plans:
            if isinstance(w, str) and w not in names:
                names.append(w)
        if len(workers) != len(names):
            raise PlanError(
                f"this protocol names {len(names)} workers ({', '.join(names) or 'none'}) and deploy got {len(workers)}"
            )
        if len({w.id for w in workers}) != len(workers):
            raise PlanError("deploy each named worker to a different worker")
        binding = dict(zip(names, workers))
        resolved: list[tuple["BaseWorker | str", Plan]] = [
            (binding[w] if isinstance(w, str) else w, plan) for w, plan in self.plans
        ]
        deployed: list[PointerPlan] = []
        for w, plan in resolved:
            assert isinstance(w, BaseWorker)
            if not plan.is_built:
                raise PlanError(f"plan {plan.name!r} is not built: build it (or give func2plan args_shape) before deploying")
            deployed.append(plan.send_to(w))
        self.plans = resolved
        self._deployed = deployed
        return self

    def run(self, *args: Any) -> Any:
        """Runs the plans in order on ``args``; returns a pointer to the last plan's output.

        With local tensors, this process moves the data from worker to worker. With pointers to
        the worker the protocol was sent to, that worker does (one request from here)."""
        if not self.is_deployed:
            raise PlanError("deploy the protocol first: protocol.deploy(*workers)")
        ptrs = [a for a in args if isinstance(a, PointerTensor)]
        if ptrs:
            if self.location is None or any(p.location != self.location for p in ptrs):
                raise LocationError(
                    "a protocol runs on pointers at the worker it was sent to: protocol.send(worker) first, "
                    "or run it on local tensors"
                )
            if len(ptrs) != len(args):
                raise PlanError("run a sent protocol on pointers only")
            rid = new_id()
            desc = self.owner._send(self.location, ProtocolRun(self._remote_id, tuple(ObjRef(p.id_at_location) for p in ptrs), rid))
            return self.owner._pointer_from_desc(desc)
        current: Any = args
        for (w, _), ptr_plan in zip(self.plans, self._deployed):
            assert isinstance(w, BaseWorker)
            moved = tuple(_to(a, w) for a in current)
            out = ptr_plan(*moved)
            current = out if isinstance(out, tuple) else (out,)
        return current[0] if len(current) == 1 else current

    def definition(self) -> ProtocolDef:
        """The protocol as it travels: one plan per step (with its id on that step's worker once deployed)."""
        steps = []
        plans: list[PlanDef] = []
        for i, (w, plan) in enumerate(self.plans):
            d = plan.definition
            if self.is_deployed:
                pid = self._deployed[i].id_at_location
                d = PlanDef(pid, d.name, d.in_tree, d.n_inputs, d.state, d.nodes, d.outputs)
            plans.append(d)
            steps.append((self._roles()[i], w.id if isinstance(w, BaseWorker) and self.is_deployed else "", i))
        return ProtocolDef(self.id, steps, plans, sorted(self.tags), self.description)

    def send(self, worker: BaseWorker) -> "Protocol":
        """Stores the protocol on ``worker``; ``run`` on pointers to data there then runs it there."""
        for _, plan in self.plans:
            if not plan.is_built:
                raise PlanError(f"plan {plan.name!r} is not built: build it before sending the protocol")
        rid = new_id()
        self.owner._send(worker, PlanStore(rid, self.definition()))
        self.location = worker
        self._remote_id = rid
        self.pointer = PointerProtocol(self.owner, worker, rid, garbage_collect_data=True)
        return self

    @classmethod
    def from_definition(cls, d: ProtocolDef) -> "Protocol":
        """The protocol a worker held (what ``.get()`` on a pointer to a protocol returns), not deployed."""
        plans = {}
        steps: list[tuple["BaseWorker | str", Plan]] = []
        for role, _, idx in d.steps:
            if idx not in plans:
                plans[idx] = Plan.from_definition(d.plans[idx])
            steps.append((role, plans[idx]))
        p = cls(steps, id=d.protocol_id)
        p.tags, p.description = set(d.tags), d.description
        return p

    def __repr__(self) -> str:
        out = f"<Protocol id:{self.id} owner:{self.owner.id}"
        if self.tags:
            out += " Tags: " + " ".join(sorted(self.tags))
        if self.location is not None:
            out += f" location:{self.location.id}"
        if self.is_deployed:
            out += " deployed"
        out += ">"
        for role, (_, plan) in zip(self._roles(), self.plans):
            out += f"\n - {role}: {plan.name}"
        return out


def _to(a: Any, w: BaseWorker) -> Any:
    if isinstance(a, PointerTensor):
        return a if a.location == w else a.move(w)
    if isinstance(a, torch.Tensor):
        return a.send(w)  # type: ignore[attr-defined]
    return a


class PointerProtocol:
    """A protocol stored on a worker (kept by ``protocol.send``, or found there with a search).

    With ``garbage_collect_data`` (the pointer ``protocol.send`` makes) the worker forgets the
    protocol when this pointer goes away; a search answers with pointers that do not own it."""

    def __init__(
        self, owner: BaseWorker, location: BaseWorker, id_at_location: int, garbage_collect_data: bool = False
    ) -> None:
        self.owner, self.location, self.id_at_location = owner, location, id_at_location
        self.id = new_id()
        self.garbage_collect_data = garbage_collect_data

    def __del__(self) -> None:
        try:
            if self.garbage_collect_data:
                self.owner._queue_delete(self.location, self.id_at_location)
        except Exception:  # interpreter shutdown
            pass

    def get(self) -> Protocol:
        """Brings the protocol here (the worker forgets it); deploy it to run it."""
        d = self.owner._send(self.location, Fetch(self.id_at_location, True))
        if not isinstance(d, ProtocolDef):
            raise PlanError(f"object {self.id_at_location} on worker {self.location.id} is not a protocol")
        self.garbage_collect_data = False
        return Protocol.from_definition(d)

    def __repr__(self) -> str:
        return f"[PointerProtocol | {self.owner.id}:{self.id} -> {self.location.id}:{self.id_at_location}]"
