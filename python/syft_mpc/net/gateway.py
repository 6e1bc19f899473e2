"""Browser workers: ``syft-mpc gateway`` serves a page; every tab that opens it is a worker.

    syft-mpc gateway --port 8780 --token-file F --tabs alice,bob,carol

prints one link per tab name (``http://host:8780/#id=alice&token=...``). A person opens
theirs; the tab authenticates and registers as worker ``alice``. The driver connects to the
gateway with the gateway's token and sees the tabs as :class:`BrowserWorker` objects::

    gw = sy.Gateway("127.0.0.1", 8780, token=token)
    alice, bob, carol = gw.wait_for_workers(3)       # or gw.workers()
    x = torch.tensor([1.0, 2.0]).send(alice)
    (x + x).get()                                     # tensor([2., 4.])

Design (see ``docs/WORKERS.md`` and ``docs/SECURITY.md``):

* One process, the ``websockets`` library: ``GET /`` and ``/static/<file>`` serve the page
  (HTML + JavaScript shipped in the wheel, ``syft_mpc/net/static``); ``/tab`` and
  ``/driver`` are WebSocket endpoints. Both run the handshake of
  :mod:`syft_mpc.net.ws_transport` (HMAC challenge-response; the token never travels).
* A tab's token is ``tab_token(gateway token, tab id)``: it only lets that tab register
  under that id, never act as a driver or as another tab. It reaches the page in the URL
  *fragment*, which browsers never send to a server (so it is in no request log).
* The gateway relays the driver's requests (the same :class:`~syft_mpc.remote.messages.Envelope`
  frames as every worker) to a tab and the tab's replies back. A tab that closes or stops
  answering pings (2 s interval, 3 s timeout) is removed; pending and later requests to it
  fail with :class:`~syft_mpc.errors.PeerDisconnected` naming it, others continue.
* No driver or tab can hold up the relay for the others: each has its own sending thread and
  queue (:data:`MAX_WAITING_BYTES` at most), so nothing sends while holding a lock another
  connection needs. A driver with more answers waiting than that is cut off; a request to a tab
  with more requests waiting is refused (the driver raises :class:`~syft_mpc.errors.WorkerBusy`
  naming the tab). Either one that acknowledges none of the
  bytes waiting for it for ``send_deadline_s`` (10 s) is cut off by the listener
  (:mod:`syft_mpc.net.send_watch`): a tab's pending requests then fail naming it and saying
  why. Each cut is logged (at most one line per 10 s of each kind).
* At most ``max_connections`` drivers and tabs at once (``--max-connections``, 256): one more
  is told why (a driver raises :class:`~syft_mpc.errors.WorkerBusy`) and closed.
* Secure aggregation (:meth:`Gateway.secure_sum`): the tabs agree on pairwise keys (ECDH
  P-256, public keys relayed by the driver), each adds pairwise masks that cancel in the
  sum (Bonawitz et al., CCS 2017) to its fixed-point update in Z_2^64, and the driver only
  ever receives masked vectors: it learns the sum, never one tab's update.

Driver <-> gateway messages are serde-encoded tuples::

    ("list", seq)                      -> ("workers", seq, [tab ids])
    ("req", seq, tab id, frame bytes)  -> ("reply", seq, reply bytes) | ("error", seq, message[, "WorkerBusy"])
                                          gateway pushes ("gone", tab id, reason)
                                          and, to a driver over --max-connections, ("busy", reason), then closes

Gateway <-> tab: ``b"R" seq:u32 Envelope`` / ``b"r" seq:u32 Ok|Err``.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import http
import importlib.resources
import itertools
import logging
import os
import re
import threading
import time
from typing import Any, Callable, Sequence

import torch
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from syft_mpc import fixed_point
from syft_mpc._native import check_token
from syft_mpc.errors import PeerDisconnected, PeerTimeout, SerializationError, TransportError, WorkerBusy
from syft_mpc.net.admission import (
    HANDSHAKE_DEADLINE_S,
    MAX_CONNECTIONS,
    MAX_HANDSHAKES,
    MAX_PER_ADDRESS,
    REFUSE_LINGER_S,
    Throttled,
    check_limits,
    connect_retrying,
)
from syft_mpc.net.env import ENV_TOKEN
from syft_mpc.net.send_watch import SEND_DEADLINE_S
from syft_mpc.net.ws_serve import AdmittedServer
from syft_mpc.net.ws_transport import (
    MAX_MESSAGE_BYTES,
    WsConnection,
    key_from_token,
    open_connection,
    server_ssl,
)
from syft_mpc.remote import serde
from syft_mpc.remote.messages import Command, Err, Ok, new_id
from syft_mpc.remote.pointers import PointerTensor
from syft_mpc.remote.serde import ObjRef, PointerDesc
from syft_mpc.remote.workers import BaseWorker, local_worker

__all__ = ["BrowserWorker", "Gateway", "GatewayServer", "tab_token", "TAB_SESSION", "DRIVER_SESSION", "MAX_WAITING_BYTES"]

log = logging.getLogger("syft_mpc.gateway")

TAB_SESSION = "syft-mpc-gateway-tab"
DRIVER_SESSION = "syft-mpc-gateway-driver"
GATEWAY_ID = "gateway"
MAX_WAITING_BYTES = 64 << 20
"""Bytes that may wait for one driver or tab behind the message being sent to it. A driver
with more answers waiting is cut off; a request to a tab with more waiting is refused."""
_TAB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "tab.mjs": "text/javascript; charset=utf-8",
    "ring.mjs": "text/javascript; charset=utf-8",
    "serde.mjs": "text/javascript; charset=utf-8",
    "secagg.mjs": "text/javascript; charset=utf-8",
    "plan.mjs": "text/javascript; charset=utf-8",
}
_CSP = "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def tab_token(token: str, tab_id: str) -> str:
    """The token of tab ``tab_id``: ``HMAC-SHA256(key(token), "tab:" + id)``, hex (what the person enters)."""
    return hmac.new(key_from_token(token), b"tab:" + tab_id.encode(), hashlib.sha256).hexdigest()[:40]


def tab_link(base_url: str, token: str, tab_id: str) -> str:
    """The page URL for one tab, its id and token in the fragment (never sent to the server)."""
    return f"{base_url.rstrip('/')}/#id={tab_id}&token={tab_token(token, tab_id)}"


def _static(name: str) -> bytes:
    return importlib.resources.files("syft_mpc.net").joinpath("static").joinpath(name).read_bytes()


class _Outbox:
    """Messages for one connection, sent in order by a thread of its own, so that no other
    connection's thread ever waits on this one's socket. At most ``max_bytes`` wait behind the
    message being sent (one message of any size is taken when none waits); :meth:`put` says
    False over that. A peer that stops reading altogether is cut by the listener
    (:mod:`syft_mpc.net.send_watch`), which ends the send and this thread."""

    def __init__(self, conn: WsConnection, name: str, max_bytes: int) -> None:
        self.conn, self.max_bytes = conn, max_bytes
        self.waiting = 0  # bytes queued, the message being sent not counted
        self._queue: "collections.deque[bytes]" = collections.deque()
        self._cv = threading.Condition(threading.Lock())
        self._closed = False
        self._sending = False
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def start(self) -> None:
        """Starts the sending thread (``RuntimeError`` when no thread can be started)."""
        self._thread.start()

    def put(self, data: bytes) -> bool:
        """Queues ``data``; False (nothing queued) when ``max_bytes`` already wait. After
        :meth:`close`, ``data`` is dropped (the connection is gone)."""
        with self._cv:
            if self._closed:
                return True
            if self._queue and self.waiting + len(data) > self.max_bytes:
                return False
            self._queue.append(data)
            self.waiting += len(data)
            self._cv.notify_all()
            return True

    def flush(self, timeout_s: float) -> None:
        """Waits up to ``timeout_s`` until everything queued is sent (a last error, before closing)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while (self._queue or self._sending) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cv.wait(left)

    def close(self) -> None:
        """Drops what waits and ends the thread after the message being sent, if any."""
        with self._cv:
            self._closed = True
            self._queue.clear()
            self.waiting = 0
            self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                data = self._queue.popleft()
                self.waiting -= len(data)
                self._sending = True
            try:
                self.conn.send(data)
            except TransportError:
                self.close()  # the connection's reader sees it closed too, and cleans up
                return
            finally:
                with self._cv:
                    self._sending = False
                    self._cv.notify_all()


