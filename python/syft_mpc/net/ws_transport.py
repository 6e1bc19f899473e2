"""WebSocket transport: an authenticated message connection over ``ws://`` or ``wss://``.

The same control frames as a socket worker (:mod:`syft_mpc.remote.messages`) travel as
binary WebSocket messages (the ``websockets`` library, RFC 6455). Right after the WebSocket
opens, both ends prove they know the shared token without sending it, in the spirit of the
native handshake (``rust/transport/src/handshake.rs``): an HMAC-SHA256 challenge-response
over fresh nonces of both sides, bound to the session name, the worker id and the direction
(so a recorded handshake cannot be replayed, nor a client's proof reflected back)::

    client -> server   b"SMWS" 0x01 | client nonce [32] | worker id (UTF-8)
    server -> client   b"SMWS" 0x01 | server nonce [32]
    client -> server   HMAC(key, LABEL | b"C" | session | id | server nonce | client nonce)
    server -> client   0x00 | HMAC(key, LABEL | b"S" | session | id | client nonce | server nonce)
                       or 0x01 | reason (UTF-8), then close
    key = SHA-256(b"syft-mpc session key v1\\0" | token)       (as the native transport)

Session, id, and each length-prefixed (u16 LE) in the MAC. Proofs are compared in constant
time; every handshake message is bounded (256 bytes) and the whole handshake has one deadline.
Over ``wss://`` this runs inside TLS (an ``ssl.SSLContext``); the proofs are not bound to the
TLS channel (Python's ``ssl`` does not expose the ``tls-exporter`` binding), so TLS with a
checked certificate is what stops an active relay.

:class:`WsConnection` gives the interface :class:`~syft_mpc.net.server.WorkerServer` and the
socket worker use on a native ``Connection``: ``send``, ``recv``, ``request``, ``close``,
``peer_addr``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import ssl
import threading
import time
from typing import Any, Callable, Iterable

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI, WebSocketException
from websockets.sync.client import ClientConnection, connect
from websockets.sync.connection import Connection

from syft_mpc.errors import AuthenticationError, PeerDisconnected, PeerTimeout, TlsError, TransportError
from syft_mpc.net.send_watch import client_send_deadline, watch_send

__all__ = [
    "HANDSHAKE_MAX",
    "MAX_MESSAGE_BYTES",
    "MAX_PIECES",
    "ServerHandshake",
    "MAX_QUEUE",
    "WsConnection",
    "allow_messages",
    "client_handshake",
    "key_from_token",
    "open_connection",
    "proof",
    "server_handshake",
]

MAX_MESSAGE_BYTES = 1 << 30
"""Largest message accepted (the native transport's default bound, 1 GiB)."""
HANDSHAKE_MAX = 256
"""Largest message before the handshake succeeds (each handshake message is smaller)."""
MAX_QUEUE = (2, 0)
"""Frames received but not yet read (high, low water marks) before the ``websockets`` library
stops reading the socket: with messages of up to 1 GiB, its default of 16 would let one peer
park 16 GiB in a connection whose reader is busy."""
MAGIC = b"SMWS\x01"
KEY_LABEL = b"syft-mpc session key v1\x00"
PROOF_LABEL = b"syft-mpc websocket v1 handshake proof\x00"


def key_from_token(token: str) -> bytes:
    """``SHA-256(b"syft-mpc session key v1\\0" || token)``, as ``handshake.rs``'s ``key_from_token``."""
    return hashlib.sha256(KEY_LABEL + token.encode()).digest()


def _lp(b: bytes) -> bytes:
    return len(b).to_bytes(2, "little") + b


def proof(key: bytes, direction: bytes, session: str, worker_id: str, receiver_nonce: bytes, sender_nonce: bytes) -> bytes:
    """The HMAC-SHA256 proof one side sends (``direction`` ``b"C"`` client, ``b"S"`` server)."""
    msg = PROOF_LABEL + direction + _lp(session.encode()) + _lp(worker_id.encode()) + receiver_nonce + sender_nonce
    return hmac.new(key, msg, hashlib.sha256).digest()


def exporter(key: bytes, session: str, worker_id: str, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """A secret only the two ends of one authenticated connection can compute (it needs the
    token's key and both fresh nonces): what :meth:`WsConnection.export_secret` derives from,
    as the native connection's exporter does (``net/sealing.py`` seals MPC session tokens with it)."""
    msg = b"syft-mpc ws exporter v1\0" + _lp(session.encode()) + _lp(worker_id.encode()) + client_nonce + server_nonce
    return hmac.new(key, msg, hashlib.sha256).digest()


def allow_messages(ws: Connection, max_bytes: int) -> None:
    """Raises the connection's message limit from :data:`HANDSHAKE_MAX` to ``max_bytes``.

    Called once the peer has proved itself and before this side's last handshake message, so
    the peer's first real message (which it sends only after that one) is read under the new
    limit: the library checks a frame's size when its first bytes arrive."""
    protocol: Any = ws.protocol
    if hasattr(protocol, "max_message_size"):  # websockets >= 16: (message, fragment) limits
        protocol.max_message_size = max_bytes
    else:
        protocol.max_size = max_bytes


def _send(ws: Connection, msg: bytes, what: str) -> None:
    try:
        ws.send(msg)
    except ConnectionClosed:
        raise PeerDisconnected(f"the peer closed the connection during the handshake (sending {what})") from None
    except (OSError, WebSocketException) as e:
        raise TransportError(f"sending {what} failed: {e}") from None


def _recv_bounded(ws: Connection, deadline: float, what: str) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise PeerTimeout(f"the handshake took too long (waiting for {what})")
    try:
        msg = ws.recv(timeout=left)
    except TimeoutError:
        raise PeerTimeout(f"the handshake took too long (waiting for {what})") from None
    except ConnectionClosed:
        raise PeerDisconnected(f"the peer closed the connection during the handshake (waiting for {what})") from None
    if not isinstance(msg, bytes) or len(msg) > HANDSHAKE_MAX:
        raise AuthenticationError(f"malformed handshake message ({what}): expected at most {HANDSHAKE_MAX} bytes")
    return msg


def client_handshake(
    ws: Connection, token: str, worker_id: str, session: str, timeout_s: float, *, max_message: "int | None" = None
) -> bytes:
    """Proves knowledge of ``token`` to the server reached as ``worker_id`` and checks its proof;
    returns the connection's :func:`exporter` secret. With ``max_message``, the connection's
    message limit is raised to it right after this side's proof is sent (:func:`allow_messages`):
    a server may send its first message right after its verdict, before this function returns."""
    deadline = time.monotonic() + timeout_s
    key = key_from_token(token)
    nc = secrets.token_bytes(32)
    _send(ws, MAGIC + nc + worker_id.encode(), "the hello")
    hello = _recv_bounded(ws, deadline, "the server's hello")
    if hello[:5] != MAGIC or len(hello) != 37:
        raise AuthenticationError("the server did not answer with a syft_mpc WebSocket handshake (another service, or another version)")
    ns = hello[5:]
    _send(ws, proof(key, b"C", session, worker_id, ns, nc), "the proof")
    if max_message is not None:
        allow_messages(ws, max_message)
    verdict = _recv_bounded(ws, deadline, "the server's verdict")
    if verdict[:1] == b"\x01":
        reason = verdict[1:200].decode("utf-8", "replace")
        raise AuthenticationError(f"rejected by the server: {''.join(c if c.isprintable() else '?' for c in reason)}")
    expect = proof(key, b"S", session, worker_id, nc, ns)
    if verdict[:1] != b"\x00" or not hmac.compare_digest(verdict[1:], expect):
        raise AuthenticationError("the server could not prove it knows the token (another deployment, or a wrong token)")
    return exporter(key, session, worker_id, nc, ns)


class ServerHandshake:
    """The server's side of the handshake, one message at a time, for a caller doing its own
    I/O (:func:`server_handshake` over a connection; the listeners' accept loop without a
    thread, :mod:`syft_mpc.net.ws_serve`).

    ``tokens(worker_id)`` gives the token for that id, or None when the id is not served here.
    :meth:`on_hello` returns the server's hello; :meth:`on_proof` the verdict to send, after
    which ``error`` is None (``worker_id`` and ``secret``, the :func:`exporter` secret, are set)
    or the ``AuthenticationError`` to raise once the verdict is sent."""

    def __init__(self, tokens: Any, session: str) -> None:
        self.tokens, self.session = tokens, session
        self.worker_id = ""
        self.secret = b""
        self.error: "AuthenticationError | None" = None
        self._nc = self._ns = b""
        self._token: "str | None" = None

    def on_hello(self, hello: bytes) -> bytes:
        if len(hello) > HANDSHAKE_MAX or hello[:5] != MAGIC or len(hello) < 37:
            raise AuthenticationError("the client did not send a syft_mpc WebSocket handshake")
        self._nc = hello[5:37]
        try:
            self.worker_id = hello[37:].decode()
        except UnicodeDecodeError:
            raise AuthenticationError("the worker id in the handshake is not UTF-8") from None
        self._token = self.tokens(self.worker_id)
        self._ns = secrets.token_bytes(32)
        return MAGIC + self._ns

    def on_proof(self, got: bytes) -> bytes:
        worker_id, nc, ns = self.worker_id, self._nc, self._ns
        if self._token is None:
            self.error = AuthenticationError(f"a client asked for worker {worker_id[:60]!r}, which is not served here")
            return b"\x01" + f"no worker {worker_id[:60]!r} here".encode()
        key = key_from_token(self._token)
        if not hmac.compare_digest(got, proof(key, b"C", self.session, worker_id, ns, nc)):
            self.error = AuthenticationError(f"a client for {worker_id!r} failed to prove it knows the token")
            return b"\x01wrong token"
        self.secret = exporter(key, self.session, worker_id, nc, ns)
        return b"\x00" + proof(key, b"S", self.session, worker_id, nc, ns)


def server_handshake(
    ws: Connection, tokens: Any, session: str, timeout_s: float, *, max_message: "int | None" = None,
    admitted: "Callable[[], bool] | None" = None,
) -> "tuple[str, bytes]":
    """Checks a client's proof over ``ws``; returns the worker id it asked for and the
    connection's :func:`exporter` secret (:class:`ServerHandshake` for ``tokens``).

    Once the proof checks out and before the verdict is sent: ``admitted()`` (False: this
    handshake was dropped meanwhile; it fails with ``PeerTimeout``), then the message limit is
    raised to ``max_message`` (:func:`allow_messages`)."""
    deadline = time.monotonic() + timeout_s
    hs = ServerHandshake(tokens, session)
    _send(ws, hs.on_hello(_recv_bounded(ws, deadline, "the client's hello")), "the hello")
    verdict = hs.on_proof(_recv_bounded(ws, deadline, "the client's proof"))
    if hs.error is not None:
        _send(ws, verdict, "the verdict")
        raise hs.error
    if admitted is not None and not admitted():
        raise PeerTimeout("the handshake was cut (past its deadline, or evicted by newer connections from its address)")
    if max_message is not None:
        allow_messages(ws, max_message)
    _send(ws, verdict, "the verdict")
    return hs.worker_id, hs.secret


MAX_PIECES = 1024
"""Pieces sent as the fragments of one message; a message in more pieces is joined first. The
``websockets`` library refuses a message of more than 4,096 fragments (``TooManyFragments``,
reported as code 1009), which a reply holding 2,048 tensors of 64 KiB or more reached."""


def _fragments(frame: Any) -> "bytes | Iterable[Any]":
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return frame
    # Pieces (serde.encode_parts): sent as one fragmented message, without joining them.
    pieces = [p if isinstance(p, (bytes, bytearray)) else memoryview(p).cast("B") for p in frame]
    return b"".join(pieces) if len(pieces) > MAX_PIECES else pieces


class WsConnection:
    """One authenticated WebSocket, with the native ``Connection``'s methods.

    With ``send_deadline_s`` (clients: :func:`open_connection`), a send whose peer
    acknowledges none of the bytes waiting for it for that long (it stopped reading: a stopped
    or hung process) cuts the connection and raises :class:`~syft_mpc.errors.PeerTimeout`
    (:func:`~syft_mpc.net.send_watch.watch_send`); without, a listener watches its
    connections itself (:mod:`syft_mpc.net.ws_serve`)."""

    def __init__(
        self, ws: Connection, peer_addr: str, exporter_secret: bytes, max_message: int = MAX_MESSAGE_BYTES,
        send_deadline_s: "float | None" = None,
    ) -> None:
        self.ws = ws
        self.peer_addr = peer_addr
        self.max_message = max_message
        self.send_deadline_s = send_deadline_s
        self.closed = threading.Event()
        self.cut_reason: "str | None" = None
        self._cut_timed_out = False
        self._exporter = exporter_secret

    def cut(self, reason: str, *, timed_out: bool = False) -> None:
        """Ends the connection at once, from any thread, even while a send to it is blocked
        (the ``websockets`` library holds the connection's lock for a whole send, so its own
        ``close`` would wait for that send): the socket is shut down, the blocked send and
        recv fail, and their errors end with ``reason`` (``PeerTimeout`` with ``timed_out``,
        else ``PeerDisconnected``)."""
        self._cut_timed_out = timed_out
        self.cut_reason = reason
        self.closed.set()
        sock = getattr(self.ws, "socket", None)
        if sock is None:
            return
        try:  # the system call itself, also for a TLS socket (whose own shutdown would touch its state)
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass

    def _cut_error(self) -> TransportError:
        """The error of a send or recv ended by :meth:`cut`."""
        if self._cut_timed_out:
            return PeerTimeout(f"sending to {self.peer_addr} failed: {self.cut_reason}")
        return PeerDisconnected(f"connection to {self.peer_addr} closed: {self.cut_reason}")

    def _send_stalled(self, stalled_s: float, waiting: int) -> None:
        """Called by the send watch: the peer took none of the bytes sent to it in time."""
        self.cut(
            f"it acknowledged none of the {waiting} bytes waiting for it for {stalled_s:.0f} s (the send deadline, "
            f"{self.send_deadline_s:g} s): it stopped reading (a stopped, hung or overloaded process), so this side "
            "closed the connection. Check that it is running and responsive; for a peer that is only slow, raise "
            "send_deadline_s",
            timed_out=True,
        )

    def _closed_error(self, e: ConnectionClosed) -> TransportError:
        """The error for a closed connection; a message over a size limit (close code 1009) says whose."""
        self.closed.set()
        if self.cut_reason is not None:
            return self._cut_error()
        peer_first = e.rcvd is not None and (e.sent is None or bool(e.rcvd_then_sent))  # an echo is not a reason
        if e.sent is not None and e.sent.code == 1009 and not peer_first:
            return TransportError(
                f"{self.peer_addr} sent a message over this side's {self.max_message}-byte limit; the connection was "
                f"closed (WebSocket code 1009: {e.sent.reason})"
            )
        if e.rcvd is not None and e.rcvd.code == 1009 and peer_first:
            return TransportError(
                f"{self.peer_addr} refused a message over its size limit and closed the connection "
                f"(WebSocket code 1009: {e.rcvd.reason}); send smaller messages (e.g. split the tensor)"
            )
        return PeerDisconnected(f"connection to {self.peer_addr} closed")

    def export_secret(self, context: bytes) -> bytes:
        """32 bytes bound to this connection and ``context`` (HMAC-SHA256 under the exporter)."""
        return hmac.new(self._exporter, context, hashlib.sha256).digest()

    def send(self, frame: Any) -> None:
        try:
            deadline = self.send_deadline_s
            if deadline is None:
                self.ws.send(_fragments(frame))
            else:
                with watch_send(self.ws.socket, deadline, self._send_stalled):
                    self.ws.send(_fragments(frame))
        except ConnectionClosed as e:
            raise self._closed_error(e) from None
        except (OSError, WebSocketException, RuntimeError) as e:  # RuntimeError: no thread for the send watch
            self.closed.set()
            if self.cut_reason is not None:
                raise self._cut_error() from None
            raise TransportError(f"sending to {self.peer_addr} failed: {e}") from None

    def recv(self, timeout_s: "float | None" = None) -> bytes:
        try:
            msg = self.ws.recv(timeout=timeout_s)
        except TimeoutError:
            raise PeerTimeout(f"no message from {self.peer_addr} in {timeout_s:.1f} s") from None
        except ConnectionClosed as e:
            raise self._closed_error(e) from None
        except (OSError, WebSocketException) as e:
            self.closed.set()
            if self.cut_reason is not None:
                raise self._cut_error() from None
            raise TransportError(f"receiving from {self.peer_addr} failed: {e}") from None
        if isinstance(msg, str):
            raise TransportError(f"{self.peer_addr} sent a text message; this protocol uses binary messages")
        return msg

    def request(self, frame: Any, timeout_s: float) -> bytes:
        self.send(frame)
        return self.recv(timeout_s)

    def close(self) -> None:
        self.closed.set()
        try:
            self.ws.close()
        except Exception:
            pass


def client_ssl(tls_ca: "str | None", url: str) -> "ssl.SSLContext | None":
    """The TLS context for a ``wss://`` URL: trusts ``tls_ca`` (PEM) or the system CAs."""
    if not url.startswith("wss://"):
        return None
    ctx = ssl.create_default_context(cafile=tls_ca) if tls_ca else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def server_ssl(tls_cert: "str | None", tls_key: "str | None") -> "ssl.SSLContext | None":
    """The TLS context of a ``wss://`` server (None without a certificate)."""
    if not (tls_cert and tls_key):
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls_cert, tls_key)
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"cannot load the TLS certificate {tls_cert} / key {tls_key}: {e}") from None
    return ctx


