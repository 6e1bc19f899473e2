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

from syft_mpc.net.socket_worker import SocketWorker
from syft_mpc.net.ws_transport import open_connection

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

    _deadline_is_write_timeout = False  # WsConnection watches each send (send_watch.watch_send)

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

    def _open_connection(self) -> Any:
        return open_connection(
            self.address,
            self._token,
            self.id,
            session=self._session,
            timeout_s=self.timeout_s,
            tls_ca=self.tls_ca,
            server_name=self._tls_server_name,
            send_deadline_s=self.send_deadline_s,
        )
