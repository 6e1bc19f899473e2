"""The worker server: ``syft-mpc worker --id bob --port 8777`` (see ``docs/WORKERS.md``).

A long-running process holding one object store (a :class:`ServedWorker`) and serving
any number of clients at once, one thread per connection, over the native control
channel (:class:`syft_mpc._native.Listener`; frames described in
:mod:`syft_mpc.net.socket_worker`). Requests of one connection run in the order received;
the object store's lock serialises requests of different connections, except while a
request waits for the network (an MPC peer, a dealer, another worker): it releases the
lock for that wait (:meth:`BaseWorker.unlocked`), so a stalled peer delays only the
request waiting for it.

* A malformed frame or message is answered with an error and that connection is closed;
  the others keep being served. A client that fails authentication is logged.
* Objects are owned by the client (hello ``uid``) that stored them. When a client has had
  no connection for ``grace_s`` seconds, its objects are freed, and the peers it announced
  are forgotten unless another client still announces them. One thread serves every grace
  period (a heap of deadlines), so connection churn costs no threads.
* A connection whose thread cannot be started is closed and logged; serving goes on.
  Refused connections and failed handshakes are logged at most once per
  :data:`LOG_EVERY_S` seconds each, with a count of the ones not logged.
* At most ``max_connections`` authenticated connections are served at once (each costs a
  thread here, more in the transport): one more is answered with a ``WorkerBusy`` error
  (the client raises :class:`~syft_mpc.errors.WorkerBusy`) and closed
  :data:`~syft_mpc.net.admission.REFUSE_LINGER_S` later by the accept loop (no thread of its own); the connections
  already served are not touched.
* A client that stops reading its replies is cut once none of a reply's bytes has moved for
  ``send_deadline_s`` (native TCP: the reply's write timeout; WebSocket: the listener's
  :mod:`~syft_mpc.net.send_watch`), which ends its connection's thread.
* SIGINT / SIGTERM stop the server: the port is released, connections are closed.
"""

from __future__ import annotations

import collections
import heapq
import logging
import os
import signal
import threading
import time
from typing import Any

import torch

from syft_mpc import _native, limits
from syft_mpc.remote import serde
from syft_mpc.errors import PeerDisconnected, PeerTimeout, SerializationError, TransportError
from syft_mpc.hook import TorchHook
from syft_mpc.net.admission import LOG_EVERY_S, MAX_CONNECTIONS, REFUSE_LINGER_S, Throttled, check_limits
from syft_mpc.net.env import ENV_TLS_CA
from syft_mpc.net.sealing import open_envelope
from syft_mpc.net.send_watch import SEND_DEADLINE_S, check_send_deadline
from syft_mpc.remote.messages import DEFAULT_SESSION, HELLO, POST, REQUEST, SYNC, Envelope, Err, Ok
from syft_mpc.net.socket_worker import SocketWorker
from syft_mpc.remote.workers import BaseWorker

__all__ = ["LOG_EVERY_S", "MAX_PEERS_PER_HELLO", "ServedWorker", "WorkerServer"]

log = logging.getLogger("syft_mpc.worker")

MAX_PEERS_PER_HELLO = 1024
"""A hello announcing more peers is refused (each peer costs the worker a handle)."""


def _no_reply(value: object) -> None:
    return None


_current = threading.local()  # .owner: the client uid whose request this thread runs
_TRIM_AFTER_BYTES = 8 << 20  # after a message this large, malloc's free memory goes back to the OS
_MAX_LINGERING = 1024  # refused connections waiting to be closed; past this, they are closed at once


