"""Peers that stop reading: how a WebSocket listener finds an authenticated connection whose
peer takes no more data (issue 23: "workers that no client can take down").

A blocking send to a peer that does not read waits forever once the kernels' buffers are full,
and the ``websockets`` library holds the connection's lock meanwhile, so that connection's
pings, pongs and closing handshake wait too: its keepalive never fires. The listener
(:mod:`syft_mpc.net.ws_serve`) asks :meth:`SendWatch.stalled` every :data:`CHECK_EVERY_S`
which of its connections has had bytes waiting in its kernel send queue with none of them
acknowledged by the peer for :data:`SEND_DEADLINE_S`, and cuts those (socket shut down: the
blocked send fails, the connection's threads end, its log line says why).

Progress is the kernel's, byte by byte: ``SIOCOUTQ`` (bytes sent and not yet acknowledged,
or not sent yet) and ``TCP_INFO``'s ``tcpi_bytes_acked``. A slow reader that takes some
bytes within each deadline is never cut, however large the message; a peer whose receive
window stays shut is. Where the kernel does not tell (not Linux), nothing is cut.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import threading
import time
from typing import Any, Generic, TypeVar

__all__ = ["CHECK_EVERY_S", "SEND_DEADLINE_S", "SendWatch", "bytes_acked", "unacked_bytes"]

SEND_DEADLINE_S = 10.0
"""A connection whose peer acknowledges none of the bytes waiting for it for this long is cut."""
CHECK_EVERY_S = 0.5
"""How often a listener looks (a stall is cut between the deadline and the deadline plus this)."""

_TCP_INFO = getattr(socket, "TCP_INFO", None)
_BYTES_ACKED = 120  # struct tcp_info: 8 bytes, 24 u32s, tcpi_pacing_rate, tcpi_max_pacing_rate (u64), then this u64
_OUTQ = getattr(termios, "TIOCOUTQ", None)  # SIOCOUTQ on Linux

K = TypeVar("K")


def unacked_bytes(sock: socket.socket) -> int:
    """Bytes in the kernel's send queue: not sent yet, or sent and not acknowledged; -1 where unknown."""
    if _OUTQ is None:
        return -1
    try:
        buf = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return -1
    return int(struct.unpack("=i", buf)[0])


def bytes_acked(sock: socket.socket) -> int:
    """Bytes of this connection the peer has acknowledged so far (``TCP_INFO``); -1 where unknown."""
    if _TCP_INFO is None:
        return -1
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _BYTES_ACKED + 8)
    except (OSError, ValueError):
        return -1
    if len(info) < _BYTES_ACKED + 8:
        return -1
    return int(struct.unpack_from("=Q", info, _BYTES_ACKED)[0])


class _Seen:
    __slots__ = ("sock", "acked", "since")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock, self.acked, self.since = sock, -1, now


class SendWatch(Generic[K]):
    """The connections of one listener, each under a key (its connection object) and its socket."""

    def __init__(self, deadline_s: float = SEND_DEADLINE_S) -> None:
        self.deadline_s = deadline_s
        self._seen: dict[K, _Seen] = {}
        self._mu = threading.Lock()

    def add(self, key: K, sock: Any) -> None:
        with self._mu:
            self._seen[key] = _Seen(sock, time.monotonic())

    def discard(self, key: K) -> None:
        with self._mu:
            self._seen.pop(key, None)

    def __len__(self) -> int:
        with self._mu:
            return len(self._seen)

    def stalled(self) -> "list[tuple[K, float, int]]":
        """``(key, seconds without progress, bytes waiting)`` for each connection past the
        deadline (it stays watched: the caller cuts it, then discards it when its thread ends)."""
        now = time.monotonic()
        with self._mu:
            items = list(self._seen.items())
        out = []
        for key, s in items:
            waiting = unacked_bytes(s.sock)
            acked = bytes_acked(s.sock)
            if waiting <= 0 or acked < 0 or acked != s.acked:  # nothing waits, unknown, or progress
                s.acked, s.since = acked, now
            elif now - s.since >= self.deadline_s:
                out.append((key, now - s.since, waiting))
        return out
