"""The worker server: ``syft-mpc worker --id bob --port 8777`` (see ``docs/WORKERS.md``).

A long-running process holding one object store (a :class:`ServedWorker`) and serving
any number of clients at once, one thread per connection, over the native control
channel (:class:`syft_mpc._native.Listener`; frames described in
:mod:`syft_mpc.net.socket_worker`). Requests of one connection run in the order received;
the object store's lock serialises requests of different connections.

* A malformed frame or message is answered with an error and that connection is closed;
  the others keep being served. A client that fails authentication is logged.
* Objects are owned by the client (hello ``uid``) that stored them. When a client has had
  no connection for ``grace_s`` seconds, its objects are freed.
* SIGINT / SIGTERM stop the server: the port is released, connections are closed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import torch

from syft_mpc import _native
from syft_mpc.remote import serde
from syft_mpc.errors import PeerDisconnected, SerializationError, TransportError
from syft_mpc.hook import TorchHook
from syft_mpc.net.env import ENV_TLS_CA
from syft_mpc.remote.messages import DEFAULT_SESSION, HELLO, POST, REQUEST, SYNC, Envelope, Err, Ok
from syft_mpc.net.socket_worker import SocketWorker
from syft_mpc.remote.workers import BaseWorker

__all__ = ["ServedWorker", "WorkerServer"]

log = logging.getLogger("syft_mpc.worker")

def _no_reply(value: object) -> None:
    return None


_current = threading.local()  # .owner: the client uid whose request this thread runs


class ServedWorker(BaseWorker):
    """The object store of a worker process; remembers which client stored each object."""

    state_dir: "str | None" = None  # where checkpoints go (syft_mpc.checkpoint); None: a per-worker temp dir

    def __init__(self, hook: Any, id: str) -> None:
        # Its own registry: peers are the SocketWorkers announced by clients.
        super().__init__(hook, id=id, known_workers={})
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
            close_sessions_of(self, uid)
        self.flush_gc()
        return len(ids)


class WorkerServer:
    """Serves one :class:`ServedWorker` on ``host:port`` until :meth:`stop`.

    Args:
        id: the worker id clients name (bound into the handshake).
        token: the shared secret (at least 16 characters).
        grace_s: how long a client's objects outlive its last connection.
        idle_timeout_s: a connection silent this long is closed (its client may reconnect).
        timeout_s: bound on handshakes, and on each wait of this worker's own requests
            to other workers.
        tls_cert, tls_key: this worker's certificate chain and key (PEM files): clients
            must connect over TLS.
        tls_ca: the CA (PEM) this worker trusts when it connects to other workers (default
            ``$SYFT_MPC_TLS_CA``). With a certificate, its MPC connections use TLS as well
            (as a share holder it then needs ``tls_ca`` too).
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
    ) -> None:
        self.id = id
        self.token = token
        self.grace_s = grace_s
        self.idle_timeout_s = idle_timeout_s
        self.timeout_s = timeout_s
        self.session = session
        self.worker = ServedWorker(TorchHook(torch), id)
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
        self._timers: dict[str, threading.Timer] = {}
        self._state = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self) -> None:
        """Accepts connections until :meth:`stop` (or SIGINT/SIGTERM when installed)."""
        while not self._stop.is_set():
            try:
                conn = self.listener.accept(0.2)
            except TransportError as e:
                log.warning("rejected a connection: %s", e)
                continue
            if conn is None:
                continue
            t = threading.Thread(target=self._serve_conn, args=(conn,), daemon=True, name=f"conn-{conn.peer_addr}")
            with self._state:
                self._conns.add(conn)
                self._threads.add(t)
            t.start()
        self._shutdown()

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGTERM, self.stop)

    def _shutdown(self) -> None:
        self.listener.close()
        with self._state:
            conns, threads = list(self._conns), list(self._threads)
            timers = list(self._timers.values())
        for c in conns:
            c.close()
        for timer in timers:
            timer.cancel()
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
                        env = serde.decode(body)
                        if not isinstance(env, Envelope):
                            raise SerializationError(f"expected an Envelope, got {type(env).__name__}")
                    elif kind == HELLO:
                        hello = serde.decode(body)
                        # Checked here, so a bad hello is answered like any malformed message.
                        if not (isinstance(hello, dict) and isinstance(hello.get("uid"), str)
                                and isinstance(hello.get("peers") or {}, dict)):
                            raise SerializationError("a hello must be a dict with a string 'uid' and a dict 'peers'")
                    elif kind != SYNC:
                        raise SerializationError(f"unknown frame kind {bytes(kind)!r}")
                except Exception as e:  # malformed: answer, then drop this client only
                    log.warning("malformed message from %s (%s); closing the connection", where, e)
                    why = "closed after a malformed message"
                    try:
                        conn.send(serde.encode(Err("SerializationError", f"{e}; the connection was closed")))
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
                    conn.send(reply)
                elif kind == POST:
                    # A success is not answered, so it is not encoded (None); a failure is
                    # an encoded Err, kept for the next request that waits.
                    reply = self.worker.handle_envelope(env, _no_reply)
                    if reply is not None and pending is None and len(reply) < 65536:
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
                    conn.send(reply)
                else:  # HELLO
                    new_uid = hello["uid"]
                    if new_uid != uid:
                        self._client_left(uid)
                        uid = new_uid
                        self._client_arrived(uid)
                    self._set_peers(hello.get("peers") or {})
                    conn.send(serde.encode(Ok(None)))
        except TransportError as e:
            why = f"ended: {e}"
        except Exception as e:  # a bug here must not take the server down
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

    def _set_peers(self, peers: Any) -> None:
        if not isinstance(peers, dict):
            raise SerializationError("peers must be a dict of worker id -> 'host:port'")
        known = self.worker._known_workers
        for name, addr in peers.items():
            if not (isinstance(name, str) and isinstance(addr, str)) or name == self.id:
                continue
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

    def _client_arrived(self, uid: "str | None") -> None:
        if uid is None:
            return
        with self._state:
            self._live[uid] = self._live.get(uid, 0) + 1
            timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()

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
            timer = threading.Timer(self.grace_s, self._expire, args=(uid,))
            timer.daemon = True
            self._timers[uid] = timer
        timer.start()

    def _expire(self, uid: str) -> None:
        with self._state:
            if uid in self._live or self._timers.pop(uid, None) is None:
                return
        n = self.worker.free_client(uid)
        if n:
            log.info("client %s… stayed away %.0f s: freed its %d objects", uid[:8], self.grace_s, n)


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
    datasets: "dict[str, Any] | None" = None,
) -> None:
    """Runs a worker server in this process until SIGINT/SIGTERM (the CLI's ``worker`` command).

    ``ready(address)`` is called once listening (the CLI prints ``listening on host:port``);
    ``tls_cert``, ``tls_key``, ``tls_ca`` go to :class:`WorkerServer`.
    """
    server = WorkerServer(
        id, host, port, token, grace_s=grace_s, idle_timeout_s=idle_timeout_s, timeout_s=timeout_s, listener=listener,
        state_dir=state_dir,
        tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca,
    )
    for key, ds in (datasets or {}).items():
        server.worker.add_dataset(ds, key)
    server.install_signal_handlers()
    log.info("worker %s listening on %s%s", id, server.address, " (TLS)" if server.listener.tls else "")
    if ready is not None:
        ready(server.address)
    server.serve_forever()
