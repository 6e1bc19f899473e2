"""Who gets a handshake: the listeners' defence against strangers who open connections and
never finish authenticating (issue 23's "workers that no client can take down").

One policy for every listener a worker or gateway opens. The native TCP ``Listener``
(``rust/python/src/listener.rs``) applies it in Rust; the WebSocket listeners
(:mod:`syft_mpc.net.ws_serve`) apply it here, with the same numbers
(``tests/test_websocket_resilience.py::test_one_admission_policy_for_every_listener`` checks
that the Rust constants equal these):

* a handshake (for WebSocket: the HTTP upgrade, then syft_mpc's HMAC handshake) has
  :data:`HANDSHAKE_DEADLINE_S` as a whole (or the listener's timeout, if shorter), however
  slowly its peer trickles bytes;
* at most :data:`MAX_PER_ADDRESS` handshakes of one address (an IPv4 address, or an IPv6
  /64) are in progress, and at most :data:`MAX_HANDSHAKES` in all. A new connection over a
  limit is not refused: it evicts the unfinished handshake (of its own address first) whose
  peer has been silent longest (the kernel's ``TCP_INFO``), the oldest among equals; where a
  listener follows the handshake's steps (:class:`Ticket`), one whose peer it waits for
  first. An honest client sends each handshake message at once, so it is the last to be
  evicted;
* at most :data:`MAX_HANDSHAKE_THREADS` handshakes (evicted ones winding down included) exist
  at once; further connections are closed at once;
* evictions, expiries and refusals are counted (``dropped``), and logged by the server in
  one line per :data:`LOG_EVERY_S` (:class:`Throttled`), never one line per connection.

Every listener takes other numbers where the operator gives them (``syft-mpc worker``, either
transport, and ``syft-mpc gateway``: ``--handshake-deadline``, ``--max-handshakes``,
``--max-handshakes-per-address``; checked by :func:`check_limits`, and again by the native
``Listener``).

Once authenticated, a connection counts against the server's :data:`MAX_CONNECTIONS`
(``--max-connections``; each costs a worker a few threads): one over it is answered with a
:class:`~syft_mpc.errors.WorkerBusy` refusal and closed, and the refusals are logged through
:class:`Throttled`; the connections already served are not touched.
"""

from __future__ import annotations

import fcntl
import ipaddress
import itertools
import logging
import socket
import struct
import termios
import threading
import time
from typing import Any, Callable, TypeVar

from syft_mpc.errors import PeerDisconnected

__all__ = [
    "HANDSHAKE_DEADLINE_S",
    "LOG_EVERY_S",
    "MAX_CONNECTIONS",
    "MAX_HANDSHAKE_DEADLINE_S",
    "MAX_LIMIT",
    "REFUSE_LINGER_S",
    "check_count",
    "check_handshake_deadline",
    "check_limits",
    "MAX_HANDSHAKES",
    "MAX_HANDSHAKE_THREADS",
    "MAX_PER_ADDRESS",
    "CONNECT_TRIES",
    "Admission",
    "Ticket",
    "Throttled",
    "address_key",
    "connect_retrying",
    "silent_ms",
    "unread_bytes",
]

MAX_HANDSHAKES = 512
"""Handshakes in progress at once (``listener.rs``: ``MAX_HANDSHAKES``)."""
MAX_PER_ADDRESS = 64
"""Handshakes in progress from one address (``listener.rs``: ``MAX_PER_ADDRESS``)."""
HANDSHAKE_DEADLINE_S = 5.0
"""Bound on a whole handshake, unless the listener's timeout is shorter (``listener.rs``: ``HANDSHAKE_DEADLINE``)."""
MAX_HANDSHAKE_THREADS = 2 * MAX_HANDSHAKES
"""Handshakes in progress or winding down (evicted, not yet closed); the native listener gives
each a thread (``listener.rs``: ``MAX_THREADS``), the WebSocket listeners none."""
LOG_EVERY_S = 10.0
"""At most one log line per this many seconds for each kind of refused connection."""
MAX_CONNECTIONS = 256
"""Authenticated connections a worker or gateway serves at once (``--max-connections``)."""
MAX_HANDSHAKE_DEADLINE_S = 60.0
"""The longest handshake deadline an operator may set (a longer one lets strangers hold handshakes longer)."""
MAX_LIMIT = 65536
"""The largest count an operator may set for a connection or handshake limit."""
REFUSE_LINGER_S = 2.0
"""A connection refused over :data:`MAX_CONNECTIONS` stays open this long after its refusal is
sent, so that its client reads the refusal rather than a reset."""

CONNECT_TRIES = 3
"""Tries of a client whose handshake the listener cut short (evicted under a flood): the
client side of this policy (:func:`connect_retrying`)."""

log = logging.getLogger("syft_mpc.worker")

_T = TypeVar("_T")