class _Tab:
    def __init__(self, tab_id: str, conn: WsConnection) -> None:
        self.id, self.conn = tab_id, conn
        self.out = _Outbox(conn, f"gateway-to-tab-{tab_id}", MAX_WAITING_BYTES)
        self.pending: dict[int, tuple["_Driver", int]] = {}  # gateway seq -> (driver, driver seq)


class _Driver:
    def __init__(self, conn: WsConnection, cut_log: Throttled) -> None:
        self.conn = conn
        self.out = _Outbox(conn, f"gateway-to-driver-{conn.peer_addr}", MAX_WAITING_BYTES)
        self._cut_log = cut_log

    def push(self, msg: Any) -> None:
        """Queues ``msg`` for this driver; never waits for its socket. A driver with more than
        :data:`MAX_WAITING_BYTES` of answers waiting is not reading them: it is cut off."""
        if self.out.put(serde.encode(msg)):
            return
        if self.conn.cut_reason is None:
            waiting = self.out.waiting
            self.conn.cut(f"it did not read its answers ({waiting} bytes were waiting for it)")
            self._cut_log.warning(
                "cut off driver %s: it does not read its answers (%d bytes waiting for it, over the %d MiB limit); "
                "its connection was closed, the other drivers and the tabs are served as before",
                self.conn.peer_addr, waiting, MAX_WAITING_BYTES >> 20,
            )
        self.out.close()


