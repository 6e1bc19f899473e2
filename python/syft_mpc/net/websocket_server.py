"""WebsocketServerWorker: a worker process serving drivers over WebSocket (PySyft 0.2's name).

``syft-mpc worker --transport websocket --id bob --port 8778`` runs one; in Python::

    server = sy.WebsocketServerWorker(hook, "127.0.0.1", 8778, id="bob", token=token)
    server.start()            # serves until SIGINT/SIGTERM or server.stop()

It is a :class:`~syft_mpc.net.server.WorkerServer` (same object store, same frames, same
limits and grace period, same handling of malformed input) whose listener accepts WebSocket
connections (the ``websockets`` library) authenticated by the handshake of
:mod:`syft_mpc.net.ws_transport`. With ``tls_cert``/``tls_key`` it serves ``wss://`` only.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any

from websockets.http11 import Request
from websockets.protocol import State

from syft_mpc._native import check_token
from syft_mpc.errors import TransportError
from syft_mpc.net.admission import HANDSHAKE_DEADLINE_S, MAX_CONNECTIONS, MAX_HANDSHAKES, MAX_PER_ADDRESS, check_limits
from syft_mpc.net.env import ENV_TOKEN
from syft_mpc.net.send_watch import SEND_DEADLINE_S
from syft_mpc.net.server import WorkerServer
from syft_mpc.net.ws_serve import AdmittedServer
from syft_mpc.net.ws_transport import MAX_MESSAGE_BYTES, WsConnection, server_ssl
from syft_mpc.remote.messages import DEFAULT_SESSION

__all__ = ["WebsocketListener", "WebsocketServerWorker"]

log = logging.getLogger("syft_mpc.worker")


class WebsocketListener:
    """Accepts authenticated WebSocket connections; the interface of the native ``Listener``.

    Handshakes are admitted as by the native listener (:mod:`syft_mpc.net.admission`: one
    deadline for the HTTP upgrade and the HMAC handshake together, per-address and global
    limits with eviction of the most silent, counted drops in ``dropped``) and run without a
    thread (:mod:`syft_mpc.net.ws_serve`); failed handshakes are logged at most once per 10 s.
    A message may have ``max_message`` bytes (1 GiB). A client that stops reading its replies
    is cut once none of the bytes waiting for it has moved for ``send_deadline_s`` (10 s)
    (:mod:`syft_mpc.net.send_watch`), which ends the thread sending to it.
    ``max_handshakes``, ``max_per_address`` and ``handshake_deadline_s`` are the admission
    limits (defaults 512, 64, 5 s).
    """

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        worker_id: str,
        *,
        session: str = DEFAULT_SESSION,
        timeout_s: float = 30.0,
        max_message: int = MAX_MESSAGE_BYTES,
        tls_cert: "str | None" = None,
        tls_key: "str | None" = None,
        send_deadline_s: float = SEND_DEADLINE_S,
        max_handshakes: int = MAX_HANDSHAKES,
        max_per_address: int = MAX_PER_ADDRESS,
        handshake_deadline_s: float = HANDSHAKE_DEADLINE_S,
    ) -> None:
        self._token, self._id, self._session, self._timeout = token, worker_id, session, timeout_s
        self.max_message = max_message
        self._queue: "queue.Queue[WsConnection]" = queue.Queue()
        ctx = server_ssl(tls_cert, tls_key)
        self.tls = ctx is not None
        # The worker's serve loop reports the drops (WorkerServer reads `dropped`).
        self._server = AdmittedServer(
            self._handle, host, port, name=f"worker {worker_id}", route=self._route, timeout_s=timeout_s,
            max_message=max_message, ssl=ctx, log=log, report_drops=False, send_deadline_s=send_deadline_s,
            max_handshakes=max_handshakes, max_per_address=max_per_address, handshake_deadline_s=handshake_deadline_s,
        )
        self.local_addr = self._server.local_addr
        self.handshake_deadline_s = self._server.deadline_s
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name=f"ws-{worker_id}")
        self._thread.start()

    @property
    def dropped(self) -> "dict[str, int]":
        """Handshakes dropped without a report through ``accept()``, as the native ``Listener``'s."""
        return dict(self._server.admission.dropped)

    def _tokens(self, worker_id: str) -> "str | None":
        return self._token if worker_id == self._id else None

    def _route(self, request: Request, reject: Any) -> "tuple[Any, str]":
        return self._tokens, self._session  # any path: a request that is no upgrade is refused by the library

    def _handle(self, conn: WsConnection, worker_id: str) -> None:
        self._queue.put(conn)
        # The server's own thread serves it; the socket closes when this returns. A connection
        # closed underneath with no thread serving it (queued when the worker stops) ends it
        # too: the library's shutdown waits for this thread.
        while not conn.closed.wait(1.0):
            if conn.ws.protocol.state is State.CLOSED:
                break

    def accept(self, timeout_s: float) -> "WsConnection | None":
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._server.shutdown()


