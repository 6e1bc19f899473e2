"""The driver side of MPC sessions: groups of share holders, and requests fanned out to them.

:class:`Group` is a set of share holders plus a crypto provider with a live session
(created on first use, re-created after a failure). :func:`fan_out` sends one request to
each of several workers concurrently and collects the replies: a Party method blocks until
every party has joined the step, so the driver must never deliver them one after the other.
When every holder is a socket worker, :meth:`Group.run` instead posts each MpcRun without
waiting (the driver infers the result shapes with
:func:`~syft_mpc.mpc_session.ops.infer_shapes`) and waits only in :meth:`Group.flush`
(reveals, stats, ops it cannot describe, a bound on the backlog).

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob, alice, james = (sy.VirtualWorker(hook, id=i) for i in ("bob", "alice", "james"))
    >>> x = torch.tensor([1, -2, 3]).share(bob, alice, crypto_provider=james)
    >>> (x * x).get()
    tensor([1, 4, 9])
"""

from __future__ import annotations

import math
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from syft_mpc.errors import ProtocolError, TransportError, UnsupportedOperationError
from syft_mpc.mpc_session.ops import INTERACTIVE, MPC_OPS
from syft_mpc.net.addresses import free_port
from syft_mpc.remote.messages import MpcJoin, MpcLeave, MpcPort, MpcRun, MpcStats, new_id
from syft_mpc.remote.workers import BaseWorker, local_worker

__all__ = ["DEFAULT_TIMEOUT_S", "Group", "close_all_sessions", "fan_out", "group_of"]

DEFAULT_TIMEOUT_S = 30.0
"""Bound on every wait of a party for a peer or the dealer (join and each protocol step)."""


_POOL: "ThreadPoolExecutor | None" = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="syft-fanout")
        return _POOL


def fan_out(
    requests: Sequence[tuple["BaseWorker", Any]],
    timeout_s: float = 4 * DEFAULT_TIMEOUT_S,
    concurrent: bool = True,
    errors_out: "list[BaseException] | None" = None,
) -> list[Any]:
    """Sends ``body`` to each ``worker`` (concurrently unless told otherwise) and returns the replies in order.

    Waits for every reply (each bounded by ``timeout_s``) before raising, so no request
    is still running when this returns. When several fail, the root cause is raised:
    an error that is not a transport error outranks the ``PeerDisconnected`` errors it
    causes in the other parties. ``errors_out``, if given, receives every failure.
    """

    if not concurrent or len(requests) == 1:
        return [local_worker._send(w, body) for w, body in requests]
    futs = [_pool().submit(local_worker._send, w, body) for w, body in requests]
    results: list[Any] = []
    errors: list[BaseException] = []
    for (w, _), f in zip(requests, futs):
        try:
            results.append(f.result(timeout=timeout_s))
        except BaseException as e:  # noqa: BLE001 - re-raised below
            # A PeerTimeout from the request is a TimeoutError too: only a future still
            # running timed out here.
            errors.append(e if f.done() else TimeoutError(f"worker {w.id} did not answer within {timeout_s} s"))
    if errors:
        if errors_out is not None:
            errors_out.extend(errors)
        root = [e for e in errors if not _is_transport(e)]
        raise (root or errors)[0]
    return results


def _is_transport(e: BaseException) -> bool:
    return isinstance(e, TransportError) or getattr(e, "remote_type", "") in (
        "PeerDisconnected",
        "PeerTimeout",
        "TransportError",
        "ProtocolError",
    )


