"""SocketWorker: a worker in another process (or machine), reached over authenticated TCP.

A :class:`SocketWorker` is the driver's handle on a worker started with
``syft-mpc worker --id bob --port 8777`` (see ``docs/WORKERS.md``). It behaves like a
:class:`~syft_mpc.remote.workers.VirtualWorker` for everything in the pointer layer: the same
:class:`~syft_mpc.remote.messages.Envelope` requests and replies travel, only over the native
control channel (:class:`syft_mpc._native.Connection`: framed TCP, HMAC handshake on the
shared token, a timeout on every wait).

The frames of the control channel are described in :mod:`syft_mpc.remote.messages`.

    >>> import torch, syft_mpc as sy                                   # doctest: +SKIP
    >>> hook = sy.TorchHook(torch)                                     # doctest: +SKIP
    >>> bob = sy.SocketWorker(hook, id="bob", host="127.0.0.1", port=8777,
    ...                       token=os.environ["SYFT_MPC_TOKEN"])      # doctest: +SKIP
    >>> (torch.tensor([1, 2]).send(bob) * 2).get()                     # doctest: +SKIP
    tensor([2, 4])
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import Any

from syft_mpc import _native
from syft_mpc.remote import serde
from syft_mpc.errors import AuthenticationError, PeerTimeout, TlsError, TransportError, WorkerBusy
from syft_mpc.net.admission import connect_retrying
from syft_mpc.net.env import ENV_TIMEOUT, ENV_TLS_CA, ENV_TOKEN, ENV_WORKERS
from syft_mpc.net.sealing import seal_envelope
from syft_mpc.net.send_watch import client_send_deadline
from syft_mpc.remote.messages import DEFAULT_SESSION, HELLO, POST, REQUEST, SYNC, Envelope, Err, MpcJoin
from syft_mpc.remote.workers import BaseWorker

__all__ = ["SocketWorker", "workers_from_env", "parse_workers"]




# Where the SocketWorkers made in this process listen; announced to every worker (b"H").
_directory: dict[str, str] = {}
_directory_version = 0
_directory_lock = threading.Lock()


def _default_timeout() -> float:
    raw = os.environ.get(ENV_TIMEOUT)
    if not raw:
        return 30.0
    try:
        t = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_TIMEOUT}={raw!r} is not a number of seconds") from None
    if not t > 0:
        raise ValueError(f"{ENV_TIMEOUT} must be positive, got {raw!r}")
    return t


def _token(token: "str | None") -> str:
    if token is None:
        token = os.environ.get(ENV_TOKEN)
    if not token:
        raise ValueError(
            f"no token: pass token=... or set {ENV_TOKEN} (the secret the workers were started with; "
            "syft-mpc launch sets it for the script it runs)"
        )
    return token


class SocketWorker(BaseWorker):
    """A worker in another process, reached over authenticated TCP.

    Args:
        hook: the :class:`~syft_mpc.hook.TorchHook` (may be None).
        id: the worker's id, as given to ``syft-mpc worker --id``. The handshake checks
            it: reaching another worker at that address fails with ``AuthenticationError``.
        host, port: where the worker listens.
        token: the shared secret (default: ``$SYFT_MPC_TOKEN``).
        tls_ca: PEM file of the CA that signed the worker's TLS certificate (default
            ``$SYFT_MPC_TLS_CA``; ``""`` forces plaintext): connect over TLS 1.3 and check
            that certificate, for the name ``tls_server_name`` (default: ``host``). For a
            worker started with ``--tls-cert/--tls-key``; see ``docs/WORKERS.md``.
        timeout_s: bound on connecting and on every wait for an answer (default
            ``$SYFT_MPC_TIMEOUT`` or 30 s). A worker that died or hangs raises
            :class:`~syft_mpc.errors.TransportError` naming it within this time.
        send_deadline_s: bound on each send's wait for a worker that takes none of the bytes
            sent to it (a stopped or hung process whose receive buffer is full): the send
            fails with :class:`~syft_mpc.errors.PeerTimeout` once none of the bytes waiting
            for the worker has moved for this long; a slow worker that takes some within each
            deadline is waited for, however large the message. Default: ``timeout_s``; at
            most 3,600 s (``send_watch.MAX_SEND_DEADLINE_S``).
        asynchronous: post requests whose reply is always None (``send``, attribute
            writes, deletions), and operations whose result the driver can describe
            itself (shape/dtype inferred on meta tensors), without waiting; their failures
            are raised by the next request that waits (``.get()``, ``sync()``, an op
            that cannot be inferred). Requests to one worker always run in the order sent.
        connect: connect now (default) rather than on the first request.

    Example (with a worker started as ``syft-mpc worker --id bob --port 8777``)::

        bob = sy.SocketWorker(hook, id="bob", host="127.0.0.1", port=8777, token=token)
        x = torch.tensor([1, 2, 3]).send(bob)
        print((x + x).get())        # tensor([2, 4, 6])
    """

    url_scheme = ""  # how peers reach it: "host:port" is native TCP; WebSocket workers add "ws://"
    # The native channel's write timeout is its send deadline; a WebSocket connection watches its sends itself.
    _deadline_is_write_timeout = True

    def __init__(
        self,
        hook: Any = None,
        id: str = "bob",
        host: str = "127.0.0.1",
        port: int = 8777,
        token: "str | None" = None,
        *,
        timeout_s: "float | None" = None,
        asynchronous: bool = True,
        connect: bool = True,
        session: str = DEFAULT_SESSION,
        known_workers: "dict[str, BaseWorker] | None" = None,
        announce: bool = True,
        tls_ca: "str | None" = None,
        tls_server_name: "str | None" = None,
        send_deadline_s: "float | None" = None,
    ) -> None:
        super().__init__(hook, id=id, known_workers=known_workers)
        self.host = host
        self.port = int(port)
        self.address = f"{self.url_scheme}{host}:{self.port}"
        self._token = _token(token)
        self.tls_ca = (os.environ.get(ENV_TLS_CA) if tls_ca is None else tls_ca) or None
        self._tls_server_name = tls_server_name
        self.timeout_s = _default_timeout() if timeout_s is None else float(timeout_s)
        self.send_deadline_s = client_send_deadline(send_deadline_s, self.timeout_s)
        self._split_send = self._deadline_is_write_timeout and self.send_deadline_s != self.timeout_s
        self.asynchronous = asynchronous
        self._session = session
        self._announce = announce
        self._uid = secrets.token_hex(16)
        self._conn: "_native.Connection | None" = None
        self._io = threading.Lock()
        self._peers_version = -1
        # Deletions sent in posted requests that the worker has not confirmed yet (by answering a
        # later request): if the link breaks first they may be lost, so they are queued again.
        self._unconfirmed: list[tuple[BaseWorker, list[int]]] = []
        if announce:
            global _directory_version
            with _directory_lock:
                if _directory.get(id) != self.address:
                    _directory[id] = self.address
                    _directory_version += 1
        if connect:
            with self._io:
                self._connection()

    def __repr__(self) -> str:
        return f"<SocketWorker id:{self.id} {self.address}>"

    @property
    def async_commands(self) -> bool:
        """Operations on pointers to this worker are posted without waiting when the driver
        can infer their result's shape and dtype (meta tensors; ``pointers.remote_call``)."""
        return self.asynchronous

    # ------------------------------------------------------------------ transport

    def _fail(self, e: Exception, doing: str) -> Exception:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        unconfirmed, self._unconfirmed = self._unconfirmed, []
        for sender, ids in unconfirmed:  # deleting twice is harmless; never deleting leaks
            sender._queue_deletes(self, ids)
        if isinstance(e, AuthenticationError):
            hint = f"start it and this driver with the same token (${ENV_TOKEN}) and check the worker id"
        elif isinstance(e, TlsError):
            hint = f"check its --tls-cert/--tls-key and the CA given here as tls_ca (${ENV_TLS_CA})"
        elif isinstance(e, WorkerBusy):
            hint = ""  # the worker's refusal says what to do
        elif isinstance(e, PeerTimeout) and "send deadline" in str(e):  # WsConnection said what happened
            hint = "the next request connects again"
        elif isinstance(e, PeerTimeout):
            hint = (
                f"it did not answer within timeout_s ({self.timeout_s:g} s), or took none of the bytes sent to it "
                f"within send_deadline_s ({self.send_deadline_s:g} s): check that its process is running and not "
                "stopped or overloaded; for a worker that is only slow, raise those"
            )
        else:
            hint = (
                "check that its process is running (syft-mpc worker) and reachable; objects it held are "
                "lost if it died"
            )
        err = type(e)(f"worker {self.id} at {self.address}: {doing} failed: {e}" + (f"; {hint}" if hint else ""))
        err.peer = f"worker {self.id}"  # type: ignore[attr-defined]
        err.worker = self.id  # type: ignore[attr-defined]
        return err

    def _open_connection(self) -> Any:
        """A new authenticated connection to the worker (one try): native TCP (or TLS) here; a
        subclass opens another transport with the same interface (``WebsocketClientWorker``)."""
        conn = _native.Connection.connect(
            self.address,
            self._token,
            self.id,
            session=self._session,
            timeout_s=self.timeout_s,
            tls_ca=self.tls_ca,
            tls_server_name=self._tls_server_name,
        )
        # The native channel bounds every socket write by its timeout (SO_SNDTIMEO: no byte
        # taken for that long fails the write): that is the send deadline.
        if self._split_send:
            conn.set_timeout(self.send_deadline_s)
        return conn

    def _connection(self) -> Any:
        """The open connection (opened, and greeted with b"H", when needed). Call with ``_io`` held."""
        conn = self._conn
        if conn is None:
            try:
                conn = connect_retrying(self._open_connection)
            except TransportError as e:
                raise self._fail(e, "connecting") from None
            self._conn = conn
            self._peers_version = -1
        if self._peers_version != _directory_version:
            version, peers = self.peers_to_announce()
            reply = self._call(conn, HELLO + serde.encode({"uid": self._uid, "peers": peers}), "saying hello")
            if len(reply) < 4096:  # a refusal is short (an Ok(None) shorter still)
                answer = serde.decode(reply)
                if isinstance(answer, Err) and answer.err_type == "WorkerBusy":  # over --max-connections
                    raise self._fail(WorkerBusy(answer.message), "connecting")
            self._peers_version = version
        return conn

    def peers_to_announce(self) -> "tuple[int, dict[str, str]]":
        """(version, {worker id: address}) of the workers made in this process, told to this one in hellos."""
        with _directory_lock:
            return _directory_version, dict(_directory) if self._announce else {}

    def _encode_request(self, env: Any) -> Any:
        if isinstance(env, Envelope) and isinstance(env.body, MpcJoin):
            # The MPC session secret is sealed for this connection only (net/sealing.py).
            with self._io:
                env = seal_envelope(env, self._connection())
        # Pieces, sent without joining: tensor payloads go out from the tensor's memory,
        # 8-byte aligned after the one-byte frame kind, so the worker wraps them in place.
        return serde.encode_parts(env, offset=1)

    def _call(self, conn: "_native.Connection", frame: Any, doing: str) -> Any:
        try:
            if not self._split_send:  # one call: the send and the wait share the bound
                reply = conn.request(frame, self.timeout_s)
            else:  # the send under its own deadline (the write timeout), then the wait for the answer
                conn.set_timeout(self.send_deadline_s)
                conn.send(frame)
                reply = conn.recv(self.timeout_s)
        except TransportError as e:
            raise self._fail(e, doing) from None
        self._unconfirmed.clear()  # answered in order: everything posted before has arrived
        return reply

    def _deliver(self, data: Any) -> Any:
        # ``data``: bytes (serde.encode) or pieces (serde.encode_parts); the reply is bytes,
        # or for large replies a uint8 numpy array owning the received buffer (serde.decode
        # reads both).
        with self._io:
            conn = self._connection()
            return self._call(conn, _frame(REQUEST, data), "a request")

    def _post(self, data: Any, sender: "BaseWorker | None" = None, deletes: "list[int] | None" = None) -> bool:
        if not self.asynchronous:
            return False
        with self._io:
            conn = self._connection()
            try:
                if self._split_send:
                    conn.set_timeout(self.send_deadline_s)  # the last wait for an answer set the timeout_s
                conn.send(_frame(POST, data))
            except TransportError as e:
                raise self._fail(e, "sending a request") from None
            if sender is not None and deletes:
                # Recorded under the same lock as the send: a reply or a broken link seen by
                # another thread cannot fall between the two.
                self._unconfirmed.append((sender, deletes))
        return True

    def sync(self) -> int:
        """Waits until the worker has run every request sent so far and returns how many
        objects it holds (all clients together); raises the first failure among them."""
        with self._io:
            conn = self._connection()
            reply = serde.decode(self._call(conn, SYNC, "a sync"))
        if isinstance(reply, Err):
            self._raise_err(reply)
        return int(reply.value)

    def _raise_err(self, reply: Any) -> None:
        raise reply.exception(self.id)

    def is_linked(self) -> bool:
        """Whether the connection is open (deletions of dead pointers and MPC session leaves are sent only then)."""
        return self._conn is not None

    def close(self) -> None:
        """Closes the connection (objects stay on the worker until its grace period for this client ends)."""
        with self._io:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> "SocketWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame(kind: bytes, data: Any) -> list[Any]:
    """One control frame as pieces for ``Connection.send``: the kind byte, then the message."""
    if isinstance(data, list):
        return [kind, *data]
    return [kind, data]


