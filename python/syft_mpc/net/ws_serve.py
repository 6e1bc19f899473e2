"""A ``websockets`` server whose handshakes are admitted by :mod:`syft_mpc.net.admission`.

Used by the WebSocket worker's listener (:mod:`syft_mpc.net.websocket_server`) and the
browser gateway (:mod:`syft_mpc.net.gateway`). The ``websockets`` library's own
``serve_forever`` starts a thread per connection with no limit (two threads, a socket pair
and up to ``max_size`` of buffer per connection still in its opening handshake), so a
stranger trickling upgrade requests could hold as many as it liked. Here:

* one thread accepts, runs the TLS handshake (for ``wss://``) and reads each HTTP upgrade
  request without blocking (a selector; up to :data:`REQUEST_HEAD_MAX` bytes), so a
  connection trickling its request costs a file descriptor, no thread;
* each connection is admitted first (per-address and global limits, eviction of the most
  silent pending handshake, those still sending their upgrade request first, one deadline
  for the upgrade *and* the HMAC handshake together, counted drops); a whole request is
  handed, with the bytes already read, to the library's connection handler on a thread of
  its own, which answers the upgrade and runs ``handler``.

An honest client sends its request at once, so it leaves the first stage as soon as it is
read and is never evicted in favour of a connection still trickling its request.

Memory per connection is bounded too: before the HMAC handshake succeeds a message may have
:data:`~syft_mpc.net.ws_transport.HANDSHAKE_MAX` bytes (a stranger cannot make the server
buffer a 1 GiB "hello"); after it, ``max_message`` (a larger one closes the connection with
code 1009 and a reason naming the limit); at most :data:`~syft_mpc.net.ws_transport.MAX_QUEUE`
frames wait unread before the library stops reading the socket (TCP flow control then holds
the sender back). Sends are blocking ``sendall`` calls: nothing queues in user space.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl as ssl_module
import threading
import time
from typing import Any, Callable

from websockets.sync.server import Server, ServerConnection, serve

from syft_mpc.errors import TransportError
from syft_mpc.net.admission import LOG_EVERY_S, Admission, Ticket, Throttled
from syft_mpc.net.ws_transport import HANDSHAKE_MAX, MAX_QUEUE

__all__ = ["BACKLOG", "REQUEST_HEAD_MAX", "AdmittedServer"]

BACKLOG = 4096
"""The kernel's queue of connections not yet accepted (as the native listener: a burst of
strangers' connections must not fill it, or an honest client's SYN waits 1, 3, 7 s)."""

REQUEST_HEAD_MAX = 16 << 10
"""An upgrade request's head read before the hand-off (a longer one is handed off as it is,
and the library refuses it)."""
_ACCEPT_BURST = 64  # connections accepted per turn of the loop, so reads are not starved

_current = threading.local()  # .ticket, .head: the admission ticket and request head of the connection this thread opens


class _ReadConnection(ServerConnection):
    """The library's connection, fed first with the request head this module already read
    (the head's bytes are no longer in the socket)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.head: bytes = getattr(_current, "head", b"")  # before the reader thread starts
        super().__init__(*args, **kwargs)

    def recv_events(self) -> None:
        head, self.head = self.head, b""
        if head:
            with self.protocol_mutex:
                self.protocol.receive_data(head)
                events = self.protocol.events_received()
            for event in events:
                self.process_event(event)
        super().recv_events()


class _Reading:
    """A connection in the first stage: TLS handshake (for wss://), then its request head."""

    __slots__ = ("sock", "addr", "ticket", "head", "tls_done")

    def __init__(self, sock: socket.socket, addr: Any, ticket: Ticket, tls_done: bool) -> None:
        self.sock, self.addr, self.ticket, self.tls_done = sock, addr, ticket, tls_done
        self.head = b""


class AdmittedServer:
    """Listens on ``host:port`` and calls ``handler(ws, ticket)`` for each opened WebSocket.

    The handler runs the HMAC handshake within ``ticket.time_left(deadline_s)`` and calls
    :meth:`authenticated` once the peer has proved itself (before its verdict is sent):
    False means the handshake was evicted or expired meanwhile, and the handler must give up.
    Dropped handshakes are counted in ``admission.dropped`` and, with ``report_drops``, logged in
    one line per 10 s (a worker's serve loop reports its listener's drops itself). Other keyword
    arguments go to ``websockets.sync.server.serve`` (``process_request``, ``ping_interval``, ...).
    """

    def __init__(
        self, handler: Callable[[ServerConnection, Ticket], None], host: str, port: int, *, name: str,
        timeout_s: float, ssl: "ssl_module.SSLContext | None" = None, log: "logging.Logger | None" = None,
        report_drops: bool = True, **kwargs: Any,
    ) -> None:
        self.name = name
        self.report_drops = report_drops
        self.admission = Admission(timeout_s)
        self.deadline_s = self.admission.deadline_s
        self._handler = handler
        self._ssl = ssl
        self._log = log or logging.getLogger("syft_mpc.worker")
        self._no_thread = Throttled(logger=self._log)
        self._accept_failed = Throttled(logger=self._log)
        # The library logs every failed opening handshake (at INFO, with a traceback): a flood
        # of strangers would flood the log. Ours: warnings only; drops are counted instead.
        lib_log = logging.getLogger(f"syft_mpc.websockets.{name}")
        lib_log.setLevel(logging.WARNING)
        try:
            # No ssl= here: the accept loop runs TLS handshakes and hands the library TLS sockets ready for use.
            self.server: Server = serve(
                self._opened, host, port, max_size=HANDSHAKE_MAX, max_queue=MAX_QUEUE, compression=None,
                open_timeout=self.deadline_s, close_timeout=2, logger=lib_log, backlog=BACKLOG,
                create_connection=_ReadConnection, **kwargs,
            )
        except OSError as e:
            raise TransportError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.server.socket.setblocking(False)
        h, p = self.server.socket.getsockname()[:2]
        self.local_addr = f"{h}:{p}"
        self._reading: dict[int, _Reading] = {}  # fd -> connection in the first stage
        self._report_dropped = (0, 0, 0)
        self._next_report = time.monotonic() + LOG_EVERY_S

    # ------------------------------------------------------------------ per connection

    def _opened(self, ws: ServerConnection) -> None:
        ticket: "Ticket | None" = getattr(_current, "ticket", None)
        if ticket is None:  # not from our accept loop (cannot happen): no admission, no service
            return
        self._handler(ws, ticket)

    def authenticated(self, ticket: Ticket) -> bool:
        """The handshake of ``ticket`` succeeded; False if it was dropped first."""
        return self.admission.finish(ticket)

    def _run(self, sock: socket.socket, addr: Any, ticket: Ticket, head: bytes) -> None:
        _current.ticket, _current.head = ticket, head
        try:
            self.server.handler(sock, addr)  # the library's: HTTP upgrade, then _opened
        finally:
            _current.ticket = _current.head = None
            self.admission.release(ticket)

    # ------------------------------------------------------------------ accept loop

    def serve_forever(self) -> None:
        """Accepts until :meth:`shutdown` (the library's ``serve_forever``, with admission)."""
        server = self.server
        poller = selectors.DefaultSelector()
        try:
            try:
                poller.register(server.shutdown_watcher, selectors.EVENT_READ)
                poller.register(server.socket, selectors.EVENT_READ)
            except (OSError, ValueError):  # shut down before it started
                return
            while server.socket.fileno() != -1:
                ready = poller.select(timeout=0.1)
                for key, _ in ready:
                    if key.fileobj is server.socket:
                        self._accept(poller)
                    elif isinstance(key.data, _Reading):
                        self._read(poller, key.data)
                self.admission.expire()  # cut sockets become readable (EOF) and are closed here
                self._report()
        finally:
            server.socket_closed.set()
            self.admission.cut_all()
            for r in list(self._reading.values()):
                self._drop(poller, r)
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
                    self._accept_failed.warning("%s: accepting a connection failed: %s", self.name, e)
                    time.sleep(0.05)
                return
            host = addr[0] if isinstance(addr, tuple) and addr else str(addr)
            ticket = self.admission.admit(sock, host)
            if ticket is None:  # too many handshakes holding threads (evicted ones winding down)
                sock.close()
                continue
            sock.setblocking(False)
            if self._ssl is not None:
                try:
                    sock = self._ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError):
                    self.admission.release(ticket)
                    sock.close()
                    continue
                ticket.sock = sock
            r = _Reading(sock, addr, ticket, tls_done=self._ssl is None)
            self._reading[sock.fileno()] = r
            poller.register(sock, selectors.EVENT_READ, r)
            # Read at once what is there: a client that waited in the backlog has sent its whole
            # request, and leaves the first stage now, before newer connections can evict it.
            self._read(poller, r)

    def _read(self, poller: selectors.BaseSelector, r: _Reading) -> None:
        try:
            if not r.tls_done:
                assert isinstance(r.sock, ssl_module.SSLSocket)
                r.sock.do_handshake()
                r.tls_done = True
            data = r.sock.recv(REQUEST_HEAD_MAX)
        except (ssl_module.SSLWantReadError, ssl_module.SSLWantWriteError, BlockingIOError):
            return  # more bytes to come (a TLS handshake waiting to write is retried on the next read)
        except (OSError, ValueError):
            self._drop(poller, r)
            return
        if not data:  # closed by the peer, or cut (evicted, past the deadline)
            self._drop(poller, r)
            return
        r.head += data
        if b"\r\n\r\n" not in r.head and len(r.head) < REQUEST_HEAD_MAX:
            return
        self._forget(poller, r)
        r.ticket.step(1, False)  # the server's turn: answer the upgrade
        r.sock.setblocking(True)
        self._start(r.sock, r.addr, r.ticket, r.head)

    def _forget(self, poller: selectors.BaseSelector, r: _Reading) -> None:
        self._reading.pop(r.sock.fileno(), None)
        try:
            poller.unregister(r.sock)
        except (KeyError, ValueError):
            pass

    def _drop(self, poller: selectors.BaseSelector, r: _Reading) -> None:
        self._forget(poller, r)
        self.admission.release(r.ticket)
        r.sock.close()

    def _start(self, sock: socket.socket, addr: Any, ticket: Ticket, head: bytes) -> None:
        thread = threading.Thread(target=self._run, args=(sock, addr, ticket, head), daemon=True,
                                  name=f"{self.name}-conn")
        with self.server.lock:  # the library's shutdown() waits for its handler threads
            self.server.handler_threads.add(thread)
        try:
            thread.start()
        except RuntimeError as e:  # "can't start new thread": out of threads or memory
            with self.server.lock:
                self.server.handler_threads.discard(thread)
            self.admission.release(ticket)
            sock.close()
            self._no_thread.warning("%s: closed a connection from %s: cannot start a thread for it (%s)",
                                    self.name, addr[0] if isinstance(addr, tuple) else addr, e)

    def _report(self) -> None:
        if not self.report_drops or time.monotonic() < self._next_report:
            return
        d = self.admission.dropped
        now = (d["evicted"], d["expired"], d["refused"])
        evicted, late, refused = (a - b for a, b in zip(now, self._report_dropped))
        if evicted or late or refused:
            self._log.warning(
                "%s: dropped %d unfinished handshakes for newer connections and %d past the %g s handshake "
                "deadline, and closed %d connections at once (too many handshakes winding down), in the last "
                "%.0f s (many connections that do not authenticate; firewall the port if this goes on)",
                self.name, evicted, late, self.deadline_s, refused, LOG_EVERY_S,
            )
        self._report_dropped, self._next_report = now, time.monotonic() + LOG_EVERY_S

    def shutdown(self) -> None:
        self.server.shutdown()