class ServedWorker(BaseWorker):
    """The object store of a worker process; remembers which client stored each object."""

    state_dir: "str | None" = None  # where checkpoints go (syft_mpc.checkpoint); None: a per-worker temp dir

    def __init__(self, hook: Any, id: str, max_memory: "int | str | None" = None) -> None:
        # Its own registry: peers are the SocketWorkers announced by clients. Its budget
        # counts the process's growth too: every object stored here is a client's.
        budget = limits.MemoryBudget(max_memory, name=f"worker {id}", track_process=True)
        super().__init__(hook, id=id, known_workers={}, memory_budget=budget)
        self._owner_of: dict[int, str] = {}

    def _store(self, obj_id: int, obj: Any) -> None:
        super()._store(obj_id, obj)
        owner = getattr(_current, "owner", None)
        if owner is not None:
            self._owner_of[obj_id] = owner

    def _forget(self, obj_id: int, moved_to: "str | None" = None) -> Any:
        self._owner_of.pop(obj_id, None)
        return super()._forget(obj_id, moved_to)

    @property
    def current_client(self) -> "str | None":
        """The client (hello uid) whose request this thread is running, if any."""
        return getattr(_current, "owner", None)

    def free_client(self, uid: str) -> int:
        """Forgets every object stored by client ``uid`` and aborts the MPC parties it opened; returns how many objects."""
        from syft_mpc.mpc_session.worker import close_sessions_of

        with self._lock:
            ids = [i for i, o in self._owner_of.items() if o == uid]
            for i in ids:
                self._forget(i)
        close_sessions_of(self, uid)  # not under the lock: an abort waits for a running operation
        self.flush_gc()
        return len(ids)


