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

Clients have the same deadline on their own sends (:func:`watch_send`): a WebSocket client
(``WebsocketClientWorker``, the gateway's ``Gateway`` driver) whose server stops reading (a
stopped or hung process: its receive buffer fills, the client's ``sendall`` blocks) gets
:class:`~syft_mpc.errors.PeerTimeout` once the server has acknowledged none of the bytes
waiting for it for ``send_deadline_s``, instead of waiting for ever. One thread per process
watches the sends in progress, and only while there are any.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import termios
import threading
import time
from typing import Any, Callable, Generic, Iterator, TypeVar

__all__ = [
    "CHECK_EVERY_S",
    "MAX_SEND_DEADLINE_S",
    "SEND_DEADLINE_S",
    "SendWatch",
    "bytes_acked",
    "check_send_deadline",
    "client_send_deadline",
    "unacked_bytes",
    "watch_send",
]

SEND_DEADLINE_S = 10.0
"""A connection whose peer acknowledges none of the bytes waiting for it for this long is cut."""
MAX_SEND_DEADLINE_S = 3600.0
"""The largest send deadline accepted (a larger one would hold a stalled connection's threads for hours)."""
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


def check_send_deadline(seconds: "float | str", what: str = "send_deadline_s") -> float:
    """``seconds`` as a send deadline: a number in (0, :data:`MAX_SEND_DEADLINE_S`], else ``ValueError`` saying so."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, got {seconds!r}") from None
    if not 0 < s <= MAX_SEND_DEADLINE_S:
        raise ValueError(
            f"{what} must be more than 0 and at most {MAX_SEND_DEADLINE_S:.0f} s, got {seconds!r} (it bounds how long "
            "a send waits for a peer that takes none of the bytes sent to it)"
        )
    return s



def client_send_deadline(send_deadline_s: "float | None", timeout_s: float) -> float:
    """A client's send deadline: ``send_deadline_s`` checked, or by default its ``timeout_s``
    (at most :data:`MAX_SEND_DEADLINE_S`)."""
    return check_send_deadline(min(timeout_s, MAX_SEND_DEADLINE_S) if send_deadline_s is None else send_deadline_s)

class _Seen:
    __slots__ = ("sock", "acked", "since", "deadline_s")

    def __init__(self, sock: socket.socket, now: float, deadline_s: float) -> None:
        self.sock, self.since, self.deadline_s = sock, now, deadline_s
        self.acked = bytes_acked(sock)


class SendWatch(Generic[K]):
    """The connections of one listener, each under a key (its connection object) and its socket."""

    def __init__(self, deadline_s: float = SEND_DEADLINE_S) -> None:
        self.deadline_s = deadline_s
        self._seen: dict[K, _Seen] = {}
        self._mu = threading.Lock()

    def add(self, key: K, sock: Any, deadline_s: "float | None" = None) -> None:
        """Watches ``sock`` under ``key`` (its own ``deadline_s``, else the watch's)."""
        seen = _Seen(sock, time.monotonic(), self.deadline_s if deadline_s is None else deadline_s)
        with self._mu:
            self._seen[key] = seen

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
            elif now - s.since >= s.deadline_s:
                out.append((key, now - s.since, waiting))
        return out


class _Sends:
    """The sends in progress in this process that have a deadline, and the one thread that
    watches them (started with the first, asleep while there are none)."""

    def __init__(self) -> None:
        self.watch: "SendWatch[int]" = SendWatch()
        self._cut: "dict[int, Callable[[float, int], None]]" = {}
        self._ids = 0
        self._cv = threading.Condition(threading.Lock())
        self._thread: "threading.Thread | None" = None

    def add(self, sock: Any, deadline_s: float, cut: "Callable[[float, int], None]") -> int:
        with self._cv:
            self._ids += 1
            key = self._ids
            self._cut[key] = cut
            self.watch.add(key, sock, deadline_s)
            if self._thread is None:
                t = threading.Thread(target=self._run, daemon=True, name="send-deadlines")
                try:
                    t.start()
                except RuntimeError:  # no thread to spare: the send is not made (it fails, nothing hangs)
                    del self._cut[key]
                    self.watch.discard(key)
                    raise
                self._thread = t
            self._cv.notify()
            return key

    def discard(self, key: int) -> None:
        with self._cv:
            self._cut.pop(key, None)
            self.watch.discard(key)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._cut:
                    self._cv.wait()
            time.sleep(CHECK_EVERY_S / 2)
            for key, stalled_s, waiting in self.watch.stalled():
                with self._cv:
                    cut = self._cut.pop(key, None)
                if cut is not None:
                    try:
                        cut(stalled_s, waiting)
                    except Exception:  # a cut must never end the watch of the others
                        pass


_sends = _Sends()


@contextlib.contextmanager
def watch_send(sock: Any, deadline_s: float, cut: "Callable[[float, int], None]") -> Iterator[None]:
    """``with watch_send(sock, deadline_s, cut):`` around a blocking send on ``sock``: if the
    peer acknowledges none of the bytes waiting for it for ``deadline_s`` while the block
    runs, ``cut(seconds stalled, bytes waiting)`` is called from the watching thread (it
    shuts the socket down, which ends the blocked send with an error)."""
    key = _sends.add(sock, deadline_s, cut)
    try:
        yield
    finally:
        _sends.discard(key)