class GatewayServer:
    """The gateway process: serves the page and relays between drivers and tabs.

    Args:
        host, port: where to listen (port 0 picks one; see ``address``).
        token: the gateway token (drivers use it; tabs use ``tab_token(token, id)``).
        tls_cert, tls_key: serve ``https://`` and ``wss://`` only.
        timeout_s: bound on handshakes (at most 5 s each: :mod:`syft_mpc.net.admission`).
        ping_s: a tab that does not answer a ping within ``ping_s + 1`` seconds is dropped.
        send_deadline_s: a driver or tab that acknowledges none of the bytes waiting for it
            for this long is cut off (:mod:`syft_mpc.net.send_watch`).
        max_connections: drivers and tabs connected at once (default 256); one more is refused
            (a driver gets :class:`~syft_mpc.errors.WorkerBusy`, a tab an error on its page).
        max_handshakes, max_per_address, handshake_deadline_s: the admission limits
            (:mod:`syft_mpc.net.admission`; defaults 512, 64, 5 s).

    Each driver and each tab has its own sending thread and queue (at most
    :data:`MAX_WAITING_BYTES` waiting), so a peer that reads slowly or not at all delays
    only what is sent to it, never the relay for the others.
    """

    def __init__(
        self, host: str, port: int, token: str, *, tls_cert: "str | None" = None, tls_key: "str | None" = None,
        timeout_s: float = 30.0, ping_s: float = 2.0, send_deadline_s: float = SEND_DEADLINE_S,
        max_connections: int = MAX_CONNECTIONS, max_handshakes: int = MAX_HANDSHAKES,
        max_per_address: int = MAX_PER_ADDRESS, handshake_deadline_s: float = HANDSHAKE_DEADLINE_S,
    ) -> None:
        check_token(token)  # at least 128 bits, as for workers: tab tokens are derived from it
        check_limits(max_connections=max_connections)
        self.token = token
        self.max_connections = max_connections
        self._active = 0  # drivers and tabs being served
        self.busy_refused = 0  # connections refused over max_connections
        self.timeout_s = timeout_s
        self._tabs: dict[str, _Tab] = {}
        self._drivers: set[_Driver] = set()
        self._state = threading.Lock()
        self._seq = itertools.count(1)
        self._cut_log = Throttled(logger=log)
        self._no_thread = Throttled(logger=log)
        self._busy_log = Throttled(logger=log)
        self._full_log = Throttled(logger=log)
        ctx = server_ssl(tls_cert, tls_key)
        self.tls = ctx is not None
        # Admitted as a worker's connections (syft_mpc.net.admission); page requests count as
        # handshakes until answered.
        self._server = AdmittedServer(
            self._handle, host, port, name="gateway", route=self._http, timeout_s=timeout_s,
            max_message=MAX_MESSAGE_BYTES, ssl=ctx, log=log, ping_interval=ping_s, ping_timeout=ping_s + 1,
            send_deadline_s=send_deadline_s, max_handshakes=max_handshakes, max_per_address=max_per_address,
            handshake_deadline_s=handshake_deadline_s,
        )
        self.address = self._server.local_addr
        self.url = f"{'https' if self.tls else 'http'}://{self.address}"
        self._thread: "threading.Thread | None" = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def dropped(self) -> "dict[str, int]":
        """Unfinished handshakes dropped (evicted, past the deadline) and connections refused at once."""
        return dict(self._server.admission.dropped)

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start_in_thread(self) -> "GatewayServer":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="gateway")
        self._thread.start()
        return self

    def stop(self, *_: Any) -> None:
        self._server.shutdown()

    def link(self, tab_id: str) -> str:
        """The page URL for tab ``tab_id`` (id and token in the fragment)."""
        return tab_link(self.url, self.token, tab_id)

    def tabs(self) -> list[str]:
        with self._state:
            return sorted(self._tabs)

    # ------------------------------------------------------------------ HTTP

    def _http(self, request: Request, reject: Callable[[int, str], Response]) -> "Response | tuple[Any, str]":
        """A page, or (tokens, session) for the WebSocket endpoints' handshakes."""
        path = request.path.split("?", 1)[0]
        if path == "/tab":
            return self._tab_token, TAB_SESSION
        if path == "/driver":
            return self._driver_token, DRIVER_SESSION
        name = "index.html" if path == "/" else path[len("/static/"):] if path.startswith("/static/") else ""
        if name not in _STATIC:
            return reject(http.HTTPStatus.NOT_FOUND, "not found\n")
        body = _static(name)
        headers = Headers([
            ("Content-Type", _STATIC[name]), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
            ("Content-Security-Policy", _CSP), ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
        ])
        return Response(200, "OK", headers, body)

    # ------------------------------------------------------------------ WebSocket endpoints

    @property
    def stalled(self) -> int:
        """Drivers and tabs cut off because they stopped reading (:mod:`syft_mpc.net.send_watch`)."""
        return self._server.stalled

    def _handle(self, conn: WsConnection, peer_id: str) -> None:
        request = getattr(conn.ws, "request", None)
        path = (request.path if request is not None else "").split("?", 1)[0]
        with self._state:
            serving = self._active
            full = serving >= self.max_connections
            if not full:
                self._active += 1
        if full:
            self._refuse(conn, path, peer_id, serving)
            return
        try:
            if path == "/tab":
                self._serve_tab(peer_id, conn)
            else:
                self._serve_driver(conn)
        finally:
            with self._state:
                self._active -= 1

    def _refuse(self, conn: WsConnection, path: str, peer_id: str, serving: int) -> None:
        """A driver or tab over ``max_connections``: told why, then closed (once it has read
        that, or :data:`REFUSE_LINGER_S` later). Those connected already are not touched."""
        self.busy_refused += 1
        what = f"tab {peer_id}" if path == "/tab" else "driver"
        msg = (f"the gateway already serves {serving} connections, its limit (--max-connections "
               f"{self.max_connections}), so it refused this one; those connected are served as before: retry "
               "later, or start the gateway with a larger --max-connections")
        self._busy_log.warning("refused a %s from %s: already serving %d connections (--max-connections %d)",
                               what, conn.peer_addr, serving, self.max_connections)
        try:
            conn.send(b"E" + msg.encode() if path == "/tab" else serde.encode(("busy", msg)))
            deadline = time.monotonic() + REFUSE_LINGER_S
            while time.monotonic() < deadline:  # until the client closes (it read the refusal)
                conn.recv(max(0.01, deadline - time.monotonic()))
        except TransportError:
            pass
        conn.cut("refused: the gateway is at its --max-connections")

    def _start(self, out: _Outbox, what: str) -> bool:
        try:
            out.start()
            return True
        except RuntimeError as e:  # "can't start new thread": out of threads or memory
            self._no_thread.warning("closed the connection of %s: cannot start a thread to send to it (%s)", what, e)
            return False

    def _tab_token(self, tab_id: str) -> "str | None":
        return tab_token(self.token, tab_id) if _TAB_ID.fullmatch(tab_id) else None

    def _driver_token(self, gateway_id: str) -> "str | None":
        return self.token if gateway_id == GATEWAY_ID else None

    def _serve_tab(self, tab_id: str, conn: WsConnection) -> None:
        tab = _Tab(tab_id, conn)
        if not self._start(tab.out, f"tab {tab_id}"):
            conn.close()
            return
        with self._state:
            taken = tab_id in self._tabs
            if not taken:
                self._tabs[tab_id] = tab
        if taken:  # answered outside the lock: this tab's socket must not hold up the relay
            tab.out.close()
            try:
                conn.send(b"E" + f"a tab is already connected as {tab_id}; close it first".encode())
            except TransportError:
                pass
            conn.close()
            log.warning("refused a second tab for %s", tab_id)
            return
        log.info("tab %s connected from %s", tab_id, conn.peer_addr)
        why = "the tab closed"
        try:
            while True:
                msg = conn.recv(None)
                if len(msg) < 5 or msg[:1] != b"r":
                    why = "the tab sent a malformed message"
                    break
                seq = int.from_bytes(msg[1:5], "little")
                with self._state:
                    route = tab.pending.pop(seq, None)
                if route is None:
                    why = f"the tab answered a request it was not sent (#{seq})"
                    break
                driver, dseq = route
                driver.push(("reply", dseq, bytes(msg[5:])))
        except PeerDisconnected:
            if conn.cut_reason is not None:
                why = f"the gateway cut it off: {conn.cut_reason}"
        except TransportError as e:
            why = f"the connection failed ({e})"
        finally:
            tab.out.close()
            conn.close()
            with self._state:
                if self._tabs.get(tab_id) is tab:
                    del self._tabs[tab_id]
                pending, tab.pending = tab.pending, {}
                drivers = list(self._drivers)
            reason = f"browser worker {tab_id} left: {why}"
            log.info("%s", reason)
            for driver, dseq in pending.values():
                driver.push(("error", dseq, reason))
            for d in drivers:
                d.push(("gone", tab_id, reason))

    def _serve_driver(self, conn: WsConnection) -> None:
        driver = _Driver(conn, self._cut_log)
        if not self._start(driver.out, f"driver {conn.peer_addr}"):
            conn.close()
            return
        with self._state:
            self._drivers.add(driver)
        log.info("driver connected from %s", conn.peer_addr)
        why = "it closed the connection"
        try:
            while True:
                raw = conn.recv(None)
                try:
                    msg = serde.decode(raw)
                    if not (isinstance(msg, tuple) and msg and isinstance(msg[0], str) and len(msg) >= 2 and type(msg[1]) is int):
                        raise SerializationError("expected a (kind, seq, ...) tuple")
                except SerializationError as e:
                    driver.push(("error", -1, f"malformed message: {e}; the connection was closed"))
                    log.warning("malformed message from driver %s: %s", conn.peer_addr, e)
                    why = "it sent a malformed message"
                    driver.out.flush(2.0)  # that error, then the close
                    break
                kind, dseq = msg[0], msg[1]
                if kind == "list":
                    driver.push(("workers", dseq, self.tabs()))
                elif kind == "req" and len(msg) == 4 and isinstance(msg[2], str) and isinstance(msg[3], bytes):
                    self._forward(driver, dseq, msg[2], msg[3])
                else:
                    driver.push(("error", dseq, f"unknown request {kind!r}"))
        except TransportError as e:
            if conn.cut_reason is not None:
                why = f"the gateway cut it off: {conn.cut_reason}"
            elif not isinstance(e, PeerDisconnected):
                why = f"the connection failed ({e})"
        finally:
            driver.out.close()
            with self._state:
                self._drivers.discard(driver)
            # Its requests still pending stay routed to it: when a tab answers one, the answer is
            # dropped (its queue is closed). Forgetting them made that answer look like one the
            # tab was never sent, and the tab was dropped for it.
            conn.close()
            log.info("driver %s left: %s", conn.peer_addr, why)

    def _forward(self, driver: _Driver, dseq: int, tab_id: str, frame: bytes) -> None:
        seq = next(self._seq) & 0xFFFFFFFF
        with self._state:
            tab = self._tabs.get(tab_id)
            if tab is not None:
                tab.pending[seq] = (driver, dseq)
        if tab is None:
            driver.push(("error", dseq, f"no browser worker {tab_id} is connected"))
            return
        # Queued: the tab's own thread sends it (and, if the tab is gone, reports it and fails this request).
        if not tab.out.put(b"R" + seq.to_bytes(4, "little") + frame):
            with self._state:
                tab.pending.pop(seq, None)
            waiting = tab.out.waiting
            self._full_log.warning(
                "refused a request to browser worker %s: %d bytes already wait for it (limit %d MiB); the "
                "driver was told to retry later", tab_id, waiting, MAX_WAITING_BYTES >> 20,
            )
            driver.push(("error", dseq, f"browser worker {tab_id} is not taking its requests as fast as they "
                                        f"come: {waiting} bytes already wait for it at the gateway (at most "
                                        f"{MAX_WAITING_BYTES >> 20} MiB), so this request was not sent; retry "
                                        "later, or slow down (wait for earlier answers before sending more)",
                         "WorkerBusy"))


