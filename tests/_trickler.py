"""An attacker process that keeps a worker's handshakes busy: ``n`` sockets each send the
start of a handshake one byte per tick, then stay silent; any socket the worker closes is
opened again at once. The handshake is a valid native hello (as party 0, session
``syft-mpc-control``), or with ``payload="websocket"`` a valid WebSocket upgrade request, or
with ``payload="websocket-open"`` a whole upgrade request at once and then a syft_mpc
WebSocket hello trickled.

    with Trickler(("127.0.0.1", port), 1000) as flood:   # a separate process (its own GIL)
        ...
        flood.counts()   # {"opened": ..., "reopened": ..., "open": ...}

    python tests/_trickler.py HOST PORT N [TICK_S [native|websocket|websocket-open]]   (stops when stdin closes)
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any

from _wire import header

SESSION_ID = hashlib.sha256(b"syft-mpc-control").digest()[:16]
# One transport frame (this build's frame header, `_wire.header`) holding a hello: magic,
# handshake version 2, session id, party id 0, nonce (handshake frames carry no MAC yet).
HELLO_FRAME = header(57) + b"SMHI\x02" + SESSION_ID + bytes(4) + bytes(32)
# What a browser or the websockets client sends first to a WebSocket worker (RFC 6455, 4.1).
WS_UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
# The upgrade request at once, then a WebSocket hello trickled (a client frame announcing
# 37 bytes, masked): a stranger past the upgrade, stalling in syft_mpc's handshake.
WS_OPEN = WS_UPGRADE + b"\x82\xa5" + bytes(4) + b"SMWS\x01" + bytes(32)
PAYLOADS = {"native": HELLO_FRAME, "websocket": WS_UPGRADE, "websocket-open": WS_OPEN}
AT_ONCE = {"native": 0, "websocket": 0, "websocket-open": len(WS_UPGRADE)}  # bytes sent on connecting


def raise_fd_limit(at_least: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < at_least:
        if hard != resource.RLIM_INFINITY and hard < at_least:
            raise RuntimeError(f"{at_least} file descriptors are needed; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (at_least, hard))


def run(where: tuple[str, int], n: int, tick_s: float, stop: threading.Event, counts: dict[str, int],
        payload: bytes = HELLO_FRAME, at_once: int = 0) -> None:
    socks: dict[socket.socket, int] = {}  # socket -> bytes of the hello sent

    def drop(s: socket.socket) -> None:
        del socks[s]
        s.close()
        counts["reopened"] += 1

    while not stop.is_set():
        t0 = time.monotonic()
        for _ in range(min(200, n - len(socks))):
            try:
                s = socket.create_connection(where, timeout=1.0)
            except OSError:
                break
            try:
                s.sendall(payload[:at_once])
            except OSError:
                s.close()
                continue
            s.setblocking(False)
            socks[s] = at_once
            counts["opened"] += 1
        for s, sent in list(socks.items()):
            try:
                if s.recv(4096) == b"":
                    drop(s)
                    continue
            except BlockingIOError:
                pass
            except OSError:
                drop(s)
                continue
            if sent < len(payload):
                try:
                    s.send(payload[sent:sent + 1])
                    socks[s] = sent + 1
                except BlockingIOError:
                    pass
                except OSError:
                    drop(s)
        counts["open"] = len(socks)
        stop.wait(max(0.0, tick_s - (time.monotonic() - t0)))
    for s in socks:
        s.close()


class Trickler:
    """Runs this file as a separate process (so the attack does not share the test's GIL)."""

    def __init__(self, where: tuple[str, int], n: int, tick_s: float = 0.1, payload: str = "native") -> None:
        if payload not in PAYLOADS:
            raise ValueError(f"payload must be one of {sorted(PAYLOADS)}")
        self.args = [where[0], str(where[1]), str(n), str(tick_s), payload]
        self.proc: "subprocess.Popen[str] | None" = None
        self._last: dict[str, int] = {"opened": 0, "reopened": 0, "open": 0}

    def counts(self) -> dict[str, int]:
        """The attacker's counters now (it prints them every tick)."""
        return dict(self._last)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._last = json.loads(line)

    def __enter__(self) -> "Trickler":
        self.proc = subprocess.Popen([sys.executable, __file__, *self.args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def __exit__(self, t: "type[BaseException] | None", v: "BaseException | None", tb: "TracebackType | None") -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        time.sleep(0.2)


def main(argv: list[str]) -> None:
    host, port, n = argv[0], int(argv[1]), int(argv[2])
    tick_s = float(argv[3]) if len(argv) > 3 else 0.1
    kind = argv[4] if len(argv) > 4 else "native"
    payload, at_once = PAYLOADS[kind], AT_ONCE[kind]
    raise_fd_limit(n + 256)
    stop = threading.Event()
    counts: dict[str, Any] = {"opened": 0, "reopened": 0, "open": 0}
    t = threading.Thread(target=run, args=((host, port), n, tick_s, stop, counts, payload, at_once), daemon=True)
    t.start()

    def report() -> None:
        while not stop.is_set():
            print(json.dumps(counts), flush=True)
            stop.wait(0.2)

    threading.Thread(target=report, daemon=True).start()
    sys.stdin.read()  # until the parent closes it
    stop.set()
    t.join(10)
    print(json.dumps(counts), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
