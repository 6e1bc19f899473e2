"""MPC sessions for benchmarks: the dealer and parties 1.. as separate processes.

Party 0 lives in the calling (pytest) process; the dealer and the other parties
are ``benches/_peer.py`` processes connected over TCP on 127.0.0.1, driven by
text lines on their stdin. ``Session.run("mul 1000000")`` sends the command to
every peer, runs it on party 0 and waits for each peer's acknowledgement, so it
times the whole protocol. Every wait is bounded; a failure marks the session
broken and kills its processes (``SessionPool`` then starts a fresh one).
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Optional

from _peer import TOKEN_ENV, Ops

import syft_mpc as sy

PEER = str(Path(__file__).with_name("_peer.py"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Proc:
    """A child process and a thread that queues its stdout lines (None at EOF)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.popen = subprocess.Popen(
            [sys.executable, PEER, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1
        )
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.popen.stdout,), daemon=True).start()

    def _pump(self, out: Optional[IO[str]]) -> None:
        assert out is not None
        for line in out:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def expect(self, prefix: str, timeout_s: float) -> str:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no answer within {timeout_s:.0f} s") from None
        if line is None:
            raise RuntimeError(f"{self.name} exited (code {self.popen.wait(5)})")
        if not line.startswith(prefix):
            raise RuntimeError(f"{self.name}: {line}")
        return line[len(prefix) :].strip()

    def pending(self, wait_s: float = 0.5) -> list[str]:
        """The lines that arrive within wait_s (for error reports)."""
        out: list[str] = []
        try:
            while (line := self.lines.get(timeout=wait_s)) is not None:
                out.append(line)
        except queue.Empty:
            pass
        return out

    def stop(self, timeout_s: float) -> None:
        try:
            self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        for f in (self.popen.stdin, self.popen.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass


class Session:
    def __init__(self, n_parties: int = 2, timeout_s: float = 120.0) -> None:
        self.n_parties, self.timeout_s, self.broken = n_parties, timeout_s, False
        addrs = [f"127.0.0.1:{_free_port()}" for _ in range(n_parties)]
        dealer_addr = f"127.0.0.1:{_free_port()}"
        session = "bench-" + secrets.token_hex(4)
        token = secrets.token_hex(32)
        env = dict(os.environ, **{TOKEN_ENV: token})
        self.dealer: Optional[_Proc] = None
        self.peers: list[_Proc] = []
        self.party: Optional[sy.Party] = None
        try:
            self.dealer = _Proc("dealer", ["dealer", str(n_parties), dealer_addr, session, str(timeout_s)], env)
            for i in range(1, n_parties):
                self.peers.append(_Proc(f"party {i}", ["party", str(i), dealer_addr, session, str(timeout_s), *addrs], env))
            self.party = sy.Party.connect(0, addrs, dealer_addr, token, session=session, timeout_s=min(timeout_s, 30.0))
            self.party.set_timeout(timeout_s)
            for p in (self.dealer, *self.peers):
                p.expect("ready", timeout_s)
        except BaseException:
            self.kill()
            raise
        self.ops = Ops(self.party)

    def _all(self, line: str, prefix: str) -> list[str]:
        """Sends line to every peer, runs it on party 0, returns every party's answer."""
        if self.broken:
            raise RuntimeError("session is broken by an earlier failure")
        try:
            for p in self.peers:
                p.send(line)
            mine = self.ops.execute(line)
            return [mine[len(prefix) :].strip()] + [p.expect(prefix, self.timeout_s) for p in self.peers]
        except BaseException as e:
            causes = [f"{p.name}: {line}" for p in (*self.peers, self.dealer) if p is not None for line in p.pending() if line.startswith("err")]
            self.kill()
            if causes:
                raise RuntimeError(f"{line!r} failed: " + "; ".join(causes)) from e
            raise

    def run(self, line: str) -> None:
        """Runs one op (see _peer.py) on all parties."""
        self._all(line, "ok")

    def stats(self) -> list[dict[str, int]]:
        """Party.stats() of every party, party 0 first."""
        return [json.loads(s) for s in self._all("stats", "stats")]

    def close(self) -> None:
        if self.broken:
            return
        self.broken = True
        for p in self.peers:
            try:
                p.send("quit")
            except OSError:
                pass
        if self.party is not None:
            self.party.close()
        for p in (*self.peers, self.dealer):
            if p is not None:
                p.stop(30)

    def kill(self) -> None:
        self.broken = True
        if self.party is not None and not self.party.closed:
            self.party.abort()
        for p in (*self.peers, self.dealer):
            if p is not None:
                if p.popen.poll() is None:
                    p.popen.kill()
                p.stop(5)


class SessionPool:
    """One live session per party count; a broken one is replaced on the next get()."""

    def __init__(self) -> None:
        self._sessions: dict[int, Session] = {}

    def get(self, n_parties: int = 2) -> Session:
        s = self._sessions.get(n_parties)
        if s is None or s.broken:
            s = self._sessions[n_parties] = Session(n_parties)
        return s

    def close(self) -> None:
        for s in self._sessions.values():
            if not s.broken:
                s.close()
            else:
                s.kill()
        self._sessions.clear()

    def __enter__(self) -> "SessionPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
