"""The worker side of plans and protocols: the handlers of ``PlanStore``, ``PlanRun`` and ``ProtocolRun``.

A worker checks a plan when it arrives (every node against the plan allowlist, on top of the
structural checks of decoding) and keeps it in its object store under the id the driver chose,
like a tensor: it runs many times by id, is deleted when its pointer dies, and comes back with
``Fetch`` (``.get()``). :data:`HANDLERS` is registered by the composition root (:mod:`syft_mpc.hook`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from syft_mpc.errors import PlanError
from syft_mpc.plans import graph
from syft_mpc.remote.messages import Move, PlanDef, PlanRun, PlanStore, ProtocolDef, ProtocolRun, Store, new_id
from syft_mpc.remote.pointers import PointerTensor
from syft_mpc.remote.serde import ObjRef, PointerDesc

if TYPE_CHECKING:
    from syft_mpc.remote.workers import BaseWorker

__all__ = ["HANDLERS"]


def _handle_store(worker: "BaseWorker", msg: PlanStore) -> tuple[Any, None]:
    plans = msg.obj.plans if isinstance(msg.obj, ProtocolDef) else [msg.obj]
    for p in plans:
        graph.check_ops(p, f"worker {worker.id}")
    worker._store(msg.obj_id, msg.obj)
    return None, None


def _plan(worker: "BaseWorker", plan_id: int) -> PlanDef:
    obj = worker._get_obj(plan_id)
    if not isinstance(obj, PlanDef):
        raise TypeError(f"object {plan_id} on worker {worker.id} is not a plan")
    return obj


def _inputs(worker: "BaseWorker", args: tuple[Any, ...]) -> list[Any]:
    out = []
    for a in args:
        if isinstance(a, ObjRef):
            a = worker._get_obj(a.id)
        if not isinstance(a, torch.Tensor):
            kind = "a pointer (the data is on another worker)" if isinstance(a, PointerTensor) else type(a).__name__
            raise TypeError(f"a plan on worker {worker.id} runs on tensors stored there, not on {kind}")
        out.append(a)
    return out


def _handle_run(worker: "BaseWorker", msg: PlanRun) -> tuple[Any, None]:
    plan = _plan(worker, msg.plan_id)
    out = graph.flat_outputs(graph.run(plan, _inputs(worker, msg.args)))
    if len(out) != len(msg.return_ids) or len(set(msg.return_ids)) != len(msg.return_ids):
        raise PlanError(f"plan {plan.name!r} has {len(out)} outputs, the request named {len(msg.return_ids)} distinct ids")
    for rid in msg.return_ids:  # all or nothing: no output is stored if one id is taken
        if rid in worker._objects:
            raise ValueError(f"object id {rid} is already in use on worker {worker.id}")
    descs = []
    for rid, t in zip(msg.return_ids, out):
        worker._store(rid, t)
        descs.append(PointerDesc(worker.id, rid, t.shape, t.dtype, t.requires_grad))
    return descs, None


def _ask(worker: "BaseWorker", dest: "BaseWorker", body: Any) -> Any:
    """Sends ``body`` to ``dest``; a step on this very worker runs here (a worker process cannot send to itself)."""
    if dest.id == worker.id:
        value, commit = worker._dispatch(body)
        if commit is not None:
            commit()
        return value
    return worker._send(dest, body)


def _forget(worker: "BaseWorker", dest: "BaseWorker", obj_id: int) -> None:
    if dest.id == worker.id:
        worker._forget(obj_id)
    else:
        worker._queue_delete(dest, obj_id)


def _handle_protocol_run(worker: "BaseWorker", msg: ProtocolRun) -> tuple[Any, None]:
    """Runs a stored, deployed protocol with this worker as the coordinator: the data goes
    from step to step worker to worker (``Store``/``Move``), each step runs by ``PlanRun``,
    and this worker keeps a pointer to the last result."""
    proto = worker._get_obj(msg.protocol_id)
    if not isinstance(proto, ProtocolDef):
        raise TypeError(f"object {msg.protocol_id} on worker {worker.id} is not a protocol")
    if any(not wid for _, wid, _ in proto.steps):
        raise PlanError("this protocol is not deployed: call protocol.deploy(*workers) before protocol.send(worker)")
    current: list[Any] = [ObjRef(a.id) if isinstance(a, ObjRef) else a for a in msg.args]
    for a in current:
        if isinstance(a, ObjRef):
            worker._get_obj(a.id)  # fail before anything moves
    where: "BaseWorker" = worker
    ptrs: list[PointerTensor] = []
    callers = True  # current holds the caller's own objects, on this worker
    for _role, wid, idx in proto.steps:
        dest = worker.get_worker(wid)
        plan = proto.plans[idx]
        moved = []
        for a in current:
            if where.id == dest.id:  # already there (the same worker runs two steps in a row)
                moved.append(a)
                continue
            nid = new_id()
            if where is worker:  # data held here: store a copy of it at the step's worker
                t = worker._get_obj(a.id) if isinstance(a, ObjRef) else a
                _ask(worker, dest, Store(nid, t))
            else:
                _ask(worker, where, Move(a.id, dest.id, nid, False))
            moved.append(ObjRef(nid))
        rids = [new_id() for _ in graph.flat_outputs(plan.outputs)]
        descs = _ask(worker, dest, PlanRun(plan.plan_id, tuple(moved), rids))
        if not (callers and where.id == dest.id):  # the step's inputs served their purpose
            for r in moved:  # (but the caller's own data stays where it is)
                _forget(worker, dest, r.id)
        callers = False
        ptrs = [worker._pointer_from_desc(d) for d in descs]
        for p in ptrs:
            p._consume("it is moved on by the protocol")  # this loop tracks and frees the ids
        current = [ObjRef(p.id_at_location) for p in ptrs]
        where = dest
    if len(ptrs) != 1:
        raise PlanError(f"a protocol run remotely returns one tensor; the last plan returns {len(ptrs)}")
    last = ptrs[0]
    result = PointerTensor(worker, last.location, last.id_at_location, last.shape, last.dtype, last.requires_grad)
    worker._store(msg.return_id, result)
    return PointerDesc(worker.id, msg.return_id, result.shape, result.dtype, result.requires_grad), None


HANDLERS: dict[type, Callable[["BaseWorker", Any], "tuple[Any, Callable[[], None] | None]"]] = {
    PlanStore: _handle_store,
    PlanRun: _handle_run,
    ProtocolRun: _handle_protocol_run,
}