class _Call:
    __slots__ = ("done", "result", "error", "busy")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: "str | None" = None
        self.busy = False  # refused at capacity (WorkerBusy), not failed


class Gateway:
    """The driver's connection to a gateway (``syft-mpc gateway``).

    Args:
        host, port: the gateway's address.
        token: the gateway token (default ``$SYFT_MPC_TOKEN``); it never travels.
        secure: ``wss://`` (TLS), checking the certificate against ``tls_ca`` or the system CAs.
        timeout_s: bound on connecting and on each request to a tab.
        send_deadline_s: a send to a gateway that acknowledges none of the bytes waiting for it
            for this long (it stopped reading: a stopped or hung process) fails with
            :class:`~syft_mpc.errors.PeerTimeout` (default ``timeout_s``, at most 3,600 s).

    A request the gateway refuses at capacity (too many requests already wait for the tab; a
    gateway already serving ``--max-connections``) raises
    :class:`~syft_mpc.errors.WorkerBusy`: retry later, or send less at a time.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 8780, token: "str | None" = None, *, secure: bool = False,
        tls_ca: "str | None" = None, timeout_s: float = 30.0, send_deadline_s: "float | None" = None,
    ) -> None:
        token = token or os.environ.get(ENV_TOKEN)
        if not token:
            raise ValueError(f"no token: pass token=... or set {ENV_TOKEN} (the gateway's token)")
        self.url = f"{'wss' if secure else 'ws'}://{host}:{port}/driver"
        self.timeout_s = timeout_s
        self._conn = connect_retrying(
            lambda: open_connection(self.url, token, GATEWAY_ID, DRIVER_SESSION, timeout_s, tls_ca=tls_ca,
                                    send_deadline_s=send_deadline_s)
        )
        self._calls: dict[int, _Call] = {}
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._workers: dict[str, BrowserWorker] = {}
        self._gone: dict[str, str] = {}
        self._closed: "str | None" = None
        self._busy = False  # the gateway refused this connection at capacity
        self._reader = threading.Thread(target=self._read, daemon=True, name="gateway-driver")
        self._reader.start()

    def __repr__(self) -> str:
        return f"<Gateway {self.url}>"

    # ------------------------------------------------------------------ transport

    def _read(self) -> None:
        why = "the gateway closed the connection"
        try:
            while True:
                msg = serde.decode(self._conn.recv(None))
                if not isinstance(msg, tuple) or len(msg) < 2:
                    continue
                if msg[0] == "gone":
                    tab_id, reason = str(msg[1]), str(msg[2])
                    with self._lock:
                        self._gone[tab_id] = reason
                        self._workers.pop(tab_id, None)
                    continue
                if msg[0] == "busy":  # refused at capacity: nothing more will come
                    why = f"the gateway refused this connection: {msg[1]}"
                    with self._lock:
                        self._busy, self._closed = True, why
                    self._conn.close()
                    break
                with self._lock:
                    call = self._calls.pop(msg[1], None) if type(msg[1]) is int else None
                if call is None:
                    continue
                if msg[0] == "error":
                    call.error = str(msg[2])
                    call.busy = len(msg) > 3 and msg[3] == "WorkerBusy"
                else:
                    call.result = msg[2]
                call.done.set()
        except (TransportError, SerializationError) as e:
            if not self._busy:
                why = f"the connection to the gateway failed: {e}"
        finally:
            with self._lock:
                self._closed = why
                calls, self._calls = list(self._calls.values()), {}
            for c in calls:
                c.error = why
                c.busy = self._busy
                c.done.set()

    def _call(
        self, msg_tail: tuple[Any, ...], kind: str, what: str, timeout_s: "float | None" = None, no_answer: str = ""
    ) -> Any:
        call = _Call()
        with self._lock:
            if self._closed is not None:
                raise (WorkerBusy if self._busy else PeerDisconnected)(f"{what}: {self._closed}")
            seq = next(self._seq)
            self._calls[seq] = call
        try:
            with self._send_lock:
                self._conn.send(serde.encode((kind, seq, *msg_tail)))
        except TransportError as e:
            with self._lock:
                self._calls.pop(seq, None)
                busy, closed = self._busy, self._closed
            if busy:  # refused at capacity just before this send
                raise WorkerBusy(f"{what}: {closed}") from None
            if isinstance(e, PeerTimeout):  # the gateway stopped reading (send_deadline_s)
                raise PeerTimeout(f"{what}: {e}") from None
            raise PeerDisconnected(f"{what}: sending to the gateway failed: {e}") from None
        t = self.timeout_s if timeout_s is None else timeout_s
        if not call.done.wait(t):
            with self._lock:
                self._calls.pop(seq, None)
            raise PeerTimeout(f"{what}: no answer within {t:.1f} s{no_answer}")
        if call.error is not None:
            raise (WorkerBusy if call.busy else PeerDisconnected)(f"{what}: {call.error}")
        return call.result

    def request(self, tab_id: str, frame: bytes) -> bytes:
        """Sends one encoded request to tab ``tab_id`` and returns its encoded reply."""
        with self._lock:
            gone = self._gone.get(tab_id)
        if gone is not None:
            raise PeerDisconnected(gone)
        reply = self._call((tab_id, frame), "req", f"browser worker {tab_id}", no_answer="; is the tab still open?")
        if not isinstance(reply, bytes):
            raise SerializationError(f"browser worker {tab_id}: the gateway sent a reply of type {type(reply).__name__}")
        return reply

    # ------------------------------------------------------------------ workers

    def workers(self) -> "list[BrowserWorker]":
        """The tabs connected now, as workers (sorted by id)."""
        ids = self._call((), "list", "listing browser workers")
        out = []
        for tab_id in ids:
            with self._lock:
                self._gone.pop(tab_id, None)  # a tab that came back under its id
                w = self._workers.get(tab_id)
            if w is None:
                w = BrowserWorker(self, tab_id)
                with self._lock:
                    self._workers[tab_id] = w
            out.append(w)
        return out

    def wait_for_workers(self, n: int, timeout_s: float = 60.0) -> "list[BrowserWorker]":
        """Waits until at least ``n`` tabs are connected; returns them."""
        deadline = time.monotonic() + timeout_s
        while True:
            ws = self.workers()
            if len(ws) >= n:
                return ws
            if time.monotonic() > deadline:
                raise PeerTimeout(f"{len(ws)} of {n} browser workers connected after {timeout_s:.0f} s: {[w.id for w in ws]}")
            time.sleep(0.2)

    def close(self) -> None:
        self._conn.close()

    # ------------------------------------------------------------------ secure aggregation

    def secure_sum(
        self, tabs: "Sequence[BrowserWorker]", ptrs: "Sequence[Sequence[PointerTensor]]",
        precision: int = fixed_point.DEFAULT_PRECISION,
    ) -> "list[torch.Tensor]":
        """The element-wise sum over tabs of the float tensors ``ptrs[k]`` held by ``tabs[k]``,
        revealing only the sum (pairwise masks in Z_2^64, Bonawitz et al. 2017).

        Each tab returns ``encode(its tensors, flattened) + Σ_j ±PRG(k_ij)`` where ``k_ij`` is an
        ECDH key it shares with tab ``j``; the masks cancel in the sum mod 2^64. A tab that
        leaves mid-round fails the round with an error naming it (no dropout recovery)."""
        if len(tabs) < 2 or len(tabs) != len(ptrs):
            raise ValueError("secure_sum needs at least two tabs and one list of pointers per tab")
        rnd = new_id()
        keys = {t.id: t.command("tab.secagg_key", (rnd,)) for t in tabs}
        if not all(isinstance(k, bytes) for k in keys.values()):
            raise SerializationError("a tab sent a public key that is not bytes")
        masked = []
        for t, ps in zip(tabs, ptrs):
            refs = tuple(ObjRef(p.id_at_location) for p in ps)
            v = t.command("tab.secagg_masked", (refs, keys, rnd, precision))
            if not isinstance(v, torch.Tensor) or v.dtype != torch.int64:
                raise SerializationError(f"browser worker {t.id} sent a masked update that is not an int64 tensor")
            masked.append(v)
        if len({m.numel() for m in masked}) != 1:
            raise SerializationError("the tabs' masked updates have different sizes")
        total = masked[0].clone()
        for m in masked[1:]:
            total += m  # int64 addition wraps mod 2^64, like the ring
        flat = fixed_point.decode(total, 2, precision, dtype=torch.float64)
        out, off = [], 0
        for p in ptrs[0]:
            n = int(torch.Size(p.shape).numel())
            out.append(flat[off : off + n].reshape(p.shape).to(p.dtype))
            off += n
        return out


class BrowserWorker(BaseWorker):
    """A browser tab registered with a gateway, used like any worker (``send``, ops, ``.get()``).

    What it runs: element-wise ``add``/``sub``/``mul``/``neg``/``div`` and ``sum`` on float32,
    float64 and int64 tensors (int64 wraps mod 2^64, so it holds additive shares),
    and the tab routines of :meth:`command` (local training, secure aggregation).
    Plans run in the tab (``plan.send(tab)``, ``plan(ptr, ...)``) when every op of the graph is
    one its interpreter has (``net/static/plan.mjs``: the ops of traced training steps of linear,
    MLP and small conv2d classifiers; see docs/PLANS.md); the tab refuses any other plan at ``PlanStore``.
    Tensors computed from the tab's own data are *private*: the tab refuses ``.get()`` of them
    unless its person allows it; they leave only masked, through :meth:`Gateway.secure_sum`.
    """

    def __init__(self, gateway: Gateway, id: str) -> None:
        super().__init__(None, id=id)
        self.gateway = gateway

    def __repr__(self) -> str:
        return f"<BrowserWorker id:{self.id} via {self.gateway.url}>"

    def _deliver(self, data: Any) -> bytes:
        reply = self.gateway.request(self.id, bytes(data))
        try:  # checked here so that a tab's malformed reply is an error naming the tab
            if not isinstance(serde.decode(reply), (Ok, Err)):
                raise SerializationError("expected Ok or Err")
        except SerializationError as e:
            raise SerializationError(f"browser worker {self.id} sent a malformed reply: {e}") from None
        return reply

    def command(self, op: str, args: tuple[Any, ...] = (), kwargs: "dict[str, Any] | None" = None) -> Any:
        """Runs tab routine ``op`` (``tab.*``); tensor results come back as pointers."""
        value = local_worker._send(self, Command(op, args, kwargs or {}, new_id(), False))
        return self._wrap(value)

    def _wrap(self, v: Any) -> Any:
        if isinstance(v, PointerDesc):
            return local_worker._pointer_from_desc(v)
        if isinstance(v, tuple):
            return tuple(self._wrap(x) for x in v)
        return v

    def dataset_info(self, key: str) -> dict[str, Any]:
        """Rows, features and classes of the data set ``key`` the person loaded in the tab."""
        info = self.command("tab.dataset_info", (key,))
        if not isinstance(info, dict):
            raise SerializationError(f"browser worker {self.id} sent dataset info of type {type(info).__name__}")
        return info

    def dataset_batches(self, key: str, batch_size: int = 32) -> "list[tuple[PointerTensor, PointerTensor]]":
        """The data set ``key`` the person loaded in the tab, as pointers to private tensors in
        minibatches in file order: ``[(X float32 [m, features], y int64 [m]), ...]``, the inputs of
        a training Plan run in the tab. The tensors stay there (``.get()`` of them is refused)."""
        out = self.command("tab.dataset_batches", (key, int(batch_size)))
        if not (isinstance(out, tuple) and len(out) % 2 == 0 and all(isinstance(p, PointerTensor) for p in out)):
            raise SerializationError(f"browser worker {self.id}: dataset batches came back as {type(out).__name__}")
        return [(out[i], out[i + 1]) for i in range(0, len(out), 2)]

    # A tab trains its own softmax regression (JavaScript), not a sy.TrainConfig: its own signature.
    def fit(  # type: ignore[override]
        self, dataset_key: str, weight: PointerTensor, bias: PointerTensor, *, lr: float = 0.1, epochs: int = 1,
        batch_size: int = 32,
    ) -> "tuple[PointerTensor, PointerTensor]":
        """Softmax regression trained by SGD in the tab on its data set ``dataset_key``, from
        ``weight`` [classes, features] and ``bias`` [classes] (pointers to this tab); returns
        pointers to the trained (private) parameters."""
        out = self.command(
            "tab.train_softmax",
            (ObjRef(weight.id_at_location), ObjRef(bias.id_at_location), dataset_key, float(lr), int(epochs), int(batch_size)),
        )
        if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(p, PointerTensor) for p in out)):
            raise SerializationError(f"browser worker {self.id}: training returned {out!r}")
        return out[0], out[1]


def run_gateway(host: str, port: int, token: str, *, tabs: "Sequence[str]" = (), tls_cert: "str | None" = None,
                tls_key: "str | None" = None, public_url: "str | None" = None, **limits: Any) -> None:
    """The CLI's ``gateway`` command: serves until SIGINT/SIGTERM, printing a link per tab.
    ``limits`` (``timeout_s``, ``send_deadline_s``, ``max_connections``, ``max_handshakes``,
    ``max_per_address``, ``handshake_deadline_s``) go to :class:`GatewayServer`."""
    import signal

    for t in tabs:
        if not _TAB_ID.fullmatch(t):
            raise SystemExit(f"syft-mpc gateway: bad tab id {t!r} (1-64 letters, digits, _ . -)")
    server = GatewayServer(host, port, token, tls_cert=tls_cert, tls_key=tls_key, **limits)
    stop = threading.Event()
    # The server runs on a thread; the signal only wakes this one (shutting the server down from
    # a handler interrupting its own serve_forever would wait on itself).
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start_in_thread()
    print(f"gateway on {server.url}", flush=True)
    for t in tabs:
        print(f"tab {t}: {tab_link(public_url or server.url, token, t)}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()