class WebsocketServerWorker(WorkerServer):
    """A worker serving drivers (and other workers) over WebSocket.

    Args:
        hook: kept for PySyft compatibility (the worker makes its own).
        host, port: where to listen (port 0 picks a free one; see ``address``).
        id: the worker id clients name.
        token: the shared secret (default ``$SYFT_MPC_TOKEN``; at least 16 characters).
        tls_cert, tls_key: PEM certificate chain and key: serve ``wss://`` only (PySyft's
            ``cert_path``/``key_path`` are accepted too).
        max_message: the largest message accepted (bytes; 1 GiB, as socket workers); a larger
            one closes that connection with WebSocket code 1009 and a reason naming the limit.
        max_handshakes, max_per_address, handshake_deadline_s: the admission limits of its
            listener (:class:`WebsocketListener`).
        Other keyword arguments as :class:`~syft_mpc.net.server.WorkerServer` (``max_connections``,
        ``send_deadline_s``, ...).
    """

    def __init__(
        self,
        hook: Any = None,
        host: str = "127.0.0.1",
        port: int = 8777,
        id: str = "bob",
        token: "str | None" = None,
        *,
        timeout_s: float = 30.0,
        max_message: int = MAX_MESSAGE_BYTES,
        tls_cert: "str | None" = None,
        tls_key: "str | None" = None,
        cert_path: "str | None" = None,
        key_path: "str | None" = None,
        send_deadline_s: float = SEND_DEADLINE_S,
        max_handshakes: int = MAX_HANDSHAKES,
        max_per_address: int = MAX_PER_ADDRESS,
        handshake_deadline_s: float = HANDSHAKE_DEADLINE_S,
        **kwargs: Any,
    ) -> None:
        tls_cert, tls_key = tls_cert or cert_path, tls_key or key_path  # PySyft 0.2's names
        token = token or os.environ.get(ENV_TOKEN, "")
        if not token:
            raise ValueError(f"a token is needed: pass token=... or set {ENV_TOKEN}")
        check_token(token)  # at least 128 bits, as for socket workers: a recorded handshake must not make it guessable
        check_limits(max_connections=kwargs.get("max_connections", MAX_CONNECTIONS))  # before the port is bound
        listener = WebsocketListener(
            host, port, token, id, timeout_s=timeout_s, max_message=max_message, tls_cert=tls_cert, tls_key=tls_key,
            send_deadline_s=send_deadline_s, max_handshakes=max_handshakes, max_per_address=max_per_address,
            handshake_deadline_s=handshake_deadline_s,
        )
        super().__init__(
            id, host, port, token, timeout_s=timeout_s, listener=listener,  # type: ignore[arg-type]
            tls_cert=tls_cert, tls_key=tls_key, send_deadline_s=send_deadline_s, **kwargs,
        )
        self.url = f"{'wss' if listener.tls else 'ws'}://{self.address}"

    def add_dataset(self, dataset: Any, key: str) -> None:
        """Holds ``dataset`` (``.data``, ``.targets``) under ``key`` for ``fit``/``evaluate`` (PySyft's name)."""
        self.worker.add_dataset(dataset, key)

    def start(self) -> None:
        """Serves until :meth:`stop` (PySyft's name for ``serve_forever``)."""
        self.serve_forever()

    def start_in_thread(self) -> threading.Thread:
        """Serves in a daemon thread (for notebooks and tests); returns it."""
        t = threading.Thread(target=self.serve_forever, daemon=True, name=f"worker-{self.id}")
        t.start()
        return t