class WorkerServer:
    """Serves one :class:`ServedWorker` on ``host:port`` until :meth:`stop`.

    Args:
        id: the worker id clients name (bound into the handshake).
        token: the shared secret (at least 128 bits, e.g. ``secrets.token_hex(32)``).
        grace_s: how long a client's objects outlive its last connection.
        idle_timeout_s: a connection silent this long is closed (its client may reconnect).
        timeout_s: bound on handshakes, and on each wait of this worker's own requests
            to other workers.
        tls_cert, tls_key: this worker's certificate chain and key (PEM files): clients
            must connect over TLS.
        tls_ca: the CA (PEM) this worker trusts when it connects to other workers (default
            ``$SYFT_MPC_TLS_CA``). With a certificate, its MPC connections use TLS as well
            (as a share holder it then needs ``tls_ca`` too).
        max_memory: the worker's memory budget (bytes or ``"4G"``; default
            ``$SYFT_MPC_MAX_MEMORY``, else half the machine's RAM): see :mod:`syft_mpc.limits`.
        max_connections: authenticated connections served at once (default
            :data:`~syft_mpc.net.admission.MAX_CONNECTIONS`, 256); one more is refused with
            ``WorkerBusy``.
        send_deadline_s: a client that takes none of a reply's bytes for this long (it stopped
            reading) is cut off (default 10 s, at most 3,600 s).
    """

    def __init__(
        self,
        id: str,
        host: str,
        port: int,
        token: str,
        *,
        grace_s: float = 60.0,
        idle_timeout_s: float = 24 * 3600.0,
        timeout_s: float = 30.0,
        session: str = DEFAULT_SESSION,
        listener: "_native.Listener | None" = None,
        state_dir: "str | None" = None,
        tls_cert: "str | None" = None,
        tls_key: "str | None" = None,
        tls_ca: "str | None" = None,
        max_memory: "int | str | None" = None,
        max_connections: int = MAX_CONNECTIONS,
        send_deadline_s: float = SEND_DEADLINE_S,
    ) -> None:
        check_limits(max_connections=max_connections)
        self.max_connections = max_connections
        self.send_deadline_s = check_send_deadline(send_deadline_s)
        self.id = id
        self.token = token
        self.grace_s = grace_s
        self.idle_timeout_s = idle_timeout_s
        self.timeout_s = timeout_s
        self.session = session
        self.worker = ServedWorker(TorchHook(torch), id, max_memory)
        self.worker.state_dir = state_dir
        self.tls_ca = tls_ca if tls_ca is not None else os.environ.get(ENV_TLS_CA)
        if tls_cert and tls_key:  # read by mpc_session: this worker's MPC connections use TLS too
            tls = {"tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": self.tls_ca}
            self.worker.mpc_tls = tls  # type: ignore[attr-defined]
        if listener is None:
            listener = _native.Listener(
                f"{host}:{port}", token, id, session=session, timeout_s=timeout_s, tls_cert=tls_cert, tls_key=tls_key
            )
        self.listener = listener
        self.address = self.listener.local_addr
        self._stop = threading.Event()
        self._conns: set[_native.Connection] = set()
        self._threads: set[threading.Thread] = set()
        self._live: dict[str, int] = {}  # client uid -> open connections
        # Grace periods: one thread, a heap of (deadline, uid); _expiry holds each departed
        # client's current deadline (an entry whose deadline differs is stale: skipped).
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._wake = threading.Condition(threading.Lock())
        self._grace_thread: "threading.Thread | None" = None
        self._announced: dict[str, dict[str, str]] = {}  # client uid -> the peers its last hello announced
        self._peer_refs: dict[tuple[str, str], int] = {}  # (peer id, address) -> how many clients announce it
        self._state = threading.Lock()
        self._refused = Throttled()
        self._no_thread = Throttled()
        self._busy_log = Throttled()
        self._stalled_log = Throttled()
        self._lingering: "collections.deque[tuple[float, Any]]" = collections.deque()  # (close at, refused connection)
        self.busy_refused = 0  # connections refused over max_connections

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self) -> None:
        """Accepts connections until :meth:`stop` (or SIGINT/SIGTERM when installed)."""
        self._grace_thread = threading.Thread(target=self._grace_loop, daemon=True, name="grace-periods")
        self._grace_thread.start()
        dropped = self._dropped()
        next_report = time.monotonic() + LOG_EVERY_S
        while not self._stop.is_set():
            if time.monotonic() >= next_report:  # handshakes the listener dropped (evicted, past the deadline)
                now_dropped = self._dropped()
                evicted, late, refused = (now - before for now, before in zip(now_dropped, dropped))
                if evicted or late or refused:
                    log.warning(
                        "dropped %d unfinished handshakes for newer connections and %d past the %g s handshake "
                        "deadline, and closed %d connections at once (no thread or file descriptor to spare), in "
                        "the last %.0f s (many connections that do not authenticate; firewall the port if this "
                        "goes on)", evicted, late, self.listener.handshake_deadline_s, refused, LOG_EVERY_S,
                    )
                dropped, next_report = now_dropped, time.monotonic() + LOG_EVERY_S
            self._close_lingering(time.monotonic())
            try:
                conn = self.listener.accept(0.2)
            except TransportError as e:
                self._refused.warning("rejected a connection: %s", e)
                continue
            if conn is None:
                continue
            with self._state:
                serving = len(self._conns)
            if serving >= self.max_connections:
                self._refuse(conn, serving)
                continue
            t = threading.Thread(target=self._serve_conn, args=(conn,), daemon=True, name=f"conn-{conn.peer_addr}")
            with self._state:
                self._conns.add(conn)
                self._threads.add(t)
            try:
                t.start()
            except RuntimeError as e:  # "can't start new thread": out of threads or memory
                with self._state:
                    self._conns.discard(conn)
                    self._threads.discard(t)
                conn.close()
                self._no_thread.warning("closed a connection from %s: cannot start a thread for it (%s)",
                                        conn.peer_addr or "?", e)
        self._shutdown()

    def _refuse(self, conn: Any, serving: int) -> None:
        """Answers a connection over ``max_connections`` with a ``WorkerBusy`` error; it is closed
        :data:`REFUSE_LINGER_S` later (by this loop, no thread), so its client reads the error
        rather than a reset."""
        where = conn.peer_addr or "?"
        self.busy_refused += 1
        msg = (
            f"worker {self.id} already serves {serving} connections, its limit (--max-connections "
            f"{self.max_connections}), so it refused this one. The connections already open are served as before: "
            "retry later, close connections you no longer need, or start the worker with a larger --max-connections"
        )
        try:
            conn.send(serde.encode(Err("WorkerBusy", msg)))
        except TransportError:
            pass
        if len(self._lingering) >= _MAX_LINGERING:  # a flood of them: no more waiting, close at once
            self._close_now(conn)
        else:
            self._lingering.append((time.monotonic() + REFUSE_LINGER_S, conn))
        self._busy_log.warning(
            "refused a connection from %s: already serving %d connections (--max-connections %d); the clients "
            "already connected are served as before", where, serving, self.max_connections,
        )

    def _close_lingering(self, now: float) -> None:
        while self._lingering and (self._lingering[0][0] <= now or self._stop.is_set()):
            self._close_now(self._lingering.popleft()[1])

    @staticmethod
    def _close_now(conn: Any) -> None:
        cut = getattr(conn, "cut", None)  # a WebSocket: shut down at once, no closing handshake to wait for
        if cut is not None:
            cut("refused: the worker is at its --max-connections")
        else:
            conn.close()

    def _send_reply(self, conn: Any, reply: Any, where: str) -> None:
        """Sends a reply under the send deadline (native TCP: its write timeout; the next wait
        for a request sets the idle timeout again). A client that takes none of it for that
        long is cut off: ``PeerTimeout`` ends its connection."""
        set_timeout = getattr(conn, "set_timeout", None)  # a WebSocket listener watches its sends itself
        if set_timeout is not None:
            set_timeout(self.send_deadline_s)
        try:
            conn.send(reply)
        except PeerTimeout as e:
            self._stalled_log.warning(
                "cut off %s: it took none of a reply's bytes for %g s (a client that does not read what it is "
                "sent); its connection was closed, the others are served as before", where, self.send_deadline_s,
            )
            raise PeerDisconnected(f"cut off: it read none of a reply for {self.send_deadline_s:g} s ({e})") from None

    def _dropped(self) -> "tuple[int, int, int]":
        d = self.listener.dropped
        return int(d["evicted"]), int(d["expired"]), int(d["refused"])

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGTERM, self.stop)

    def _shutdown(self) -> None:
        self._close_lingering(time.monotonic())
        self.listener.close()
        with self._state:
            conns, threads = list(self._conns), list(self._threads)
        with self._wake:
            self._wake.notify()  # the grace thread sees _stop and ends
        for c in conns:
            c.close()
        deadline = time.monotonic() + 5.0
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for peer in list(self.worker._known_workers.values()):
            if isinstance(peer, SocketWorker):
                peer.close()
        log.info("stopped (%d objects dropped)", len(self.worker._objects))

    # ------------------------------------------------------------------ one connection

    def _serve_conn(self, conn: "_native.Connection") -> None:
        where = conn.peer_addr or "?"
        log.info("connection from %s", where)
        uid: "str | None" = None
        pending: "bytes | None" = None  # the first failure of a posted request, reported next
        handled = 0
        why = "closed by the client"
        try:
            while not self._stop.is_set():
                try:
                    msg = conn.recv(self.idle_timeout_s)
                except TransportError as e:
                    if not self._stop.is_set() and not isinstance(e, PeerDisconnected):
                        log.warning("connection from %s: %s", where, e)
                    if self._stop.is_set():
                        why = "stopped"
                    elif isinstance(e, PeerDisconnected):
                        why = "closed by the client"  # the usual way a driver leaves
                    else:
                        why = f"ended: {type(e).__name__}"
                    break
                view = memoryview(msg if isinstance(msg, bytes) else msg.data)  # bytes, or a uint8 array owning a large message
                kind, body = bytes(view[:1]), view[1:]
                try:
                    if kind == REQUEST or kind == POST:
                        with limits.using(self.worker.memory_budget):
                            env = serde.decode(body)
                        if not isinstance(env, Envelope):
                            raise SerializationError(f"expected an Envelope, got {type(env).__name__}")
                        env = open_envelope(env, conn)  # an MpcJoin's secret is sealed for this connection
                    elif kind == HELLO:
                        with limits.using(self.worker.memory_budget):
                            hello = serde.decode(body)
                        # Checked here, so a bad hello is answered like any malformed message.
                        if not (isinstance(hello, dict) and isinstance(hello.get("uid"), str)
                                and isinstance(hello.get("peers") or {}, dict)):
                            raise SerializationError("a hello must be a dict with a string 'uid' and a dict 'peers'")
                        if len(hello.get("peers") or {}) > MAX_PEERS_PER_HELLO:
                            raise SerializationError(f"a hello may announce at most {MAX_PEERS_PER_HELLO} peers")
                    elif kind != SYNC:
                        raise SerializationError(f"unknown frame kind {bytes(kind)!r}")
                except Exception as e:  # malformed: answer, then drop this client only
                    log.warning("malformed message from %s (%s); closing the connection", where, e)
                    why = "closed after a malformed message"
                    if len(view) >= _TRIM_AFTER_BYTES:
                        del view, body
                        limits.trim_heap()
                    try:
                        self._send_reply(conn, serde.encode(Err("SerializationError", f"{e}; the connection was closed")), where)
                    except TransportError:
                        pass
                    break
                handled += 1
                _current.owner = uid
                if kind == REQUEST:
                    if pending is not None:
                        # This request is not run, but the deletions riding on it still stand (the
                        # client let go of those objects and will not send them again): apply them,
                        # or the objects stay here for as long as the client is connected.
                        if env.deletes:
                            self.worker.handle_envelope(Envelope(env.sender, env.deletes, None), _no_reply)
                        reply, pending = pending, None
                    else:
                        reply = self.worker.handle_envelope(env, serde.encode_parts)
                    self._send_reply(conn, reply, where)
                elif kind == POST:
                    # A success is not answered, so it is not encoded (None); a failure is
                    # an encoded Err, kept for the next request that waits.
                    reply = self.worker.handle_envelope(env, _no_reply)
                    if reply is not None and pending is None:  # an Err, its text bounded by handle_envelope
                        r = serde.decode(reply)
                        if isinstance(r, Err):
                            pending = serde.encode(
                                Err(
                                    r.err_type,
                                    f"{r.message} (in an earlier request sent without waiting; "
                                    "the request that reported it was not run)",
                                )
                            )
                            log.info("posted request from %s failed: %s: %s", where, r.err_type, r.message)
                elif kind == SYNC:
                    reply, pending = pending or serde.encode(Ok(len(self.worker._objects))), None
                    self._send_reply(conn, reply, where)
                else:  # HELLO
                    new_uid = hello["uid"]
                    if new_uid != uid:
                        self._client_left(uid)
                        uid = new_uid
                        self._client_arrived(uid)
                    self._set_peers(hello.get("peers") or {}, uid)
                    self._send_reply(conn, serde.encode(Ok(None)), where)
                if len(view) >= _TRIM_AFTER_BYTES:  # its decoded objects are gone: return their memory
                    del view, body, msg
                    env = hello = None
                    limits.trim_heap()
        except TransportError as e:
            why = f"ended: {e}"
        except BaseException as e:  # a bug here (or a Rust panic: not an Exception) must not take the server down
            log.exception("connection from %s failed", where)
            why = f"failed: {type(e).__name__}: {e}"
        finally:
            _current.owner = None
            conn.close()
            self._client_left(uid)
            with self._state:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())
            log.info("connection from %s %s after %d messages", where, why, handled)

    # ------------------------------------------------------------------ peers and clients

    def _set_peers(self, peers: Any, uid: "str | None" = None) -> None:
        if not isinstance(peers, dict):
            raise SerializationError("peers must be a dict of worker id -> 'host:port'")
        if len(peers) > MAX_PEERS_PER_HELLO:
            raise SerializationError(f"a hello may announce at most {MAX_PEERS_PER_HELLO} peers, got {len(peers)}")
        peers = {k: v for k, v in peers.items() if isinstance(k, str) and isinstance(v, str) and k != self.id}
        if uid is not None:
            self._announce(uid, peers)  # a hello replaces the client's earlier announcements
        known = self.worker._known_workers
        for name, addr in peers.items():
            old = known.get(name)
            if isinstance(old, SocketWorker) and old.address == addr:
                continue
            scheme, sep, rest = addr.rpartition("://")
            host, _, port = (rest if sep else addr).rpartition(":")
            if not port.isdigit():
                continue
            if isinstance(old, SocketWorker):
                old.close()
            if sep:  # a WebSocket worker (ws:// or wss://)
                from syft_mpc.net.websocket_worker import WebsocketClientWorker

                WebsocketClientWorker(
                    None, host.strip("[]"), int(port), secure=scheme == "wss", id=name, token=self.token,
                    timeout_s=self.timeout_s, asynchronous=False, connect=False, known_workers=known,
                    announce=False, tls_ca=self.tls_ca,
                )
                log.info("peer %s is at %s", name, addr)
                continue
            SocketWorker(
                None,
                id=name,
                host=host.strip("[]"),
                port=int(port),
                token=self.token,
                timeout_s=self.timeout_s,
                asynchronous=False,  # a worker's requests to peers complete before its own reply
                connect=False,
                session=self.session,
                known_workers=known,
                announce=False,
                tls_ca=self.tls_ca,
            )
            log.info("peer %s is at %s", name, addr)

    def _announce(self, uid: str, peers: "dict[str, str]") -> int:
        """Records that client ``uid`` now announces ``peers`` (``{}``: it is gone) and forgets
        the peers nobody announces any more (the next hello that needs one announces it
        again). Returns how many were forgotten."""
        with self._state:
            before = self._announced.pop(uid, {})
            if peers:
                self._announced[uid] = peers
            for pair in peers.items():
                self._peer_refs[pair] = self._peer_refs.get(pair, 0) + 1
            unused = []
            for pair in before.items():
                n = self._peer_refs.pop(pair, 1) - 1
                if n > 0:
                    self._peer_refs[pair] = n
                else:
                    unused.append(pair)
        known = self.worker._known_workers
        gone = 0
        for name, addr in unused:
            peer = known.get(name)
            with self._state:
                if (name, addr) in self._peer_refs:  # announced again meanwhile
                    continue
            if isinstance(peer, SocketWorker) and peer.address == addr:
                # Pointers stored here keep their own reference to the handle: they still work.
                del known[name]
                peer.close()
                gone += 1
        return gone

    def _client_arrived(self, uid: "str | None") -> None:
        if uid is None:
            return
        with self._state:
            self._live[uid] = self._live.get(uid, 0) + 1
            self._expiry.pop(uid, None)  # its heap entry is now stale

    def _client_left(self, uid: "str | None") -> None:
        if uid is None:
            return
        with self._state:
            n = self._live.get(uid, 0) - 1
            if n > 0:
                self._live[uid] = n
                return
            self._live.pop(uid, None)
            if self._stop.is_set():
                return
            due = time.monotonic() + self.grace_s
            self._expiry[uid] = due
        with self._wake:
            heapq.heappush(self._heap, (due, uid))
            if self._heap[0][1] == uid:
                self._wake.notify()

    def _grace_loop(self) -> None:
        """The one thread that frees the objects of clients whose grace period ended."""
        while not self._stop.is_set():
            with self._wake:
                now = time.monotonic()
                if not self._heap or self._heap[0][0] > now:
                    self._wake.wait(min(1.0, self._heap[0][0] - now) if self._heap else 1.0)
                    continue
                due, uid = heapq.heappop(self._heap)
            try:
                self._expire(uid, due)
            except Exception:  # a failure to free one client must not stop the others' expiry
                log.exception("freeing the objects of client %s… failed", uid[:8])

    def _expire(self, uid: str, due: float) -> None:
        with self._state:
            if uid in self._live or self._expiry.get(uid) != due:
                return  # it came back (and perhaps left again: a later entry is due)
            del self._expiry[uid]
        n = self.worker.free_client(uid)
        peers = self._announce(uid, {})
        if n or peers:
            log.info("client %s… stayed away %.0f s: freed its %d objects, forgot %d peers",
                     uid[:8], self.grace_s, n, peers)


