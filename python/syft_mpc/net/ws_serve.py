"""A ``websockets`` server whose handshakes are admitted by :mod:`syft_mpc.net.admission`.

Used by the WebSocket worker's listener (:mod:`syft_mpc.net.websocket_server`) and the
browser gateway (:mod:`syft_mpc.net.gateway`). The ``websockets`` library's own
``serve_forever`` starts a thread per connection with no limit (two threads, a socket pair
and up to ``max_size`` of buffer per connection still in its opening handshake), so a
stranger trickling upgrade requests could hold as many as it liked. Here one accept loop
admits each connection first (per-address and global limits, eviction of the most silent
pending handshake, one deadline for the HTTP upgrade *and* the HMAC handshake together,
counted drops), then hands it to the library's connection handler.

Memory per connection is bounded too: before the HMAC handshake succeeds a message may have
:data:`~syft_mpc.net.ws_transport.HANDSHAKE_MAX` bytes (a stranger cannot make the server
buffer a 1 GiB "hello"); after it, ``max_message`` (a larger one closes the connection with
code 1009 and a reason naming the limit); at most :data:`MAX_QUEUE` frames wait unread
before the library stops reading the socket (TCP flow control then holds the sender back).
Sends are blocking ``sendall`` calls: nothing queues in user space.
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

__all__ = ["BACKLOG", "AdmittedServer"]

BACKLOG = 4096
"""The kernel's queue of connections not yet accepted (as the native listener: a burst of
strangers' connections must not fill it, or an honest client's SYN waits 1, 3, 7 s)."""

_current = threading.local()  # .ticket: the admission ticket of the connection this thread opens


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
        self._log = log or logging.getLogger("syft_mpc.worker")
        self._no_thread = Throttled(logger=self._log)
        self._accept_failed = Throttled(logger=self._log)
        # The library logs every failed opening handshake (at INFO, with a traceback): a flood
        # of strangers would flood the log. Ours: warnings only; drops are counted instead.
        lib_log = logging.getLogger(f"syft_mpc.websockets.{name}")
        lib_log.setLevel(logging.WARNING)
        try:
            self.server: Server = serve(
                self._opened, host, port, ssl=ssl, max_size=HANDSHAKE_MAX, max_queue=MAX_QUEUE, compression=None,
                open_timeout=self.deadline_s, close_timeout=2, logger=lib_log, backlog=BACKLOG, **kwargs,
            )
        except OSError as e:
            raise TransportError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        h, p = self.server.socket.getsockname()[:2]
        self.local_addr = f"{h}:{p}"
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

    def _run(self, sock: socket.socket, addr: Any, ticket: Ticket) -> None:
        _current.ticket = ticket
        try:
            self.server.handler(sock, addr)  # the library's: TLS, HTTP upgrade, then _opened
        finally:
            _current.ticket = None
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
            while True:
                ready = poller.select(timeout=0.1)
                self.admission.expire()
                self._report()
                if server.socket.fileno() == -1:
                    break
                if not any(key.fileobj is server.socket for key, _ in ready):
                    continue
                try:
                    sock, addr = server.socket.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except ssl_module.SSLError:  # cannot happen (the TLS handshake is the handler's): keep going
                    continue
                except OSError as e:
                    if server.socket.fileno() == -1:
                        break  # shutdown() closed it
                    # E.g. out of file descriptors: the connection waits in the backlog.
                    self._accept_failed.warning("%s: accepting a connection failed: %s", self.name, e)
                    time.sleep(0.1)
                    continue
                self._start(sock, addr)
        finally:
            server.socket_closed.set()
            poller.close()
            server.shutdown_watcher.close()
            self.admission.cut_all()

    def _start(self, sock: socket.socket, addr: Any) -> None:
        host = addr[0] if isinstance(addr, tuple) and addr else str(addr)
        ticket = self.admission.admit(sock, host)
        if ticket is None:  # too many handshake threads (evicted ones still winding down)
            sock.close()
            return
        thread = threading.Thread(target=self._run, args=(sock, addr, ticket), daemon=True,
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
                                    self.name, host, e)

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