def parse_workers(spec: str) -> "list[tuple[str, str, int]]":
    """``"bob=127.0.0.1:8777,alice=h:8778"`` → ``[("bob", "127.0.0.1", 8777), ...]``."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, addr = item.partition("=")
        host, sep2, port = addr.rpartition(":")
        if not (sep and sep2 and name and host and port.isdigit()):
            raise ValueError(f"bad worker entry {item!r} in {ENV_WORKERS}; expected name=host:port")
        out.append((name, host.strip("[]"), int(port)))
    return out


def workers_from_env(hook: Any = None, **kwargs: Any) -> "list[SocketWorker]":
    """The workers named in ``$SYFT_MPC_WORKERS`` (set by ``syft-mpc launch``), connected with ``$SYFT_MPC_TOKEN``.

        bob, alice, carol = sy.workers_from_env(hook)    # under `syft-mpc launch --workers bob,alice,carol`

    Keyword arguments go to :class:`SocketWorker` (e.g. ``timeout_s``).
    """
    spec = os.environ.get(ENV_WORKERS)
    if not spec:
        raise RuntimeError(
            f"${ENV_WORKERS} is not set: run this script with `syft-mpc launch --workers bob,alice script.py`, "
            "or set it to name=host:port,... of running workers"
        )
    return [SocketWorker(hook, id=n, host=h, port=p, **kwargs) for n, h, p in parse_workers(spec)]