def check_count(n: object) -> int:
    """``n`` as a connection or handshake limit: a whole number from 1 to :data:`MAX_LIMIT`,
    else ``ValueError`` saying so (its message names no limit: the caller's does)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LIMIT:
        raise ValueError(f"must be from 1 to {MAX_LIMIT}, got {n!r}")
    return n


def check_handshake_deadline(s: float) -> float:
    """``s`` as a handshake deadline: more than 0 and at most :data:`MAX_HANDSHAKE_DEADLINE_S`
    seconds, else ``ValueError`` saying so."""
    if not 0 < s <= MAX_HANDSHAKE_DEADLINE_S:
        raise ValueError(f"must be more than 0 and at most {MAX_HANDSHAKE_DEADLINE_S:.0f} s, got {s!r} "
                         "(an honest handshake takes a few round trips)")
    return s


def check_limits(
    *, max_handshakes: int = MAX_HANDSHAKES, max_per_address: int = MAX_PER_ADDRESS,
    handshake_deadline_s: float = HANDSHAKE_DEADLINE_S, max_connections: int = MAX_CONNECTIONS,
) -> None:
    """``ValueError`` saying which limit is out of range and what the range is (the CLI's
    ``--max-handshakes``, ``--max-handshakes-per-address``, ``--handshake-deadline``,
    ``--max-connections``)."""
    try:
        for name, n in (("max_handshakes", max_handshakes), ("max_per_address", max_per_address),
                        ("max_connections", max_connections)):
            check_count(n)
        name = "handshake_deadline_s"
        check_handshake_deadline(handshake_deadline_s)
    except ValueError as e:
        raise ValueError(f"{name} {e}") from None
    if max_per_address > max_handshakes:
        raise ValueError(f"max_per_address ({max_per_address}) cannot exceed max_handshakes ({max_handshakes})")


def connect_retrying(open_connection: Callable[[], _T]) -> _T:
    """``open_connection()``, tried again (:data:`CONNECT_TRIES` times in all) when the peer
    closed the connection during the handshake: a listener flooded with unfinished handshakes
    evicts one, which may have been this one. Other errors are raised at once."""
    for attempt in range(CONNECT_TRIES - 1):
        try:
            return open_connection()
        except PeerDisconnected:
            pass
    return open_connection()


class Throttled:
    """Logs the first event of a kind, then at most one line per ``every_s`` with the count
    of the events not logged (a flood of refused connections must not flood the log)."""

    def __init__(self, every_s: float = LOG_EVERY_S, logger: "logging.Logger | None" = None) -> None:
        self.every_s = every_s
        self.logger = logger or log
        self._next = 0.0
        self._quiet = 0
        self._mu = threading.Lock()

    def warning(self, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        with self._mu:
            if now < self._next:
                self._quiet += 1
                return
            quiet, self._quiet, self._next = self._quiet, 0, now + self.every_s
        more = f" (and {quiet} more like it in the last {self.every_s:.0f} s)" if quiet else ""
        self.logger.warning(fmt + more, *args)


def address_key(host: str) -> str:
    """The unit handshakes are limited by: an IPv4 address, or the /64 of an IPv6 one (one
    host's usual allocation); an IPv4-mapped IPv6 address counts as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


_TCP_INFO = getattr(socket, "TCP_INFO", None)
_LAST_DATA_RECV = 52  # struct tcp_info: 8 one-byte fields, 9 u32s, last_data_sent, last_ack_sent, then this


def silent_ms(sock: socket.socket) -> int:
    """Milliseconds since the peer last sent data (or since the connection was set up), from
    the kernel's ``TCP_INFO``; 0 where unknown (then the oldest handshake is evicted)."""
    if _TCP_INFO is None:
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _LAST_DATA_RECV + 4)
    except (OSError, ValueError):
        return 0
    if len(info) < _LAST_DATA_RECV + 4:
        return 0
    return int(struct.unpack_from("=I", info, _LAST_DATA_RECV)[0])


def unread_bytes(sock: socket.socket) -> int:
    """Bytes received by the kernel and not yet read by this process (``FIONREAD``); 0 where unknown."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("=i", buf)[0])


def _cut(sock: socket.socket) -> None:
    """Ends a connection's reads and writes at once (its thread sees EOF), without closing the
    descriptor under it. ``socket.socket.shutdown`` reaches the system call directly, also
    for a TLS socket (whose own ``shutdown`` would drop its TLS state under another thread)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class Ticket:
    """One accepted connection's handshake: pending until :meth:`Admission.finish`, or dropped.

    ``waiting`` (and ``stage``) order evictions, for a listener that follows a handshake's
    steps (the WebSocket listeners: ``waiting`` while the server waits for the peer's next
    message, ``since`` then; ``stage`` 0 while the HTTP upgrade request is incomplete, then
    one more for each handshake message received). Evicted first: a connection the server
    waits for with no unread byte in the kernel (the peer's turn), the one that has kept it
    waiting longest for a whole message (bytes trickled do not count); only when there is
    none, one the server has to answer, the most silent (``TCP_INFO``). An honest peer sends
    each message at once, so it keeps the server waiting for a round trip at most; the
    server's own delays never count against it."""

    __slots__ = ("id", "key", "sock", "started", "state", "stage", "waiting", "since")

    def __init__(self, id: int, key: str, sock: socket.socket) -> None:
        self.id, self.key, self.sock = id, key, sock
        self.started = self.since = time.monotonic()
        self.state = "pending"  # -> "done" (authenticated), "dropped" (evicted or expired), "ended" (failed)
        self.stage = 0
        self.waiting = True

    def step(self, stage: int, waiting: bool) -> None:
        """The handshake reached ``stage``; ``waiting``: the server now waits for the peer."""
        if waiting and not self.waiting:
            self.since = time.monotonic()
        self.stage, self.waiting = stage, waiting

    def time_left(self, deadline_s: float) -> float:
        return max(0.0, self.started + deadline_s - time.monotonic())