class Group:
    """Share holders (party i = ``workers[i]``) plus a crypto provider, with a live MPC session.

    Made once per distinct ``(workers, crypto_provider)`` by :func:`group_of`. The session
    is joined lazily and re-joined after a failure (shares do not depend on a session).
    ``host`` is the loopback address where VirtualWorkers' parties listen.
    """

    def __init__(self, workers: Sequence["BaseWorker"], crypto_provider: "BaseWorker", host: str = "127.0.0.1") -> None:
        self.workers = tuple(workers)
        self.crypto_provider = crypto_provider
        self.host = host
        self.session: "str | None" = None
        self.addresses: "tuple[tuple[str, ...], str] | None" = None  # (parties, dealer) of the last session opened
        self.timeout_s = DEFAULT_TIMEOUT_S
        self.truncation = "dealer"
        self._lock = threading.RLock()
        self._stale: list[tuple[BaseWorker, str]] = []  # (member, session) whose MpcLeave could not be sent
        self._posted = 0  # MpcRuns posted (not waited for) since the holders last confirmed they ran
        self._posted_elements = 0  # elements those posted interactive ops produce: a measure of their work
        self._posted_op = ""  # the first of them, named in an error
        self._undo: list[Callable[[], None]] = []  # run (last first) if a posted op fails: in-place updates made since

    @property
    def n(self) -> int:
        return len(self.workers)

    def __repr__(self) -> str:
        ws = ", ".join(w.id for w in self.workers)
        return f"<Group parties:({ws}) crypto_provider:{self.crypto_provider.id}>"

    @property
    def has_posted(self) -> bool:
        """Whether MpcRuns were posted since the holders last confirmed they ran (one may still fail)."""
        return self._posted > 0

    def _listen_addresses(self) -> list[str]:
        """Where each party, then the dealer, listens in a new session. A socket worker
        listens on its own host (the address the driver reaches it by) at a free port it
        picks there, so the members may sit on different machines; a VirtualWorker on this
        process's ``host``."""
        members = (*self.workers, self.crypto_provider)
        hosts = {w.id: h for w in members if isinstance(h := getattr(w, "host", None), str)}
        remote = [w for w in members if w.id in hosts]
        ports = dict(zip(hosts, fan_out([(w, MpcPort(hosts[w.id])) for w in remote], timeout_s=self.timeout_s)))
        out = []
        for w in members:
            host = hosts.get(w.id, self.host)
            port = ports[w.id] if w.id in ports else free_port(host)
            out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return out

    def ensure_session(self) -> str:
        with self._lock:
            if self.session is None:
                name = f"syft-{secrets.token_hex(8)}"
                token = secrets.token_hex(16)
                *addrs, dealer_addr = self._listen_addresses()
                self.addresses = (tuple(addrs), dealer_addr)
                reqs: list[tuple[BaseWorker, Any]] = [
                    (self.crypto_provider, MpcJoin(name, -1, addrs, dealer_addr, token, float(self.timeout_s)))
                ]
                reqs += [(w, MpcJoin(name, i, addrs, dealer_addr, token, float(self.timeout_s))) for i, w in enumerate(self.workers)]
                errors: list[BaseException] = []
                try:
                    fan_out(reqs, timeout_s=self.timeout_s * 2, errors_out=errors)
                except BaseException as e:
                    culprit, dead = self._culprit("set-up", e, errors)
                    self._leave(name, skip=dead)
                    if culprit is not None:
                        raise culprit from e
                    raise
                self.session = name
                self._leave_stale()  # every member just answered its join
            return self.session

    def _culprit(
        self, what: str, e: BaseException, errors: Sequence[BaseException] = ()
    ) -> "tuple[BaseException | None, set[str]]":
        """After a transport failure of the session: which member is gone? Each party only
        sees its neighbour fail ("party 1 closed the connection", even when the dealer died
        and party 1 gave up). A member whose own connection to the driver was closed
        (``errors``: every failure of the fan-out) is gone; otherwise every member is asked
        for a sync (each bounded by its own timeout: a timeout alone may be a member busy
        waiting for the one that hangs). Returns the error to raise instead (naming the
        unreachable worker, or the original annotated with who is who) and the ids of the
        unreachable members."""
        if not (_is_transport(e) or isinstance(e, TimeoutError)):
            return None, set()
        members = (*self.workers, self.crypto_provider)
        ids = {w.id for w in members}
        dead: dict[str, BaseException] = {}
        for x in errors:
            wid = getattr(x, "worker", None)
            if isinstance(x, TransportError) and not isinstance(x, TimeoutError) and wid in ids:
                dead.setdefault(wid, x)
        if not dead:
            probes = [(w, getattr(w, "sync", None)) for w in members]  # SocketWorkers; VirtualWorkers cannot vanish
            futs = [(w, _pool().submit(sync)) for w, sync in probes if callable(sync)]
            for w, f in futs:
                try:
                    f.result()
                except TransportError as probe_err:
                    dead[w.id] = probe_err
                except Exception:  # it answered (an earlier posted request's failure): reachable
                    pass
        roles = ", ".join(f"party {i} = {w.id}" for i, w in enumerate(self.workers))
        roles += f", dealer = crypto provider {self.crypto_provider.id}"
        if dead:
            wid, first = next(iter(dead.items()))
            role = "the crypto provider" if wid == self.crypto_provider.id else "share holder"
            err: BaseException = type(first)(f"MPC {what} failed: {role} {wid} cannot be reached ({roles}): {first}")
        elif getattr(e, "remote_type", ""):
            err = type(e)(f"{e} ({roles})")
        else:
            return None, set()
        for attr in ("worker", "peer", "remote_type"):
            v = getattr(first if dead else e, attr, None)
            if v is not None:
                setattr(err, attr, v)
        if dead:
            err.worker = wid  # type: ignore[attr-defined]
        return err, set(dead)

    def _leave_stale(self, connected_only: bool = False) -> None:
        """Sends the leaves that unreachable members missed: a member that was only cut off
        (a stalled or dropped link) still holds its party of the failed session. With
        ``connected_only``, only to members the driver is connected to again (a dead one
        would cost a connect timeout); the others are forgotten."""

        stale, self._stale = self._stale, []
        for w, name in stale:
            if connected_only and not w.is_linked():  # a SocketWorker not reconnected
                continue
            try:
                local_worker._send(w, MpcLeave(name))
            except Exception:  # still unreachable, or restarted: nothing to close there
                pass

    def _leave(self, name: str, skip: "set[str] | frozenset[str]" = frozenset()) -> None:
        for w in (*self.workers, self.crypto_provider):
            # Unreachable, or no connection open (closed by the user, or cut): dialling it would
            # only add a connect timeout, the whole of it for a stopped worker. Kept for when it
            # is reached again; a worker never reached again ends this client's sessions when
            # its grace period for the client ends.
            if w.id in skip or not w.is_linked():
                self._stale.append((w, name))
                continue

            for _ in range(2):
                try:
                    local_worker._send(w, MpcLeave(name))
                except TransportError:
                    break
                except Exception:  # a posted request's failure came back instead: this one did not run
                    continue
                break

    def close(self) -> None:
        """Closes the session (parties and dealer); the next operation opens a new one."""
        with self._lock:
            try:
                self.flush()  # a failure of posted ops drops the session itself
            except Exception:
                pass
            if self.session is not None:
                name, self.session = self.session, None
                self._leave(name)
            self._leave_stale(connected_only=True)

    @property
    def asynchronous(self) -> bool:
        """Whether MpcRuns are posted without waiting: every share holder is a worker whose
        transport can (a :class:`~syft_mpc.net.socket_worker.SocketWorker` with ``asynchronous``)."""
        return all(getattr(w, "async_commands", False) for w in self.workers)

    def run(
        self,
        op: str,
        args: tuple[Any, ...],
        kwargs: "dict[str, Any] | None" = None,
        n_out: int = 1,
        shapes: "Sequence[tuple[int, ...]] | None" = None,
    ) -> tuple[list[int], list[tuple[int, ...]]]:
        """Runs MPC op ``op`` on every share holder; returns the new share ids and their shapes.

        ``args`` may hold ObjRefs (the same id names a tensor's share on every holder)
        and public values. ``shapes``: the result shapes, when the caller inferred them
        (:func:`infer_shapes`); then, if the group is :attr:`asynchronous`, the op is posted to
        every holder without waiting (holders run their requests in order; a failure is raised
        by the next wait: :meth:`flush`, a reveal, an op that waits). Otherwise interactive ops
        go out concurrently and the replies are awaited (and checked against ``shapes``).
        After a failure of an interactive op (of any posted op) the session is dropped (its
        parties aborted) and re-created on the next call.
        """
        if op not in MPC_OPS:
            raise UnsupportedOperationError(f"MPC operation {op!r} is not in syft_mpc.mpc_session.MPC_OPS")
        interactive = op in INTERACTIVE
        with self._lock:
            if shapes is not None and self.asynchronous:
                return self._post(op, args, kwargs, n_out, shapes, interactive)
            if self._posted:
                self.flush()  # what was posted runs first; its failure must not land on this request
            session = self.ensure_session()
            ids = [new_id() for _ in range(n_out)]
            body = MpcRun(session, op, tuple(args), dict(kwargs or {}), ids)
            errors: list[BaseException] = []
            try:
                replies = fan_out([(w, body) for w in self.workers], concurrent=interactive, errors_out=errors)
            except BaseException as e:
                self._delete(ids)  # holders that finished stored results nobody will name
                if interactive:
                    self._failed(session, f"operation {op!r}", e, errors)
                raise
            got = [tuple(s) for s in replies[0]]
            if shapes is not None and [tuple(s) for s in shapes] != got:
                raise ProtocolError(f"MPC operation {op}: the holders made shapes {got}, the driver expected {list(shapes)}")
            return ids, got

    # Bounds on what may be posted before the driver waits for the holders: a wait is bounded by
    # each worker's timeout, so the work queued ahead of it must stay far below that.
    MAX_POSTED = 1024
    MAX_POSTED_ELEMENTS = 1 << 23  # elements out of posted interactive ops (~1 s of protocol work here)

    def _post(
        self, op: str, args: Any, kwargs: Any, n_out: int, shapes: Sequence[tuple[int, ...]], interactive: bool
    ) -> tuple[list[int], list[tuple[int, ...]]]:

        session = self.ensure_session()
        ids = [new_id() for _ in range(n_out)]
        body = MpcRun(session, op, tuple(args), dict(kwargs or {}), ids)
        if not self._posted:
            self._posted_op = op
        self._posted += 1
        try:
            for w in self.workers:
                local_worker._send(w, body, post=True)
        except BaseException as e:
            # The link to a holder broke: the others may be waiting in this op for it.
            self._delete(ids)
            self._posted = self._posted_elements = 0
            self._confirmed(False)
            self._failed(session, f"operation {op!r}", e, [e])
            raise
        if interactive:
            self._posted_elements += sum(math.prod(s) for s in shapes)
        if self._posted >= self.MAX_POSTED or self._posted_elements >= self.MAX_POSTED_ELEMENTS:
            self.flush()
        return ids, [tuple(s) for s in shapes]

    def on_failure(self, undo: Callable[[], None]) -> None:
        """Registers ``undo`` to run if an op posted so far fails (in-place updates of shared
        tensors: they then keep the shares they had, as after a failure of a synchronous op)."""
        self._undo.append(undo)

    def _confirmed(self, ok: bool) -> None:
        undo, self._undo = self._undo, []
        if not ok:
            for fn in reversed(undo):
                fn()

    def flush(self) -> None:
        """Waits until every share holder has run the MpcRuns posted so far; raises the first
        failure among them (the root cause, naming an unreachable worker, as :meth:`run` does)
        and then drops the session (re-created on the next operation). No-op when nothing is posted."""
        with self._lock:
            if not self._posted:
                return
            what = f"operation {self._posted_op!r} or one sent after it without waiting"
            self._posted = self._posted_elements = 0
            session = self.session
            futs = [(w, _pool().submit(getattr(w, "sync"))) for w in self.workers]  # posting needs SocketWorkers
            errors: list[BaseException] = []
            for w, f in futs:
                try:
                    f.result()
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    errors.append(e)
            self._confirmed(not errors)
            if errors:
                root = [e for e in errors if not _is_transport(e)]
                first = (root or errors)[0]
                if session is not None:
                    self._failed(session, what, first, errors)
                raise first

    def _failed(self, session: str, what: str, e: BaseException, errors: Sequence[BaseException]) -> None:
        """An op of ``session`` failed: drop the session (its members leave it), and raise the
        error naming the unreachable member, if one is (otherwise return: the caller raises ``e``)."""
        self.session = None
        culprit, dead = self._culprit(what, e, errors)
        self._leave(session, skip=dead)
        if culprit is not None:
            raise culprit from e

    def stats(self) -> dict[str, dict[str, int]]:
        """Traffic counters of the live session per share holder, worker id -> ``{"rounds",
        "bytes_sent", "bytes_received", "dealer_bytes_received"}`` (bytes between parties, and
        what the crypto provider streamed to that party); empty when no session is open.
        Counters grow over the session's life: measure an operation by the difference of two calls."""
        with self._lock:
            self.flush()
            if self.session is None:
                return {}
            replies = fan_out([(w, MpcStats(self.session)) for w in self.workers], timeout_s=self.timeout_s)
            return {w.id: dict(r) for w, r in zip(self.workers, replies)}

    def _delete(self, ids: Sequence[int]) -> None:

        for w in self.workers:
            for i in ids:
                local_worker._queue_delete(w, i)