def open_connection(
    url: str, token: str, worker_id: str, session: str, timeout_s: float, tls_ca: "str | None" = None,
    server_name: "str | None" = None, source_address: "tuple[str, int] | None" = None,
    send_deadline_s: "float | None" = None,
) -> WsConnection:
    """Connects to ``url`` (``ws://host:port/path`` or ``wss://...``) and runs the client handshake
    (from ``source_address``, ``(host, port)``, when given). ``send_deadline_s``: bound on each
    send's wait for a server that takes none of the bytes (:class:`WsConnection`; default
    its ``timeout_s``: :func:`~syft_mpc.net.send_watch.client_send_deadline`)."""
    send_deadline_s = client_send_deadline(send_deadline_s, timeout_s)
    # Extra keyword arguments of connect() go to socket.create_connection.
    extra: dict[str, Any] = {"source_address": source_address} if source_address else {}
    try:
        ws: ClientConnection = connect(
            url,
            ssl=client_ssl(tls_ca, url),
            server_hostname=server_name,
            open_timeout=timeout_s,
            close_timeout=2,
            max_size=HANDSHAKE_MAX,  # raised by client_handshake
            max_queue=MAX_QUEUE,
            compression=None,
            **extra,
        ).__enter__()  # the connection itself (websockets >= 17.1 warns unless entered)
    except ssl.SSLError as e:
        raise TlsError(f"TLS with {url} failed: {e}") from None
    except TimeoutError:
        raise PeerTimeout(f"connecting to {url} took more than {timeout_s:.1f} s") from None
    except ConnectionClosed as e:
        # Closed before this side even wrote its upgrade request (the same eviction as below).
        raise PeerDisconnected(f"{url} closed the connection before the WebSocket upgrade ({e})") from None
    except (ConnectionResetError, InvalidHandshake) as e:
        if isinstance(e, ConnectionResetError) or isinstance(e.__cause__, (EOFError, ConnectionResetError)):
            # Closed before it answered the upgrade: a worker flooded with unfinished handshakes
            # evicts the most silent one (syft_mpc.net.admission), which may have been this one.
            raise PeerDisconnected(f"{url} closed the connection during the WebSocket upgrade ({e})") from None
        raise TransportError(f"cannot connect to {url}: {e}") from None
    except (OSError, InvalidURI) as e:
        raise TransportError(f"cannot connect to {url}: {e}") from None
    try:
        secret = client_handshake(ws, token, worker_id, session, timeout_s, max_message=MAX_MESSAGE_BYTES)
    except BaseException:
        ws.close()
        raise
    return WsConnection(ws, url, secret, send_deadline_s=send_deadline_s)