class Admission:
    """The handshakes in progress on one listener, with the limits of this module.

    ``admit`` is called by the accept loop for each new connection, before its handshake
    starts; ``finish`` when its handshake succeeded (False: it was evicted or expired
    meanwhile, so it must be closed); ``release`` when it ends otherwise (closed); ``expire``
    now and then.
    """

    def __init__(
        self, timeout_s: float = HANDSHAKE_DEADLINE_S, *, max_handshakes: int = MAX_HANDSHAKES,
        max_per_address: int = MAX_PER_ADDRESS, max_threads: "int | None" = None,
        deadline_s: float = HANDSHAKE_DEADLINE_S,
    ) -> None:
        check_limits(max_handshakes=max_handshakes, max_per_address=max_per_address, handshake_deadline_s=deadline_s)
        self.deadline_s = min(timeout_s, deadline_s)
        max_threads = 2 * max_handshakes if max_threads is None else max_threads
        self.max_handshakes, self.max_per_address, self.max_threads = max_handshakes, max_per_address, max_threads
        self.dropped = {"evicted": 0, "expired": 0, "refused": 0}
        self._pending: dict[int, Ticket] = {}  # oldest first (dicts keep insertion order)
        self._per_key: dict[str, int] = {}
        self._threads = 0  # handshakes pending, or dropped and not yet closed
        self._ids = itertools.count(1)
        self._mu = threading.Lock()

    def admit(self, sock: socket.socket, host: str) -> "Ticket | None":
        """A ticket for a new connection from ``host``, evicting one over a limit; None when
        too many handshakes are in progress or winding down (the caller closes the connection)."""
        with self._mu:
            if self._threads >= self.max_threads:
                self.dropped["refused"] += 1
                return None
            key = address_key(host)
            if self._per_key.get(key, 0) >= self.max_per_address:
                self._evict_most_silent(key)
            elif len(self._pending) >= self.max_handshakes:
                self._evict_most_silent(None)
            t = Ticket(next(self._ids), key, sock)
            self._pending[t.id] = t
            self._per_key[key] = self._per_key.get(key, 0) + 1
            self._threads += 1
            return t

    def finish(self, t: Ticket) -> bool:
        """Marks ``t``'s handshake done; False when it was dropped first (close it)."""
        with self._mu:
            if t.state != "pending":
                return False
            self._remove(t)
            t.state = "done"
            self._threads -= 1
            return True

    def release(self, t: Ticket) -> None:
        """``t``'s connection is done with (after :meth:`finish`, or closed without it)."""
        with self._mu:
            if t.state == "done" or t.state == "ended":
                return
            if t.state == "pending":
                self._remove(t)
            t.state = "ended"
            self._threads -= 1

    def expire(self) -> int:
        """Cuts the handshakes past the deadline; returns how many."""
        now = time.monotonic()
        n = 0
        with self._mu:
            for t in list(self._pending.values()):  # oldest first
                if now - t.started < self.deadline_s:
                    break
                self._drop(t)
                n += 1
            self.dropped["expired"] += n
        return n

    def in_progress(self) -> int:
        with self._mu:
            return len(self._pending)

    def cut_all(self) -> None:
        """Ends every handshake in progress (the listener stops)."""
        with self._mu:
            for t in list(self._pending.values()):
                self._drop(t)

    def _evict_most_silent(self, key: "str | None") -> None:
        mine = [t for t in self._pending.values() if key is None or t.key == key]  # oldest first
        best: "Ticket | None" = None
        # The peer's turn: the longest wait for a whole message first (sorted: one ioctl or two).
        for t in sorted((t for t in mine if t.waiting), key=lambda t: (t.since, t.stage)):
            if unread_bytes(t.sock) == 0:
                best = t
                break
        if best is None:  # every handshake waits for the server: the most silent
            best_ms = -1
            for t in mine:
                ms = silent_ms(t.sock)
                if ms > best_ms:
                    best, best_ms = t, ms
        if best is not None:
            self._drop(best)
            self.dropped["evicted"] += 1

    def _drop(self, t: Ticket) -> None:
        self._remove(t)
        t.state = "dropped"
        _cut(t.sock)

    def _remove(self, t: Ticket) -> None:
        if self._pending.pop(t.id, None) is None:
            return
        n = self._per_key[t.key] - 1
        if n:
            self._per_key[t.key] = n
        else:
            del self._per_key[t.key]