_GROUPS: dict[tuple[str, ...], Group] = {}
_GROUPS_LOCK = threading.Lock()


def group_of(workers: Sequence["BaseWorker"], crypto_provider: "BaseWorker | None") -> Group:
    """The :class:`Group` of these share holders (in this order) and crypto provider."""
    ids = [w.id for w in workers]
    if len(ids) < 2:
        raise ValueError(f"sharing needs at least 2 workers, got {len(ids)}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"the shares of one tensor must sit on distinct workers, got {ids}")
    if crypto_provider is None:
        # PySyft's default: the driver deals the correlated randomness. It never holds a share,
        # so it learns nothing it did not already have (it reconstructs every result it asks for).
        if local_worker.id in ids:
            raise ValueError("share() needs a crypto_provider (a worker that deals correlated randomness) "
                             f"when {local_worker.id!r} holds a share")
        crypto_provider = local_worker
    if crypto_provider.id in ids:
        raise ValueError(
            f"the crypto provider {crypto_provider.id} must not hold a share (it would see the dealer's "
            "randomness and a share); pick another worker"
        )
    key = (*ids, "|", crypto_provider.id)
    with _GROUPS_LOCK:
        g = _GROUPS.get(key)
        if g is not None and all(a is b for a, b in zip(g.workers, workers)) and g.crypto_provider is crypto_provider:
            return g
        if g is not None:
            g.close()
        g = _GROUPS[key] = Group(workers, crypto_provider)
        return g


def close_all_sessions() -> None:
    """Closes every MPC session this driver opened (tests call it between runs)."""
    with _GROUPS_LOCK:
        groups = list(_GROUPS.values())
        _GROUPS.clear()
    for g in groups:
        g.close()
