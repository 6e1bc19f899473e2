"""A TCP forwarder for fault tests: put it between a client and a worker, then stall or drop the link.

    with Proxy(("127.0.0.1", worker_port)) as proxy:
        bob = sy.SocketWorker(hook, id="bob", port=proxy.port, ...)
        proxy.stall()    # stop forwarding in both directions; connections stay open
        proxy.resume()
        proxy.drop()     # close both sides of every current connection; new ones are forwarded

Two threads per connection copy bytes; a stalled pump stops reading too, so the
sender's kernel buffers fill up as they would behind a dead link.
"""

from __future__ import annotations

import select
import socket
import threading
from types import TracebackType


class Proxy:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.1)
        self.host = host
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._acceptor.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stall(self) -> None:
        """Stops forwarding (both directions); connections stay open."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def drop(self) -> None:
        """Closes both sides of every current connection (new connections are still forwarded)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:  # shutdown only: each pump sees the end and closes its sockets itself
            _shutdown(a)
            _shutdown(b)

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self.drop()
        self._acceptor.join(5)
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(5)

    def __enter__(self) -> "Proxy":
        return self

    def __exit__(self, t: "type[BaseException] | None", v: "BaseException | None", tb: "TracebackType | None") -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
                for src, dst in ((client, upstream), (upstream, client)):
                    t = threading.Thread(target=self._pump, args=(src, dst), name="proxy-pump", daemon=True)
                    self._threads.append(t)
                    t.start()

    def _wait_flowing(self) -> bool:
        while not self._flowing.wait(0.1):
            if self._closed.is_set():
                return False
        return not self._closed.is_set()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while self._wait_flowing():
                if not select.select([src], [], [], 0.1)[0]:
                    continue
                data = src.recv(1 << 16)
                if not data:
                    break
                if not self._wait_flowing():  # stalled mid-message: hold what was read
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(src)
            _shutdown(dst)  # the other pump ends too, and closes
            with self._lock:
                self._pairs = [p for p in self._pairs if src not in p]
                self._threads = [t for t in self._threads if t is not threading.current_thread()]
            src.close()


def _shutdown(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close(s: socket.socket) -> None:
    _shutdown(s)
    s.close()
