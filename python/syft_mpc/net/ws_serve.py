"""A ``websockets`` server whose handshakes are admitted by :mod:`syft_mpc.net.admission`,
and run without a thread until the client has proved it knows the token.

Used by the WebSocket worker's listener (:mod:`syft_mpc.net.websocket_server`) and the
browser gateway (:mod:`syft_mpc.net.gateway`). The ``websockets`` library's own
``serve_forever`` starts a thread per connection with no limit (two threads, a socket pair
and up to ``max_size`` of buffer per connection still in its opening handshake), so a
stranger trickling upgrade requests could hold as many as it liked. Here one thread
accepts and, through a selector, runs every connection's handshake with the library's
Sans-I/O protocol: TLS (for ``wss://``), the HTTP upgrade (or, for the gateway, a page
request), then syft_mpc's HMAC handshake (:class:`~syft_mpc.net.ws_transport.ServerHandshake`).
Each connection is admitted first (per-address and global limits, eviction of the most silent
pending handshake by step, one deadline for all of it, counted drops). Only an authenticated
connection gets threads: the library's connection (its reader) and ``handler``'s.

Memory per connection is bounded too: before the HMAC handshake succeeds a message may have
:data:`~syft_mpc.net.ws_transport.HANDSHAKE_MAX` bytes (a stranger cannot make the server
buffer a 1 GiB "hello"); after it, ``max_message`` (a larger one closes the connection with
code 1009 and a reason naming the limit); at most :data:`~syft_mpc.net.ws_transport.MAX_QUEUE`
frames wait unread before the library stops reading the socket (TCP flow control then holds
the sender back). Sends are blocking ``sendall`` calls: nothing queues in user space here.

A peer that stops reading cannot hold a connection's threads for ever: the accept loop cuts
every connection whose peer has acknowledged none of the bytes waiting for it for
``send_deadline_s`` (:mod:`syft_mpc.net.send_watch`), with one log line per 10 s at most.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl as ssl_module
import threading
import time
from typing import Any, Callable

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.sync.server import Server, ServerConnection, serve

from syft_mpc.errors import AuthenticationError, TransportError
from syft_mpc.net.admission import (
    HANDSHAKE_DEADLINE_S,
    LOG_EVERY_S,
    MAX_HANDSHAKES,
    MAX_PER_ADDRESS,
    Admission,
    Ticket,
    Throttled,
)
from syft_mpc.net.send_watch import CHECK_EVERY_S, SEND_DEADLINE_S, SendWatch, check_send_deadline
from syft_mpc.net.ws_transport import HANDSHAKE_MAX, MAX_QUEUE, ServerHandshake, WsConnection, allow_messages

__all__ = ["BACKLOG", "REQUEST_MAX", "AdmittedServer", "Route"]

BACKLOG = 4096
"""The kernel's queue of connections not yet accepted (as the native listener: a burst of
strangers' connections must not fill it, or an honest client's SYN waits 1, 3, 7 s)."""
_ACCEPT_BURST = 64  # connections accepted per turn of the loop, so reads are not starved
_READ = 16 << 10
REQUEST_MAX = 16 << 10
"""Bytes a client may send before its upgrade request is whole (the library alone would
buffer up to 128 header lines of 8 KiB each: 1 MiB per stranger)."""

Route = Callable[[Request, Callable[[int, str], Response]], "Response | tuple[Any, str]"]
"""``route(request, reject)``: a response to send instead of upgrading (e.g. a page, or
``reject(404, "not found")``), or ``(tokens, session)`` for the HMAC handshake of an upgrade
(``tokens(worker_id)`` as for :class:`~syft_mpc.net.ws_transport.ServerHandshake`)."""


class _Pending:
    """A connection whose handshake the accept loop runs."""

    __slots__ = ("sock", "addr", "ticket", "tls_done", "protocol", "request", "hs", "stage", "out", "verdict",
                 "finishing", "received")

    def __init__(self, sock: socket.socket, addr: Any, ticket: Ticket, tls_done: bool, protocol: ServerProtocol) -> None:
        self.sock, self.addr, self.ticket, self.tls_done, self.protocol = sock, addr, ticket, tls_done, protocol
        self.request: "Request | None" = None
        self.hs: "ServerHandshake | None" = None
        self.stage = "upgrade"  # -> "hello" -> "proof" -> "open" (authenticated)
        self.out = b""  # bytes the kernel did not take yet
        self.verdict = b""  # the server's last handshake message, sent once the connection is handed off
        self.finishing = False  # sending a last response, then closing
        self.received = 0  # bytes of the upgrade request so far


class _Dropped(Exception):
    """Ends one pending handshake (its reason is counted or logged by the caller)."""


class _Finishing(Exception):
    """A last response (a page, a refusal) is still being sent: close once it is out."""


class AdmittedServer:
    """Listens on ``host:port`` and calls ``handler(conn, worker_id)`` on a thread of its own for
    each connection that passed the HMAC handshake (``conn``: a
    :class:`~syft_mpc.net.ws_transport.WsConnection`; ``conn.ws.request`` is the upgrade request).

    ``route`` decides what each request gets (:data:`Route`); ``max_message`` is the message
    limit after the handshake. Failed handshakes are logged at most once per 10 s; dropped ones
    are counted in ``admission.dropped`` and, with ``report_drops``, logged in one line per 10 s
    (a worker's serve loop reports its listener's drops itself). ``ping_interval`` and
    ``ping_timeout`` go to the library's connections. A connection whose peer acknowledges none
    of the bytes waiting for it for ``send_deadline_s`` is cut (``cut_reason`` says so) and
    counted in ``stalled``. ``max_handshakes``, ``max_per_address`` and ``handshake_deadline_s``
    are the admission limits (:mod:`syft_mpc.net.admission`; the deadline is also at most
    ``timeout_s``).

    Log lines do not name the server: the logger does (``syft_mpc.worker``,
    ``syft_mpc.gateway``), and the CLI's log format names the process.
    """

    def __init__(
        self, handler: Callable[[WsConnection, str], None], host: str, port: int, *, name: str,
        route: Route, timeout_s: float, max_message: int, ssl: "ssl_module.SSLContext | None" = None,
        log: "logging.Logger | None" = None, report_drops: bool = True, ping_interval: "float | None" = 20.0,
        ping_timeout: "float | None" = 20.0, send_deadline_s: float = SEND_DEADLINE_S,
        max_handshakes: int = MAX_HANDSHAKES, max_per_address: int = MAX_PER_ADDRESS,
        handshake_deadline_s: float = HANDSHAKE_DEADLINE_S,
    ) -> None:
        self.name = name
        self.report_drops = report_drops
        check_send_deadline(send_deadline_s)
        self.admission = Admission(timeout_s, max_handshakes=max_handshakes, max_per_address=max_per_address,
                                   deadline_s=handshake_deadline_s)
        self.deadline_s = self.admission.deadline_s
        self.max_message = max_message
        self._handler, self._route, self._ssl = handler, route, ssl
        self._ping = (ping_interval, ping_timeout)
        self._log = log or logging.getLogger("syft_mpc.worker")
        self._rejected = Throttled(logger=self._log)
        self._no_thread = Throttled(logger=self._log)
        self._accept_failed = Throttled(logger=self._log)
        self._failed = Throttled(logger=self._log)
        self._stalled_log = Throttled(logger=self._log)
        self._watch: SendWatch[WsConnection] = SendWatch(send_deadline_s)
        self.stalled = 0  # connections cut because their peer stopped reading
        # The library logs every connection opened and failed (at INFO): a flood of strangers
        # would flood the log. Ours: warnings only; drops are counted instead.
        self._lib_log = logging.getLogger(f"syft_mpc.websockets.{name}")
        self._lib_log.setLevel(logging.WARNING)
        try:
            # The library's server object: its socket, its shutdown() and its bookkeeping of
            # connections and threads; the accept loop and the handshakes are this module's.
            self.server: Server = serve(self._unused, host, port, logger=self._lib_log, backlog=BACKLOG)
        except OSError as e:
            raise TransportError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.server.socket.setblocking(False)
        h, p = self.server.socket.getsockname()[:2]
        self.local_addr = f"{h}:{p}"
        self._pending: dict[int, _Pending] = {}  # fd -> handshake in progress
        self._report_dropped = (0, 0, 0)
        self._next_report = time.monotonic() + LOG_EVERY_S

    @staticmethod
    def _unused(ws: ServerConnection) -> None:  # the library's handler, never called (see serve_forever)
        raise AssertionError("not reached")

    # ------------------------------------------------------------------ accept loop

    def serve_forever(self) -> None:
        """Accepts and runs handshakes until :meth:`shutdown`."""
        server = self.server
        poller = selectors.DefaultSelector()
        try:
            try:
                poller.register(server.shutdown_watcher, selectors.EVENT_READ)
                poller.register(server.socket, selectors.EVENT_READ)
            except (OSError, ValueError):  # shut down before it started
                return
            next_check = time.monotonic() + CHECK_EVERY_S
            while server.socket.fileno() != -1:
                ready = poller.select(timeout=0.1)
                for key, _ in ready:
                    if key.fileobj is server.socket:
                        try:
                            self._accept(poller)
                        except Exception as e:  # never the end of the accept loop
                            self._failed.warning("accepting failed: %s: %s", type(e).__name__, e)
                    elif isinstance(key.data, _Pending):
                        self._step(poller, key.data)
                self.admission.expire()  # cut sockets become readable (EOF) and are closed here
                self._report()
                if time.monotonic() >= next_check:
                    try:
                        self._cut_stalled()
                    except Exception as e:  # never the end of the accept loop
                        self._failed.warning("checking for peers that stopped reading failed: %s: %s",
                                             type(e).__name__, e)
                    next_check = time.monotonic() + CHECK_EVERY_S
        finally:
            server.socket_closed.set()
            self.admission.cut_all()
            for c in list(self._pending.values()):
                self._drop(poller, c)
            poller.close()
            server.shutdown_watcher.close()

    def _accept(self, poller: selectors.BaseSelector) -> None:
        for _ in range(_ACCEPT_BURST):
            try:
                sock, addr = self.server.socket.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:
                if self.server.socket.fileno() != -1:  # e.g. out of file descriptors: it waits in the backlog
                    self._accept_failed.warning("accepting a connection failed: %s", e)
                    time.sleep(0.05)
                return
            host = addr[0] if isinstance(addr, tuple) and addr else str(addr)
            ticket = self.admission.admit(sock, host)
            if ticket is None:  # too many handshakes in progress or winding down
                sock.close()
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                if self._ssl is not None:
                    sock = self._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                    ticket.sock = sock
            except (OSError, ValueError):
                self.admission.release(ticket)
                sock.close()
                continue
            protocol = ServerProtocol(max_size=HANDSHAKE_MAX, logger=self._lib_log)
            c = _Pending(sock, addr, ticket, self._ssl is None, protocol)
            self._pending[sock.fileno()] = c
            poller.register(sock, selectors.EVENT_READ, c)
            # Read at once what is there: a client that waited in the backlog has sent its whole
            # request, and is answered now, before newer connections can evict it.
            self._step(poller, c)

    def _step(self, poller: selectors.BaseSelector, c: _Pending) -> None:
        if c.finishing:  # writable again: send more of the last response; close once it is out
            try:
                self._flush(c)
            except (ssl_module.SSLWantReadError, ssl_module.SSLWantWriteError, BlockingIOError):
                return
            except (OSError, ValueError):
                pass  # the peer is gone
            if not c.out or c.sock.fileno() == -1:
                self._drop(poller, c)
            return
        try:
            if not c.tls_done:
                assert isinstance(c.sock, ssl_module.SSLSocket)
                c.sock.do_handshake()
                c.tls_done = True
            if c.out:
                self._flush(c)
            while True:  # a TLS socket may hold decrypted bytes the selector cannot see
                data = c.sock.recv(_READ)
                if not data:
                    raise _Dropped("closed")
                if c.stage == "upgrade":
                    c.received += len(data)
                    if c.received > REQUEST_MAX:
                        raise _Dropped("an upgrade request over the limit")
                c.protocol.receive_data(data)
                self._events(c)
                if c.stage == "open":  # authenticated: the connection's own threads take it from here
                    self._forget(poller, c)
                    self._hand_off(c)
                    return
                if not isinstance(c.sock, ssl_module.SSLSocket) or not c.sock.pending():
                    return
        except (ssl_module.SSLWantReadError, ssl_module.SSLWantWriteError, BlockingIOError):
            return  # more bytes to come
        except _Finishing:
            c.finishing = True
            poller.modify(c.sock, selectors.EVENT_WRITE, c)
        except AuthenticationError as e:
            if c.ticket.state != "dropped":
                self._rejected.warning("rejected a connection from %s: %s", self._where(c), e)
            self._drop(poller, c)
        except (_Dropped, OSError, ValueError):
            self._drop(poller, c)
        except Exception as e:  # a bug here, or the library's, must not end the accept loop
            self._failed.warning("a handshake from %s failed: %s: %s", self._where(c), type(e).__name__, e)
            self._drop(poller, c)

    def _events(self, c: _Pending) -> None:
        for event in c.protocol.events_received():
            if isinstance(event, Request):
                self._upgrade(c, event)
            elif not isinstance(event, Frame) or event.opcode is Opcode.CLOSE:
                raise _Dropped("closed")
            elif c.hs is None or event.opcode not in (Opcode.BINARY, Opcode.PING, Opcode.PONG) or (
                event.opcode is Opcode.BINARY and not event.fin
            ):
                raise AuthenticationError("the client did not send a syft_mpc WebSocket handshake")
            elif event.opcode is Opcode.BINARY:
                self._message(c, bytes(event.data))
                if c.stage == "open":
                    return  # later events are the connection's (an honest client sends none yet)
        self._send_pending(c)
        if c.protocol.handshake_exc is not None or c.protocol.close_expected():
            raise _Dropped("refused")

    def _upgrade(self, c: _Pending, request: Request) -> None:
        routed = self._route(request, c.protocol.reject)
        if isinstance(routed, Response):  # a page, or a refusal: sent, then the connection ends
            c.protocol.send_response(routed)
            self._send_pending(c, final=True)
            raise _Dropped("answered")
        response = c.protocol.accept(request)
        c.protocol.send_response(response)
        if response.status_code != 101:
            self._send_pending(c, final=True)
            raise _Dropped("not an upgrade")
        c.request = request
        c.hs = ServerHandshake(*routed)
        c.stage = "hello"
        c.ticket.step(1, True)

    def _message(self, c: _Pending, msg: bytes) -> None:
        assert c.hs is not None
        if c.stage == "hello":
            c.ticket.step(2, False)
            c.protocol.send_binary(c.hs.on_hello(msg))
            c.stage = "proof"
            c.ticket.step(2, True)
            return
        if c.stage != "proof":
            raise AuthenticationError("the client sent more than the handshake before its verdict")
        c.ticket.step(3, False)
        verdict = c.hs.on_proof(msg)
        if c.hs.error is not None:
            c.protocol.send_binary(verdict)
            self._send_pending(c, final=True)
            raise c.hs.error
        if not self.admission.finish(c.ticket):
            raise _Dropped("evicted")
        c.stage, c.verdict = "open", verdict

    def _send_pending(self, c: _Pending, final: bool = False) -> None:
        c.out += b"".join(c.protocol.data_to_send())
        try:
            self._flush(c)
        except (ssl_module.SSLWantReadError, ssl_module.SSLWantWriteError, BlockingIOError):
            if not final:
                raise _Dropped("the client does not read its handshake") from None
        if final and c.out:
            raise _Finishing()

    def _flush(self, c: _Pending) -> None:
        while c.out:
            n = c.sock.send(c.out)  # a few hundred bytes: the kernel takes them unless the peer stalls reading
            c.out = c.out[n:]

    def _where(self, c: _Pending) -> str:
        return f"{c.addr[0]}:{c.addr[1]}" if isinstance(c.addr, tuple) and len(c.addr) >= 2 else str(c.addr)

    def _forget(self, poller: selectors.BaseSelector, c: _Pending) -> None:
        self._pending.pop(c.sock.fileno(), None)
        try:
            poller.unregister(c.sock)
        except (KeyError, ValueError):
            pass

    def _drop(self, poller: selectors.BaseSelector, c: _Pending) -> None:
        self._forget(poller, c)
        self.admission.release(c.ticket)
        try:
            c.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ authenticated connections

    def _hand_off(self, c: _Pending) -> None:
        """Gives an authenticated connection its threads; the verdict is sent from there, once
        the library's connection exists (the client sends nothing before it)."""
        thread = threading.Thread(target=self._run, args=(c,), daemon=True, name=f"{self.name}-conn")
        with self.server.lock:  # the library's shutdown() waits for these threads
            self.server.handler_threads.add(thread)
        try:
            thread.start()
        except RuntimeError as e:  # "can't start new thread": out of threads or memory
            with self.server.lock:
                self.server.handler_threads.discard(thread)
            c.sock.close()
            self._no_thread.warning("closed a connection from %s: cannot start a thread for it (%s)",
                                    self._where(c), e)

    def _run(self, c: _Pending) -> None:
        server = self.server
        assert c.hs is not None
        conn: "ServerConnection | None" = None
        wsc: "WsConnection | None" = None
        try:
            c.sock.setblocking(True)
            conn = ServerConnection(c.sock, c.protocol, server, ping_interval=self._ping[0],
                                    ping_timeout=self._ping[1], close_timeout=2, max_queue=MAX_QUEUE)
            conn.request = c.request
            allow_messages(conn, self.max_message)
            with server.lock:
                server.all_connections.add(conn)
            wsc = WsConnection(conn, self._where(c), c.hs.secret, self.max_message)
            self._watch.add(wsc, c.sock)
            conn.send(c.verdict)
            conn.start_keepalive()
            with conn:
                self._handler(wsc, c.hs.worker_id)
        except Exception:  # the connection failed (or the handler did): it is closed, serving goes on
            if conn is None:
                c.sock.close()
            else:
                conn.close_socket()
        finally:
            if wsc is not None:
                self._watch.discard(wsc)
            with server.lock:
                if conn is not None:
                    server.all_connections.discard(conn)
                server.handler_threads.discard(threading.current_thread())

    def _cut_stalled(self) -> None:
        """Cuts the connections whose peer has stopped reading (:mod:`syft_mpc.net.send_watch`)."""
        for conn, stalled_s, waiting in self._watch.stalled():
            if conn.cut_reason is not None:
                continue  # cut already; its thread is winding down
            conn.cut(f"it read nothing of what was sent to it for {stalled_s:.0f} s ({waiting} bytes waiting)")
            self.stalled += 1
            self._stalled_log.warning(
                "cut off %s: it acknowledged none of the %d bytes waiting for it for %.0f s (a peer that does "
                "not read what it is sent); its connection was closed, the others are served as before",
                conn.peer_addr, waiting, stalled_s,
            )

    # ------------------------------------------------------------------ reports

    def _report(self) -> None:
        if not self.report_drops or time.monotonic() < self._next_report:
            return
        d = self.admission.dropped
        now = (d["evicted"], d["expired"], d["refused"])
        evicted, late, refused = (a - b for a, b in zip(now, self._report_dropped))
        if evicted or late or refused:
            self._log.warning(
                "dropped %d unfinished handshakes for newer connections and %d past the %g s handshake "
                "deadline, and closed %d connections at once (too many handshakes winding down), in the last "
                "%.0f s (many connections that do not authenticate; firewall the port if this goes on)",
                evicted, late, self.deadline_s, refused, LOG_EVERY_S,
            )
        self._report_dropped, self._next_report = now, time.monotonic() + LOG_EVERY_S

    def shutdown(self) -> None:
        self.server.shutdown()