def run_worker(
    id: str,
    host: str,
    port: int,
    token: str,
    *,
    grace_s: float = 60.0,
    idle_timeout_s: float = 24 * 3600.0,
    timeout_s: float = 30.0,
    ready: "Any" = None,
    listener: "_native.Listener | None" = None,
    state_dir: "str | None" = None,
    tls_cert: "str | None" = None,
    tls_key: "str | None" = None,
    tls_ca: "str | None" = None,
    max_memory: "int | str | None" = None,
    datasets: "dict[str, Any] | None" = None,
    max_connections: int = MAX_CONNECTIONS,
    send_deadline_s: float = SEND_DEADLINE_S,
) -> None:
    """Runs a worker server in this process until SIGINT/SIGTERM (the CLI's ``worker`` command).

    ``ready(address)`` is called once listening (the CLI prints ``listening on host:port``);
    ``tls_cert``, ``tls_key``, ``tls_ca``, ``max_memory``, ``max_connections`` and
    ``send_deadline_s`` go to :class:`WorkerServer`.
    """
    server = WorkerServer(
        id, host, port, token, grace_s=grace_s, idle_timeout_s=idle_timeout_s, timeout_s=timeout_s, listener=listener,
        state_dir=state_dir, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca, max_memory=max_memory,
        max_connections=max_connections, send_deadline_s=send_deadline_s,
    )
    for key, ds in (datasets or {}).items():
        server.worker.add_dataset(ds, key)
    server.install_signal_handlers()
    log.info(  # the CLI's log format names the worker
        "listening on %s%s, memory budget %s, at most %d connections", server.address,
        " (TLS)" if server.listener.tls else "", limits.format_size(server.worker.memory_budget.max_bytes),
        server.max_connections,
    )
    if ready is not None:
        ready(server.address)
    server.serve_forever()
