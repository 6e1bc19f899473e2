"""The worker side of MPC sessions: the handlers of the MPC requests.

A share-holding worker keeps one :class:`~syft_mpc.Party` per session it joined
(``MpcJoin`` -> ``Party.connect`` on TCP); the crypto provider keeps a
:class:`~syft_mpc.Dealer` serving on a background thread. ``MpcRun`` runs one operation of
the fixed table :data:`~syft_mpc.mpc_session.ops.MPC_OPS` on the worker's stored shares
(``torch.int64`` tensors in ``worker._objects``); the parties of a session talk to each
other directly, in Rust. :data:`HANDLERS` maps each request type to its handler; the
composition root (:mod:`syft_mpc.hook`) registers them with every worker.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

import torch

from syft_mpc import _native
from syft_mpc.errors import ProtocolError, UnsupportedOperationError
from syft_mpc.fixed_point import encode, from_ring, to_ring
from syft_mpc.mpc_session.ops import INTERACTIVE, MPC_OPS, OpContext, working_bytes
from syft_mpc.net.addresses import free_port
from syft_mpc.remote import serde
from syft_mpc.remote.messages import Envelope, Err, MpcJoin, MpcLeave, MpcPort, MpcRun, MpcShareOut, MpcStats, Ok, Store
from syft_mpc.remote.serde import ObjRef

if TYPE_CHECKING:
    from syft_mpc.remote.workers import BaseWorker

__all__ = ["HANDLERS", "close_sessions_of"]


class _PartyState:
    __slots__ = ("party", "id", "n", "owner", "busy")

    def __init__(self, party: Any, pid: int, n: int, owner: "str | None" = None) -> None:
        self.party, self.id, self.n = party, pid, n
        self.owner = owner  # the client (hello uid) whose MpcJoin opened it, on a worker server
        # One operation at a time per session (an op may make several party calls, which the
        # parties must see in the same order); the store's lock is not held meanwhile.
        self.busy = threading.Lock()


class _Joining:
    """Holds a session's name while its ``MpcJoin`` waits for the network (without the store's lock)."""

    __slots__ = ("owner",)

    def __init__(self, owner: "str | None") -> None:
        self.owner = owner


def _state(worker: "BaseWorker") -> dict[str, Any]:
    st: dict[str, Any] = worker.__dict__.setdefault("_mpc_sessions", {})
    return st


def _handle_join(worker: "BaseWorker", msg: MpcJoin) -> tuple[Any, None]:
    st = _state(worker)
    if msg.session in st:
        raise ProtocolError(f"worker {worker.id} already joined MPC session {msg.session!r}")
    n = len(msg.addrs)
    # A worker started with a TLS certificate (server.WorkerServer) runs its MPC connections
    # over TLS: as the dealer it only accepts; as a party it also connects (and needs the CA).
    tls: "dict[str, str | None]" = getattr(worker, "mpc_tls", None) or {}
    owner = getattr(worker, "current_client", None)
    placeholder = _Joining(owner)
    st[msg.session] = placeholder
    try:
        # Connecting waits for the peers and the dealer (up to msg.timeout_s): not under the store's lock.
        with worker.unlocked():
            if msg.party_id < 0:
                joined: Any = _native.Dealer.connect(
                    n,
                    msg.dealer_addr,
                    msg.token,
                    session=msg.session,
                    timeout_s=msg.timeout_s,
                    tls_cert=tls.get("tls_cert"),
                    tls_key=tls.get("tls_key"),
                )
            else:
                joined = _native.Party.connect(
                    msg.party_id, list(msg.addrs), msg.dealer_addr, msg.token, session=msg.session,
                    timeout_s=msg.timeout_s, **tls,
                )
    except BaseException:
        if st.get(msg.session) is placeholder:
            del st[msg.session]
        raise
    if st.get(msg.session) is not placeholder:  # left, or its client's objects were freed, meanwhile
        if msg.party_id < 0:
            joined.close()
        else:
            joined.abort()
        raise ProtocolError(f"MPC session {msg.session!r} on worker {worker.id} was closed while it was being joined")
    if msg.party_id < 0:
        dealer = joined

        def serve() -> None:
            try:
                dealer.serve()
            except Exception:  # the parties report the failure; the dealer just stops
                pass
            finally:
                dealer.close()
                if _state(worker).get(msg.session) is dealer:
                    _state(worker).pop(msg.session, None)

        st[msg.session] = dealer
        threading.Thread(target=serve, name=f"dealer-{worker.id}-{msg.session}", daemon=True).start()
        return None, None
    st[msg.session] = _PartyState(joined, msg.party_id, n, owner)
    return None, None


def close_sessions_of(worker: "BaseWorker", owner: str) -> int:
    """Aborts the parties that client ``owner`` opened on ``worker`` (its driver went away for
    good: nobody will drive or close them). Their peers fail at once, and a dealer stops when
    its sessions' last party goes. Call without the worker's lock: an abort waits for an
    operation of that party in progress. Returns how many."""
    st = _state(worker)
    mine = [k for k, v in list(st.items()) if isinstance(v, (_PartyState, _Joining)) and v.owner == owner]
    for k in mine:
        v = st.pop(k, None)
        if isinstance(v, _PartyState):
            v.party.abort()
    return len(mine)


def _handle_leave(worker: "BaseWorker", msg: MpcLeave) -> tuple[Any, None]:
    obj = _state(worker).pop(msg.session, None)
    if isinstance(obj, _PartyState):
        with worker.unlocked():  # waits for an operation of this party in progress
            obj.party.close()
    elif obj is not None and not isinstance(obj, _Joining):
        # A dealer's close waits until its serve() returns, i.e. until every party has left; one
        # may be stuck (a stalled peer) until its own timeout. The leave must not wait for that:
        # this worker's requests, and the driver's recovery, go on meanwhile.
        threading.Thread(target=obj.close, name=f"dealer-close-{msg.session}", daemon=True).start()
    return None, None


def _handle_stats(worker: "BaseWorker", msg: MpcStats) -> tuple[Any, None]:
    st = _state(worker).get(msg.session)
    # A dealer is busy in serve() for the whole session; its traffic shows in the parties'
    # dealer_bytes_received.
    if not isinstance(st, _PartyState):
        return {}, None
    with worker.unlocked():  # waits for an operation of this party in progress
        return dict(st.party.stats()), None


def _resolve(worker: "BaseWorker", v: Any) -> Any:
    if isinstance(v, ObjRef):
        return worker._get_obj(v.id)
    tv = type(v)
    if tv is tuple or tv is list:
        return tv(_resolve(worker, x) for x in v)
    if tv is dict:
        return {k: _resolve(worker, x) for k, x in v.items()}
    return v


def _handle_run(worker: "BaseWorker", msg: MpcRun) -> tuple[Any, None]:
    st = _state(worker).get(msg.session)
    if not isinstance(st, _PartyState):
        raise ProtocolError(
            f"worker {worker.id} holds no party of MPC session {msg.session!r} (it was closed or failed); "
            "the driver re-creates the session on the next operation"
        )
    fn = MPC_OPS.get(msg.op)
    if fn is None:
        raise UnsupportedOperationError(f"MPC operation {msg.op!r} is not in syft_mpc.mpc_session.MPC_OPS")
    try:
        args = _resolve(worker, msg.args)
        kwargs = _resolve(worker, msg.kwargs)
        # Sized before anything is allocated: a (2^17 x 1) @ (1 x 2^17) product asks for 128 GiB.
        need = working_bytes(msg.op, args, kwargs, len(msg.return_ids))
        if need:
            described = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
            worker.memory_budget.check(need, f"MPC operation {msg.op} on shares of shapes {described}")
        # The shares are looked up under the store's lock; the operation (which waits for the
        # peers and the dealer) runs without it.
        with worker.unlocked(), st.busy, torch.no_grad():
            out = fn(OpContext(st.party, st.id, st.n), *args, **kwargs)
    except BaseException:
        if msg.op in INTERACTIVE:
            # Our peers may be waiting for this step: fail them now (PeerDisconnected), not at their timeout.
            st.party.abort()
            if _state(worker).get(msg.session) is st:
                _state(worker).pop(msg.session, None)
        raise
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if len(outs) != len(msg.return_ids):
        raise ProtocolError(f"MPC operation {msg.op} made {len(outs)} results for {len(msg.return_ids)} ids")
    shapes = []
    for rid, t in zip(msg.return_ids, outs):
        if t.dtype != torch.int64:
            raise ProtocolError(f"MPC operation {msg.op} produced {t.dtype}, not int64 shares")
        worker._store(rid, t)
        shapes.append(tuple(t.shape))
    return shapes, None


def _store_on(worker: "BaseWorker", dest: "BaseWorker", obj_id: int, t: torch.Tensor) -> None:
    """Stores ``t`` on ``dest`` and waits for its reply (``_deliver``, never a posted ``Store``:
    the driver's next request to ``dest`` travels on another connection and must find the share)."""
    data = serde.encode(Envelope(worker.id, [], Store(obj_id, t)))
    with worker.unlocked():
        raw = dest._deliver(data)
    reply = serde.decode(raw)
    if isinstance(reply, Err):
        raise ProtocolError(f"worker {dest.id} refused a share from {worker.id}: {reply.err_type}: {reply.message}")
    if not isinstance(reply, Ok):
        raise ProtocolError(f"worker {dest.id} sent a reply of type {type(reply).__name__}")


def _handle_share_out(worker: "BaseWorker", msg: MpcShareOut) -> tuple[Any, None]:
    """``ptr.share(...)`` / ``ptr.fix_prec().share(...)``: split a local tensor, send the shares to their holders."""
    obj = worker._get_obj(msg.obj_id)
    if not isinstance(obj, torch.Tensor):
        raise TypeError(
            f"object {msg.obj_id} on worker {worker.id} is a {type(obj).__name__}; only a plain tensor can be "
            "shared remotely (for a pointer chain, .remote_get() it first)"
        )
    x = obj.detach()
    # The encoding, one share per holder and the ring copies: sized before any is made.
    worker.memory_budget.check(
        x.nelement() * 8 * (len(msg.holders) + 2), f"sharing object {msg.obj_id} of shape {tuple(x.shape)} among {len(msg.holders)}"
    )
    if msg.precision >= 0:
        enc = encode(x, msg.base, msg.precision)
    else:
        if x.dtype.is_floating_point or x.dtype.is_complex:
            raise TypeError(
                f"a {x.dtype} tensor cannot be shared as it is: encode it first with ptr.fix_precision().share(...)"
            )
        enc = x.to(torch.int64)
    dests = [None if h == worker.id else worker.get_worker(h) for h in msg.holders]  # resolve all before sending any
    parts = _native.share(to_ring(enc), len(msg.holders))
    stored: list[Any] = []
    try:
        for dest, p in zip(dests, parts):
            t = from_ring(p).reshape(enc.shape)
            if dest is None:
                worker._store(msg.share_id, t)
            else:
                _store_on(worker, dest, msg.share_id, t)
            stored.append(dest)
    except BaseException:
        for dest in stored:  # no half-shared tensor stays behind
            if dest is None:
                worker._forget(msg.share_id)
            else:
                worker._queue_delete(dest, msg.share_id)
        raise
    return list(enc.shape), None


def _handle_port(worker: "BaseWorker", msg: MpcPort) -> tuple[Any, None]:
    try:
        return free_port(msg.host), None
    except OSError as e:
        raise ValueError(
            f"worker {worker.id} cannot listen on {msg.host} for an MPC session ({e}); the driver reaches it "
            "by that address, so it must be an address of the worker's machine (start the worker with "
            "--host set to an address the driver and the other workers can reach)"
        ) from None


HANDLERS: dict[type, Callable[..., "tuple[Any, Callable[[], None] | None]"]] = {
    MpcJoin: _handle_join,
    MpcRun: _handle_run,
    MpcLeave: _handle_leave,
    MpcStats: _handle_stats,
    MpcShareOut: _handle_share_out,
    MpcPort: _handle_port,
}
"""Request type -> handler(worker, request) -> (reply value, commit or None)."""
