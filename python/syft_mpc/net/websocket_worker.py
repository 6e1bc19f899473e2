"""WebsocketClientWorker: a worker in another process reached over WebSocket (PySyft 0.2's name).

The driver's handle on a worker started with ``syft-mpc worker --transport websocket`` or
:class:`~syft_mpc.net.websocket_server.WebsocketServerWorker`. Everything a
:class:`~syft_mpc.net.socket_worker.SocketWorker` does works the same way (pointers, remote
execution, ``.move()`` between workers, shares, posted requests); only the transport differs:
binary WebSocket messages (:mod:`syft_mpc.net.ws_transport`) instead of the native framed TCP,
with the same frames, the same token handshake idea and ``wss://`` for TLS.

    >>> bob = sy.WebsocketClientWorker(hook, "127.0.0.1", 8778, id="bob", token=token)  # doctest: +SKIP
    >>> (torch.tensor([1, 2]).send(bob) + 1).get()                                    # doctest: +SKIP
    tensor([2, 3])
"""

from __future__ import annotations

from typing import Any

from syft_mpc.net.socket_worker import CONNECT_TRIES, SocketWorker
from syft_mpc.net.ws_transport import open_connection
from syft_mpc.errors import PeerDisconnected, TransportError
from syft_mpc.remote import serde
from syft_mpc.remote.messages import HELLO

__all__ = ["WebsocketClientWorker"]


class WebsocketClientWorker(SocketWorker):
    """A worker in another process, reached over ``ws://host:port`` (``wss://`` with ``secure=True``).

    Args:
        hook: the :class:`~syft_mpc.hook.TorchHook` (may be None).
        host, port: where the worker listens.
        secure: use ``wss://`` (TLS); the certificate is checked against ``tls_ca`` (PEM,
            default ``$SYFT_MPC_TLS_CA``) or the system's CAs.
        id: the worker's id (the handshake checks it).
        token: the shared secret (default ``$SYFT_MPC_TOKEN``); it never travels.
        timeout: PySyft's name for ``timeout_s``.
        Other keyword arguments as :class:`~syft_mpc.net.socket_worker.SocketWorker`
        (``timeout_s``, ``asynchronous``, ``connect``, ...).
    """

    def __init__(
        self,
        hook: Any = None,
        host: str = "127.0.0.1",
        port: int = 8777,
        secure: bool = False,
        id: str = "bob",
        token: "str | None" = None,
        timeout: "float | None" = None,
        **kwargs: Any,
    ) -> None:
        if timeout is not None:  # PySyft 0.2's name
            kwargs.setdefault("timeout_s", timeout)
        kwargs.pop("verbose", None)  # PySyft 0.2's message logging switch; workers log with `logging` here
        self.url_scheme = "wss://" if secure else "ws://"
        self.secure = secure
        super().__init__(hook, id=id, host=host, port=port, token=token, **kwargs)

    def __repr__(self) -> str:
        return f"<WebsocketClientWorker id:{self.id} {self.address}>"

    @property
    def url(self) -> str:
        return self.address

    def _connection(self) -> Any:
        """The open WebSocket (opened, authenticated and greeted with b"H" when needed); call with ``_io`` held."""
        conn: Any = self._conn
        if conn is None:
            for attempt in range(CONNECT_TRIES):
                try:
                    conn = open_connection(
                        self.address,
                        self._token,
                        self.id,
                        session=self._session,
                        timeout_s=self.timeout_s,
                        tls_ca=self.tls_ca,
                        server_name=self._tls_server_name,
                    )
                    break
                except PeerDisconnected as e:
                    # Closed during the handshake: evicted by a worker flooded with unfinished
                    # handshakes (syft_mpc.net.admission), as a SocketWorker's may be: try again.
                    if attempt + 1 == CONNECT_TRIES:
                        raise self._fail(e, "connecting") from None
                except TransportError as e:
                    raise self._fail(e, "connecting") from None
            self._conn = conn
            self._peers_version = -1
        version, peers = self.peers_to_announce()
        if self._peers_version != version:
            self._call(conn, HELLO + serde.encode({"uid": self._uid, "peers": peers}), "saying hello")
            self._peers_version = version
        return conn
