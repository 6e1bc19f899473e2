"""Worker and gateway processes for the resilience and browser tests: started with the CLI
(their log in a file), and what the tests read of them (threads from ``/proc/<pid>/task``, RSS),
plus percentiles."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any, Callable, ContextManager


def stop_process(proc: "subprocess.Popen[Any]", timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if ``proc`` is still running after ``timeout_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def n_threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_kb(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def settle_threads(pid: int, at_most: int, within_s: float = 10.0) -> int:
    """The process's thread count once it is at most ``at_most`` (or after ``within_s``)."""
    deadline = time.monotonic() + within_s
    while n_threads(pid) > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return n_threads(pid)


def fifty_concurrent_clients(pid: int, connect: Callable[[], ContextManager[Any]], ops: int) -> None:
    """50 clients, each its own connection (``connect()``), start together and run ``ops``
    remote products each against the worker process ``pid``; none fails, and the worker's
    threads come back to where they were."""
    import torch

    base_threads = settle_threads(pid, 0, 0.2)
    errors: list[BaseException] = []
    start = threading.Barrier(50)

    def client(k: int) -> None:
        try:
            with connect() as w:
                start.wait(30)
                x = torch.tensor([float(k)]).send(w)
                for i in range(ops):
                    assert (x * i).get().item() == k * i
        except BaseException as e:  # reported below
            errors.append(e)

    ts = [threading.Thread(target=client, args=(k,)) for k in range(50)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[:3]
    assert settle_threads(pid, base_threads + 4) <= base_threads + 4


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class CliWorker:
    """``python -m syft_mpc worker --id ID --host 127.0.0.1 --port 0 [args]`` with the token in
    its environment and its log (stderr) in ``log_path``; ``address`` is what it printed after
    ``listening on `` (``host:port``, or a ``ws://`` URL)."""

    def __init__(self, worker_id: str, token: str, log_path: pathlib.Path, *args: str) -> None:
        self.id, self.token, self.log_path = worker_id, token, log_path
        env = dict(os.environ, SYFT_MPC_TOKEN=token)
        with open(log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syft_mpc", "worker", "--id", worker_id, "--host", "127.0.0.1", "--port", "0",
                 *args],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.stop()
            raise AssertionError(f"the worker did not start: {line!r}; log: {log_path.read_text()[-2000:]}")
        self.address = line.strip()[len("listening on "):]
        self.port = int(self.address.rpartition(":")[2])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> "CliWorker":
        return self

    def __exit__(self, t: "type[BaseException] | None", v: "BaseException | None", tb: "TracebackType | None") -> None:
        self.stop()


class CliGateway:
    """``python -m syft_mpc gateway --port 0 [args]`` with a fresh token in its environment and
    its log (stderr) in ``log_path``; ``url`` (``http://host:port``) and ``port`` are from the
    line it prints first."""

    def __init__(self, log_path: pathlib.Path, *args: str) -> None:
        self.token, self.log_path = os.urandom(32).hex(), log_path
        env = dict(os.environ, SYFT_MPC_TOKEN=self.token)
        with open(log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syft_mpc", "gateway", "--port", "0", *args],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file,
            )
        got: list[bytes] = []
        t = threading.Thread(target=lambda: got.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(60)  # bounded: a gateway that never prints its address fails here
        line = got[0] if got else b""
        if not line.startswith(b"gateway on "):
            self.stop()
            raise AssertionError(f"the gateway did not start: {line!r}; log: {log_path.read_text()[-2000:]}")
        self.url = line.decode().split()[-1]
        self.port = int(self.url.rpartition(":")[2])
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def link(self, tab_id: str) -> str:
        from syft_mpc.net.gateway import tab_link

        return tab_link(self.url, self.token, tab_id)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()

    def stop(self) -> None:
        stop_process(self.proc, timeout_s=5)

    def __enter__(self) -> "CliGateway":
        return self

    def __exit__(self, t: "type[BaseException] | None", v: "BaseException | None", tb: "TracebackType | None") -> None:
        self.stop()


def wait_for_line(proc: "CliWorker | CliGateway", needle: str, within_s: float) -> "str | None":
    """The first line of ``proc``'s log containing ``needle``, polled for up to ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        found = [ln for ln in proc.log_lines() if needle in ln]
        if found or time.monotonic() > deadline:
            return found[0] if found else None
        time.sleep(0.1)
